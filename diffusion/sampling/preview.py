"""Cheap previews of latents while sampling: a fixed linear map from latent channels to RGB.

The sampling loop hands a `LatentPreview` to `report_progress`; nothing is computed unless a subscriber (the
server's websocket) asks for the image, so previews cost nothing when they are off or nobody listens.
The factors are the widely used least-squares fits of each VAE's latent space to RGB.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

# rows: latent channels; columns: R, G, B
SD1_LATENT_RGB = ((0.3512, 0.2297, 0.3227),
                  (0.3250, 0.4974, 0.2350),
                  (-0.2829, 0.1762, 0.2721),
                  (-0.2120, -0.2616, -0.7177))


@dataclass(frozen=True)
class LatentPreview:
    """The first image of a latent batch, turned into a small RGB picture on request."""

    latents: torch.Tensor  # [B, C, h, w]
    factors: tuple[tuple[float, float, float], ...] = SD1_LATENT_RGB

    def to_image(self) -> Image.Image:
        latent = self.latents[0].detach().float().cpu()
        if latent.shape[0] == len(self.factors):
            rgb = torch.einsum("chw,cr->hwr", latent, torch.tensor(self.factors))
            rgb = (rgb + 1.0) / 2.0
        else:  # a latent space without known factors: show three channels, each stretched to 0..1
            channels = latent[:3] if latent.shape[0] >= 3 else latent[:1].expand(3, -1, -1)
            low = channels.amin(dim=(1, 2), keepdim=True)
            high = channels.amax(dim=(1, 2), keepdim=True)
            rgb = ((channels - low) / (high - low).clamp_min(1e-6)).permute(1, 2, 0)
        return Image.fromarray((rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
