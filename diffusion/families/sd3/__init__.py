"""Stable Diffusion 3 / 3.5: an MMDiT transformer sampled by rectified flow, CLIP-L, CLIP-G and an optional T5-XXL,
a 16-channel VAE with shift and scale. Parts: `detection`, `loading` (folders, single files, text encoder files),
`text_encoding` (`Sd3Clip`), `sampling` (`Sd3Sampling`), `lora`, `demo` (tiny models)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusion.families.sd3 import detection, loading, lora, sampling
from diffusion.registry import Family


def _make_demo_models(models_dir: Path) -> Any:
    from diffusion.families.sd3.demo import make_sd3_demo_models

    return make_sd3_demo_models(models_dir)


FAMILY = Family(
    name=loading.FAMILY, title="SD3", sampling=sampling.Sd3Sampling, make_demo_models=_make_demo_models,
    is_checkpoint=detection.is_checkpoint, load_checkpoint=loading.load_checkpoint, pipelines=detection.PIPELINES,
    load_folder=loading.load_folder, clip_types=loading.CLIP_TYPES, load_text_encoders=loading.load_text_encoders,
    read_lora=lora.read_lora)
