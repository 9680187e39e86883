"""Stable Diffusion 1.x and 2.x: UNet, CLIP (SD1) or OpenCLIP (SD2) text encoder, KL autoencoder; noise or v
prediction. Parts: `detection` (which checkpoint a file is), `loading` (single files and diffusers folders),
`text_encoding` (`SdClip`), `sampling` (the discrete-schedule hooks), `lora` (LoRA keys), `demo` (tiny models)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusion.families.sd import detection, loading, lora, sampling
from diffusion.registry import Family


def _make_demo_models(models_dir: Path) -> Any:
    from diffusion.families.sd.demo import make_demo_models, make_editing_models

    make_editing_models(models_dir)
    return make_demo_models(models_dir)


FAMILY = Family(
    name=loading.FAMILY, title="Stable Diffusion 1.x/2.x", sampling=sampling.SdSampling,
    make_demo_models=_make_demo_models, is_checkpoint=detection.is_checkpoint,
    load_checkpoint=loading.load_checkpoint, pipelines=loading.FOLDER_PIPELINES, load_folder=loading.load_folder,
    clip_types=loading.CLIP_TYPES, load_text_encoders=loading.load_text_encoders,
    read_lora=lora.read_lora, standalone_vae=(4, loading.version_config("sd1")["vae"]["scale_factor"], 0.0))
