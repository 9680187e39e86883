"""`comfy.sample` for plugins: ComfyUI's seeded noise and its two sampling entry points, over our sampling core.
Latents are raw (as LATENT holds them); noise is what `prepare_noise` gives."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from comfy.samplers import KSampler, run
from diffusion.components import DiffusionModel
from diffusion.contracts import Conditioning
from diffusion.sampling import custom, noise
from diffusion.sampling.guiders import CFGGuider


def prepare_noise(latent_image: torch.Tensor, seed: int, noise_inds: Sequence[int] | None = None) -> torch.Tensor:
    """ComfyUI's starting noise for `seed` (the same numbers); with `noise_inds`, row k is draw `noise_inds[k]`."""
    return noise.initial_noise(latent_image, seed, None if noise_inds is None else list(noise_inds))


def fix_empty_latent_channels(model: DiffusionModel, latent_image: torch.Tensor) -> torch.Tensor:
    """An empty latent with another channel count than the model's (EmptyLatentImage's 4 for a 16-channel model)
    as zeros with the model's channels; other latents as they are. Our samplers do this themselves."""
    return model.latent_format.fitted_empty(latent_image)


def sample(model: DiffusionModel, noise: torch.Tensor, steps: int, cfg: float, sampler_name: str, scheduler: str,
           positive: Conditioning, negative: Conditioning, latent_image: torch.Tensor, denoise: float = 1.0,
           disable_noise: bool = False, start_step: int | None = None, last_step: int | None = None,
           force_full_denoise: bool = False, noise_mask: torch.Tensor | None = None,
           sigmas: torch.Tensor | None = None, callback: Callable | None = None, disable_pbar: bool = False,
           seed: int | None = None) -> torch.Tensor:
    """KSampler's sampling from the caller's noise (zeros with `disable_noise`, as ComfyUI's callers pass)."""
    if disable_noise:
        noise = torch.zeros_like(latent_image)
    sampler = KSampler(model, steps, None, sampler_name, scheduler, denoise)
    return sampler.sample(noise, positive, negative, cfg, latent_image, start_step, last_step, force_full_denoise,
                          noise_mask, sigmas, callback, disable_pbar, seed)


def sample_custom(model: DiffusionModel, noise: torch.Tensor, cfg: float, sampler: custom.SamplerChoice,
                  sigmas: torch.Tensor, positive: Conditioning, negative: Conditioning, latent_image: torch.Tensor,
                  noise_mask: torch.Tensor | None = None, callback: Callable | None = None,
                  disable_pbar: bool = False, seed: int | None = None) -> torch.Tensor:
    """SamplerCustom's sampling: a SAMPLER along the caller's sigmas, from the caller's noise."""
    return run(CFGGuider(model, positive, negative, cfg), sampler, sigmas, noise, latent_image, noise_mask, callback,
               seed)


__all__ = ["fix_empty_latent_channels", "prepare_noise", "sample", "sample_custom"]
