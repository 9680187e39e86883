"""`comfy.sampler_helpers` for plugins: the helpers packs call around their own sampling, over our core.

Not provided: `convert_cond`, `prepare_sampling`, `cleanup_models` and the hook helpers (our conditionings stay as
CONDITIONING holds them, and models are loaded by our model manager for each run).
"""
from __future__ import annotations

from typing import Any

import torch

from diffusion.contracts import Conditioning
from diffusion.sampling.custom import noise_mask_for


def prepare_mask(noise_mask: torch.Tensor, shape: torch.Size | tuple[int, ...], device: Any) -> torch.Tensor:
    """A noise mask ([B, H, W] or [B, 1, H, W]) at the latents' size (bilinear) for every channel of `shape`,
    repeated or cut to its batch, on `device`: what our core and ComfyUI make of a LATENT's noise mask."""
    return noise_mask_for(noise_mask, torch.Size(shape)).to(device)


def get_models_from_cond(cond: Conditioning, model_type: str) -> list[Any]:
    """The values of option `model_type` ("control", "gligen", ...) in the conditioning's entries, lists
    flattened; entries as CONDITIONING holds them ([embedding, options]) or as ComfyUI's processed dicts."""
    models: list[Any] = []
    for entry in cond:
        options = entry if isinstance(entry, dict) else entry[1]
        if model_type in options:
            value = options[model_type]
            models.extend(value if isinstance(value, list) else [value])
    return models


__all__ = ["get_models_from_cond", "prepare_mask"]
