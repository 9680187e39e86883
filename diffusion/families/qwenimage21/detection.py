"""Which files are Qwen-Image 2.1's: its transformer alone (ComfyUI's `qwen_image_2.1_*.safetensors`, with the
SwiGLU gate and up projections fused, or diffusers' names; with or without `model.diffusion_model.`), its VAE (the
RGBA, 64-channel, 16x autoencoder, in the original Wan 2.2 style layout ComfyUI's file has or in diffusers'), its
Qwen3-VL text encoder, diffusers QwenImage21Pipeline folders. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Collection

from diffusion.encoders.text_encoder_files import QWEN3_VL_VISION
from diffusion.families import wan22_vae_layout as vae_layout

PIPELINES = ("QwenImage21Pipeline",)
PREFIX = "model.diffusion_model."
# a text projection with its own norm and one modulation shared by every block: Qwen-Image 2.1's, no other's
PROBES = ("txt_in.text_norm.weight", "modulation.1.weight", "img_in.weight", "transformer_blocks.0.attn.norm_q.weight")
# residual down blocks with one `downsampler` (Wan 2.2's style; Wan 2.1's and Qwen-Image's have flat lists)
DIFFUSERS_VAE_PROBE = "encoder.down_blocks.0.downsampler.resample.1.weight"


def is_diffusion_model(keys: Collection[str]) -> bool:
    keys = set(keys)
    return all(probe in keys for probe in PROBES) or all(PREFIX + probe in keys for probe in PROBES)


def is_vae(keys: Collection[str]) -> bool:
    """A Wan 2.2 style residual VAE: in ComfyUI's layout (nested sampling stages, which Wan 2.1's and Qwen-Image's
    flat layout lacks) or diffusers' (one `downsampler` per residual down block). Wan 2.2's own (48 latent
    channels) looks alike and is told apart by the loader's channel check."""
    return vae_layout.is_comfy_layout(keys) or DIFFUSERS_VAE_PROBE in keys


def language_model_prefix(keys: Collection[str]) -> str | None:
    """The key prefix of a Qwen3(-VL) language model in a text encoder file (`model.language_model.` as Qwen3-VL is
    published and transformers 5 saves it, `model.` as ComfyUI keeps it), told by its per-head query norms; None
    when the file holds none."""
    for prefix in ("model.language_model.", "model.", ""):
        if prefix + "layers.0.self_attn.q_norm.weight" in keys and prefix + "embed_tokens.weight" in keys:
            return prefix
    return None


def vision_prefix(keys: Collection[str]) -> str | None:
    """The key prefix of a Qwen3-VL vision tower in a text encoder file, or None when it has none."""
    return next((prefix for prefix in ("model.visual.", "visual.") if prefix + QWEN3_VL_VISION in keys), None)
