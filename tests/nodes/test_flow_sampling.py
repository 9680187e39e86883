"""The sigma core (SamplerCustom, SamplerCustomAdvanced, KSampler's ComfyUI schedulers) on the flow-matching
families, where no ComfyUI renders exist to compare with:

- over the diffusers pipeline's own sigmas, sampler euler and RandomNoise give the pipeline's image: SD3
  (FlowMatchEulerDiscreteScheduler, shift 3), FLUX.1-dev (dynamic shift, mu from the image's token count) and
  FLUX.1-schnell (no shift), and SDXL too (EulerDiscreteScheduler, its starting noise scaled as ComfyUI scales it);
- a loaded model's noise schedule is ComfyUI's (SD3: shift 3, timesteps x1000; FLUX.1-dev: FLUX's shift 1.15;
  FLUX.1-schnell: shift 1, timesteps x1), and ModelSamplingSD3 / ModelSamplingFlux change it as ComfyUI's nodes
  do; KSampler's "simple", "normal" and "beta" sigmas equal ComfyUI's formulas computed here independently;
- KSamplerAdvanced split into two passes (leftover noise handed over) equals one pass.
The tiny models and pipelines are the ones of test_sd3.py, test_flux.py and test_sdxl.py."""
import math

import diffusers
import numpy as np
import pytest
import torch

from diffusion.families.flux import demo as tiny_flux
from diffusion.families.sd3 import demo as sd3_tiny
from diffusion.families.sdxl import demo as sdxl_tiny
from diffusion.sampling import sigma_schedules
from diffusion.sampling.model_sampling import DiscreteFlowModelSampling, FluxModelSampling
from nodes.conditioning import CLIPTextEncode
from nodes.custom_sampling import (
    BasicScheduler,
    CFGGuider,
    KSamplerSelect,
    RandomNoise,
    SamplerCustom,
    SamplerCustomAdvanced,
)
from nodes.flux import EmptySD3LatentImage, FluxGuidance
from nodes.latent import EmptyLatentImage, VAEDecode
from nodes.loaders import CheckpointLoaderSimple, DiffusersLoader, UNETLoader
from nodes.model_patches import ModelSamplingAuraFlow, ModelSamplingFlux
from nodes.sampling import KSampler, KSamplerAdvanced
from nodes.sd3 import ModelSamplingSD3
from tests.nodes import test_flux as flux_tests
from tests.nodes import test_sd3 as sd3_tests
from tests.nodes import test_sdxl as sdxl_tests
from tests.nodes.conftest import own_storage

TOLERANCE = 1e-4  # on images in 0..1, as the diffusers parity tests
SIZE = 32  # SD3 and FLUX: 4x4 latents, 2x2 patches
STEPS = 4
SCHNELL_FOLDER = "tiny-flux-schnell"
SCHNELL_FILE = "tiny-flux-schnell-transformer.safetensors"
COMFY_SCHEDULERS = ("simple", "normal", "beta")


# -- fixtures: the tiny models and their diffusers pipelines -----------------------------------------------------


@pytest.fixture(scope="session")
def sd3_pipeline(tiny_models_dir):
    sd3_tiny.make_sd3_demo_models(tiny_models_dir)
    return sd3_tests._pipeline(tiny_models_dir, sd3_tiny.DEMO_DIFFUSERS)


@pytest.fixture
def sd3(node_env, sd3_pipeline):
    return DiffusersLoader().load_checkpoint(sd3_tiny.DEMO_DIFFUSERS)


def _flux_pipeline(folder):
    pipeline = diffusers.FluxPipeline.from_pretrained(folder, local_files_only=True)
    own_storage(pipeline.transformer, pipeline.vae, pipeline.text_encoder, pipeline.text_encoder_2)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="session")
def flux_pipeline(tiny_models_dir):
    tiny_flux.make_flux_demo_models(tiny_models_dir)
    return _flux_pipeline(tiny_models_dir / "diffusers" / tiny_flux.DEMO_FLUX_DIFFUSERS)


@pytest.fixture
def flux(node_env, flux_pipeline):
    return DiffusersLoader().load_checkpoint(tiny_flux.DEMO_FLUX_DIFFUSERS)


@pytest.fixture(scope="session")
def schnell_pipeline(tiny_models_dir):
    """A FLUX.1-schnell-style tiny model (no guidance embedding, schnell's scheduler config): its diffusers folder
    (as test_flux.py writes it) and its transformer alone as a UNETLoader file."""
    from safetensors.torch import save_file

    folder = tiny_models_dir / "diffusers" / SCHNELL_FOLDER
    if not folder.exists():
        models = tiny_flux.build_tiny_flux(seed=5, guidance_embeds=False)
        tiny_flux.write_flux_diffusers_folder(models, folder, tiny_flux.SCHNELL_SCHEDULER)
    pipeline = _flux_pipeline(folder)
    transformer_file = tiny_models_dir / "diffusion_models" / SCHNELL_FILE
    transformer_file.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in pipeline.transformer.state_dict().items()},
              str(transformer_file))
    return pipeline


@pytest.fixture
def schnell(node_env, schnell_pipeline):
    return DiffusersLoader().load_checkpoint(SCHNELL_FOLDER)


# -- helpers --------------------------------------------------------------------------------------------------------


def _sd3_conditioning(clip):
    return CLIPTextEncode().encode(clip, sd3_tests.PROMPT)[0], CLIPTextEncode().encode(clip, sd3_tests.NEGATIVE)[0]


def _flux_conditioning(clip, guidance=3.5, negative_text=""):
    positive = FluxGuidance().append(CLIPTextEncode().encode(clip, flux_tests.PROMPT)[0], guidance)[0]
    return positive, CLIPTextEncode().encode(clip, negative_text)[0]


def _latent():
    return EmptySD3LatentImage().generate(SIZE, SIZE, 1)[0]


def _decoded(vae, latent):
    return VAEDecode().decode(vae, latent)[0].numpy()


def _custom_sampled(node, model, seed, cfg, positive, negative, sigmas, latent):
    """The latents of SamplerCustom, or of SamplerCustomAdvanced with RandomNoise and a CFGGuider: sampler euler."""
    (sampler,) = KSamplerSelect().get_sampler("euler")
    if node == "SamplerCustom":
        output, _ = SamplerCustom().sample(model, True, seed, cfg, positive, negative, sampler, sigmas, latent)
        return output
    (noise,) = RandomNoise().get_noise(seed)
    (guider,) = CFGGuider().get_guider(model, positive, negative, cfg)
    output, _ = SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, latent)
    return output


def _flux_pipeline_sigmas(pipeline, steps=STEPS, size=SIZE):
    """The sigmas FluxPipeline samples over: its linear sigmas shifted by the mu of the image's token count."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    config = pipeline.scheduler.config
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(config)
    tokens = (size // 16) ** 2
    mu = calculate_shift(tokens, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                         config.get("base_shift", 0.5), config.get("max_shift", 1.15))
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    return scheduler.sigmas.clone()


def _flux_reference(pipeline, guidance=3.5, **options):
    return pipeline(flux_tests.PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=guidance,
                    generator=torch.Generator("cpu").manual_seed(flux_tests.SEED), output_type="np",
                    **options).images


# -- ComfyUI's flow schedules, from the formulas (float64) ----------------------------------------------------------


def _sd3_shift(shift, t):
    return shift * t / (1 + (shift - 1) * t)


def _flux_shift(mu, t):
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


class _Flow:
    """ComfyUI's ModelSamplingDiscreteFlow (`sigma_of_time` the time shift, timesteps x `multiplier`, 1000
    entries) or ModelSamplingFlux (FLUX's shift, timesteps = sigmas, 10000 entries), in float64."""

    def __init__(self, sigma_of_time, multiplier, entries):
        self.sigma_of_time, self.multiplier = sigma_of_time, multiplier
        self.table = np.array([sigma_of_time(i / entries) for i in range(1, entries + 1)])

    def timestep(self, sigma):
        return sigma * self.multiplier

    def sigma(self, timestep):
        return self.sigma_of_time(timestep / self.multiplier)

    def schedule(self, name, steps):
        table = self.table
        if name == "simple":
            stride = len(table) / steps
            values = [table[-(1 + int(step * stride))] for step in range(steps)]
        elif name == "normal":  # the table's last sigma is far from 0, so 0 is appended
            timesteps = np.linspace(self.timestep(table[-1]), self.timestep(table[0]), steps)
            values = [self.sigma(timestep) for timestep in timesteps]
        else:  # beta(0.6, 0.6): table entries at the distribution's quantiles, repeats dropped
            from scipy import stats

            indices = np.rint(stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), 0.6, 0.6)
                              * (len(table) - 1))
            values = [table[int(index)] for position, index in enumerate(indices)
                      if position == 0 or index != indices[position - 1]]
        return np.array([*values, 0.0])


def _sd3_flow(shift=3.0, multiplier=1000):
    return _Flow(lambda t: _sd3_shift(shift, t), multiplier, 1000)


def _flux_flow(mu):
    return _Flow(lambda t: _flux_shift(mu, t), 1.0, 10000)


def _assert_comfy_sampling(model_sampling, expected, kind, **parameters):
    assert type(model_sampling) is kind
    for name, value in parameters.items():
        assert getattr(model_sampling, name) == pytest.approx(value, abs=1e-12), name
    np.testing.assert_allclose(model_sampling.sigmas.double().numpy(), expected.table, rtol=1e-6, atol=1e-9)
    sigma = torch.tensor([0.9, 0.5, 0.05])
    np.testing.assert_allclose(model_sampling.timestep(sigma).numpy(), expected.timestep(sigma.double().numpy()),
                               rtol=1e-6)
    for name in COMFY_SCHEDULERS:
        for steps in (STEPS, 9):
            ours = sigma_schedules.ksampler_sigmas(model_sampling, name, steps)
            assert ours.dtype == torch.float32
            np.testing.assert_allclose(ours.double().numpy(), expected.schedule(name, steps), rtol=2e-6, atol=1e-7,
                                       err_msg=f"{name}, {steps} steps")


# -- over the pipeline's sigmas, the sigma core gives the pipeline's image ------------------------------------------


@pytest.mark.parametrize("node, cfg", [("SamplerCustom", 5.0), ("SamplerCustomAdvanced", 5.0),
                                       ("SamplerCustom", 1.0)])
def test_sd3_euler_over_the_pipeline_sigmas_is_the_sd3_pipeline(sd3, sd3_pipeline, node, cfg):
    model, clip, vae = sd3
    scheduler = sd3_tests._scheduler(sd3_pipeline)
    assert scheduler.config.shift == 3.0 and not scheduler.config.use_dynamic_shifting
    scheduler.set_timesteps(STEPS)  # what StableDiffusion3Pipeline asks of its scheduler
    sigmas = scheduler.sigmas.clone()
    positive, negative = _sd3_conditioning(clip)
    output = _custom_sampled(node, model, sd3_tests.SEED, cfg, positive, negative, sigmas, _latent())
    expected = sd3_tests._expected(sd3_pipeline, steps=STEPS, cfg=cfg)
    assert torch.equal(sd3_pipeline.scheduler.sigmas, sigmas)  # the pipeline sampled over the same sigmas
    image = _decoded(vae, output)
    assert image.shape == (1, SIZE, SIZE, 3)
    assert np.abs(image - expected).max() <= TOLERANCE


@pytest.mark.parametrize("node, cfg", [("SamplerCustomAdvanced", 1.0), ("SamplerCustom", 2.5)])
def test_flux_euler_over_the_pipeline_sigmas_is_the_flux_pipeline(flux, flux_pipeline, node, cfg):
    """cfg 1: FLUX.1-dev's distilled guidance alone; cfg 2.5: FluxPipeline's true classifier-free guidance."""
    model, clip, vae = flux
    sigmas = _flux_pipeline_sigmas(flux_pipeline)
    negative_text = "" if cfg == 1.0 else "blurry"
    positive, negative = _flux_conditioning(clip, negative_text=negative_text)
    output = _custom_sampled(node, model, flux_tests.SEED, cfg, positive, negative, sigmas, _latent())
    options = {} if cfg == 1.0 else {"negative_prompt": negative_text, "true_cfg_scale": cfg}
    expected = _flux_reference(flux_pipeline, **options)
    assert torch.equal(flux_pipeline.scheduler.sigmas, sigmas)
    assert np.abs(_decoded(vae, output) - expected).max() <= TOLERANCE


