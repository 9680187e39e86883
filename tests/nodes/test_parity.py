"""The diffusers loop gives diffusers' pixels for the same model files and settings (KSampler with scheduler
`diffusers`; the loop itself for the other spacings it offers the unCLIP decoder sampler). ComfyUI's samplers and
schedulers are proved against ComfyUI's own renders in test_comfy_reference.py.

Nodes load the single-file LDM checkpoint; the reference pipelines load the diffusers folder of the same tiny
model, with each scheduler constructed here directly from diffusers (independently of the node mapping).
"""
import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.sampling import loop
from nodes.conditioning import CLIPTextEncode
from nodes.image import LoadImage
from nodes.latent import EmptyLatentImage, VAEDecode, VAEEncode
from nodes.sampling import KSampler

TOLERANCE = 1e-4
PROMPT = "a photo of an astronaut riding a horse on mars"
SEED = 1234

# (sampler_name, scheduler) -> the diffusers scheduler class and options the reference pipeline uses
REFERENCE_SCHEDULERS = {
    ("euler", "normal"): ("EulerDiscreteScheduler", {}),
    ("euler", "karras"): ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),
    ("euler", "sgm_uniform"): ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
    ("euler_ancestral", "normal"): ("EulerAncestralDiscreteScheduler", {}),
    ("heun", "normal"): ("HeunDiscreteScheduler", {}),
    ("dpm_2", "karras"): ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
    ("dpm_2_ancestral", "normal"): ("KDPM2AncestralDiscreteScheduler", {}),
    ("lms", "normal"): ("LMSDiscreteScheduler", {}),
    ("lms", "exponential"): ("LMSDiscreteScheduler", {"use_exponential_sigmas": True}),
    ("dpmpp_2m", "normal"): ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    ("dpmpp_2m", "karras"): ("DPMSolverMultistepScheduler",
                             {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    ("dpmpp_2m_sde", "karras"): ("DPMSolverMultistepScheduler",
                                 {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    ("dpmpp_sde", "normal"): ("DPMSolverSDEScheduler", {"noise_sampler_seed": SEED}),
    ("deis", "beta"): ("DEISMultistepScheduler", {"use_beta_sigmas": True}),
    ("uni_pc", "simple"): ("UniPCMultistepScheduler", {"timestep_spacing": "linspace"}),
    ("ddim", "normal"): ("DDIMScheduler", {}),
    ("ddpm", "normal"): ("DDPMScheduler", {}),
    ("pndm", "normal"): ("PNDMScheduler", {}),
    ("lcm", "normal"): ("LCMScheduler", {}),
}


def _skip_unless_available(sampler_name, scheduler):
    from diffusion.sampling.schedulers import available_samplers, available_schedulers

    if sampler_name not in available_samplers() or scheduler not in available_schedulers():
        pytest.skip(f"{sampler_name}/{scheduler} needs scipy/torchsde, which are not installed")


def _reference_scheduler(config, sampler_name, scheduler):
    class_name, options = REFERENCE_SCHEDULERS[(sampler_name, scheduler)]
    return getattr(diffusers, class_name).from_config(config, **options)


def _encode(clip, text):
    return CLIPTextEncode().encode(clip, text)[0]


def diffusers_ksampler(model, steps, cfg, sampler_name, scheduler, positive, negative, latent, denoise=1.0):
    """KSampler's latents over the diffusers loop: the node with scheduler `diffusers` for the model's own scheduler
    config ("normal" here), the loop itself for the other spacings."""
    if scheduler == "normal":
        return KSampler().sample(model, SEED, steps, cfg, sampler_name, "diffusers", positive, negative, latent,
                                 denoise)[0]
    samples = loop.sample(model, SEED, cfg, sampler_name, scheduler, positive, negative, latent["samples"],
                          loop.SamplingRange.from_denoise(steps, denoise))
    return {"samples": samples}


@pytest.mark.parametrize("sampler_name, scheduler", list(REFERENCE_SCHEDULERS))
def test_txt2img_matches_stable_diffusion_pipeline(sd1, sd_pipeline, pipeline_scheduler_config, sampler_name,
                                                   scheduler):
    _skip_unless_available(sampler_name, scheduler)
    model, clip, vae = sd1
    (latent,) = EmptyLatentImage().generate(64, 64, 1)
    samples = diffusers_ksampler(model, 5, 7.5, sampler_name, scheduler, _encode(clip, PROMPT), _encode(clip, ""),
                                 latent)
    (image,) = VAEDecode().decode(vae, samples)

    sd_pipeline.scheduler = _reference_scheduler(pipeline_scheduler_config, sampler_name, scheduler)
    expected = sd_pipeline(PROMPT, negative_prompt="", num_inference_steps=5, guidance_scale=7.5, height=64, width=64,
                           generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    assert image.shape == (1, 64, 64, 3)
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE


def test_txt2img_batch_and_no_guidance_match(sd1, sd_pipeline, pipeline_scheduler_config):
    model, clip, vae = sd1
    (latent,) = EmptyLatentImage().generate(64, 48, 2)
    for cfg in (6.0, 1.0):
        (samples,) = KSampler().sample(model, SEED, 4, cfg, "euler_ancestral", "diffusers", _encode(clip, PROMPT),
                                       _encode(clip, "blurry"), latent)
        (image,) = VAEDecode().decode(vae, samples)
        sd_pipeline.scheduler = _reference_scheduler(pipeline_scheduler_config, "euler_ancestral", "normal")
        expected = sd_pipeline(PROMPT, negative_prompt="blurry", num_inference_steps=4, guidance_scale=cfg,
                               height=48, width=64, num_images_per_prompt=2,
                               generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
        assert image.shape == (2, 48, 64, 3)
        assert np.abs(image.numpy() - expected).max() <= TOLERANCE


@pytest.fixture
def input_image(node_env):
    gradient = np.linspace(0, 255, 64, dtype=np.float32)
    pixels = np.stack([np.add.outer(gradient, gradient) / 2, np.outer(gradient, np.ones(64)),
                       np.full((64, 64), 90.0)], axis=-1)
    image = Image.fromarray(pixels.astype(np.uint8))
    image.save(node_env.folders.input_dir / "gradient.png")
    return image


def test_vae_encode_matches_diffusers(sd1, sd_pipeline, input_image):
    (pixels, _) = LoadImage().load_image("gradient.png")
    (latent,) = VAEEncode().encode(sd1[2], pixels)
    with torch.no_grad():
        preprocessed = sd_pipeline.image_processor.preprocess(input_image)
        expected = sd_pipeline.vae.encode(preprocessed).latent_dist.mode()  # LATENT holds the raw latents
    assert torch.allclose(latent["samples"], expected, atol=TOLERANCE)


@pytest.mark.parametrize("sampler_name, steps, denoise", [
    ("euler", 4, 0.5),
    ("euler_ancestral", 4, 0.8),
    ("heun", 3, 0.6),
    ("dpmpp_2m", 6, 0.75),
    ("ddim", 5, 0.5),
])
def test_img2img_denoise_matches_img2img_pipeline_strength(sd1, sd_pipeline, pipeline_scheduler_config, input_image,
                                                           sampler_name, steps, denoise):
    model, clip, vae = sd1
    (pixels, _) = LoadImage().load_image("gradient.png")
    (latent,) = VAEEncode().encode(vae, pixels)
    (samples,) = KSampler().sample(model, SEED, steps, 7.0, sampler_name, "diffusers", _encode(clip, PROMPT),
                                   _encode(clip, ""), latent, denoise)
    (image,) = VAEDecode().decode(vae, samples)

    total = int(steps / denoise)
    assert int(total * denoise) == steps  # the settings where ComfyUI's denoise and diffusers' strength agree
    img2img = diffusers.StableDiffusionImg2ImgPipeline(**sd_pipeline.components)
    img2img.set_progress_bar_config(disable=True)
    img2img.scheduler = _reference_scheduler(pipeline_scheduler_config, sampler_name, "normal")
    # 4-channel images are latents to the pipeline, in model space (LATENT holds raw ones)
    expected = img2img(PROMPT, image=model.latent_format.process_in(latent["samples"]), strength=denoise,
                       num_inference_steps=total,
                       guidance_scale=7.0, generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE
