"""A tiny Qwen-Image 2.1 (random weights) in the files ComfyUI users have: the transformer (diffusers' names with
ComfyUI's fused SwiGLU projections, under `model.diffusion_model.`) in diffusion_models/, the VAE in ComfyUI's
original layout in vae/, and a Qwen3-VL (its language model under `model.language_model.`, its vision tower under
`model.visual.`, as published) in text_encoders/. Knows nothing of nodes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffusion.families import wan22_vae_layout as vae_layout
from diffusion.families.qwenimage21.loading import FUSED_MLP, ROPE_THETA, VAE_LEVELS
from diffusion.families.qwenimage21.text_encoding import TINY_SPECIAL_TOKENS, TINY_VOCAB_SIZE

DEMO_QWEN_IMAGE21_TRANSFORMER = "tiny-qwen-image-2.1-transformer.safetensors"
DEMO_QWEN_IMAGE21_VAE = "tiny-qwen-image-2.1-vae.safetensors"
DEMO_QWEN_IMAGE21_TEXT_ENCODER = "tiny-qwen3-vl.safetensors"
TEXT_WIDTH, TEXT_HEAD_DIM = 64, 32


@dataclass(frozen=True)
class TinyQwenImage21:
    transformer: Any
    vae: Any
    text_encoder: Any  # Qwen3VLForConditionalGeneration


def build_tiny_qwen_image21(seed: int = 7) -> TinyQwenImage21:
    from diffusers import AutoencoderKLQwenImage21, QwenImage21Transformer2DModel
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    transformer = QwenImage21Transformer2DModel(
        in_channels=64, out_channels=64, num_layers=2, attention_head_dim=32, num_attention_heads=2,
        context_in_dim=TEXT_WIDTH, mlp_ratio=3, axes_dims_rope=(4, 14, 14)).eval()
    # the zero-initialized norms would hide a mis-loaded weight: give them values
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if name.endswith(("text_norm.weight", "norm_q.weight", "norm_k.weight")):
                parameter.normal_(0.0, 0.1)
    vae = AutoencoderKLQwenImage21(base_dim=8, decoder_base_dim=12, z_dim=64, **VAE_LEVELS).eval()
    vision_start, vision_end, image_pad = (256 + TINY_SPECIAL_TOKENS.index(token) for token in (
        "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"))
    half = TEXT_HEAD_DIM // 2
    text_encoder = Qwen3VLForConditionalGeneration(Qwen3VLConfig(
        text_config=dict(vocab_size=TINY_VOCAB_SIZE, hidden_size=TEXT_WIDTH, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=TEXT_WIDTH // TEXT_HEAD_DIM, num_key_value_heads=1,
                         head_dim=TEXT_HEAD_DIM, rms_norm_eps=1e-6, max_position_embeddings=2048,
                         rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA,
                                          "mrope_section": [half - 10, 5, 5], "mrope_interleaved": True}),
        # Qwen3-VL 4B's depth and DeepStack layers, its 16 heads, at a tiny width
        vision_config=dict(depth=24, hidden_size=64, intermediate_size=32, num_heads=16, out_hidden_size=TEXT_WIDTH,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                           deepstack_visual_indexes=[5, 11, 17], num_position_embeddings=64),
        vision_start_token_id=vision_start, vision_end_token_id=vision_end, image_token_id=image_pad,
        video_token_id=image_pad)).eval()
    return TinyQwenImage21(transformer, vae, text_encoder)


def comfy_transformer_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers QwenImage21Transformer2DModel state dict as ComfyUI's files have it: under
    `model.diffusion_model.`, each block's SwiGLU gate and up projections one weight (gate rows first)."""
    comfy = {}
    for key, value in state.items():
        if key.endswith(".img_mlp.gate_layer.weight"):
            stem = key[:-len(".img_mlp.gate_layer.weight")]
            value = torch.cat([value, state[stem + ".img_mlp.proj.weight"]])
            key = stem + FUSED_MLP
        elif key.endswith(".img_mlp.proj.weight"):
            continue
        comfy["model.diffusion_model." + key] = value
    return comfy


def make_qwen_image21_demo_models(models_dir: Path) -> TinyQwenImage21:
    """The tiny Qwen-Image 2.1 files; files already there are left alone."""
    from safetensors.torch import save_file

    models_dir = Path(models_dir)
    models = build_tiny_qwen_image21()
    for path, state in (
            (models_dir / "diffusion_models" / DEMO_QWEN_IMAGE21_TRANSFORMER,
             lambda: comfy_transformer_layout(models.transformer.state_dict())),
            (models_dir / "vae" / DEMO_QWEN_IMAGE21_VAE,
             lambda: vae_layout.diffusers_to_comfy(models.vae.state_dict())),
            (models_dir / "text_encoders" / DEMO_QWEN_IMAGE21_TEXT_ENCODER, lambda: models.text_encoder.state_dict())):
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            save_file({key: value.contiguous() for key, value in state().items()}, str(partial))
            partial.replace(path)
    return models
