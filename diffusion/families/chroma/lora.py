"""LoRA files for Chroma: its transformer's blocks have FLUX's module names, so FLUX's layouts (kohya, XLabs,
diffusers/peft) read the same way, by diffusers' FLUX reader, into peft keys (`transformer.*`). Knows nothing of
nodes or files."""
from __future__ import annotations

from typing import Any

import torch


def read_lora(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
    """(state dict in peft keys, network alphas) of a LoRA file's tensors."""
    from diffusers.loaders import FluxLoraLoaderMixin

    return FluxLoraLoaderMixin.lora_state_dict(state, return_alphas=True)
