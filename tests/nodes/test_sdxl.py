"""SDXL through the nodes, proven equal to diffusers' StableDiffusionXLPipeline and its img2img refiner pipeline.

Nodes load the single-file checkpoints (original layout) that the tiny-model generator wrote; the reference
pipelines load the diffusers folders of the same weights.
"""
import json
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch

from diffusion.families.sdxl import demo as sdxl_tiny
from diffusion.families.sdxl.sampling import SdxlSampling
from diffusion.families.sdxl.text_encoding import SdxlClip
from nodes.conditioning import CLIPTextEncode
from nodes.latent import EmptyLatentImage, VAEDecode, VAEEncode
from nodes.loaders import CheckpointLoaderSimple, DiffusersLoader, LoraLoader
from nodes.sampling import KSampler, KSamplerAdvanced
from nodes.sdxl import CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner
from tests.nodes.conftest import own_storage

TOLERANCE = 1e-4
PROMPT = "a photo of an astronaut riding a horse on mars"
NEGATIVE = "blurry"
SEED = 4321
SIZE = 64
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
SCHEDULER_CONFIGS: dict[int, dict] = {}  # pipeline id -> the scheduler config saved in its folder


@pytest.fixture(scope="session")
def sdxl_models(tiny_models_dir):
    sdxl_tiny.make_sdxl_demo_models(tiny_models_dir)
    return tiny_models_dir


def _pipeline(models_dir, class_name, folder, **parts):
    pipeline = getattr(diffusers, class_name).from_pretrained(models_dir / "diffusers" / folder,
                                                              local_files_only=True, **parts)
    own_storage(*[module for module in (pipeline.unet, pipeline.vae, pipeline.text_encoder, pipeline.text_encoder_2)
                  if module is not None])
    pipeline.set_progress_bar_config(disable=True)
    SCHEDULER_CONFIGS[id(pipeline)] = dict(pipeline.scheduler.config)
    return pipeline


@pytest.fixture(scope="session")
def base_pipeline(sdxl_models):
    return _pipeline(sdxl_models, "StableDiffusionXLPipeline", sdxl_tiny.DEMO_BASE)


@pytest.fixture(scope="session")
def refiner_pipeline(sdxl_models):
    return _pipeline(sdxl_models, "StableDiffusionXLImg2ImgPipeline", sdxl_tiny.DEMO_REFINER, text_encoder=None,
                     tokenizer=None)


@pytest.fixture
def base(node_env, sdxl_models):
    return CheckpointLoaderSimple().load_checkpoint(f"{sdxl_tiny.DEMO_BASE}.safetensors")


@pytest.fixture
def refiner(node_env, sdxl_models):
    return CheckpointLoaderSimple().load_checkpoint(f"{sdxl_tiny.DEMO_REFINER}.safetensors")


def _sdxl_encode(clip, text, size=SIZE):
    return CLIPTextEncodeSDXL().encode(clip, size, size, 0, 0, size, size, text, text)[0]


def _scheduler(pipeline, class_name="EulerDiscreteScheduler", **options):
    """A scheduler built from the config the pipeline was saved with (tests replace pipeline.scheduler)."""
    return getattr(diffusers, class_name).from_config(SCHEDULER_CONFIGS[id(pipeline)], **options)


def _generator():
    return torch.Generator("cpu").manual_seed(SEED)


def test_single_files_are_detected_as_base_and_refiner(base, refiner, base_pipeline, refiner_pipeline):
    for (model, clip, vae), pipeline, is_refiner in ((base, base_pipeline, False), (refiner, refiner_pipeline, True)):
        assert isinstance(model.sampling, SdxlSampling) and model.sampling.refiner is is_refiner
        assert isinstance(clip, SdxlClip) and clip.refiner is is_refiner
        for ours, theirs in ((model.network, pipeline.unet), (vae.autoencoder, pipeline.vae),
                             (clip.clip_g.model, pipeline.text_encoder_2)):
            expected = theirs.state_dict()
            assert all(torch.equal(tensor, expected[key]) for key, tensor in ours.state_dict().items())
        assert vae.scaling_factor == pytest.approx(0.13025)


@pytest.mark.parametrize("sampler_name, scheduler, reference", [
    ("euler", "diffusers", ("EulerDiscreteScheduler", {})),
    # ComfyUI's dpmpp_2m over karras sigmas is diffusers' multistep DPM-Solver++ with karras sigmas
    ("dpmpp_2m", "karras", ("DPMSolverMultistepScheduler",
                            {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True})),
])
def test_txt2img_matches_sdxl_pipeline(base, base_pipeline, sampler_name, scheduler, reference):
    model, clip, vae = base
    (latent,) = EmptyLatentImage().generate(SIZE, SIZE, 1)
    (samples,) = KSampler().sample(model, SEED, 5, 6.0, sampler_name, scheduler, _sdxl_encode(clip, PROMPT),
                                   _sdxl_encode(clip, NEGATIVE), latent)
    (image,) = VAEDecode().decode(vae, samples)

    base_pipeline.scheduler = _scheduler(base_pipeline, reference[0], **reference[1])
    expected = base_pipeline(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=5, guidance_scale=6.0,
                             height=SIZE, width=SIZE, generator=_generator(), output_type="np").images
    assert image.shape == (1, SIZE, SIZE, 3)
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE


