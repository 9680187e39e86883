"""A tiny Chroma (random weights) in the files ComfyUI users have: the transformer in diffusion_models/, beside the
tiny FLUX's T5 and VAE files, which Chroma shares with FLUX.1. Knows nothing of nodes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffusion.families.flux.demo import DEMO_FLUX_T5, DEMO_FLUX_VAE, make_flux_demo_models
from diffusion.families.flux.loading import flux_rope_axes

DEMO_CHROMA_TRANSFORMER = "tiny-chroma-transformer.safetensors"
DEMO_CHROMA_T5, DEMO_CHROMA_VAE = DEMO_FLUX_T5, DEMO_FLUX_VAE


def tiny_chroma_transformer(seed: int = 5) -> Any:
    """Seeded tiny ChromaTransformer2DModel (FLUX's tiny sizes, a small approximator)."""
    from diffusers import ChromaTransformer2DModel

    torch.manual_seed(seed)
    head_dim = 32
    return ChromaTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=head_dim,
        num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=flux_rope_axes(head_dim),
        approximator_num_channels=16, approximator_hidden_dim=64, approximator_layers=2).eval()


def make_chroma_demo_models(models_dir: Path) -> Any:
    """The tiny Chroma transformer (and the tiny FLUX files it shares); files already there are left alone."""
    from safetensors.torch import save_file

    models_dir = Path(models_dir)
    make_flux_demo_models(models_dir)
    transformer = tiny_chroma_transformer()
    path = models_dir / "diffusion_models" / DEMO_CHROMA_TRANSFORMER
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({key: value.contiguous() for key, value in transformer.state_dict().items()}, str(path))
    return transformer
