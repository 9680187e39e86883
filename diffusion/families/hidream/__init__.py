"""HiDream-I1: a sparse (mixture-of-experts) flow-matching transformer over FLUX's 16-channel VAE latents, with four
text encoders (CLIP-L and CLIP-G pooled, T5-XXL, Llama 3.1 8B Instruct). Parts: `detection`, `loading`
(transformer files, the four text encoder files, diffusers folders), `text_encoding` (`HiDreamClip`), `sampling`
(`HiDreamSampling`), `lora`, `demo` (tiny models)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusion.families.hidream import detection, loading, lora, sampling
from diffusion.registry import Family


def _make_demo_models(models_dir: Path) -> Any:
    from diffusion.families.hidream.demo import make_hidream_demo_models

    return make_hidream_demo_models(models_dir)


FAMILY = Family(
    name=loading.FAMILY, title="HiDream", sampling=sampling.HiDreamSampling, make_demo_models=_make_demo_models,
    pipelines=detection.PIPELINES, load_folder=loading.load_folder, is_diffusion_model=detection.is_diffusion_model,
    load_diffusion_model=loading.load_diffusion_model, clip_types=loading.CLIP_TYPES,
    load_text_encoders=loading.load_text_encoders, read_lora=lora.read_lora)
