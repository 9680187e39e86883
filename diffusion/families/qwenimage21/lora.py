"""LoRA files for Qwen-Image 2.1: diffusers/peft and the layouts diffusers' Qwen-Image reader converts (kohya's
`lora_unet_*`, ComfyUI's and musubi's `diffusion_model.*`, with their alphas folded into the weights), into peft keys
(`transformer.*`); QwenImage21Pipeline loads its LoRAs with the same reader. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Any

import torch


def read_lora(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
    """(state dict in peft keys, network alphas: None, the reader has applied them) of a LoRA file's tensors."""
    from diffusers.loaders import QwenImageLoraLoaderMixin

    return QwenImageLoraLoaderMixin.lora_state_dict(state), None
