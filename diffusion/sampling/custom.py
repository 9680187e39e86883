"""Sampling over sigmas, as ComfyUI's SamplerCustomAdvanced runs it: a NOISE, a GUIDER, a SAMPLER and SIGMAS in,
latents out. KSampler and KSamplerAdvanced are this with RandomNoise, a CFGGuider, the named sampler and the
named scheduler's sigmas (`diffusion.sampling.ksampler`).

The run follows ComfyUI's: the LATENT's raw VAE latents taken into the model's sampling space by its latent format
(`diffusion.latent_format`; an all-zero latent stays zero), initial noise drawn on the CPU from the seed
(`diffusion.sampling.noise`), scaled onto the latents by the model's `ModelSampling` (pure noise when the first
sigma is the schedule's largest), the sampler's steps (`diffusion.sampling.samplers`), the inverse scaling at the
end, and the result taken back to raw latents. A LATENT noise mask keeps the unmasked latents for every model
(inpainting models too), as ComfyUI's inpainting wrapper does: each step's input outside the mask is the source
noised to that step's sigma, and its denoised estimate outside the mask is the source itself (the mask turned
into each step's by the model's `denoise_mask_function` where it has one: Differential Diffusion). A model's UNet
patches (FreeU, deep shrink, ...) are in place while the run lasts (`diffusion.sampling.unet_patches`).
Knows nothing of nodes; reports progress through `engine.progress` (which also raises on interrupt, also before
every network call within a step).
"""
from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F

from diffusion.lora import lora_applied
from diffusion.patcher_api import WrapperExecutor, comfy_guider, copied_options
from diffusion.sampling import caching, editing, noise, run_seed, samplers, unet_patches
from diffusion.sampling.denoising import Denoiser, StepCallback
from diffusion.sampling.guiders import CFGGuider
from diffusion.sampling.preview import LatentPreview
from diffusion.speedups import Speedups, speedups_applied
from engine.progress import check_interrupted, report_progress


@dataclass(frozen=True)
class RandomNoise:
    """NOISE: the seeded initial noise of ComfyUI's RandomNoise (and KSampler)."""

    seed: int

    def generate(self, latent: Mapping[str, Any]) -> torch.Tensor:
        return noise.initial_noise(latent["samples"], self.seed, latent.get("batch_index"))

    generate_noise = generate  # ComfyUI's name for it, which packs call


@dataclass(frozen=True)
class DisableNoise:
    """NOISE: none (ComfyUI's DisableNoise; KSamplerAdvanced with add_noise disabled)."""

    seed: int = 0

    def generate(self, latent: Mapping[str, Any]) -> torch.Tensor:
        return torch.zeros_like(latent["samples"], dtype=torch.float32)

    generate_noise = generate  # ComfyUI's name for it, which packs call


@dataclass(frozen=True)
class SamplerChoice:
    """SAMPLER: a sampler name of `diffusion.sampling.samplers` and its options (the Sampler* nodes' inputs).
    Any SAMPLER value answers `options` and `spec(guider)`, how it runs under that guider (a node pack's sampler
    function is a SAMPLER of its own kind)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def spec(self, guider: Any) -> samplers.SamplerSpec:
        return samplers.sampler_spec(self.name)


def noise_mask_for(mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A LATENT noise mask at the latents' size (bilinear) for every channel, repeated or cut to the batch, as
    ComfyUI prepares it."""
    mask = F.interpolate(mask.float().reshape(-1, 1, *mask.shape[-2:]), size=tuple(shape[-2:]), mode="bilinear")
    mask = torch.cat([mask] * shape[1], dim=1)
    if mask.shape[0] < shape[0]:
        mask = mask.repeat(math.ceil(shape[0] / mask.shape[0]), 1, 1, 1)
    return mask[:shape[0]]


