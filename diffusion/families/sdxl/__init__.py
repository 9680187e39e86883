"""Stable Diffusion XL, base and refiner: a UNet with added size/pooled-text conditioning, CLIP-L and OpenCLIP-G
text encoders, KL autoencoder. Parts: `detection`, `loading` (single files and diffusers folders),
`text_encoding` (`SdxlClip`), `sampling` (`SdxlSampling`), `lora`, `demo` (tiny models)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusion.families.sdxl import detection, loading, lora, sampling
from diffusion.registry import Family


def _make_demo_models(models_dir: Path) -> Any:
    from diffusion.families.sdxl.demo import make_sdxl_demo_models

    return make_sdxl_demo_models(models_dir)


FAMILY = Family(
    name=loading.FAMILY, title="SDXL", sampling=sampling.SdxlSampling, make_demo_models=_make_demo_models,
    is_checkpoint=detection.is_checkpoint, load_checkpoint=loading.load_checkpoint, pipelines=detection.PIPELINES,
    load_folder=loading.load_folder, clip_types=loading.CLIP_TYPES, load_text_encoders=loading.load_text_encoders,
    read_lora=lora.read_lora)