def test_flux_schnell_euler_over_the_pipeline_sigmas_is_the_flux_pipeline(schnell, schnell_pipeline):
    """FLUX.1-schnell's transformer takes sigma as its timestep, as FLUX.1-dev's does (ComfyUI: multiplier 1)."""
    model, clip, vae = schnell
    sigmas = _flux_pipeline_sigmas(schnell_pipeline)
    np.testing.assert_allclose(sigmas.numpy(), [1.0, 0.75, 0.5, 0.25, 0.0], atol=1e-7)  # shift 1: no shift
    positive, negative = _flux_conditioning(clip)
    output = _custom_sampled("SamplerCustom", model, flux_tests.SEED, 1.0, positive, negative, sigmas, _latent())
    expected = _flux_reference(schnell_pipeline, guidance=0.0)
    assert np.abs(_decoded(vae, output) - expected).max() <= TOLERANCE


def test_sdxl_euler_over_the_pipeline_sigmas_is_the_sdxl_pipeline(node_env, tiny_models_dir):
    """SDXL (added size/pooled inputs) through the sigma core. The pipeline scales its starting noise by
    sqrt(1 + sigma^2) of the first sigma, ComfyUI by the first sigma itself when it is below the model's largest:
    the pipeline is handed noise prescaled to start where ComfyUI starts."""
    sdxl_tiny.make_sdxl_demo_models(tiny_models_dir)
    pipeline = sdxl_tests._pipeline(tiny_models_dir, "StableDiffusionXLPipeline", sdxl_tiny.DEMO_BASE)
    model, clip, vae = CheckpointLoaderSimple().load_checkpoint(f"{sdxl_tiny.DEMO_BASE}.safetensors")
    size, steps, cfg, seed = sdxl_tests.SIZE, 5, 6.0, sdxl_tests.SEED
    scheduler = sdxl_tests._scheduler(pipeline)
    assert type(scheduler).__name__ == "EulerDiscreteScheduler"
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas.clone()
    assert float(sigmas[0]) < float(model.model_sampling.sigma_max)  # "leading" spacing starts below the top
    (latent,) = EmptyLatentImage().generate(size, size, 1)
    positive = sdxl_tests._sdxl_encode(clip, sdxl_tests.PROMPT)
    negative = sdxl_tests._sdxl_encode(clip, sdxl_tests.NEGATIVE)
    output = _custom_sampled("SamplerCustom", model, seed, cfg, positive, negative, sigmas, latent)

    noise = torch.randn(latent["samples"].shape, generator=torch.Generator("cpu").manual_seed(seed))
    pipeline.scheduler = scheduler
    first = sigmas[0]
    expected = pipeline(sdxl_tests.PROMPT, negative_prompt=sdxl_tests.NEGATIVE, num_inference_steps=steps,
                        guidance_scale=cfg, height=size, width=size, latents=noise * first / (first ** 2 + 1) ** 0.5,
                        output_type="np").images
    assert np.abs(_decoded(vae, output) - expected).max() <= TOLERANCE


# -- KSampler: ComfyUI's schedules of each family ------------------------------------------------------------------


