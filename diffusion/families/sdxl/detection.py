"""Which files are SDXL's: a single-file base checkpoint has CLIP-L under `conditioner.embedders.0.transformer.` and
OpenCLIP-G under `conditioner.embedders.1.model.`, a refiner only OpenCLIP-G under `conditioner.embedders.0.model.`;
both have a UNet with the added (size and pooled text) embedding. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Collection

UNET = "model.diffusion_model."
CLIP_L = "conditioner.embedders.0.transformer.text_model."
BASE_CLIP_G = "conditioner.embedders.1.model."
REFINER_CLIP_G = "conditioner.embedders.0.model."
ADDED_EMBEDDING = UNET + "label_emb.0.0.weight"
PIPELINES = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline")


def is_checkpoint(keys: Collection[str]) -> bool:
    return ADDED_EMBEDDING in keys and (BASE_CLIP_G + "token_embedding.weight" in keys
                                        or REFINER_CLIP_G + "token_embedding.weight" in keys)


def is_refiner_checkpoint(keys: Collection[str]) -> bool:
    return REFINER_CLIP_G + "token_embedding.weight" in keys and CLIP_L + "embeddings.token_embedding.weight" \
        not in keys
