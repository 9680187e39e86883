"""LoRA files for FLUX: kohya (`lora_unet_double_blocks_*`, ...), XLabs and diffusers/peft layouts read into peft
keys (`transformer.*`, `text_encoder.*`) with their network alphas by diffusers' FLUX reader. Knows nothing of
nodes or files."""
from __future__ import annotations

from typing import Any

import torch


def read_lora(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
    """(state dict in peft keys, network alphas) of a LoRA file's tensors."""
    from diffusers.loaders import FluxLoraLoaderMixin

    return FluxLoraLoaderMixin.lora_state_dict(state, return_alphas=True)
