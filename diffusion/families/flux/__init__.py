"""FLUX.1: a rectified-flow transformer over 2x2-packed 16-channel latents, CLIP-L and T5-XXL text encoders,
distilled guidance. Parts: `detection`, `loading` (diffusers folders, transformer files, text encoder files),
`text_encoding` (`FluxClip`), `sampling` (`FluxSampling`), `lora`, `demo` (tiny models)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusion.families.flux import detection, loading, lora, sampling
from diffusion.registry import Family


def _make_demo_models(models_dir: Path) -> Any:
    from diffusion.families.flux.demo import make_flux_demo_models

    return make_flux_demo_models(models_dir)


_VAE = loading.config()["vae"]

FAMILY = Family(
    name=loading.FAMILY, title="FLUX", sampling=sampling.FluxSampling, make_demo_models=_make_demo_models,
    pipelines=detection.PIPELINES, load_folder=loading.load_folder, is_checkpoint=detection.is_checkpoint,
    load_checkpoint=loading.load_checkpoint, is_diffusion_model=detection.is_diffusion_model,
    load_diffusion_model=loading.load_diffusion_model, clip_types=loading.CLIP_TYPES,
    load_text_encoders=loading.load_text_encoders, read_lora=lora.read_lora,
    # a VAE file alone with 16 latent channels is FLUX's ae.safetensors in practice (SD3 ships its VAE inside)
    standalone_vae=(_VAE["latent_channels"], _VAE["scaling_factor"], _VAE["shift_factor"]))
