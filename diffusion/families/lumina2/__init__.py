"""Lumina Image 2.0: a NextDiT flow-matching transformer over FLUX's 16-channel VAE latents, Gemma 2 for text.
Parts: `detection`, `loading` (transformer files, its Gemma 2 file, diffusers folders), `text_encoding`
(`Lumina2Clip`), `sampling` (`Lumina2Sampling`), `lora`, `demo` (tiny models)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusion.families.lumina2 import detection, loading, lora, sampling
from diffusion.registry import Family


def _make_demo_models(models_dir: Path) -> Any:
    from diffusion.families.lumina2.demo import make_lumina2_demo_models

    return make_lumina2_demo_models(models_dir)


FAMILY = Family(
    name=loading.FAMILY, title="Lumina 2", sampling=sampling.Lumina2Sampling, make_demo_models=_make_demo_models,
    pipelines=detection.PIPELINES, load_folder=loading.load_folder, is_diffusion_model=detection.is_diffusion_model,
    load_diffusion_model=loading.load_diffusion_model, clip_types=loading.CLIP_TYPES,
    load_text_encoders=loading.load_text_encoders, read_lora=lora.read_lora)
