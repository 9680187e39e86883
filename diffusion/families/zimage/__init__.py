"""Z-Image (Turbo): a single-stream flow-matching DiT over FLUX's 16-channel VAE latents, Qwen3 for text. Parts:
`detection`, `loading` (transformer files, its Qwen3 file, diffusers folders), `text_encoding` (`ZImageClip`),
`sampling` (`ZImageSampling`), `lora`, `demo` (tiny models)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusion.families.zimage import detection, loading, lora, sampling
from diffusion.registry import Family


def _make_demo_models(models_dir: Path) -> Any:
    from diffusion.families.zimage.demo import make_zimage_demo_models

    return make_zimage_demo_models(models_dir)


FAMILY = Family(
    name=loading.FAMILY, title="Z-Image", sampling=sampling.ZImageSampling, make_demo_models=_make_demo_models,
    pipelines=detection.PIPELINES, load_folder=loading.load_folder, is_diffusion_model=detection.is_diffusion_model,
    load_diffusion_model=loading.load_diffusion_model, clip_types=loading.CLIP_TYPES,
    load_text_encoders=loading.load_text_encoders, read_lora=lora.read_lora)
