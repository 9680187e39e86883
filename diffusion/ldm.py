"""The original (LDM) layout of the KL autoencoder every Stable Diffusion-lineage family ships (SD1.x/SD2.x, SDXL,
SD3, FLUX): its architecture read from tensor shapes, and the diffusers AutoencoderKL built from its tensors with
diffusers' own converter. Families differ only in the latent statistics (scaling and shift factors), the latent
channels and whether quant convolutions exist, all of which are read or passed in.

Knows nothing of nodes or of which family a VAE belongs to.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from diffusion.files import block_indices, load_strict

CHECKPOINT_PREFIX = "first_stage_model."  # a VAE inside an all-in-one checkpoint
# The LDM autoencoder's settings that its tensors do not show (the rest is read from shapes in `ddconfig`).
DDCONFIG = {"double_z": True, "resolution": 256, "attn_resolutions": [], "dropout": 0.0}


def ddconfig(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """LDM VAE `ddconfig` read from the shapes of the tensors under `prefix`."""
    ch = state[prefix + "encoder.conv_in.weight"].shape[0]
    levels = block_indices(state, prefix + "encoder.down.")
    return {
        **DDCONFIG, "ch": ch, "in_channels": state[prefix + "encoder.conv_in.weight"].shape[1],
        "out_ch": state[prefix + "decoder.conv_out.weight"].shape[0],
        "z_channels": state[prefix + "decoder.conv_in.weight"].shape[1],
        "ch_mult": [state[prefix + f"encoder.down.{level}.block.0.conv2.weight"].shape[0] // ch for level in levels],
        "num_res_blocks": len(block_indices(state, prefix + "encoder.down.0.block.")),
    }


def vae_config(state: Mapping[str, torch.Tensor], prefix: str, scaling_factor: float,
               sample_size: int | None = None) -> dict[str, Any]:
    """The diffusers AutoencoderKL config of the VAE tensors under `prefix` (`state` is the whole file: without
    `sample_size`, the image size tiles default to, diffusers reads it from the kind of checkpoint it is, which it
    knows for SD1/2 and SDXL only), with the given scaling factor; without quant convolutions when the file has
    none."""
    from diffusers.loaders.single_file_utils import create_vae_diffusers_config_from_ldm

    original = {"model": {"params": {"first_stage_config": {"params": {"ddconfig": ddconfig(state, prefix)}},
                                     "scale_factor": scaling_factor}}}
    # diffusers' guess reads the whole file's keys; with a size of our own, it sees only the Playground statistics
    # it also reads (its `image_size` argument is deprecated)
    guessed_from = state if sample_size is None else {key: state[key] for key in ("edm_mean", "edm_std")
                                                      if key in state}
    config = create_vae_diffusers_config_from_ldm(original, guessed_from)
    if sample_size is not None:
        config["sample_size"] = sample_size
    if prefix + "quant_conv.weight" not in state:
        config.update(use_quant_conv=False, use_post_quant_conv=False)
    return config


def build_vae(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> Any:
    """A diffusers AutoencoderKL from LDM-layout VAE tensors (with `first_stage_model.` or no prefix)."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    with torch.device("meta"):
        vae = AutoencoderKL(**config)
    return load_strict(vae, convert_ldm_vae_checkpoint(state, dict(config)), "VAE").eval()


def vae_prefix(state: Mapping[str, torch.Tensor]) -> str | None:
    """Where a file's LDM VAE tensors are: under `first_stage_model.` (a checkpoint), at the top (a VAE file), or
    None when it holds no LDM VAE."""
    for prefix in (CHECKPOINT_PREFIX, ""):
        if prefix + "encoder.conv_in.weight" in state and prefix + "encoder.down.0.block.0.conv1.weight" in state:
            return prefix
    return None
