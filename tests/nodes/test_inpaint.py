"""Inpainting: 9-channel models are detected and sample as diffusers' StableDiffusionInpaintPipeline does; ordinary
models repaint only inside the latent noise mask, also exactly as that pipeline does for 4-channel UNets."""
import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.families.sd.demo import INPAINTING_CHECKPOINT, INPAINTING_DIFFUSERS
from diffusion.sampling.editing import INPAINT, model_variant
from nodes.image import LoadImage
from nodes.inpaint import InpaintModelConditioning, SetLatentNoiseMask, VAEEncodeForInpaint
from nodes.latent import VAEDecode, VAEEncode
from nodes.loaders import CheckpointLoaderSimple, DiffusersLoader
from nodes.mask import LoadImageMask
from nodes.sampling import KSampler
from tests.nodes.test_parity import PROMPT, SEED, TOLERANCE, _encode, _reference_scheduler

MASK_BOX = (16, 8, 48, 40)  # left, top, right, bottom: on the 8-pixel latent grid


def _gradient(size=64):
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.outer(ramp, np.ones(size)), np.full((size, size), 90.0)], -1)
    return Image.fromarray(pixels.astype(np.uint8))


def _box_mask(size=64, box=MASK_BOX):
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, box)
    return mask


@pytest.fixture
def inpaint_inputs(node_env, editing_models):
    """The source image and its mask in the input folder, loaded through LoadImage and LoadImageMask."""
    image, mask = _gradient(), _box_mask()
    image.save(node_env.folders.input_dir / "source.png")
    mask.save(node_env.folders.input_dir / "mask.png")
    (pixels, _) = LoadImage().load_image("source.png")
    (loaded_mask,) = LoadImageMask().load_image("mask.png", "red")
    return image, mask, pixels, loaded_mask


@pytest.fixture
def inpainting_model(editing_models, node_env):
    return CheckpointLoaderSimple().load_checkpoint(INPAINTING_CHECKPOINT)


def test_nine_channel_checkpoint_and_folder_are_detected(inpainting_model):
    from_folder = DiffusersLoader().load_checkpoint(INPAINTING_DIFFUSERS)
    for model, _, _ in (inpainting_model, from_folder):
        assert model.network.config.in_channels == 9 and model_variant(model) == INPAINT
    single_file, folder = inpainting_model[0].network.state_dict(), from_folder[0].network.state_dict()
    assert all(torch.equal(single_file[key], folder[key]) for key in folder)


def _masked_image_latents(pipeline, image, mask):
    """The pipeline's own masked image (its preprocessing), encoded with the posterior's mode, as the nodes do
    (the pipeline would sample the posterior; it accepts these latents through `masked_image_latents`)."""
    with torch.no_grad():
        init = pipeline.image_processor.preprocess(image, height=64, width=64)
        binary = pipeline.mask_processor.preprocess(mask, height=64, width=64)
        encoded = pipeline.vae.encode(init * (binary < 0.5)).latent_dist.mode()
    return encoded * pipeline.vae.config.scaling_factor


