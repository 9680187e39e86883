"""LoRA files for HiDream: diffusers/peft and the layouts diffusers' HiDream reader converts, into peft keys
(`transformer.*`) with their network alphas. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Any

import torch


def read_lora(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
    """(state dict in peft keys, network alphas: None, the reader applies them) of a LoRA file's tensors."""
    from diffusers.loaders import HiDreamImageLoraLoaderMixin

    return HiDreamImageLoraLoaderMixin.lora_state_dict(state), None
