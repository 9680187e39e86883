"""Which files are SD3's (MMDiT): a single file with the transformer's joint blocks (with or without the
`model.diffusion_model.` prefix), its text encoders under `text_encoders.*` and its VAE under `first_stage_model.`;
diffusers folders saved from the SD3 pipelines. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Collection

PIPELINES = ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline")
TRANSFORMER_PREFIX = "model.diffusion_model."
PROBE = "joint_blocks.0.context_block.adaLN_modulation.1.bias"
CLIP_L = "text_encoders.clip_l.transformer."
CLIP_G = "text_encoders.clip_g.transformer."
T5 = "text_encoders.t5xxl.transformer."


def is_checkpoint(keys: Collection[str]) -> bool:
    return TRANSFORMER_PREFIX + PROBE in keys or PROBE in keys
