"""Chroma: a FLUX.1-schnell-derived transformer whose per-block modulations come from a small approximator
network instead of CLIP's pooled output and a guidance embedding; T5-XXL alone for text; FLUX's VAE. Parts:
`detection`, `loading` (transformer files, its T5 file, diffusers folders), `text_encoding` (`ChromaClip`),
`sampling` (`ChromaSampling`, FLUX's with the text attention mask), `lora`, `demo` (tiny models)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusion.families.chroma import detection, loading, lora, sampling
from diffusion.registry import Family


def _make_demo_models(models_dir: Path) -> Any:
    from diffusion.families.chroma.demo import make_chroma_demo_models

    return make_chroma_demo_models(models_dir)


FAMILY = Family(
    name=loading.FAMILY, title="Chroma", sampling=sampling.ChromaSampling, make_demo_models=_make_demo_models,
    pipelines=detection.PIPELINES, load_folder=loading.load_folder, is_diffusion_model=detection.is_diffusion_model,
    load_diffusion_model=loading.load_diffusion_model, clip_types=loading.CLIP_TYPES,
    load_text_encoders=loading.load_text_encoders, read_lora=lora.read_lora)
