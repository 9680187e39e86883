"""LoRA files for Stable Diffusion 1.x/2.x (and SDXL, which keys its LoRAs the same way): kohya, A1111 and
diffusers/peft layouts read into peft keys (`unet.*`, `text_encoder.*`, `text_encoder_2.*`) by diffusers' own
reader, after each layer's alpha is folded into its factors (diffusers mis-keys per-layer alphas); ComfyUI's whole
differences (`.diff`, `.diff_b`) and layers keyed by the model's own names become deferred keys, resolved when the
LoRA is applied (`diffusion.lora_formats`). Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Any

import torch

from diffusion.lora_formats import fold_alphas, split_deferred


def read_lora(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
    """(state dict in peft keys plus deferred keys, network alphas: None once every alpha is folded in)."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    readable, deferred = split_deferred(fold_alphas(state))
    if not readable:
        return deferred, None
    converted, alphas = StableDiffusionLoraLoaderMixin.lora_state_dict(readable)
    return {**converted, **deferred}, alphas or None