@pytest.mark.parametrize("sampler_name, steps", [("euler", 5), ("euler_ancestral", 4), ("dpmpp_2m", 6), ("ddim", 5)])
def test_inpainting_model_matches_inpaint_pipeline(inpainting_model, inpaint_pipeline, inpaint_inputs, sampler_name,
                                                   steps):
    model, clip, vae = inpainting_model
    image, mask, pixels, loaded_mask = inpaint_inputs
    (latent,) = VAEEncodeForInpaint().encode(vae, pixels, loaded_mask, grow_mask_by=0)
    (samples,) = KSampler().sample(model, SEED, steps, 7.5, sampler_name, "diffusers", _encode(clip, PROMPT),
                                   _encode(clip, ""), latent)
    (result,) = VAEDecode().decode(vae, samples)

    pipeline = inpaint_pipeline
    pipeline.scheduler = _reference_scheduler(pipeline.scheduler.config, sampler_name, "normal")
    expected = pipeline(PROMPT, image=image, mask_image=mask, masked_image_latents=_masked_image_latents(
        pipeline, image, mask), height=64, width=64, num_inference_steps=steps, guidance_scale=7.5, strength=1.0,
        generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    difference = np.abs(result.numpy() - expected).max()
    print(f"9-channel inpainting {sampler_name}: max abs diff {difference:.2e}")
    assert difference <= TOLERANCE


@pytest.mark.parametrize("sampler_name, steps, denoise", [("euler", 4, 1.0), ("ddim", 4, 0.5),
                                                          ("dpmpp_2m", 3, 0.75)])
def test_inpaint_model_conditioning_matches_inpaint_pipeline_strength(inpainting_model, inpaint_pipeline,
                                                                      inpaint_inputs, sampler_name, steps, denoise):
    """InpaintModelConditioning keeps the whole image as the latent, so denoise < 1 on an inpainting model is the
    pipeline's strength < 1."""
    model, clip, vae = inpainting_model
    image, mask, pixels, loaded_mask = inpaint_inputs
    positive, negative, latent = InpaintModelConditioning().encode(_encode(clip, PROMPT), _encode(clip, ""), vae,
                                                                   pixels, loaded_mask, True)
    (samples,) = KSampler().sample(model, SEED, steps, 7.5, sampler_name, "diffusers", positive, negative, latent,
                                   denoise)
    (result,) = VAEDecode().decode(vae, samples)

    pipeline = inpaint_pipeline
    pipeline.scheduler = _reference_scheduler(pipeline.scheduler.config, sampler_name, "normal")
    # 4-channel images are latents to the pipeline, in model space (LATENT holds raw ones)
    expected = pipeline(PROMPT, image=model.latent_format.process_in(latent["samples"]), mask_image=mask,
                        masked_image_latents=_masked_image_latents(
        pipeline, image, mask), height=64, width=64, num_inference_steps=int(steps / denoise), strength=denoise,
        guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    difference = np.abs(result.numpy() - expected).max()
    print(f"InpaintModelConditioning {sampler_name} denoise {denoise}: max abs diff {difference:.2e}")
    assert difference <= TOLERANCE


@pytest.mark.parametrize("sampler_name, steps, denoise", [("euler", 5, 1.0), ("dpmpp_2m", 4, 1.0), ("ddim", 4, 0.5),
                                                          ("euler_ancestral", 4, 0.8)])
def test_noise_mask_on_ordinary_model_matches_inpaint_pipeline(sd1, sd_pipeline, inpaint_inputs, sampler_name, steps,
                                                               denoise):
    model, clip, vae = sd1
    image, mask, pixels, loaded_mask = inpaint_inputs
    (source,) = VAEEncode().encode(vae, pixels)
    (latent,) = SetLatentNoiseMask().set_mask(source, loaded_mask)
    (samples,) = KSampler().sample(model, SEED, steps, 7.0, sampler_name, "diffusers", _encode(clip, PROMPT),
                                   _encode(clip, ""), latent, denoise)
    (result,) = VAEDecode().decode(vae, samples)

    pipeline = diffusers.StableDiffusionInpaintPipeline(**sd_pipeline.components)
    pipeline.set_progress_bar_config(disable=True)
    pipeline.scheduler = _reference_scheduler(sd_pipeline.scheduler.config, sampler_name, "normal")
    total = int(steps / denoise)
    # 4-channel images are latents to the pipeline, in model space (LATENT holds raw ones)
    expected = pipeline(PROMPT, image=model.latent_format.process_in(source["samples"]), mask_image=mask,
                        masked_image_latents=torch.zeros_like(
        source["samples"]), height=64, width=64, num_inference_steps=total, strength=denoise, guidance_scale=7.0,
        generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    difference = np.abs(result.numpy() - expected).max()
    print(f"4-channel noise mask {sampler_name} denoise {denoise}: max abs diff {difference:.2e}")
    assert difference <= TOLERANCE

    left, top, right, bottom = (side // 8 for side in MASK_BOX)
    outside = torch.ones(samples["samples"].shape[-2:], dtype=torch.bool)
    outside[top:bottom, left:right] = False
    assert torch.allclose(samples["samples"][..., outside], source["samples"][..., outside], atol=1e-5)
    assert not torch.allclose(samples["samples"][..., ~outside], source["samples"][..., ~outside], atol=1e-2)


def test_inpainting_model_without_a_mask_samples_the_whole_image(inpainting_model):
    """With no mask anywhere (txt2img on an inpainting model), the model sees a mask of ones and the latents of
    a blank grey image, as ComfyUI gives it."""
    from nodes.latent import EmptyLatentImage

    model, clip, _ = inpainting_model
    (latent,) = EmptyLatentImage().generate(64, 48, 2)
    (samples,) = KSampler().sample(model, SEED, 2, 5.0, "euler", "diffusers", _encode(clip, PROMPT), _encode(clip, ""),
                                   latent)
    assert samples["samples"].shape == (2, 4, 6, 8) and torch.isfinite(samples["samples"]).all()
