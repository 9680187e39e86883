"""Which files are Chroma's: its transformer alone, in the diffusers layout or Lodestone's original one (FLUX's block
names without the per-block modulation, plus the `distilled_guidance_layer` approximator; with or without
`model.diffusion_model.`), and diffusers ChromaPipeline folders. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Collection

PIPELINES = ("ChromaPipeline",)
PREFIX = "model.diffusion_model."
PROBE = "distilled_guidance_layer.in_proj.weight"  # the approximator, in both layouts


def is_diffusion_model(keys: Collection[str]) -> bool:
    return PROBE in keys or PREFIX + PROBE in keys
