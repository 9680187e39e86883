"""The samplers of ComfyUI's "advanced samplers" nodes, which KSampler's list does not name: LCM sampling that
upscales the latents while it goes (SamplerLCMUpscale) and the alternative CFG++ Euler (SamplerEulerCFGpp's
"alternative" version; its "regular" version is KSampler's euler_cfg_pp).

Knows nothing of models, guidance, nodes or files.
"""
from __future__ import annotations

import numpy as np
import torch

from diffusion.sampling.samplers.common import SamplingRun, derivative
from diffusion.sampling.unet_patches import resized

UPSCALE_METHODS = ("bislerp", "nearest-exact", "bilinear", "area", "bicubic")


def upscale_factors(steps: int, total_upscale: float, upscale_steps: int | None) -> list[float]:
    """The scale of the latents after each of the first steps of an LCM upscale run of `steps` steps, relative
    to their starting size, rising evenly to `total_upscale`: over `upscale_steps` steps (None: about half the
    schedule, as ComfyUI counts it, len(sigmas) // 2 steps)."""
    sigma_count = steps + 1
    if upscale_steps is None:
        points = max(sigma_count // 2 + 1, 2)
    else:
        points = min(upscale_steps + 1, sigma_count + 1)
    return [float(factor) for factor in np.linspace(1.0, total_upscale, points)[1:]]


class _ContinuedCpuNoise:
    """The fresh noise of an LCM upscale step: ComfyUI draws it with torch.randn_like from torch's global
    generator, which its noise preparation seeded with the seed and advanced by drawing the starting noise (one
    draw of the starting latents' shape). Here a CPU generator in that state, so that the draws are ComfyUI's on
    the CPU (on a GPU ComfyUI draws from that device's generator instead)."""

    def __init__(self, like: torch.Tensor, seed: int):
        self._generator = torch.Generator("cpu").manual_seed(seed)
        torch.randn(like.shape, generator=self._generator, dtype=like.dtype)

    def like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=self._generator, dtype=x.dtype).to(x.device)


def lcm_upscale(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, total_upscale: float,
                upscale_steps: int | None, upscale_method: str) -> torch.Tensor:
    """LCM sampling (jump to the denoised estimate, then add noise of the next sigma) whose estimate is resized
    after each of the first steps (`upscale_factors`) with `upscale_method` (`UPSCALE_METHODS`); the latents end
    `total_upscale` times as large on each side. The noise is added as sigma * noise, as ComfyUI adds it, for
    every kind of model."""
    if upscale_method not in UPSCALE_METHODS:
        raise ValueError(f"upscale_method: {upscale_method!r} is not one of {', '.join(UPSCALE_METHODS)}")
    factors = upscale_factors(len(sigmas) - 1, total_upscale, upscale_steps)
    height, width = x.shape[-2:]
    noise = _ContinuedCpuNoise(x, run.seed)
    for i in range(len(sigmas) - 1):
        denoised = run.denoise(x, sigmas[i])
        x = denoised
        if i < len(factors):
            x = resized(x, round(width * factors[i]), round(height * factors[i]), upscale_method)
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise.like(x)
        run.report(i, x, denoised)
    return x


def euler_cfg_pp_alternative(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """ComfyUI's sample_euler_pp: an Euler step whose slope is taken at x - denoised + the unguided estimate
    (the guided estimate's derivative with the unguided estimate's noise added back)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        x = x + derivative(x - denoised + run.unguided(denoised), sigma, denoised) * (sigma_next - sigma)
        run.report(i, x, denoised)
    return x
