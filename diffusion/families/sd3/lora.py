"""LoRA files for SD3: diffusers/peft and kohya-style keys read into peft keys (`transformer.*`, `text_encoder.*`,
`text_encoder_2.*`) by diffusers' SD3 reader, which ignores `.alpha` keys: each layer's alpha is folded into its
factors first (`diffusion.lora_formats.fold_alphas`), as ComfyUI scales it. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Any

import torch

from diffusion.lora_formats import fold_alphas


def read_lora(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
    """(state dict in peft keys, network alphas: None, each layer's alpha folded in) of a LoRA file's tensors."""
    from diffusers.loaders import SD3LoraLoaderMixin

    return SD3LoraLoaderMixin.lora_state_dict(fold_alphas(state)), None
