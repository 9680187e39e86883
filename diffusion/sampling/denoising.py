"""The interface between the sigma-based samplers (`diffusion.sampling.samplers`) and everything that computes a
denoised estimate: a `Denoiser` is called with latents at a noise level and returns the guided estimate of the
clean latents, the k-diffusion convention ComfyUI follows. Samplers know nothing else of models, families or
guidance; what they report per step goes to a `StepCallback`. Knows nothing of nodes or files.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

import torch

if TYPE_CHECKING:
    from diffusion.sampling.model_sampling import ModelSampling

# (step index, latents after the step, the denoised estimate of the step): progress, previews, interrupts
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


class Denoiser(Protocol):
    """The guided denoiser a sampler drives.

    `model_sampling` is the model's noise schedule (sigma <-> timestep, percent, noise scaling), which some
    samplers read. After each call `uncond_denoised` holds the unguided negative estimate of that call (what
    the CFG++ samplers step with), or None when there is no negative."""

    model_sampling: "ModelSampling"
    uncond_denoised: torch.Tensor | None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """`x` [B, C, H, W] at noise level `sigma` ([B], one per row) -> the denoised estimate [B, C, H, W]."""
