"""Family limits known at validation: loaders state the family of what they will load (from file headers and
folder indexes, nothing loaded), facts pass through LoRA loaders, and samplers and family-specific nodes refuse
what the family cannot do with a 400-style error naming the input."""
import pytest

from diffusion.families.flux import demo as tiny_flux
from diffusion.families.sd.demo import DEMO_CHECKPOINT
from tests.nodes.conftest import validation_errors


@pytest.fixture
def flux_files(node_env, tiny_models_dir):
    tiny_flux.make_flux_demo_models(tiny_models_dir)
    return node_env


def _txt2img(model_node: dict, clip: list, sampler_name: str, encoder: str = "CLIPTextEncode",
             scheduler: str = "diffusers") -> dict:
    text = {"text": "a lighthouse"} if encoder == "CLIPTextEncode" else {"clip_l": "a", "clip_g": "a", "t5xxl": "a",
                                                                         "empty_padding": "none"}
    return {
        "model": model_node,
        "clip": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": tiny_flux.DEMO_FLUX_CLIP_L,
                                                            "clip_name2": tiny_flux.DEMO_FLUX_T5, "type": "flux"}},
        "lora": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["model", 0], "strength_model": 1.0,
                                                                 "lora_name": tiny_flux.DEMO_FLUX_LORA}},
        "positive": {"class_type": encoder, "inputs": {"clip": clip, **text}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "sampler": {"class_type": "KSampler", "inputs": {
            "model": ["lora", 0], "positive": ["positive", 0], "negative": ["positive", 0], "latent_image": ["latent", 0],
            "seed": 1, "steps": 2, "cfg": 1.0, "sampler_name": sampler_name, "scheduler": scheduler, "denoise": 1.0}},
    }


def test_a_sampler_the_family_cannot_run_is_refused_at_validation_without_loading(flux_files):
    loads_before = dict(flux_files.models.loads)
    unet = {"class_type": "UNETLoader", "inputs": {"unet_name": tiny_flux.DEMO_FLUX_TRANSFORMER,
                                                   "weight_dtype": "default"}}
    errors = validation_errors(_txt2img(unet, ["clip", 0], "dpmpp_2m"))
    assert list(errors) == ["sampler"]  # facts passed through the LoRA loader
    (error,) = errors["sampler"]
    assert error["type"] == "custom_validation_failed" and error["extra_info"]["input_name"] == "sampler_name"
    assert "sampler_name: 'dpmpp_2m' is not available for FLUX models (flow matching); use one of: euler" in \
        error["details"]
    assert validation_errors(_txt2img(unet, ["clip", 0], "euler")) == {}
    # ComfyUI's samplers run every family
    assert validation_errors(_txt2img(unet, ["clip", 0], "dpmpp_2m", scheduler="simple")) == {}
    assert flux_files.models.loads == loads_before  # validation read file headers only


def test_folders_and_checkpoints_state_their_family(flux_files):
    folder = {"class_type": "DiffusersLoader", "inputs": {"model_path": tiny_flux.DEMO_FLUX_DIFFUSERS}}
    errors = validation_errors(_txt2img(folder, ["model", 1], "lms"))
    assert [error["extra_info"]["input_name"] for error in errors["sampler"]] == ["sampler_name"]
    sd1 = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO_CHECKPOINT}}
    prompt = _txt2img(sd1, ["model", 1], "dpmpp_2m")  # SD1 runs every sampler; its LoRA is the FLUX one
    prompt["lora"]["inputs"]["lora_name"] = "tiny-sd1-lora.safetensors"
    assert validation_errors(prompt) == {}


def test_family_specific_nodes_refuse_another_familys_clip(flux_files):
    unet = {"class_type": "UNETLoader", "inputs": {"unet_name": tiny_flux.DEMO_FLUX_TRANSFORMER,
                                                   "weight_dtype": "default"}}
    errors = validation_errors(_txt2img(unet, ["clip", 0], "euler", encoder="CLIPTextEncodeSD3"))
    (error,) = errors["positive"]
    assert error["extra_info"]["input_name"] == "clip"
    assert "clip: CLIPTextEncodeSD3 needs an SD3 CLIP; this one is a FLUX CLIP" in error["details"]
    shifted = _txt2img(unet, ["clip", 0], "euler")
    shifted["lora"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["model", 0], "shift": 3.0}}
    (error,) = validation_errors(shifted)["lora"]
    assert "model: ModelSamplingSD3 needs an SD3 or HiDream model; this one is a FLUX model" in error["details"]


def test_unknown_facts_never_refuse(flux_files, tiny_models_dir):
    unet = {"class_type": "UNETLoader", "inputs": {"unet_name": "missing.safetensors", "weight_dtype": "default"}}
    errors = validation_errors(_txt2img(unet, ["clip", 0], "dpmpp_2m"))
    assert [error["extra_info"]["input_name"] for error in errors["model"]] == ["unet_name"]  # not in the list
    assert "sampler" not in errors