def test_sd3_samples_comfyuis_sd3_schedule_and_model_sampling_sd3_shifts_it(sd3):
    model = sd3[0]
    _assert_comfy_sampling(model.model_sampling, _sd3_flow(3.0), DiscreteFlowModelSampling, shift=3.0,
                           multiplier=1000)
    (shifted,) = ModelSamplingSD3().patch(model, 1.5)
    _assert_comfy_sampling(shifted.model_sampling, _sd3_flow(1.5), DiscreteFlowModelSampling, shift=1.5,
                           multiplier=1000)
    # the last model-sampling node wins, as in ComfyUI: AuraFlow's (timesteps x1), then SD3's again
    (aura,) = ModelSamplingAuraFlow().patch_aura(model, 2.0)
    _assert_comfy_sampling(aura.model_sampling, _sd3_flow(2.0, multiplier=1), DiscreteFlowModelSampling, shift=2.0,
                           multiplier=1)
    (back,) = ModelSamplingSD3().patch(aura, 1.5)
    _assert_comfy_sampling(back.model_sampling, _sd3_flow(1.5), DiscreteFlowModelSampling, shift=1.5,
                           multiplier=1000)


def test_flux_samples_comfyuis_flux_schedule_and_model_sampling_flux_shifts_it(flux):
    model = flux[0]
    _assert_comfy_sampling(model.model_sampling, _flux_flow(1.15), FluxModelSampling, mu=1.15)
    for width, height in ((1024, 1024), (SIZE, SIZE), (768, 512)):
        mu = (width * height / (8 * 8 * 2 * 2)) * (1.15 - 0.5) / (4096 - 256) + 0.5 - (1.15 - 0.5) / (4096 - 256) * 256
        (patched,) = ModelSamplingFlux().patch(model, 1.15, 0.5, width, height)
        _assert_comfy_sampling(patched.model_sampling, _flux_flow(mu), FluxModelSampling, mu=mu)
    assert model.model_sampling.mu == 1.15  # the input model is unchanged


def test_flux_schnell_samples_comfyuis_schnell_schedule_from_folder_and_file(schnell, schnell_pipeline):
    """ComfyUI samples FLUX.1-schnell (a transformer without guidance embedding) as plain rectified flow with
    timesteps x1; a transformer file alone (UNETLoader) is told schnell by its missing guidance embedding."""
    model = schnell[0]
    _assert_comfy_sampling(model.model_sampling, _sd3_flow(1.0, multiplier=1), DiscreteFlowModelSampling,
                           shift=1.0, multiplier=1)
    (from_file,) = UNETLoader().load_unet(SCHNELL_FILE)
    assert not from_file.network.config.guidance_embeds
    assert from_file.scheduler_config == tiny_flux.SCHNELL_SCHEDULER
    assert tiny_flux.SCHNELL_SCHEDULER.items() <= model.scheduler_config.items()  # the folder saves every default
    _assert_comfy_sampling(from_file.model_sampling, _sd3_flow(1.0, multiplier=1), DiscreteFlowModelSampling,
                           shift=1.0, multiplier=1)
    (dev_file,) = UNETLoader().load_unet(tiny_flux.DEMO_FLUX_TRANSFORMER)
    assert dev_file.network.config.guidance_embeds and type(dev_file.model_sampling) is FluxModelSampling


def test_ksampler_normal_on_sd3_is_the_sd3_pipeline(sd3, sd3_pipeline):
    """ComfyUI's "normal" for SD3 spaces timesteps as FlowMatchEulerDiscreteScheduler does: KSampler's euler over
    it gives StableDiffusion3Pipeline's image."""
    model, clip, vae = sd3
    scheduler = sd3_tests._scheduler(sd3_pipeline)
    scheduler.set_timesteps(STEPS)
    sigmas = sigma_schedules.ksampler_sigmas(model.model_sampling, "normal", STEPS)
    np.testing.assert_allclose(sigmas.numpy(), scheduler.sigmas.numpy(), rtol=1e-6, atol=1e-7)
    positive, negative = _sd3_conditioning(clip)
    (samples,) = KSampler().sample(model, sd3_tests.SEED, STEPS, 5.0, "euler", "normal", positive, negative,
                                   _latent())
    expected = sd3_tests._expected(sd3_pipeline, steps=STEPS, cfg=5.0)
    assert np.abs(_decoded(vae, samples) - expected).max() <= TOLERANCE


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_ksampler_simple_on_flux_is_the_flux_pipeline(flux, schnell, flux_pipeline, schnell_pipeline, variant):
    """ComfyUI's "simple" over FLUX's schedule for the image size (ModelSamplingFlux at the image's size; schnell
    has no shift) is FluxPipeline's schedule: KSampler's euler over it gives FluxPipeline's image."""
    if variant == "dev":
        model, clip, vae = flux
        (model,) = ModelSamplingFlux().patch(model, 1.15, 0.5, SIZE, SIZE)
        pipeline, guidance = flux_pipeline, 3.5
    else:
        model, clip, vae = schnell
        pipeline, guidance = schnell_pipeline, 0.0
    sigmas = sigma_schedules.ksampler_sigmas(model.model_sampling, "simple", STEPS)
    np.testing.assert_allclose(sigmas.numpy(), _flux_pipeline_sigmas(pipeline).numpy(), rtol=1e-6, atol=1e-7)
    positive, negative = _flux_conditioning(clip)
    (samples,) = KSampler().sample(model, flux_tests.SEED, STEPS, 1.0, "euler", "simple", positive, negative,
                                   _latent())
    assert np.abs(_decoded(vae, samples) - _flux_reference(pipeline, guidance=guidance)).max() <= TOLERANCE


