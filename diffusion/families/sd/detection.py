"""Which Stable Diffusion 1.x/2.x checkpoint a single file holds: SD1.x (CLIP ViT-L text encoder) or SD2.x
(OpenCLIP ViT-H), whether it predicts noise or v, and whether it is SD2.1 unCLIP (an image-embedding input). Read
from tensor names (and, for SD2's v-prediction, one tensor's spread), never asked of the user. Knows nothing of
nodes or files.
"""
from __future__ import annotations

from typing import Collection, Mapping

import torch

UNET = "model.diffusion_model."
UNET_PROBE = UNET + "input_blocks.0.0.weight"
CLIP = "cond_stage_model.transformer.text_model."
OPEN_CLIP = "cond_stage_model.model."
V_PREDICTION_MARKER = "v_pred"  # the key ComfyUI stores in v-prediction checkpoints
V_PREDICTION_NORM_STD = 0.09  # SD2 768-v checkpoints have this spread in a late norm bias; 512 ones do not
V_PREDICTION_PROBE = UNET + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
UNCLIP_PROBE = UNET + "label_emb.0.0.weight"  # SD2.1 unCLIP: the UNet's image-embedding input
UNCLIP_VISION = "embedder.model.visual."  # its image encoder (OpenCLIP's / OpenAI CLIP's layout)


def is_checkpoint(keys: Collection[str]) -> bool:
    """An LDM-layout checkpoint with a UNet (SDXL's, which has the same names, is claimed by SDXL first)."""
    return UNET_PROBE in keys


def is_unclip(keys: Collection[str]) -> bool:
    """Whether an SD2 checkpoint's UNet takes an image embedding (SD2.1 unCLIP's `label_emb`)."""
    return UNCLIP_PROBE in keys


def detect_version(state: Mapping[str, torch.Tensor]) -> str:
    """"sd1" or "sd2" from the text encoder a checkpoint carries; a ValueError for anything else."""
    if UNET_PROBE not in state:
        if any(key.startswith("conditioner.embedders.") for key in state):
            raise ValueError("this is an SDXL-style checkpoint; only SD1.x and SD2.x checkpoints are supported")
        if any(key.startswith(("down_blocks.", "transformer_blocks.", "double_blocks.")) for key in state):
            raise ValueError("this file holds a bare diffusers/transformer model, not an SD1.x/SD2.x checkpoint "
                             "in the original layout")
        raise ValueError("unknown checkpoint layout: no UNet under 'model.diffusion_model.'")
    if CLIP + "embeddings.token_embedding.weight" in state:
        return "sd1"
    if OPEN_CLIP + "token_embedding.weight" in state:
        return "sd2"
    raise ValueError("unknown checkpoint layout: no CLIP or OpenCLIP text encoder under 'cond_stage_model.'")


def detect_prediction_type(state: Mapping[str, torch.Tensor], version: str) -> str:
    """v-prediction when the checkpoint says so (ComfyUI's `v_pred` key) or, for SD2, when the late norm bias
    has the spread of the 768-v models (the test ComfyUI uses); epsilon otherwise."""
    if V_PREDICTION_MARKER in state:
        return "v_prediction"
    probe = state.get(V_PREDICTION_PROBE)
    if version == "sd2" and probe is not None and torch.std(probe.float(), unbiased=False) > V_PREDICTION_NORM_STD:
        return "v_prediction"
    return "epsilon"
