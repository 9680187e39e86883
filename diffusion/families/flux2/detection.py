"""Which files are FLUX.2's: its transformer alone in BFL's layout (ComfyUI's `flux-2-klein-*.safetensors`, with or
without `model.diffusion_model.`) or diffusers' (told from FLUX.1's by the modulation FLUX.2's blocks share), its
VAE (FLUX.1's LDM layout with 32 latent channels and the batch-norm statistics of its patched latents), diffusers
Flux2KleinPipeline folders. Its Qwen3 text encoder is Z-Image's kind of file. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Collection

PIPELINES = ("Flux2KleinPipeline",)
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
