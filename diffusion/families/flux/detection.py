"""Which files are FLUX's: a transformer alone in the diffusers layout (`x_embedder.weight`, ...) or in Black Forest
Labs' original layout (`double_blocks.*`, with or without `model.diffusion_model.`), its CLIP-L and T5 encoder
files, and diffusers FluxPipeline folders. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Collection

PIPELINES = ("FluxPipeline",)
BFL_PREFIX = "model.diffusion_model."
DIFFUSERS_PROBE = "x_embedder.weight"
BFL_PROBE = "double_blocks.0.img_attn.qkv.weight"


def is_bfl_layout(keys: Collection[str]) -> bool:
    return BFL_PROBE in keys or BFL_PREFIX + BFL_PROBE in keys


def is_diffusion_model(keys: Collection[str]) -> bool:
    """A FLUX transformer file (diffusers or original layout)."""
    return DIFFUSERS_PROBE in keys or is_bfl_layout(keys)
