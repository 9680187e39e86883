"""Z-Image through the nodes: its files as ComfyUI users have them (the transformer in the original layout through
UNETLoader, Qwen3 through CLIPLoader type lumina2, FLUX's VAE) give ZImagePipeline's image for the same weights and
seed, with and without classifier-free guidance; other files are refused by name; the shipped workflow runs."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion.families.flux import demo as tiny_flux
from diffusion.families.zimage import demo as tiny_zimage
from nodes.conditioning import CLIPTextEncode
from nodes.flux import EmptySD3LatentImage
from nodes.latent import VAEDecode
from nodes.loaders import CLIPLoader, UNETLoader, VAELoader
from nodes.sampling import KSampler
from tests.nodes.conftest import own_storage
from tests.nodes.family_workflows import run_workflow

TOLERANCE = 1e-4
PROMPT = "a bowl of ramen on a wooden table"
SEED, SIZE, STEPS = 3, 32, 4
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture(scope="session")
def zimage_models(tiny_models_dir):
    return tiny_zimage.make_zimage_demo_models(tiny_models_dir)


@pytest.fixture
def zimage(node_env, zimage_models):
    (model,) = UNETLoader().load_unet(tiny_zimage.DEMO_ZIMAGE_TRANSFORMER, "default")
    (clip,) = CLIPLoader().load_clip(tiny_zimage.DEMO_ZIMAGE_TEXT_ENCODER, "lumina2")
    (vae,) = VAELoader().load_vae(tiny_zimage.DEMO_ZIMAGE_VAE)
    return model, clip, vae


@pytest.fixture(scope="session")
def zimage_pipeline(zimage_models, tiny_models_dir):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline

    from diffusion.families.zimage.loading import config
    from diffusion.families.zimage.text_encoding import tiny_qwen_tokenizer

    folder = tiny_models_dir / "diffusers" / tiny_flux.DEMO_FLUX_DIFFUSERS
    pipeline = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**{k: v for k, v in config()["scheduler"].items()
                                                     if not k.startswith("_")}),
        vae=AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True),
        text_encoder=zimage_models.text_encoder, tokenizer=tiny_qwen_tokenizer(),
        transformer=zimage_models.transformer)
    own_storage(pipeline.transformer, pipeline.vae, pipeline.text_encoder)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _image(model, clip, vae, cfg, negative=""):
    positive = CLIPTextEncode().encode(clip, PROMPT)[0]
    negative = CLIPTextEncode().encode(clip, negative)[0]
    (latent,) = EmptySD3LatentImage().generate(SIZE, SIZE, 1)
    (samples,) = KSampler().sample(model, SEED, STEPS, cfg, "euler", "diffusers", positive, negative, latent)
    return VAEDecode().decode(vae, samples)[0].numpy()


@pytest.mark.parametrize("guidance, negative", [(0.0, ""), (2.0, "blurry")])
def test_txt2img_matches_zimage_pipeline(zimage, zimage_pipeline, guidance, negative):
    """The pipeline's guidance g is pos + g * (pos - neg): classifier-free guidance at cfg g + 1."""
    image = _image(*zimage, guidance + 1.0, negative)
    expected = zimage_pipeline(PROMPT, negative_prompt=negative, height=SIZE, width=SIZE,
                               num_inference_steps=STEPS, guidance_scale=guidance,
                               generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    assert image.shape == (1, SIZE, SIZE, 3)
    assert np.abs(image - expected).max() <= TOLERANCE


def test_files_of_other_kinds_are_refused_by_name(zimage_models, node_env):
    with pytest.raises(ValueError, match="type lumina2 needs Lumina 2's Gemma 2 file or Z-Image's Qwen3 file"):
        CLIPLoader().load_clip(tiny_flux.DEMO_FLUX_T5, "lumina2")
    (model,) = UNETLoader().load_unet(tiny_zimage.DEMO_ZIMAGE_TRANSFORMER, "default")
    assert model.family == "zimage"


def test_shipped_zimage_workflow_runs(node_env, zimage_models):
    (image,) = run_workflow(node_env, json.loads((WORKFLOWS / "z_image_turbo_txt2img.json").read_text()), SIZE)
    assert image.size == (SIZE, SIZE)



def test_peft_lora_matches_load_lora_weights(node_env, zimage, zimage_pipeline):
    from safetensors.torch import save_file

    from nodes.loaders import LoraLoaderModelOnly

    generator = torch.Generator().manual_seed(12)
    state = {}
    for name, module in zimage[0].network.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith((".attention.to_q", ".attention.to_v")):
            state[f"transformer.{name}.lora_A.weight"] = torch.randn(4, module.in_features, generator=generator) * 0.3
            state[f"transformer.{name}.lora_B.weight"] = torch.randn(module.out_features, 4, generator=generator) * 0.3
    path = node_env.folders.model_dir("loras") / "tiny-z-image-lora.safetensors"
    save_file(state, str(path))
    try:
        model, clip, vae = zimage
        (patched,) = LoraLoaderModelOnly().load_lora_model_only(model, path.name, 0.7)
        image = _image(patched, clip, vae, 1.0)
        zimage_pipeline.load_lora_weights(dict(state), adapter_name="tiny")
        zimage_pipeline.set_adapters(["tiny"], [0.7])
        expected = zimage_pipeline(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=0.0,
                                   generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
        assert np.abs(image - expected).max() <= TOLERANCE
        assert np.abs(image - _image(model, clip, vae, 1.0)).max() > 1e-3
    finally:
        zimage_pipeline.unload_lora_weights()
        path.unlink()
