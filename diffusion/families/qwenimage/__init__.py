"""Qwen-Image: a double-stream flow-matching MMDiT over the latents of its own VAE (Wan 2.1's architecture), Qwen2.5-VL
for text. Parts: `detection`, `loading` (transformer, VAE and Qwen2.5-VL files, diffusers folders; the VAE is a
`diffusion.components.FrameVae`), `text_encoding` (`QwenImageClip`), `sampling` (`QwenImageSampling`), `lora`,
`demo` (tiny models)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusion.families.qwenimage import detection, loading, lora, sampling
from diffusion.registry import Family


def _make_demo_models(models_dir: Path) -> Any:
    from diffusion.families.qwenimage.demo import make_qwen_image_demo_models

    return make_qwen_image_demo_models(models_dir)


FAMILY = Family(
    name=loading.FAMILY, title="Qwen-Image", sampling=sampling.QwenImageSampling, make_demo_models=_make_demo_models,
    pipelines=detection.PIPELINES, load_folder=loading.load_folder, is_diffusion_model=detection.is_diffusion_model,
    load_diffusion_model=loading.load_diffusion_model, clip_types=loading.CLIP_TYPES,
    load_text_encoders=loading.load_text_encoders, read_lora=lora.read_lora,
    is_vae=detection.is_vae, load_vae=loading.load_vae)
