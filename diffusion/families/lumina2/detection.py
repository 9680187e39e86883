"""Which files are Lumina 2's: its NextDiT transformer alone, in the original layout (ComfyUI's
`lumina_2_model_bf16.safetensors`: fused `attention.qkv`, with or without `model.diffusion_model.`) or diffusers'
(`time_caption_embed.*`); Z-Image's transformer shares the original names and is told apart first (its caption
padding token); its Gemma 2 text encoder file; diffusers Lumina2Pipeline folders. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Collection

PIPELINES = ("Lumina2Pipeline", "Lumina2Text2ImgPipeline")
PREFIX = "model.diffusion_model."
ORIGINAL_PROBE = "context_refiner.0.attention.qkv.weight"
DIFFUSERS_PROBE = "time_caption_embed.caption_embedder.1.weight"


def is_diffusion_model(keys: Collection[str]) -> bool:
    return any(probe in keys for probe in (ORIGINAL_PROBE, PREFIX + ORIGINAL_PROBE, DIFFUSERS_PROBE))


def is_gemma2_encoder(keys: Collection[str]) -> bool:
    """A Gemma 2 language model's tensors (a norm before each feed-forward, which Qwen's models lack)."""
    return any(key.endswith("layers.0.pre_feedforward_layernorm.weight") for key in keys)
