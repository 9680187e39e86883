"""Which files are Z-Image's: its transformer alone in the original layout (ComfyUI's `z_image_*.safetensors`: fused
`attention.qkv`, with or without `model.diffusion_model.`) or diffusers' (`all_x_embedder.2-1.*`), told by the
caption padding token NextDiT's other models lack; its Qwen3 text encoder file; diffusers ZImagePipeline folders.
Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Collection, Mapping

import torch

PIPELINES = ("ZImagePipeline",)
PREFIX = "model.diffusion_model."
PROBE = "cap_pad_token"


def is_diffusion_model(keys: Collection[str]) -> bool:
    return PROBE in keys or PREFIX + PROBE in keys


def is_qwen3_encoder(state: Mapping[str, torch.Tensor]) -> bool:
    """A Qwen3 language model's tensors (`model.layers.*.self_attn.q_norm`: Qwen3's per-head query norm)."""
    return any(key.endswith("layers.0.self_attn.q_norm.weight") for key in state)
