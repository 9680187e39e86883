"""Resizing [batch, channels, height, width] tensors the way ComfyUI's upscale nodes do (shared by image and
latent nodes): optional centre crop to the target aspect ratio, then interpolation.

Knows nothing of nodes' inputs, files or models.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

TENSOR_METHODS = ("nearest-exact", "bilinear", "area", "bicubic")
IMAGE_METHODS = TENSOR_METHODS + ("lanczos",)
LATENT_METHODS = TENSOR_METHODS + ("bislerp",)
CROP_MODES = ("disabled", "center")


def target_size(height: int, width: int, new_width: int, new_height: int) -> tuple[int, int]:
    """(height, width) to scale to; a 0 side follows the other side's aspect ratio, both 0 keep the size."""
    if new_width == 0 and new_height == 0:
        return height, width
    if new_width == 0:
        new_width = max(1, round(width * new_height / height))
    elif new_height == 0:
        new_height = max(1, round(height * new_width / width))
    return new_height, new_width


def center_crop_to_aspect(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    old_height, old_width = samples.shape[-2:]
    old_aspect, new_aspect = old_width / old_height, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
    return samples[..., y:old_height - y, x:old_width - x]


def _lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    from PIL import Image

    resized = []
    for image in samples.movedim(1, -1).clamp(0, 1).cpu().numpy():
        # truncated to 8 bits, as ComfyUI's lanczos does
        pil = Image.fromarray((image * 255).astype(np.uint8).squeeze())
        array = np.asarray(pil.resize((width, height), Image.Resampling.LANCZOS)).astype(np.float32) / 255
        resized.append(torch.from_numpy(array.reshape(height, width, -1)))
    return torch.stack(resized).movedim(-1, 1).to(samples.dtype)


def upscale(samples: torch.Tensor, width: int, height: int, method: str, crop: str) -> torch.Tensor:
    """Resize [B, C, H, W] to width x height (0 keeps the aspect ratio) with `method`, cropping first if asked."""
    new_height, new_width = target_size(samples.shape[-2], samples.shape[-1], width, height)
    if crop == "center":
        samples = center_crop_to_aspect(samples, new_width, new_height)
    if method == "lanczos":
        return _lanczos(samples, new_width, new_height)
    if method == "bislerp":
        from diffusion.sampling.unet_patches import bislerp

        return bislerp(samples, new_width, new_height)
    if method not in TENSOR_METHODS:
        raise ValueError(f"upscale_method: unknown method {method!r}")
    return F.interpolate(samples, size=(new_height, new_width), mode=method)
