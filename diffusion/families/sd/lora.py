"""LoRA files for Stable Diffusion 1.x/2.x (and SDXL, which keys its LoRAs the same way): kohya, A1111 and
diffusers/peft layouts read into peft keys (`unet.*`, `text_encoder.*`, `text_encoder_2.*`) by diffusers' own
reader. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Any

import torch


def read_lora(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
    """(state dict in peft keys, network alphas) of a LoRA file's tensors."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    return StableDiffusionLoraLoaderMixin.lora_state_dict(state)
