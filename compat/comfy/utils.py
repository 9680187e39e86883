"""`comfy.utils` for plugins: the progress bar (reporting through the engine) and image resizing."""
from __future__ import annotations

import torch

from engine.progress import ProgressBar

__all__ = ["ProgressBar", "common_upscale", "MAX_RESOLUTION"]

MAX_RESOLUTION = 16384


def common_upscale(samples: torch.Tensor, width: int, height: int, upscale_method: str, crop: str) -> torch.Tensor:
    """Resize a [B, C, H, W] tensor like ComfyUI: optional centre crop to the target aspect, then interpolate."""
    if crop == "center":
        old_height, old_width = samples.shape[-2], samples.shape[-1]
        old_aspect, new_aspect = old_width / old_height, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
        samples = samples.narrow(-2, y, old_height - y * 2).narrow(-1, x, old_width - x * 2)
    if upscale_method == "lanczos":
        return _lanczos(samples, width, height)
    mode = {"nearest-exact": "nearest-exact", "bilinear": "bilinear", "area": "area", "bicubic": "bicubic",
            "bislerp": "bilinear"}.get(upscale_method)
    if mode is None:
        raise ValueError(f"unknown upscale method {upscale_method!r}")
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return torch.nn.functional.interpolate(samples, size=(height, width), mode=mode, **kwargs)


def _lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    resized = []
    for image in samples.movedim(1, -1).float().cpu():
        array = (image.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        pil = Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array)
        result = np.asarray(pil.resize((width, height), Image.Resampling.LANCZOS)).astype(np.float32) / 255.0
        resized.append(torch.from_numpy(result if result.ndim == 3 else result[..., None]))
    return torch.stack(resized).movedim(-1, 1).to(samples.device, samples.dtype)
