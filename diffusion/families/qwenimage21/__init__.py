"""Qwen-Image 2.1: a single-stream block-causal flow-matching transformer over the unpatched 64-channel latents of
its own 16x RGBA VAE, Qwen3-VL for text. Parts: `detection`, `loading` (transformer, VAE and Qwen3-VL files,
diffusers folders; the VAE is a `diffusion.components.FrameVae`, ComfyUI's layout of it read through
`diffusion.families.wan22_vae_layout`), `text_encoding` (`QwenImage21Clip`), `sampling` (`QwenImage21Sampling`),
`lora`, `demo` (tiny models)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusion.families.qwenimage21 import detection, loading, lora, sampling
from diffusion.registry import Family


def _make_demo_models(models_dir: Path) -> Any:
    from diffusion.families.qwenimage21.demo import make_qwen_image21_demo_models

    return make_qwen_image21_demo_models(models_dir)


# no CLIP type of its own: ComfyUI loads Qwen3-VL under type qwen_image (`diffusion.loading.FILE_ROLE_FAMILIES`)
FAMILY = Family(
    name=loading.FAMILY, title="Qwen-Image 2.1", sampling=sampling.QwenImage21Sampling,
    make_demo_models=_make_demo_models, pipelines=detection.PIPELINES, load_folder=loading.load_folder,
    is_diffusion_model=detection.is_diffusion_model, load_diffusion_model=loading.load_diffusion_model,
    load_text_encoders=loading.load_text_encoders, read_lora=lora.read_lora, is_vae=detection.is_vae,
    load_vae=loading.load_vae)
