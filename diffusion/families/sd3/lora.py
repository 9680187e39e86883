"""LoRA files for SD3: diffusers/peft and kohya-style keys read into peft keys (`transformer.*`, `text_encoder.*`,
`text_encoder_2.*`) by diffusers' SD3 reader, which gives no network alphas. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Any

import torch


def read_lora(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
    """(state dict in peft keys, network alphas: None) of a LoRA file's tensors."""
    from diffusers.loaders import SD3LoraLoaderMixin

    return SD3LoraLoaderMixin.lora_state_dict(state), None
