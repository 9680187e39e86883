"""Which files are FLUX's: a transformer alone in the diffusers layout (`x_embedder.weight`, ...) or in Black Forest
Labs' original layout (`double_blocks.*`, with or without `model.diffusion_model.`), its CLIP-L and T5 encoder
files, all-in-one checkpoints (ComfyUI's: the BFL transformer under `model.diffusion_model.`, the VAE under `vae.`,
CLIP-L and T5 under `text_encoders.`), and diffusers FluxPipeline folders. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Collection

PIPELINES = ("FluxPipeline",)
BFL_PREFIX = "model.diffusion_model."
DIFFUSERS_PROBE = "x_embedder.weight"
BFL_PROBE = "double_blocks.0.img_attn.qkv.weight"
CHECKPOINT_VAE_PREFIXES = ("vae.", "first_stage_model.")  # ComfyUI's FLUX checkpoints, and LDM-style ones
CLIP_L = "text_encoders.clip_l.transformer."
T5 = "text_encoders.t5xxl.transformer."


def is_bfl_layout(keys: Collection[str]) -> bool:
    return BFL_PROBE in keys or BFL_PREFIX + BFL_PROBE in keys


def is_diffusion_model(keys: Collection[str]) -> bool:
    """A FLUX transformer file (diffusers or original layout)."""
    return DIFFUSERS_PROBE in keys or is_bfl_layout(keys)


def checkpoint_vae_prefix(keys: Collection[str]) -> str | None:
    return next((prefix for prefix in CHECKPOINT_VAE_PREFIXES if prefix + "encoder.conv_in.weight" in keys), None)


def is_checkpoint(keys: Collection[str]) -> bool:
    """An all-in-one FLUX file: the BFL-layout transformer under `model.diffusion_model.` and a VAE."""
    return BFL_PREFIX + BFL_PROBE in keys and checkpoint_vae_prefix(keys) is not None
