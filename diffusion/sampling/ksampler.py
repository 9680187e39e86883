"""KSampler and KSamplerAdvanced as ComfyUI computes them: the named scheduler's sigmas for `steps` (with
`denoise` below 1: the last steps of a longer schedule), cut to KSamplerAdvanced's start and end steps, then
sampling over them (`diffusion.sampling.custom`) with RandomNoise (or none) and a CFGGuider.

The scheduler name `diffusers` keeps the model's own diffusers scheduler instead (`diffusion.sampling.loop`):
pixel-identical to the diffusers pipelines, with the sampler names that have a diffusers scheduler.
Knows nothing of nodes.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from diffusion.components import DiffusionModel
from diffusion.contracts import Conditioning, FamilySampling
from diffusion.sampling import custom, loop, samplers, sigma_schedules
from diffusion.sampling.editing import EditInputs
from diffusion.sampling.guiders import CFGGuider
from diffusion.sampling.regions import regional_problem
from diffusion.sampling.schedulers import available_samplers

DIFFUSERS_SCHEDULER = "diffusers"


def scheduler_names() -> list[str]:
    """ComfyUI's scheduler names, then `diffusers`."""
    return [*sigma_schedules.SCHEDULER_NAMES, DIFFUSERS_SCHEDULER]


def sampler_names() -> list[str]:
    """ComfyUI's sampler names, then those only the `diffusers` scheduler runs."""
    return [*samplers.SAMPLER_NAMES, *(name for name in available_samplers() if name not in samplers.SAMPLER_NAMES)]


def choice_problem(family: type[FamilySampling] | FamilySampling, sampler_name: str, scheduler: str) -> str | None:
    """Why a model of `family` cannot run a sampler/scheduler pair, naming the input; None when it can. Every
    family runs every ComfyUI sampler and scheduler; the `diffusers` scheduler runs the samplers with a diffusers
    scheduler that the family's diffusers loop supports."""
    if scheduler == DIFFUSERS_SCHEDULER:
        if sampler_name not in available_samplers():
            return (f"sampler_name: {sampler_name!r} has no diffusers scheduler; with scheduler "
                    f"{DIFFUSERS_SCHEDULER!r} use one of: {', '.join(available_samplers())}")
        return family.choice_problem(sampler_name, "normal")
    if sampler_name not in samplers.SAMPLER_NAMES:
        return f"sampler_name: {sampler_name!r} runs only with scheduler {DIFFUSERS_SCHEDULER!r}"
    if scheduler not in sigma_schedules.SCHEDULER_NAMES:
        return f"scheduler: unknown scheduler {scheduler!r}; use one of: {', '.join(scheduler_names())}"
    return None


def steps_window(sigmas: torch.Tensor, start_step: int | None, last_step: int | None,
                 force_full_denoise: bool) -> torch.Tensor:
    """KSamplerAdvanced's part of a schedule: up to `last_step` (ending at sigma 0 when `force_full_denoise`),
    from `start_step` (nothing left when it is past the end)."""
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[:last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        sigmas = sigmas[start_step:] if start_step < len(sigmas) - 1 else sigmas[:0]
    return sigmas


def ksample(model: DiffusionModel, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
            positive: Conditioning, negative: Conditioning, latent: Mapping[str, Any], denoise: float = 1.0,
            add_noise: bool = True, start_step: int | None = None, last_step: int | None = None,
            force_full_denoise: bool = False, image_cfg: float | None = None) -> torch.Tensor:
    """KSampler (and with start/last steps KSamplerAdvanced): the denoised latents, float32 on the CPU.
    `image_cfg` is InstructPix2Pix's image guidance (KSamplerDualCFG)."""
    problem = choice_problem(model.sampling, sampler_name, scheduler)
    if problem is not None:
        raise ValueError(problem)
    if scheduler == DIFFUSERS_SCHEDULER:
        if model.pre_cfg or model.post_cfg:
            raise ValueError(f"scheduler: {DIFFUSERS_SCHEDULER!r} runs the model's diffusers scheduler, which takes no "
                             "guidance patches (RescaleCFG, CFGZeroStar, PAG, ...); use one of ComfyUI's schedulers")
        if model.sampling_unet_patches() or model.denoise_mask_function is not None:
            raise ValueError(f"scheduler: {DIFFUSERS_SCHEDULER!r} runs the model's diffusers scheduler, which takes no "
                             "UNet patches (FreeU, deep shrink, HyperTile, ...); use one of ComfyUI's schedulers")
        if model.sampling_wrappers:
            raise ValueError(f"scheduler: {DIFFUSERS_SCHEDULER!r} runs the model's diffusers scheduler, which takes no "
                             "step caches (EasyCache, LazyCache); use one of ComfyUI's schedulers")
        problem = regional_problem({"positive": positive, "negative": negative},
                                   f"by the {DIFFUSERS_SCHEDULER!r} scheduler")
        if problem is not None:
            raise ValueError(problem)
        if denoise <= 0:
            return latent["samples"].clone()
        span = _diffusers_span(steps, denoise, add_noise, start_step, last_step, force_full_denoise)
        edit = EditInputs.prepare(model, latent, image_cfg)
        # "normal" in the diffusers loop is the model's own scheduler config
        return loop.sample(model, seed, cfg, sampler_name, "normal", positive, negative, latent["samples"], span,
                           edit)
    sigmas = sigma_schedules.ksampler_sigmas(model.model_sampling, scheduler, steps, denoise, sampler_name)
    sigmas = steps_window(sigmas, start_step, last_step, force_full_denoise)
    noise_source = custom.RandomNoise(seed) if add_noise else custom.DisableNoise(seed)
    guider = CFGGuider(model, positive, negative, cfg, image_cfg)
    return custom.sample(guider, custom.SamplerChoice(sampler_name), sigmas, latent, noise_source)


def _diffusers_span(steps: int, denoise: float, add_noise: bool, start_step: int | None, last_step: int | None,
                    force_full_denoise: bool) -> loop.SamplingRange:
    if start_step is None and last_step is None:
        return loop.SamplingRange.from_denoise(steps, denoise)
    end = steps if last_step is None else min(last_step, steps)
    return loop.SamplingRange(steps, min(start_step or 0, steps), end, add_noise, not force_full_denoise)
