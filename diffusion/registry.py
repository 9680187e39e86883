"""The model families this engine runs, found in one place: each family package under `diffusion/families/` exports
a `FAMILY` entry saying which files are its own and how to load them, and this registry asks the families in
order. A family is always read from the files (tensor names, a folder's `model_index.json`), never asked of the
user; a file no family claims is a ValueError that says what it holds instead.

Knows nothing of nodes or the node environment.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping

import torch

from diffusion.contracts import FamilySampling, Place

if TYPE_CHECKING:
    from diffusion.manager import ModelManager

# Detection order: the first family claiming a file wins (SDXL and SD1 share UNet key names, so SD1 comes last;
# FLUX.2's transformer has FLUX.1's block names (and its VAE FLUX.1's layout), so FLUX.2 comes before FLUX;
# Chroma's transformer has FLUX's block names, so Chroma comes before FLUX; Z-Image's has Lumina 2's, so Z-Image
# comes before Lumina 2; Qwen-Image 2.1's VAE in ComfyUI's layout has the Wan key names Qwen-Image's VAE is told by,
# so Qwen-Image 2.1 comes before Qwen-Image).
FAMILY_PACKAGES = ("sdxl", "sd3", "flux2", "chroma", "flux", "zimage", "lumina2", "qwenimage21", "qwenimage", "hidream",
                   "unclip", "sd")

State = Mapping[str, torch.Tensor]
ModelTriple = tuple[Any, Any, Any]  # MODEL, CLIP (None when a file holds no text encoder), VAE


@dataclass(frozen=True)
class Family:
    """One model family: what its files look like and how each of its file layouts loads.

    - `is_checkpoint(keys)` / `load_checkpoint(state, name, place)`: all-in-one single files (CheckpointLoaderSimple).
    - `pipelines` / `load_folder(folder, name, place)`: diffusers folders saved from these pipeline classes.
    - `is_diffusion_model(keys)` / `load_diffusion_model(state, name, place)`: the denoising network alone
      (UNETLoader).
    - `clip_types` / `load_text_encoders(models, paths)`: text encoder files, under ComfyUI's CLIP loader `type`
      names (DualCLIPLoader, TripleCLIPLoader); `models` is the model manager, which caches what is read.
    - `read_lora(state)`: a LoRA file's tensors in diffusers/peft keys and its network alphas, as the family's
      LoRAs are keyed (None: the family takes no LoRAs).
    - `standalone_vae`: (latent channels, scaling factor, shift factor) of the family's VAE when it comes as a file
      alone (VAELoader tells families' VAEs apart by their latent channels).
    - `is_vae(keys)` / `load_vae(state, name, place)`: a VAE file of the family's own architecture (not the LDM
      autoencoder), for VAELoader.
    - `sampling`: the family's `FamilySampling` class (its sampler/scheduler limits are known at validation).
    - `make_demo_models(models_dir)`: writes the family's tiny random-weight demo models in its real file layouts.
    """

    name: str
    title: str
    sampling: type[FamilySampling]
    make_demo_models: Callable[[Path], Any]
    is_checkpoint: Callable[[Collection[str]], bool] | None = None
    load_checkpoint: Callable[[State, str, Place], ModelTriple] | None = None
    pipelines: tuple[str, ...] = ()
    load_folder: Callable[[Path, str, Place], Any] | None = None
    is_diffusion_model: Callable[[Collection[str]], bool] | None = None
    load_diffusion_model: Callable[[State, str, Place], Any] | None = None
    clip_types: tuple[str, ...] = ()
    load_text_encoders: Callable[["ModelManager", Mapping[str, Path]], Any] | None = None
    read_lora: Callable[[dict[str, torch.Tensor]], tuple[dict[str, torch.Tensor], Any]] | None = None
    standalone_vae: tuple[int, float, float] | None = None
    is_vae: Callable[[Collection[str]], bool] | None = None
    load_vae: Callable[[State, str, Place], Any] | None = None


def families() -> tuple[Family, ...]:
    """Every family, in detection order."""
    return tuple(importlib.import_module(f"diffusion.families.{package}").FAMILY for package in FAMILY_PACKAGES)


def family(name: str) -> Family:
    for candidate in families():
        if candidate.name == name:
            return candidate
    raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILY_PACKAGES)}")


# diffusers pipelines that are not one MODEL/CLIP/VAE triple -> the node that loads them
OTHER_PIPELINES = {"KandinskyV22PriorPipeline": "UnCLIPPriorLoader", "KandinskyV22Pipeline": "UnCLIPDecoderLoader"}

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


def describe_other_file(keys: Collection[str]) -> str:
    """What a file that is no checkpoint of a supported family holds, in words with the loader that takes it, from
    its key names: a family's transformer alone or its own VAE, a language-model text encoder, or one of
    `OTHER_FILES`."""
    from diffusion.encoders.text_encoder_files import describe_language_model

    keys = set(keys)
    for candidate in families():
        if candidate.is_diffusion_model is not None and candidate.is_diffusion_model(keys):
            return f"a {candidate.title} transformer (load it with UNETLoader)"
        if candidate.is_vae is not None and candidate.is_vae(keys):
            return f"a {candidate.title} VAE (load it with VAELoader)"
    language_model = describe_language_model(keys)
    if language_model is not None:
        return language_model
    for prefixes, description in OTHER_FILES:
        if any(key.startswith(prefixes) for key in keys):
            return description
    return "no model this engine knows (none of its families' networks, VAEs or text encoders, no LoRA)"


def diffusion_model_titles() -> list[str]:
    """The families whose denoising network UNETLoader loads alone."""
    return [candidate.title for candidate in families() if candidate.is_diffusion_model is not None]


def describe_diffusion_model(keys: Collection[str]) -> str:
    """What kind of denoising network a file holds, in words (for errors about files the engine cannot run)."""
    keys = set(keys)
    unet_prefix = "model.diffusion_model."
    if "x_embedder.weight" in keys and "single_transformer_blocks.0.proj_out.weight" in keys:
        return "a FLUX transformer (diffusers layout)"
    if "double_blocks.0.img_attn.qkv.weight" in keys or unet_prefix + "double_blocks.0.img_attn.qkv.weight" in keys:
        return "a FLUX transformer (original BFL layout)"
    if any(key.startswith(("joint_blocks.", unet_prefix + "joint_blocks.")) for key in keys) or \
            ("pos_embed.proj.weight" in keys and "context_embedder.weight" in keys):
        return "an SD3 (MMDiT) transformer"
    if any(key.startswith(("down_blocks.", "input_blocks.", unet_prefix + "input_blocks.")) for key in keys):
        return "a UNet (Stable Diffusion style)"
    other = describe_other_file(keys)
    if not other.startswith("no model"):
        return other
    return f"an unknown network ({len(keys)} tensors, e.g. {sorted(keys)[:3]})"


def vae_family(keys: Collection[str]) -> Family | None:
    """The family whose own VAE architecture has these tensor names (None: an LDM autoencoder, or no VAE)."""
    return next((candidate for candidate in families()
                 if candidate.is_vae is not None and candidate.is_vae(keys)), None)


def checkpoint_family(keys: Collection[str]) -> Family:
    """The family whose all-in-one checkpoint has these tensor names; a ValueError saying what the file holds
    when none claims it."""
    for candidate in families():
        if candidate.is_checkpoint is not None and candidate.is_checkpoint(keys):
            return candidate
    if any(key.startswith("conditioner.embedders.") for key in keys):
        raise ValueError("this is an SDXL-style checkpoint, but its UNet (with the added embedding) or its "
                         "OpenCLIP-G text encoder is missing")
    raise ValueError(f"unknown checkpoint layout: this file holds {describe_other_file(keys)}; "
                     "CheckpointLoaderSimple runs SD1.x, SD2.x, SDXL (base and refiner), SD3 and FLUX.1 checkpoints")


def pipeline_family(pipeline_class: str) -> Family:
    """The family whose loader reads diffusers folders saved from `pipeline_class`; a ValueError otherwise."""
    for candidate in families():
        if pipeline_class in candidate.pipelines:
            return candidate
    if pipeline_class in OTHER_PIPELINES:
        raise ValueError(f"it is a {pipeline_class}; load it with {OTHER_PIPELINES[pipeline_class]}")
    known = ", ".join(name for candidate in families() for name in candidate.pipelines)
    raise ValueError(f"it holds a {pipeline_class or 'pipeline without a class name'}; DiffusersLoader reads {known}")


def diffusion_model_family(keys: Collection[str]) -> Family | None:
    """The family whose denoising network alone (a UNETLoader file) has these tensor names, or None."""
    return next((candidate for candidate in families()
                 if candidate.is_diffusion_model is not None and candidate.is_diffusion_model(keys)), None)


def clip_type_family(clip_type: str) -> Family:
    """The family whose text encoder files load under a ComfyUI CLIP loader `type` name."""
    for candidate in families():
        if clip_type in candidate.clip_types:
            return candidate
    raise ValueError(f"type: unknown text encoder type {clip_type!r}; known: {', '.join(clip_types())}")


def clip_types() -> list[str]:
    return [name for candidate in families() for name in candidate.clip_types]


def standalone_vae_factors(latent_channels: int) -> tuple[float, float] | None:
    """(scaling factor, shift factor) of a VAE file alone with this many latent channels, when a family's
    standalone VAE has them; None for VAEs whose own config says (the SD VAE's scaling factor is its default)."""
    for candidate in families():
        if candidate.standalone_vae is not None and candidate.standalone_vae[0] == latent_channels:
            return candidate.standalone_vae[1], candidate.standalone_vae[2]
    return None
