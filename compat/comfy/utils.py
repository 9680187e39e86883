"""`comfy.utils` for plugins: the progress bar (reporting through the engine) and image resizing."""
from __future__ import annotations

import torch

from engine.progress import ProgressBar
from nodes import resize

__all__ = ["ProgressBar", "common_upscale", "MAX_RESOLUTION"]

MAX_RESOLUTION = 16384


def common_upscale(samples: torch.Tensor, width: int, height: int, upscale_method: str, crop: str) -> torch.Tensor:
    """Resize a [B, C, H, W] tensor like ComfyUI: optional centre crop to the target aspect, then interpolate
    (nearest-exact, bilinear, area, bicubic, bislerp or lanczos); the engine's own resize."""
    return resize.upscale(samples, width, height, upscale_method, crop)
