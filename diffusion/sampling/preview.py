"""Cheap previews of latents while sampling: a fixed linear map from latent channels to RGB.

The sampling loop hands a `LatentPreview` to `report_progress`; nothing is computed unless a subscriber (the
server's websocket) asks for the image, so previews cost nothing when they are off or nobody listens.
The latents are in the model's sampling space and the factors are its latent format's (`diffusion.latent_format`):
the widely used least-squares fits of each family's latent space to RGB, with a bias where the family has one,
as ComfyUI's Latent2RGB previews apply them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from diffusion.latent_format import IDENTITY, LatentFormat


@dataclass(frozen=True)
class LatentPreview:
    """The first image of a latent batch (model space), turned into a small RGB picture on request."""

    latents: torch.Tensor  # [B, C, h, w]
    latent_format: LatentFormat = IDENTITY

    def to_image(self) -> Image.Image:
        latent = self.latents[0].detach().float().cpu()
        factors = self.latent_format.rgb_factors
        if factors is not None and latent.shape[0] == len(factors):
            rgb = torch.einsum("chw,cr->hwr", latent, torch.tensor(factors))
            if self.latent_format.rgb_bias is not None:
                rgb = rgb + torch.tensor(self.latent_format.rgb_bias)
            rgb = (rgb + 1.0) / 2.0
        else:  # a latent space without known factors: show three channels, each stretched to 0..1
            channels = latent[:3] if latent.shape[0] >= 3 else latent[:1].expand(3, -1, -1)
            low = channels.amin(dim=(1, 2), keepdim=True)
            high = channels.amax(dim=(1, 2), keepdim=True)
            rgb = ((channels - low) / (high - low).clamp_min(1e-6)).permute(1, 2, 0)
        return Image.fromarray((rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