def test_size_and_crop_conditioning_and_plain_clip_text_encode_match(base, base_pipeline):
    """CLIPTextEncodeSDXL's sizes reach the UNet as diffusers' original_size/crops_coords_top_left/target_size;
    plain CLIPTextEncode uses ComfyUI's defaults (768, no crop)."""
    model, clip, vae = base
    (latent,) = EmptyLatentImage().generate(SIZE, SIZE, 1)
    sized = CLIPTextEncodeSDXL().encode(clip, 512, 384, 16, 8, 1024, 896, PROMPT, "an astronaut")[0]
    plain = CLIPTextEncode().encode(clip, "")[0]
    (samples,) = KSampler().sample(model, SEED, 4, 5.0, "euler", "diffusers", sized, plain, latent)
    (image,) = VAEDecode().decode(vae, samples)

    base_pipeline.scheduler = _scheduler(base_pipeline)
    expected = base_pipeline(
        prompt="an astronaut", prompt_2=PROMPT, negative_prompt="", num_inference_steps=4, guidance_scale=5.0,
        height=SIZE, width=SIZE, original_size=(384, 512), crops_coords_top_left=(8, 16), target_size=(896, 1024),
        negative_original_size=(768, 768), negative_crops_coords_top_left=(0, 0), negative_target_size=(768, 768),
        generator=_generator(), output_type="np").images
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE


def test_base_to_refiner_hand_off_matches_the_ensemble_of_experts(base, refiner, base_pipeline, refiner_pipeline):
    """Base: KSamplerAdvanced steps 0-8 of 10 with leftover noise; refiner: steps 8-10 without adding noise. The
    same as the base pipeline with denoising_end=0.8 and the img2img refiner pipeline with denoising_start=0.8."""
    (base_model, base_clip, _), (refiner_model, refiner_clip, refiner_vae) = base, refiner
    (latent,) = EmptyLatentImage().generate(SIZE, SIZE, 1)
    (noisy,) = KSamplerAdvanced().sample(base_model, "enable", SEED, 10, 6.0, "euler", "diffusers",
                                         _sdxl_encode(base_clip, PROMPT), _sdxl_encode(base_clip, NEGATIVE), latent,
                                         0, 8, "enable")
    positive = CLIPTextEncodeSDXLRefiner().encode(refiner_clip, 6.0, SIZE, SIZE, PROMPT)[0]
    negative = CLIPTextEncodeSDXLRefiner().encode(refiner_clip, 2.5, SIZE, SIZE, NEGATIVE)[0]
    (refined,) = KSamplerAdvanced().sample(refiner_model, "disable", SEED, 10, 6.0, "euler", "diffusers", positive,
                                           negative, noisy, 8, 10000, "disable")
    (image,) = VAEDecode().decode(refiner_vae, refined)

    base_pipeline.scheduler = _scheduler(base_pipeline)
    refiner_pipeline.scheduler = _scheduler(refiner_pipeline)
    handed_over = base_pipeline(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=10, guidance_scale=6.0,
                                height=SIZE, width=SIZE, denoising_end=0.8, generator=_generator(),
                                output_type="latent").images
    # LATENT holds raw latents; the pipeline hands over model-space ones
    assert torch.allclose(base_model.latent_format.process_in(noisy["samples"]), handed_over, atol=TOLERANCE)
    expected = refiner_pipeline(PROMPT, negative_prompt=NEGATIVE, image=handed_over, num_inference_steps=10,
                                guidance_scale=6.0, denoising_start=0.8, generator=_generator(),
                                output_type="np").images
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE


def test_refiner_img2img_denoise_matches_the_refiner_pipeline_strength(refiner, refiner_pipeline):
    model, clip, vae = refiner
    gradient = torch.linspace(0, 1, SIZE)
    pixels = torch.stack([gradient.outer(torch.ones(SIZE)), torch.ones(SIZE).outer(gradient),
                          torch.full((SIZE, SIZE), 0.4)], dim=-1)[None]
    (latent,) = VAEEncode().encode(vae, pixels)
    positive = CLIPTextEncodeSDXLRefiner().encode(clip, 6.0, SIZE, SIZE, PROMPT)[0]
    negative = CLIPTextEncodeSDXLRefiner().encode(clip, 2.5, SIZE, SIZE, "")[0]
    (samples,) = KSampler().sample(model, SEED, 4, 7.0, "euler", "diffusers", positive, negative, latent, 0.5)
    (image,) = VAEDecode().decode(vae, samples)

    refiner_pipeline.scheduler = _scheduler(refiner_pipeline)
    # 4-channel images are latents to the pipeline, in model space (LATENT holds raw ones)
    expected = refiner_pipeline(PROMPT, image=model.latent_format.process_in(latent["samples"]), strength=0.5,
                                num_inference_steps=8,
                                guidance_scale=7.0, generator=_generator(), output_type="np").images
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE


