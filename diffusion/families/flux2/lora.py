"""LoRA files for FLUX.2: diffusers/peft and the layouts diffusers' FLUX.2 reader converts (ComfyUI's and BFL's
`diffusion_model.*`), into peft keys (`transformer.*`). Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Any

import torch


def read_lora(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
    """(state dict in peft keys, network alphas: None, the reader has applied them) of a LoRA file's tensors."""
    from diffusers.loaders import Flux2LoraLoaderMixin

    return Flux2LoraLoaderMixin.lora_state_dict(state), None