@dataclass(eq=False)
class _KeepUnmasked:
    """A `Denoiser` around another that keeps the latents outside a noise mask (ComfyUI's KSamplerX0Inpaint)."""

    inner: Denoiser
    mask: torch.Tensor
    source: torch.Tensor
    start_noise: torch.Tensor
    # the model's `denoise_mask_function` (Differential Diffusion) with the run's sigmas, or None
    mask_function: Any = None
    sigmas: torch.Tensor | None = None

    @property
    def model_sampling(self) -> Any:
        return self.inner.model_sampling

    @property
    def uncond_denoised(self) -> torch.Tensor | None:
        return self.inner.uncond_denoised

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        mask = self.mask
        if self.mask_function is not None:
            mask = self.mask_function(sigma, mask, self.sigmas, self.model_sampling)
        keep = 1.0 - mask
        noised_source = self.model_sampling.noise_scaling(sigma.reshape(-1, 1, 1, 1), self.start_noise, self.source)
        x = x * mask + noised_source * keep
        return self.inner(x, sigma) * mask + self.source * keep


@dataclass(eq=False)
class _SigmaNoted:
    """A `Denoiser` around another that tells the UNet patches of the run (`unet_patches.PatchRun`) the noise
    level of each call before the network runs."""

    inner: Denoiser
    run: unet_patches.PatchRun

    @property
    def model_sampling(self) -> Any:
        return self.inner.model_sampling

    @property
    def uncond_denoised(self) -> torch.Tensor | None:
        return self.inner.uncond_denoised

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.run.sigma = float(sigma[0])
        return self.inner(x, sigma)


def _patch_run(latent: Mapping[str, Any], noise_source: Any) -> unet_patches.PatchRun:
    """What a run's UNet patches see; their random draws continue from the starting noise's generator, as
    ComfyUI's continue from its global generator after drawing the noise."""
    generator = None
    if isinstance(noise_source, RandomNoise):
        generator = torch.Generator("cpu")
        noise.initial_noise(latent["samples"], noise_source.seed, latent.get("batch_index"), generator)
    return unet_patches.PatchRun(noise_source.seed, generator)


@contextmanager
def interrupts_between_blocks(network: torch.nn.Module, speedups: Speedups) -> Iterator[None]:
    """An interrupt honoured inside a network call too (a large model's call takes seconds): checked before each
    block of the network's top-level block lists (a UNet's down and up blocks, a transformer's blocks) while
    the run lasts. Not in a `torch.compile`d network, where each check would break the graph (compiling for a
    minute instead of seconds): there only before each call."""
    if speedups.compile_backend != "off":
        yield
        return
    handles = [block.register_forward_pre_hook(lambda module, args: check_interrupted())
               for child in network.children() if isinstance(child, torch.nn.ModuleList) for block in child]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def sample(guider: CFGGuider, sampler: SamplerChoice, sigmas: torch.Tensor, latent: Mapping[str, Any],
           noise_source: RandomNoise | DisableNoise, callback: StepCallback | None = None) -> torch.Tensor:
    """Denoise `latent` (LATENT) along `sigmas`; float32 CPU latents, raw as LATENT holds them. Nothing to do for
    fewer than two sigmas. `callback` sees every step after progress is reported, its latents and denoised
    estimate raw too (SamplerCustom's denoised output keeps the last)."""
    model = guider.model
    latent_image = model.latent_format.fitted_empty(latent["samples"])
    if latent_image is not latent["samples"]:
        latent = {**latent, "samples": latent_image}
    if len(sigmas) < 2:
        return latent_image.clone()
    initial = noise_source.generate(latent)
    wrappers = model.outer_sample_wrappers()
    if not wrappers:
        return _sample(guider, sampler, sigmas, latent, noise_source, initial, callback)
    # packs' OUTER_SAMPLE wrappers around the run, which may change its inputs and, through the guider's
    # model_options (the run's own copy), the wrappers of its network calls
    run_guider = _with_model(guider, dataclasses.replace(model, model_options=copied_options(model.model_options)))

    def outer_sample(noise: torch.Tensor, latent_image: torch.Tensor, sampler: Any, sigmas: torch.Tensor,
                     denoise_mask: torch.Tensor | None = None, callback_: Any = None, disable_pbar: bool = False,
                     seed: int | None = None, **kwargs: Any) -> torch.Tensor:
        run_latent = {key: value for key, value in latent.items() if key != "noise_mask"}
        run_latent["samples"] = latent_image
        if denoise_mask is not None:
            run_latent["noise_mask"] = denoise_mask
        return _sample(run_guider, sampler, sigmas, run_latent, noise_source, noise, callback)

    return WrapperExecutor(outer_sample, wrappers, comfy_guider(run_guider))(
        initial, latent_image, sampler, sigmas, latent.get("noise_mask"), callback, False, noise_source.seed)


