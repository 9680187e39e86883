"""`comfy_extras.chainner_models.model_loading` for plugins: an UPSCALE_MODEL from a state dict, as
ImageUpscaleWithModel takes it (spandrel detects the architecture, as in ComfyUI)."""
from __future__ import annotations

from typing import Any

from diffusion.upscale import UpscaleModel, upscale_model_from_state_dict
from nodes.environment import current_environment


def load_state_dict(state_dict: dict[str, Any]) -> UpscaleModel:
    return upscale_model_from_state_dict(state_dict, "state dict", current_environment().device, "state_dict")
