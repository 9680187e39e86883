"""`comfy.clip_vision` for plugins: ComfyUI's image encoder loading and preprocessing, on our own
(`diffusion.encoders.clip_vision`).

`load(path)` loads a clip_vision file as CLIPVisionLoader does (same model cache); the value's
`encode_image(image, crop=True)` gives ComfyUI's output (`image_embeds`, `last_hidden_state`,
`penultimate_hidden_states`, by attribute or key). `ClipVisionModel` and `Output` answer `isinstance` for our values.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from comfy.sd import model_path
from diffusion.encoders.clip_vision import (
    CLIP_MEAN,
    CLIP_STD,
    ClipVisionEncoder,
    ClipVisionOutput,
    load_clip_vision,
    preprocess,
)
from nodes.environment import current_environment

Output = ClipVisionOutput


class _OurEncoder(type):
    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, ClipVisionEncoder)


class ClipVisionModel(metaclass=_OurEncoder):
    """ComfyUI's ClipVisionModel class, for `isinstance` checks: true of our CLIP_VISION values."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("comfy.clip_vision.ClipVisionModel(...): building one from a JSON config is not supported "
                           "by nodeflow; load a clip_vision file with comfy.clip_vision.load")


def load(ckpt_path: str | os.PathLike[str]) -> ClipVisionEncoder:
    """ComfyUI's `clip_vision.load`: the image encoder of a clip_vision file inside the models folder, as
    CLIPVisionLoader loads it (cached by the model manager)."""
    path = model_path(ckpt_path, "comfy.clip_vision.load", "ckpt_path")
    models = current_environment().models
    return models.cached("clip-vision", path, "ckpt_path", lambda: load_clip_vision(path, models.place, "ckpt_path"))


def clip_preprocess(image: torch.Tensor, size: int = 224, mean: Sequence[float] = CLIP_MEAN,
                    std: Sequence[float] = CLIP_STD, crop: bool = True) -> torch.Tensor:
    """ComfyUI's `clip_preprocess`: IMAGE [B, H, W, C] -> normalised [B, 3, size, size] (bicubic antialiased
    resize, short side and centre crop with `crop`, rounded to 8 bits), on the image's device."""
    return preprocess(image.cpu(), size, tuple(mean), tuple(std), crop).to(image.device)
