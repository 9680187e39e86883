"""Which model family a single-file checkpoint or a diffusers folder holds, and which loader reads it.

The family is always read from the files (tensor names, the folder's `model_index.json`), never asked of the
user. SD1.x/SD2.x files go to `nodes.models.checkpoint` (the loaders return None for them); other families
register their readers in the tables below. A family the engine cannot run is a ValueError naming what was found.
Knows nothing of nodes or the node environment.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch

SD_UNET_KEY = "model.diffusion_model.input_blocks.0.0.weight"

Place = Callable[[Any], Any]
CheckpointReader = Callable[[Mapping[str, torch.Tensor], str, Place], tuple]
FolderReader = Callable[[Path, str, Place], tuple]


def _checkpoint_readers() -> list[tuple[Callable[[Mapping[str, torch.Tensor]], bool], CheckpointReader]]:
    from nodes.models import sd3, sdxl

    return [(sdxl.is_sdxl_checkpoint, sdxl.load_checkpoint), (sd3.is_sd3_checkpoint, sd3.load_checkpoint)]


def _folder_readers() -> dict[str, FolderReader]:
    from nodes.models import flux_files, sd3, sdxl

    return {**{name: sdxl.load_folder for name in sdxl.PIPELINES}, **{name: sd3.load_folder for name in sd3.PIPELINES},
            **{name: flux_files.load_folder for name in flux_files.PIPELINES},
            **{name: _other_pipeline(name) for name in OTHER_PIPELINES}}


# diffusers pipelines that are not one MODEL/CLIP/VAE triple -> the node that loads them
OTHER_PIPELINES = {"KandinskyV22PriorPipeline": "UnCLIPPriorLoader", "KandinskyV22Pipeline": "UnCLIPDecoderLoader"}


def _other_pipeline(pipeline_class: str) -> FolderReader:
    def refuse(folder: Path, name: str, place: Place) -> tuple:
        raise ValueError(f"it is a {pipeline_class}; load it with {OTHER_PIPELINES[pipeline_class]}")

    return refuse


# key prefixes of files CheckpointLoaderSimple cannot run -> what they are and where they load
OTHER_FILES = (
    (("double_blocks.", "model.diffusion_model.double_blocks."), "a FLUX transformer (load it with UNETLoader)"),
    (("clip_txt_mapper.", "down_blocks.1.0.channelwise."), "a Stable Cascade stage (not supported)"),
    (("lora_unet_", "lora_te", "unet.", "transformer."), "a LoRA (load it with LoraLoader)"),
    (("encoder.block.", "shared."), "a T5 text encoder (load it with DualCLIPLoader/TripleCLIPLoader)"),
    (("text_model.",), "a CLIP text encoder (load it with DualCLIPLoader/TripleCLIPLoader)"),
    (("encoder.down.", "decoder.up.", "first_stage_model."), "a VAE alone (load it with VAELoader)"),
    (("down_blocks.", "transformer_blocks.", "mid_block."), "a diffusers-layout model alone (not a checkpoint)"),
)


def describe_other_file(state: Mapping[str, torch.Tensor]) -> str:
    """What a file that is no checkpoint of a supported family holds, in words, from its key names."""
    for prefixes, description in OTHER_FILES:
        if any(key.startswith(prefixes) for key in state):
            return description
    return "no model this engine knows (no SD1.x/SD2.x/SDXL UNet, no SD3 MMDiT)"


def checkpoint_reader(state: Mapping[str, torch.Tensor]) -> CheckpointReader | None:
    """The reader of the family these tensors belong to; None for SD1.x/SD2.x; ValueError for other files."""
    for matches, reader in _checkpoint_readers():
        if matches(state):
            return reader
    if any(key.startswith("conditioner.embedders.") for key in state):
        raise ValueError("this is an SDXL-style checkpoint, but its UNet (with the added embedding) or its "
                         "OpenCLIP-G text encoder is missing")
    if SD_UNET_KEY in state:
        return None
    raise ValueError(f"unknown checkpoint layout: this file holds {describe_other_file(state)}; "
                     "CheckpointLoaderSimple runs SD1.x, SD2.x, SDXL (base and refiner) and SD3 checkpoints")


def folder_reader(pipeline_class: str) -> FolderReader | None:
    """The reader of a diffusers folder saved from `pipeline_class` (model_index.json's `_class_name`), for the
    families registered here; None for the others (Stable Diffusion 1.x/2.x pipelines are read by the manager)."""
    return _folder_readers().get(pipeline_class)