def _with_model(guider: Any, model: Any) -> Any:
    """The guider over another MODEL value (our guiders are dataclasses; a pack-facing one has `with_model`)."""
    return dataclasses.replace(guider, model=model) if dataclasses.is_dataclass(guider) else guider.with_model(model)


def _sample(guider: CFGGuider, sampler: SamplerChoice, sigmas: torch.Tensor, latent: Mapping[str, Any],
            noise_source: RandomNoise | DisableNoise, initial: torch.Tensor,
            callback: StepCallback | None) -> torch.Tensor:
    """`sample`'s run from the starting noise `initial`."""
    model = guider.model
    latent_image = latent["samples"]
    device = model.device
    model_sampling = model.model_sampling
    latent_format = model.latent_format
    initial = initial.to(device)
    source = latent_format.sampling_input(latent_image.float()).to(device)
    edit = editing.EditInputs.prepare(model, latent, guider.image_cfg)
    run_patches = model.sampling_unet_patches()
    patch_run = _patch_run(latent, noise_source) if run_patches else None
    steps = len(sigmas) - 1

    def on_step(index: int, latents: torch.Tensor, denoised: torch.Tensor) -> None:
        report_progress(min(index + 1, steps), steps, preview=LatentPreview(denoised, latent_format))
        if callback is not None:
            callback(index, latent_format.process_out(latents.float()), latent_format.process_out(denoised.float()))

    sigmas = sigmas.to(device)
    with torch.inference_mode(), lora_applied(model.network, model.lora_component, model.loras), \
            interrupts_between_blocks(model.network, model.speedups), \
            speedups_applied(model.network, model.speedups) as network, \
            unet_patches.patches_applied(model.network, run_patches, patch_run), run_seed.sigmas_of_run(sigmas), \
            model.run_callbacks():  # packs' ON_PRE_RUN / ON_CLEANUP callbacks around the run
        spec = sampler.spec(guider)
        cfg1_optimization = not spec.uses_unguided
        with run_seed.seeded(noise_source.seed):  # the conditioning's seeded inputs (unCLIP) are made here
            denoiser: Denoiser = guider.denoiser(network, source.shape[0], edit, model_sampling, check_interrupted,
                                                 cfg1_optimization)
        denoiser = caching.wrapped_prediction(denoiser, model)  # LazyCache, fresh per run
        if run_patches:
            denoiser = _SigmaNoted(denoiser, patch_run)
        if edit is not None and edit.noise_mask is not None:  # every model, inpainting ones too, as ComfyUI's
            denoiser = _KeepUnmasked(denoiser, noise_mask_for(edit.noise_mask, source.shape).to(device), source,
                                     initial, model.denoise_mask_function, sigmas)
        x = samplers.sample_from_noise(spec, denoiser, initial, source, sigmas, noise_source.seed, on_step,
                                       **sampler.options)
    return latent_format.process_out(x.float().cpu())


def add_noise(model: Any, noise_source: RandomNoise | DisableNoise, sigmas: torch.Tensor,
              latent: Mapping[str, Any]) -> torch.Tensor:
    """ComfyUI's AddNoise: the LATENT's samples noised in the model's sampling space to the level the sigmas span
    (their first minus their last; one sigma: that level) and taken back to raw latents, non-finite values zeroed;
    the samples unchanged for no sigmas."""
    samples = latent["samples"]
    if len(sigmas) == 0:
        return samples
    level = torch.abs(sigmas[0] - sigmas[-1]) if len(sigmas) > 1 else sigmas[0]
    latent_format = model.latent_format
    noisy = model.model_sampling.noise_scaling(level, noise_source.generate(latent),
                                               latent_format.sampling_input(samples.float()))
    return torch.nan_to_num(latent_format.process_out(noisy), nan=0.0, posinf=0.0, neginf=0.0)
