"""`comfy.latent_formats` for plugins: ComfyUI's latent format classes for the families we run (SD1.x/SD2.x as
SD15, SDXL, SD3, Flux, and Wan21 for Qwen-Image's VAE), each a thin face over that family's
`diffusion.latent_format.LatentFormat`.

The numbers (scale and shift, the RGB preview factors) are the family's own, read from its config; the
classes only give them ComfyUI's names. Formats of families we do not run (Stable Cascade, video, audio) are
left out.
"""
from __future__ import annotations

import torch

from diffusion.families.flux.sampling import FluxSampling
from diffusion.families.qwenimage.sampling import QwenImageSampling
from diffusion.families.sd.sampling import SdSampling
from diffusion.families.sd3.sampling import Sd3Sampling
from diffusion.families.sdxl.sampling import SdxlSampling
from diffusion.latent_format import IDENTITY
from diffusion.latent_format import LatentFormat as FamilyFormat


class LatentFormat:
    """ComfyUI's interface: `scale_factor`, `shift_factor`, `latent_channels`, `latent_dimensions`, the preview
    factors `latent_rgb_factors` (rows: channels) and `latent_rgb_factors_bias`, and `process_in`/`process_out`
    between raw VAE latents and the model's sampling space."""

    family_format: FamilyFormat = IDENTITY
    latent_channels = 4
    latent_dimensions = 2
    taesd_decoder_name: str | None = None

    def __init__(self) -> None:
        self.scale_factor = self.family_format.scale_factor
        self.shift_factor = self.family_format.shift_factor
        factors = self.family_format.rgb_factors
        bias = self.family_format.rgb_bias
        self.latent_rgb_factors = [list(row) for row in factors] if factors is not None else None
        self.latent_rgb_factors_bias = list(bias) if bias is not None else None
        mean, std = self.family_format.latents_mean, self.family_format.latents_std
        if mean is not None:  # per-channel statistics, shaped as ComfyUI's (channels on dim 1)
            shape = (1, -1) + (1,) * self.latent_dimensions
            self.latents_mean, self.latents_std = torch.tensor(mean).view(shape), torch.tensor(std).view(shape)

    def as_family_format(self) -> FamilyFormat:
        """Our latent format with this object's (possibly changed) numbers."""
        factors = self.latent_rgb_factors
        bias = self.latent_rgb_factors_bias
        mean, std = getattr(self, "latents_mean", None), getattr(self, "latents_std", None)
        return FamilyFormat(float(self.scale_factor), float(self.shift_factor),
                            tuple(tuple(row) for row in factors) if factors is not None else None,
                            tuple(bias) if bias is not None else None, self.latent_channels,
                            tuple(mean.flatten().tolist()) if mean is not None else None,
                            tuple(std.flatten().tolist()) if std is not None else None)

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        return self.as_family_format().process_in(latent)

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        return self.as_family_format().process_out(latent)


class SD15(LatentFormat):
    """SD1.x and SD2.x (ComfyUI's SD15 takes another scale factor as its argument)."""

    family_format = SdSampling.latent_format
    taesd_decoder_name = "taesd_decoder"

    def __init__(self, scale_factor: float | None = None) -> None:
        super().__init__()
        if scale_factor is not None:
            self.scale_factor = scale_factor


class SDXL(LatentFormat):
    family_format = SdxlSampling.latent_format
    taesd_decoder_name = "taesdxl_decoder"


class SD3(LatentFormat):
    family_format = Sd3Sampling.latent_format
    latent_channels = 16
    taesd_decoder_name = "taesd3_decoder"


class Flux(SD3):
    family_format = FluxSampling.latent_format
    latent_channels = 16
    taesd_decoder_name = "taef1_decoder"


class Wan21(LatentFormat):
    """Wan 2.1's VAE latents, which Qwen-Image samples in: per-channel mean and std (ComfyUI's video shape, one
    frame on dim 2; our LATENT keeps the image shape, and the statistics broadcast over either)."""

    family_format = QwenImageSampling.latent_format
    latent_channels = 16
    latent_dimensions = 3
