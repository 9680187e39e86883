"""A tiny Qwen-Image (random weights) in the files ComfyUI users have: the transformer (diffusers' names under
`model.diffusion_model.`) in diffusion_models/, the VAE in Wan's original layout in vae/, and a Qwen2.5-VL (its
language model under `model.`, its vision tower under `visual.`, as published) in text_encoders/. Knows nothing of
nodes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffusion.families.qwenimage.loading import TEXT_HEAD_DIM, VAE_LEVELS, VISION_HEAD_DIM, VISION_WINDOW
from diffusion.families.qwenimage.text_encoding import TINY_SPECIAL_TOKENS, TINY_VOCAB_SIZE

DEMO_QWEN_IMAGE_TRANSFORMER = "tiny-qwen-image-transformer.safetensors"
DEMO_QWEN_IMAGE_VAE = "tiny-qwen-image-vae.safetensors"
DEMO_QWEN_IMAGE_TEXT_ENCODER = "tiny-qwen2.5-vl.safetensors"
TEXT_WIDTH = 2 * TEXT_HEAD_DIM


@dataclass(frozen=True)
class TinyQwenImage:
    transformer: Any
    vae: Any
    text_encoder: Any  # Qwen2_5_VLForConditionalGeneration


def build_tiny_qwen_image(seed: int = 7) -> TinyQwenImage:
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=32, num_attention_heads=2,
        joint_attention_dim=TEXT_WIDTH, axes_dims_rope=(4, 14, 14)).eval()
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=16, **VAE_LEVELS).eval()
    vision_start, vision_end, image_pad = (256 + TINY_SPECIAL_TOKENS.index(token) for token in (
        "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"))
    text_encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        text_config=dict(vocab_size=TINY_VOCAB_SIZE, hidden_size=TEXT_WIDTH, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=TEXT_WIDTH // TEXT_HEAD_DIM, num_key_value_heads=1,
                         rms_norm_eps=1e-6, max_position_embeddings=2048, bos_token_id=None, eos_token_id=None,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                          "mrope_section": [16, 24, 24]}),
        vision_config=dict(depth=2, hidden_size=VISION_HEAD_DIM, intermediate_size=32, num_heads=1,
                           out_hidden_size=TEXT_WIDTH, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                           fullatt_block_indexes=[1], window_size=VISION_WINDOW, in_channels=3),
        vision_start_token_id=vision_start, vision_end_token_id=vision_end, image_token_id=image_pad,
        video_token_id=image_pad)).eval()
    return TinyQwenImage(transformer, vae, text_encoder)


def published_text_encoder_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers 5 Qwen2_5_VLForConditionalGeneration state dict in the layout Qwen2.5-VL is published in
    (and ComfyUI's files keep): `model.*` for the language model, `visual.*`, `lm_head.*`."""
    renames = (("model.language_model.", "model."), ("model.visual.", "visual."))
    published = {}
    for key, value in state.items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        published[key] = value
    return published


def wan_original_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKLQwenImage state dict (two blocks per level) in Wan's original layout, the inverse of
    diffusers' `convert_wan_vae_to_diffusers`."""
    resnet_parts = {"norm1.gamma": "residual.0.gamma", "conv1.": "residual.2.", "norm2.gamma": "residual.3.gamma",
                    "conv2.": "residual.6.", "conv_shortcut.": "shortcut."}
    ends = {"conv_in.": "conv1.", "norm_out.gamma": "head.0.gamma", "conv_out.": "head.2."}

    def resnet(rest: str) -> str:
        for new, old in resnet_parts.items():
            if rest.startswith(new):
                return old + rest[len(new):]
        return rest

    original = {}
    for key, value in state.items():
        side, _, rest = key.partition(".")
        if key.startswith(("quant_conv.", "post_quant_conv.")):
            name = ("conv1." if key.startswith("quant_conv.") else "conv2.") + key.split(".", 1)[1]
        elif rest.startswith("mid_block.resnets."):
            index, tail = rest.removeprefix("mid_block.resnets.").split(".", 1)
            name = f"{side}.middle.{2 * int(index)}.{resnet(tail)}"
        elif rest.startswith("mid_block.attentions.0."):
            name = f"{side}.middle.1." + rest.removeprefix("mid_block.attentions.0.")
        elif rest.startswith("down_blocks."):
            index, tail = rest.removeprefix("down_blocks.").split(".", 1)
            name = f"{side}.downsamples.{index}.{resnet(tail)}"
        elif rest.startswith("up_blocks."):
            block, kind, tail = rest.removeprefix("up_blocks.").split(".", 2)
            if kind == "upsamplers":
                name = f"{side}.upsamples.{4 * int(block) + 3}.{tail.split('.', 1)[1]}"
            else:
                index, tail = tail.split(".", 1)
                name = f"{side}.upsamples.{4 * int(block) + int(index)}.{resnet(tail)}"
        else:
            name = next((f"{side}.{old}{rest[len(new):]}" for new, old in ends.items() if rest.startswith(new)), key)
        original[name] = value
    return original


def make_qwen_image_demo_models(models_dir: Path) -> TinyQwenImage:
    """The tiny Qwen-Image files; files already there are left alone."""
    from safetensors.torch import save_file

    models_dir = Path(models_dir)
    models = build_tiny_qwen_image()
    for path, state in (
            (models_dir / "diffusion_models" / DEMO_QWEN_IMAGE_TRANSFORMER, lambda: {
                f"model.diffusion_model.{key}": value for key, value in models.transformer.state_dict().items()}),
            (models_dir / "vae" / DEMO_QWEN_IMAGE_VAE, lambda: wan_original_layout(models.vae.state_dict())),
            (models_dir / "text_encoders" / DEMO_QWEN_IMAGE_TEXT_ENCODER, lambda: published_text_encoder_layout(
                models.text_encoder.state_dict()))):
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({key: value.contiguous() for key, value in state().items()}, str(path))
    return models
