"""`comfy.samplers` for plugins: ComfyUI's sampler and scheduler names (what packs offer in their own widgets and
hand to our KSampler), `calculate_sigmas`, sampler objects for SamplerCustom, and `KSampler` over our one sampling
core (`diffusion.sampling`).

Not provided: `CFGGuider`, `KSAMPLER` and `sampling_function` as subclassing and wrapping points (a pack's own
guider or sampler function does not run in our core); use the guider and sampler nodes or `comfy.sample`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from diffusion.components import DiffusionModel
from diffusion.contracts import Conditioning
from diffusion.sampling import custom, samplers, sigma_schedules
from diffusion.sampling import ksampler as ksampling
from diffusion.sampling.guiders import CFGGuider

SAMPLER_NAMES: list[str] = ksampling.sampler_names()  # ComfyUI's list in its order, then the diffusers-only ones
SCHEDULER_NAMES: list[str] = ksampling.scheduler_names()  # ComfyUI's list in its order, then "diffusers"
# the samplers ComfyUI runs through k-diffusion code (all but ddim and the UniPC ones)
KSAMPLER_NAMES: list[str] = [name for name in samplers.SAMPLER_NAMES if name not in ("ddim", "uni_pc", "uni_pc_bh2")]


def calculate_sigmas(model_sampling: Any, scheduler_name: str, steps: int) -> torch.Tensor:
    """The named scheduler's `steps` + 1 sigmas (the last 0) for a model's noise schedule."""
    return sigma_schedules.calculate_sigmas(model_sampling, scheduler_name, steps)


def sampler_object(name: str) -> custom.SamplerChoice:
    """The SAMPLER value of a sampler name, as KSamplerSelect gives it."""
    if name not in samplers.SAMPLER_NAMES:
        raise ValueError(f"comfy.samplers.sampler_object: unknown sampler {name!r}")
    return custom.SamplerChoice(name)


def ksampler(sampler_name: str, extra_options: Mapping[str, Any] | None = None,
             inpaint_options: Mapping[str, Any] | None = None) -> custom.SamplerChoice:
    """A SAMPLER with options (eta, s_noise, ...: the names our sampler of that name takes)."""
    sampler_object(sampler_name)
    return custom.SamplerChoice(sampler_name, dict(extra_options or {}))


class GivenNoise:
    """NOISE made by the caller (a pack's `comfy.sample.prepare_noise`), with the seed ancestral samplers use."""

    def __init__(self, noise: torch.Tensor, seed: int | None) -> None:
        self.noise = noise
        self.seed = 0 if seed is None else int(seed)

    def generate(self, latent: Mapping[str, Any]) -> torch.Tensor:
        if self.noise.shape != latent["samples"].shape:
            raise ValueError(f"noise of shape {tuple(self.noise.shape)} does not fit latents of shape "
                             f"{tuple(latent['samples'].shape)}")
        return self.noise.float()


def run(guider: CFGGuider, sampler: custom.SamplerChoice, sigmas: torch.Tensor, noise: torch.Tensor,
        latent_image: torch.Tensor, denoise_mask: torch.Tensor | None, callback: Callable | None,
        seed: int | None) -> torch.Tensor:
    """Sample raw `latent_image` from the caller's `noise` along `sigmas`; ComfyUI's `callback(step, x0, x,
    total_steps)` sees the model's sampling-space latents."""
    latent = {"samples": latent_image}
    if denoise_mask is not None:
        latent["noise_mask"] = denoise_mask
    steps = len(sigmas) - 1
    latent_format = guider.model.latent_format

    def on_step(index: int, latents: torch.Tensor, denoised: torch.Tensor) -> None:
        callback(index, latent_format.process_in(denoised), latent_format.process_in(latents), steps)

    return custom.sample(guider, sampler, sigmas, latent, GivenNoise(noise, seed),
                         on_step if callback is not None else None)


class KSampler:
    """ComfyUI's KSampler object: the names packs offer (`SAMPLERS`, `SCHEDULERS`), the schedule of `steps` for a
    sampler and scheduler (`sigmas`), and `sample` from the caller's noise."""

    SAMPLERS = SAMPLER_NAMES
    SCHEDULERS = SCHEDULER_NAMES

    def __init__(self, model: DiffusionModel, steps: int, device: Any = None, sampler: str | None = None,
                 scheduler: str | None = None, denoise: float | None = None,
                 model_options: Mapping[str, Any] | None = None) -> None:
        sampler, scheduler = sampler or SAMPLER_NAMES[0], scheduler or SCHEDULER_NAMES[0]
        problem = ksampling.choice_problem(model.sampling, sampler, scheduler)
        if problem is None and scheduler == ksampling.DIFFUSERS_SCHEDULER:
            problem = "scheduler: the 'diffusers' scheduler makes its own noise; use one of ComfyUI's schedulers"
        if problem is not None:
            raise ValueError(f"comfy.samplers.KSampler: {problem}")
        self.model, self.steps, self.sampler, self.scheduler = model, steps, sampler, scheduler
        self.denoise = 1.0 if denoise is None else denoise
        self.sigmas = sigma_schedules.ksampler_sigmas(model.model_sampling, scheduler, steps, self.denoise, sampler)

    def sample(self, noise: torch.Tensor, positive: Conditioning, negative: Conditioning, cfg: float,
               latent_image: torch.Tensor | None = None, start_step: int | None = None, last_step: int | None = None,
               force_full_denoise: bool = False, denoise_mask: torch.Tensor | None = None,
               sigmas: torch.Tensor | None = None, callback: Callable | None = None, disable_pbar: bool = False,
               seed: int | None = None) -> torch.Tensor:
        """The denoised raw latents (as LATENT holds them) of `latent_image` (zeros when None) from `noise`."""
        sigmas = self.sigmas if sigmas is None else sigmas
        sigmas = ksampling.steps_window(sigmas, start_step, last_step, force_full_denoise)
        latent_image = torch.zeros_like(noise) if latent_image is None else latent_image
        guider = CFGGuider(self.model, positive, negative, cfg)
        return run(guider, custom.SamplerChoice(self.sampler), sigmas, noise, latent_image, denoise_mask, callback,
                   seed)