# -- KSamplerAdvanced: two passes are one ---------------------------------------------------------------------------


@pytest.mark.parametrize("family, scheduler", [("sd3", "normal"), ("sd3", "beta"), ("flux", "simple")])
def test_ksampler_advanced_split_equals_one_pass(sd3, flux, family, scheduler):
    model, clip, _ = sd3 if family == "sd3" else flux
    positive, negative = _sd3_conditioning(clip) if family == "sd3" else _flux_conditioning(clip)
    cfg, seed, steps = (5.0 if family == "sd3" else 1.0), 77, 5
    common = (steps, cfg, "euler", scheduler, positive, negative)
    (whole,) = KSampler().sample(model, seed, *common, _latent())
    advanced = KSamplerAdvanced()
    (first,) = advanced.sample(model, "enable", seed, *common, _latent(), 0, 2, "enable")
    (second,) = advanced.sample(model, "disable", seed, *common, first, 2, 10000, "disable")
    assert torch.allclose(second["samples"], whole["samples"], atol=1e-5)
    (one_pass,) = advanced.sample(model, "enable", seed, *common, _latent(), 0, 10000, "disable")
    assert torch.equal(one_pass["samples"], whole["samples"])
    (clean,) = advanced.sample(model, "enable", seed, *common, _latent(), 0, 2, "disable")
    assert torch.isfinite(clean["samples"]).all()
    assert (clean["samples"] - first["samples"]).abs().max() > 1e-2  # the leftover noise was kept in `first`


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_an_empty_latent_image_of_4_channels_samples_as_the_models_empty_latent(sd3, flux, family):
    """ComfyUI's samplers take EmptyLatentImage's 4-channel zeros as the 16-channel model's empty latent
    (fix_empty_latent_channels): the same latents as EmptySD3LatentImage's, for KSampler and SamplerCustom."""
    model, clip, _ = {"sd3": sd3, "flux": flux}[family]
    positive = CLIPTextEncode().encode(clip, "a red cat")[0]
    (four,) = EmptyLatentImage().generate(SIZE, SIZE, 1)
    (sixteen,) = EmptySD3LatentImage().generate(SIZE, SIZE, 1)
    assert four["samples"].shape[1] == 4 and sixteen["samples"].shape[1] == 16

    def sampled(latent: dict) -> torch.Tensor:
        return KSampler().sample(model, 3, 2, 1.0, "euler", "simple", positive, positive, latent)[0]["samples"]

    torch.testing.assert_close(sampled(four), sampled(sixteen))
    assert sampled(four).shape[1] == 16
    (sigmas,) = BasicScheduler().get_sigmas(model, "simple", 2, 1.0)
    custom = SamplerCustom().sample(model, True, 3, 1.0, positive, positive, KSamplerSelect().get_sampler("euler")[0],
                                    sigmas, four)[0]["samples"]
    torch.testing.assert_close(custom, sampled(sixteen))
