"""Which files are HiDream's: its transformer alone (ComfyUI's `hidream_i1_*.safetensors`: diffusers' names, with or
without `model.diffusion_model.`), its Llama 3.1 text encoder file (a Llama-architecture language model: no per-head
query norms as Qwen3 has, no query bias as Qwen2.5-VL has, no Gemma norms, no tekken.json as FLUX.2 [dev]'s
Mistral carries), diffusers HiDreamImagePipeline folders. Its CLIP-L, CLIP-G and T5 files are the ones SD3 reads.
Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Collection

from diffusion.encoders.tekken import TEKKEN_TENSOR

PIPELINES = ("HiDreamImagePipeline",)
PREFIX = "model.diffusion_model."
PROBE = "caption_projection.0.linear.weight"
LLAMA_PROBE = "layers.0.self_attn.q_proj.weight"
NOT_LLAMA = ("layers.0.self_attn.q_norm.weight", "layers.0.self_attn.q_proj.bias",
             "layers.0.pre_feedforward_layernorm.weight")


def is_diffusion_model(keys: Collection[str]) -> bool:
    return PROBE in keys or PREFIX + PROBE in keys


def is_llama_encoder(keys: Collection[str]) -> bool:
    """A Llama-architecture language model file (HiDream's Llama 3.1 8B Instruct)."""
    if TEKKEN_TENSOR in keys or any(key.endswith(NOT_LLAMA) for key in keys):
        return False
    return any(key.endswith(LLAMA_PROBE) for key in keys)
