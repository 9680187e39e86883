"""A model family's latent format, as ComfyUI's `latent_formats` describe one: how the VAE's raw latents `z` map to
the space the denoising network samples in, and how that space previews as RGB.

LATENT values hold the raw latents (what the VAE encodes and decodes, what ComfyUI's LATENT holds and its
`.latent` files store); sampling works in model space, `process_in(z) = (z - shift_factor) * scale_factor`, and
hands back `process_out(x) = x / scale_factor + shift_factor` (the diffusers pipelines' scaling of the same
numbers); a format with per-channel statistics (Qwen-Image's, Wan's VAE) uses `(z - mean) * scale_factor / std`
instead. `rgb_factors` and `rgb_bias` are the least-squares fits of model-space latents to RGB that ComfyUI's
latent previews use. Each family keeps its numbers in its config file (`diffusion/families/*/`). Knows nothing
of networks, nodes or files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

RGB = tuple[float, float, float]
EMPTY_LATENT_DOWNSCALE = 8  # EmptyLatentImage's (and EmptySD3LatentImage's) pixels per latent pixel


@dataclass(frozen=True)
class LatentFormat:
    """The map between raw VAE latents and a model's sampling space, the latents' channels, and the model-space
    preview factors (rows: latent channels; columns: R, G, B; None: no known factors)."""

    scale_factor: float = 1.0
    shift_factor: float = 0.0
    rgb_factors: tuple[RGB, ...] | None = None
    rgb_bias: RGB | None = None
    latent_channels: int = 4
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    spatial_downscale: int = 8  # image pixels per latent pixel along a side (the VAE's, with any patching)

    @classmethod
    def from_config(cls, vae: Mapping[str, Any]) -> "LatentFormat":
        """From a family config's "vae" section: `scaling_factor` (or the LDM name `scale_factor`),
        `shift_factor`, `latent_rgb_factors`, `latent_rgb_factors_bias`, `latent_channels` (default 4), the
        per-channel `latents_mean` and `latents_std` and `spatial_downscale` (default 8)."""
        factors = vae.get("latent_rgb_factors")
        bias = vae.get("latent_rgb_factors_bias")
        mean, std = vae.get("latents_mean"), vae.get("latents_std")
        return cls(float(vae.get("scaling_factor", vae.get("scale_factor", 1.0))), float(vae.get("shift_factor", 0.0)),
                   tuple(tuple(row) for row in factors) if factors else None, tuple(bias) if bias else None,
                   int(vae.get("latent_channels", 4)), tuple(mean) if mean else None, tuple(std) if std else None,
                   int(vae.get("spatial_downscale", 8)))

    def _channel_statistics(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-channel mean and std shaped to broadcast over `latents` [B, C, ...]."""
        shape = (1, -1) + (1,) * (latents.ndim - 2)
        mean = torch.tensor(self.latents_mean, dtype=latents.dtype, device=latents.device).view(shape)
        return mean, torch.tensor(self.latents_std, dtype=latents.dtype, device=latents.device).view(shape)

    def process_in(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> the model's sampling space."""
        if self.latents_mean is not None:
            mean, std = self._channel_statistics(latents)
            return (latents - mean) * self.scale_factor / std
        if self.shift_factor:
            return (latents - self.shift_factor) * self.scale_factor
        return latents * self.scale_factor

    def process_out(self, latents: torch.Tensor) -> torch.Tensor:
        """The model's sampling space -> raw VAE latents."""
        if self.latents_mean is not None:
            mean, std = self._channel_statistics(latents)
            return latents * std / self.scale_factor + mean
        if self.shift_factor:
            return latents / self.scale_factor + self.shift_factor
        return latents / self.scale_factor

    def sampling_input(self, latents: torch.Tensor) -> torch.Tensor:
        """The latents a sampler starts from: `process_in`, except that an all-zero (empty) latent stays zero, as
        ComfyUI leaves the empty latent image unshifted."""
        return self.process_in(latents) if bool(torch.count_nonzero(latents)) else latents

    def fitted_empty(self, latents: torch.Tensor) -> torch.Tensor:
        """An empty (all-zero) latent with another channel count than this format's as zeros with this format's
        channels, as ComfyUI's samplers take EmptyLatentImage's 4 channels for a 16-channel model; its sides are
        rescaled from the 8x downscale such empty latents are made at to this format's (16x: Qwen-Image 2.1,
        FLUX.2), as ComfyUI rescales them. Other latents as they are."""
        if latents.ndim < 2 or latents.shape[1] == self.latent_channels or bool(torch.count_nonzero(latents)):
            return latents
        sides = latents.shape[2:]
        if self.spatial_downscale != EMPTY_LATENT_DOWNSCALE and latents.ndim >= 4:
            sides = (*sides[:-2], *(max(1, round(side * EMPTY_LATENT_DOWNSCALE / self.spatial_downscale))
                                    for side in sides[-2:]))
        return latents.new_zeros((latents.shape[0], self.latent_channels, *sides))

IDENTITY = LatentFormat()
