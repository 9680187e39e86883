"""A tiny Lumina 2 (random weights) in the files ComfyUI users have: the transformer in its original layout (fused
q/k/v, `model.diffusion_model.`) in diffusion_models/, a Gemma 2 text encoder (`model.*` keys) in text_encoders/,
beside the tiny FLUX VAE, which Lumina 2 shares. Knows nothing of nodes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffusion.families.flux.demo import DEMO_FLUX_VAE, make_flux_demo_models
from diffusion.families.lumina2.text_encoding import TINY_GEMMA_VOCAB_SIZE

DEMO_LUMINA2_TRANSFORMER = "tiny-lumina2-transformer.safetensors"
DEMO_LUMINA2_TEXT_ENCODER = "tiny-gemma2.safetensors"
DEMO_LUMINA2_VAE = DEMO_FLUX_VAE
# diffusers' names -> the original layout's (the inverse of diffusers' converter), most specific first
_ORIGINAL_NAMES = (("time_caption_embed.caption_embedder.", "cap_embedder."),
                   ("time_caption_embed.timestep_embedder.linear_1.", "t_embedder.mlp.0."),
                   ("time_caption_embed.timestep_embedder.linear_2.", "t_embedder.mlp.2."),
                   ("norm_out.linear_1.", "final_layer.adaLN_modulation.1."),
                   ("norm_out.linear_2.", "final_layer.linear."), (".attn.to_out.0.", ".attention.out."),
                   (".attn.norm_q.", ".attention.q_norm."), (".attn.norm_k.", ".attention.k_norm."),
                   (".feed_forward.linear_1.", ".feed_forward.w1."), (".feed_forward.linear_2.", ".feed_forward.w2."),
                   (".feed_forward.linear_3.", ".feed_forward.w3."), (".norm1.linear.", ".adaLN_modulation.1."),
                   (".norm1.norm.", ".attention_norm1."), (".norm1.", ".attention_norm1."),
                   (".norm2.", ".attention_norm2."))


@dataclass(frozen=True)
class TinyLumina2:
    transformer: Any
    text_encoder: Any


def build_tiny_lumina2(seed: int = 7) -> TinyLumina2:
    from diffusers import Lumina2Transformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(seed)
    transformer = Lumina2Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=16, hidden_size=96, num_layers=1, num_refiner_layers=2,
        num_attention_heads=4, num_kv_heads=2, multiple_of=16, axes_dim_rope=(8, 8, 8), cap_feat_dim=32).eval()
    text_encoder = Gemma2Model(Gemma2Config(
        vocab_size=TINY_GEMMA_VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=3, head_dim=256,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024, pad_token_id=256,
        bos_token_id=257, eos_token_id=258)).eval()
    return TinyLumina2(transformer, text_encoder)


def original_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers Lumina2Transformer2DModel state dict in the original layout ComfyUI's files use."""
    original: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".attn.to_k." in key or ".attn.to_v." in key:
            continue
        if ".attn.to_q." in key:
            parts = [state[key.replace(".to_q.", f".{name}.")] for name in ("to_q", "to_k", "to_v")]
            original["model.diffusion_model." + key.replace(".attn.to_q.", ".attention.qkv.")] = torch.cat(parts)
            continue
        for new, old in _ORIGINAL_NAMES:
            if new in key:
                key = key.replace(new, old)
                break
        original["model.diffusion_model." + key] = value
    return original


def make_lumina2_demo_models(models_dir: Path) -> TinyLumina2:
    """The tiny Lumina 2 files (and the tiny FLUX VAE it shares); files already there are left alone."""
    from safetensors.torch import save_file

    models_dir = Path(models_dir)
    make_flux_demo_models(models_dir)
    models = build_tiny_lumina2()
    for path, state in (
            (models_dir / "diffusion_models" / DEMO_LUMINA2_TRANSFORMER,
             lambda: original_layout(models.transformer.state_dict())),
            (models_dir / "text_encoders" / DEMO_LUMINA2_TEXT_ENCODER,
             lambda: {f"model.{key}": value for key, value in models.text_encoder.state_dict().items()})):
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({key: value.contiguous() for key, value in state().items()}, str(path))
    return models
