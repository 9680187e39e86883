"""FLUX.2 [klein]: a double- and single-stream flow-matching transformer over FLUX.2's patched 128-channel latents,
Qwen3 for text. Parts: `detection`, `loading` (transformer, VAE and Qwen3 files, diffusers folders; the VAE is a
`diffusion.components.PatchedVae`), `text_encoding` (`Flux2Clip`), `sampling` (`Flux2Sampling`), `lora`, `demo`
(tiny models)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusion.families.flux2 import detection, loading, lora, sampling
from diffusion.registry import Family


def _make_demo_models(models_dir: Path) -> Any:
    from diffusion.families.flux2.demo import make_flux2_demo_models

    return make_flux2_demo_models(models_dir)


FAMILY = Family(
    name=loading.FAMILY, title="FLUX.2", sampling=sampling.Flux2Sampling, make_demo_models=_make_demo_models,
    pipelines=detection.PIPELINES, load_folder=loading.load_folder, is_diffusion_model=detection.is_diffusion_model,
    load_diffusion_model=loading.load_diffusion_model, clip_types=loading.CLIP_TYPES,
    load_text_encoders=loading.load_text_encoders, read_lora=lora.read_lora,
    is_vae=detection.is_vae, load_vae=loading.load_vae)
