"""Which files are FLUX.2's: its transformer alone in BFL's layout (ComfyUI's `flux-2-klein-*.safetensors`, with or
without `model.diffusion_model.`) or diffusers' (told from FLUX.1's by the modulation FLUX.2's blocks share), its
VAE (FLUX.1's LDM layout with 32 latent channels and the batch-norm statistics of its patched latents), diffusers
Flux2KleinPipeline and Flux2Pipeline folders. [klein]'s Qwen3 text encoder is Z-Image's kind of file; [dev]'s
Mistral Small 3.x file is told by the tekken.json it carries. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Collection

from diffusion.encoders.tekken import TEKKEN_TENSOR

PIPELINES = ("Flux2KleinPipeline", "Flux2Pipeline")
PREFIX = "model.diffusion_model."
BFL_PROBE = "double_stream_modulation_img.lin.weight"
DIFFUSERS_PROBE = "double_stream_modulation_img.linear.weight"
VAE_PROBES = ("bn.running_mean", "decoder.conv_in.weight")


def is_bfl_layout(keys: Collection[str]) -> bool:
    return BFL_PROBE in keys or PREFIX + BFL_PROBE in keys


def is_diffusion_model(keys: Collection[str]) -> bool:
    return DIFFUSERS_PROBE in keys or is_bfl_layout(keys)


def is_vae(keys: Collection[str]) -> bool:
    return all(probe in keys for probe in VAE_PROBES)


def is_mistral_encoder(keys: Collection[str]) -> bool:
    """A Mistral text encoder with its tokenizer, as ComfyUI's FLUX.2 [dev] files are."""
    return TEKKEN_TENSOR in keys and any(key.endswith("layers.0.self_attn.q_proj.weight") for key in keys)
