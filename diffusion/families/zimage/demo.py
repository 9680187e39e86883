"""A tiny Z-Image (random weights) in the files ComfyUI users have: the transformer in its original layout
(fused q/k/v, `model.diffusion_model.`) in diffusion_models/, a Qwen3 text encoder (`model.*` keys) in
text_encoders/, beside the tiny FLUX VAE, which Z-Image shares. Knows nothing of nodes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffusion.families.flux.demo import DEMO_FLUX_VAE, make_flux_demo_models
from diffusion.families.zimage.text_encoding import TINY_QWEN_VOCAB_SIZE

DEMO_ZIMAGE_TRANSFORMER = "tiny-z-image-transformer.safetensors"
DEMO_ZIMAGE_TEXT_ENCODER = "tiny-qwen3.safetensors"
DEMO_ZIMAGE_VAE = DEMO_FLUX_VAE


@dataclass(frozen=True)
class TinyZImage:
    transformer: Any
    text_encoder: Any


def build_tiny_zimage(seed: int = 6) -> TinyZImage:
    from diffusers import ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=64, n_layers=1, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, cap_feat_dim=32, axes_dims=[8, 12, 12]).eval()
    text_encoder = Qwen3Model(Qwen3Config(
        vocab_size=TINY_QWEN_VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=3, head_dim=8,
        num_attention_heads=4, num_key_value_heads=2, rope_theta=1000000.0, rms_norm_eps=1e-6,
        max_position_embeddings=1024, tie_word_embeddings=True)).eval()
    return TinyZImage(transformer, text_encoder)


def original_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers ZImageTransformer2DModel state dict in the original layout ComfyUI's files use."""
    renames = {"all_final_layer.2-1.": "final_layer.", "all_x_embedder.2-1.": "x_embedder.",
               ".attention.to_out.0.": ".attention.out.", ".attention.norm_k.": ".attention.k_norm.",
               ".attention.norm_q.": ".attention.q_norm."}
    original: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".attention.to_k." in key or ".attention.to_v." in key:
            continue
        if ".attention.to_q." in key:
            parts = [state[key.replace(".to_q.", f".{name}.")] for name in ("to_q", "to_k", "to_v")]
            original["model.diffusion_model." + key.replace(".to_q.", ".qkv.")] = torch.cat(parts)
            continue
        for old, new in renames.items():
            key = key.replace(old, new)
        original["model.diffusion_model." + key] = value
    return original


def make_zimage_demo_models(models_dir: Path) -> TinyZImage:
    """The tiny Z-Image files (and the tiny FLUX VAE it shares); files already there are left alone."""
    from safetensors.torch import save_file

    models_dir = Path(models_dir)
    make_flux_demo_models(models_dir)
    models = build_tiny_zimage()
    for path, state in (
            (models_dir / "diffusion_models" / DEMO_ZIMAGE_TRANSFORMER, lambda: original_layout(
                models.transformer.state_dict())),
            (models_dir / "text_encoders" / DEMO_ZIMAGE_TEXT_ENCODER, lambda: {
                f"model.{key}": value for key, value in models.text_encoder.state_dict().items()})):
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({key: value.contiguous() for key, value in state().items()}, str(path))
    return models