def test_diffusers_folders_load_as_the_same_models(base, refiner):
    for name, (model, clip, _) in ((sdxl_tiny.DEMO_BASE, base), (sdxl_tiny.DEMO_REFINER, refiner)):
        folder_model, folder_clip, _ = DiffusersLoader().load_checkpoint(name)
        assert folder_model.sampling == model.sampling
        assert torch.equal(folder_clip.encode_prompt(PROMPT)[0][0], clip.encode_prompt(PROMPT)[0][0])


@pytest.mark.parametrize("strength_model, strength_clip", [(1.0, 1.0), (0.7, 0.4)])
def test_sdxl_lora_matches_load_lora_weights(base, base_pipeline, sdxl_models, strength_model, strength_clip):
    model, clip, vae = base
    lora_model, lora_clip = LoraLoader().load_lora(model, clip, sdxl_tiny.DEMO_LORA, strength_model, strength_clip)
    assert {component for component, _ in lora_clip.lora_modules()} == {"text_encoder", "text_encoder_2"}
    (latent,) = EmptyLatentImage().generate(SIZE, SIZE, 1)
    (samples,) = KSampler().sample(lora_model, SEED, 3, 6.0, "euler", "diffusers", _sdxl_encode(lora_clip, PROMPT),
                                   _sdxl_encode(lora_clip, ""), latent)
    (image,) = VAEDecode().decode(vae, samples)

    base_pipeline.load_lora_weights(str(sdxl_models / "loras" / sdxl_tiny.DEMO_LORA), adapter_name="tiny")
    try:
        base_pipeline.set_adapters(["tiny"], adapter_weights=[
            {"unet": strength_model, "text_encoder": strength_clip, "text_encoder_2": strength_clip}])
        base_pipeline.scheduler = _scheduler(base_pipeline)
        expected = base_pipeline(PROMPT, negative_prompt="", num_inference_steps=3, guidance_scale=6.0, height=SIZE,
                                 width=SIZE, generator=_generator(), output_type="np").images
    finally:
        base_pipeline.unload_lora_weights()
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE
    base_image = VAEDecode().decode(vae, KSampler().sample(model, SEED, 3, 6.0, "euler", "diffusers",
                                                           _sdxl_encode(clip, PROMPT), _sdxl_encode(clip, ""),
                                                           latent)[0])[0]
    assert np.abs(base_image.numpy() - expected).max() > TOLERANCE  # the LoRA changed the image


def test_sd1_conditioning_is_refused_by_an_sdxl_model(base, sd1):
    model = base[0]
    (latent,) = EmptyLatentImage().generate(SIZE, SIZE, 1)
    sd1_conditioning = CLIPTextEncode().encode(sd1[1], PROMPT)[0]
    with pytest.raises(ValueError, match="conditioning: this SDXL model needs a pooled text embedding"):
        KSampler().sample(model, SEED, 1, 5.0, "euler", "diffusers", sd1_conditioning, sd1_conditioning, latent)
    with pytest.raises(ValueError, match="clip: this node needs an SDXL CLIP"):
        CLIPTextEncodeSDXL().encode(sd1[1], SIZE, SIZE, 0, 0, SIZE, SIZE, PROMPT, PROMPT)


def test_clip_set_last_layer_applies_to_both_encoders(base):
    clip = base[1]
    assert clip.layer_index == -2
    last = clip.with_layer(-1)
    assert not torch.equal(last.encode_prompt(PROMPT)[0][0], clip.encode_prompt(PROMPT)[0][0])
    with pytest.raises(ValueError, match="stop_at_clip_layer"):
        clip.with_layer(-3)


@pytest.mark.parametrize("name", ["sdxl_txt2img", "sdxl_base_refiner"])
def test_shipped_sdxl_workflows_run(node_env, sdxl_models, name):
    from tests.nodes.family_workflows import run_workflow

    prompt = json.loads((WORKFLOWS / f"{name}.json").read_text())
    images = run_workflow(node_env, prompt)
    assert [image.size for image in images] == [(SIZE, SIZE)]


def test_an_editor_format_sdxl_workflow_runs(node_env, sdxl_models):
    """A base + refiner graph as ComfyUI's editor saves it (nodes, links, widgets_values, a note)."""
    import nodes
    from engine.registry import NodeRegistry
    from engine.workflow_format import to_api_format
    from tests.nodes.family_workflows import run_workflow

    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    editor = json.loads((Path(__file__).parent / "data" / "sdxl_base_refiner_editor.json").read_text())
    prompt = to_api_format(editor, registry)
    assert prompt["9"]["inputs"]["start_at_step"] == 3 and prompt["5"]["inputs"]["ascore"] == 6
    images = run_workflow(node_env, prompt)
    assert [image.size for image in images] == [(SIZE, SIZE)]
