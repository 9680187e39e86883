"""Which files are Qwen-Image's: its transformer alone (ComfyUI's `qwen_image*.safetensors`, diffusers' names, with
or without `model.diffusion_model.`), its VAE (Wan 2.1's architecture, in the original layout ComfyUI's
`qwen_image_vae.safetensors` has or in diffusers'), its Qwen2.5-VL text encoder file, diffusers QwenImagePipeline
folders. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Collection

PIPELINES = ("QwenImagePipeline",)
PREFIX = "model.diffusion_model."
PROBES = ("txt_norm.weight", "img_in.weight", "transformer_blocks.0.img_mod.1.weight")
ORIGINAL_VAE_PROBE = "decoder.middle.0.residual.0.gamma"
DIFFUSERS_VAE_PROBE = "decoder.mid_block.resnets.0.norm1.gamma"  # Wan's RMS norms have a gamma; SD's have none


def is_diffusion_model(keys: Collection[str]) -> bool:
    keys = set(keys)
    return all(probe in keys for probe in PROBES) or all(PREFIX + probe in keys for probe in PROBES)


def is_vae(keys: Collection[str]) -> bool:
    """A Wan-architecture VAE (Qwen-Image's; Wan 2.1's is the same network)."""
    return ORIGINAL_VAE_PROBE in keys or DIFFUSERS_VAE_PROBE in keys


def language_model_prefix(keys: Collection[str]) -> str | None:
    """The key prefix of a Qwen2.5-VL file's language model (`model.` as published and in ComfyUI's files,
    `model.language_model.` as transformers 5 saves it), or None when the file holds no Qwen2 language model
    (told by its biased query projection, which Qwen3 and Llama lack)."""
    for prefix in ("model.language_model.", "model.", ""):
        if prefix + "layers.0.self_attn.q_proj.bias" in keys and prefix + "embed_tokens.weight" in keys:
            return prefix
    return None
