"""`comfy.sd` for plugins: ComfyUI's model loading functions and its CLIP and VAE names, on our loaders.

The functions take the absolute paths plugins get from `folder_paths.get_full_path` and load through
`diffusion.loading` (the same code and model cache as the loader nodes), so a file must lie inside the models folder
as the loader nodes require. They return our own values: MODEL is `diffusion.components.DiffusionModel`, CLIP a
family's text encoder value (ComfyUI's CLIP methods: `diffusion.encoders.clip_api`), VAE `diffusion.components.Vae`
(ComfyUI's VAE names on the class). `CLIP` and `VAE` here answer `isinstance` for those values; `VAE(sd=...)` builds
a VAE from a state dict. ComfyUI's `model_options` (weight dtypes, custom operations) have no counterpart: the model
manager picks device and dtype, so non-empty options raise an error naming them.
"""
from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Any, Mapping, Sequence

from diffusion import loading, registry
from diffusion.components import DiffusionModel, Vae
from diffusion.contracts import LoraPatch, TextEncoder
from diffusion.families.sd.detection import is_unclip
from diffusion.files import safetensors_keys
from nodes.environment import current_environment, resolve_inside
from nodes.loaders import clip_with_lora, model_with_lora
from nodes.sd_unclip import load_unclip_file


class CLIPType(Enum):
    """ComfyUI's text encoder types (its numbering); `load_clip` runs those of families nodeflow runs."""

    STABLE_DIFFUSION = 1
    STABLE_CASCADE = 2
    SD3 = 3
    STABLE_AUDIO = 4
    HUNYUAN_DIT = 5
    FLUX = 6
    MOCHI = 7
    LTXV = 8
    HUNYUAN_VIDEO = 9
    PIXART = 10
    COSMOS = 11
    LUMINA2 = 12
    WAN = 13
    HIDREAM = 14
    CHROMA = 15
    ACE = 16
    OMNIGEN2 = 17
    QWEN_IMAGE = 18
    HUNYUAN_IMAGE = 19


def model_path(path: str | os.PathLike[str], caller: str, argument: str) -> Path:
    """The model file at `path` (absolute, or relative to the working folder), which must lie inside the models
    folder (links out of it followed only with --allow-model-links, as for the loader nodes); a ValueError naming
    the caller and the argument otherwise."""
    folders = current_environment().folders
    given = Path(os.path.abspath(path))
    for root in (folders.models_dir, folders.models_dir.resolve()):
        root = Path(os.path.abspath(root))
        if root in given.parents:
            return resolve_inside(folders.models_dir, str(given.relative_to(root)), f"{caller}: {argument}",
                                  folders.follow_model_links, "--allow-model-links")
    raise ValueError(f"{caller}: {argument}: {path} is outside the models folder {folders.models_dir}; nodeflow loads "
                     "models only from there (put the file into its folder under models/)")


def refuse_options(caller: str, **options: Mapping[str, Any] | None) -> None:
    """A RuntimeError when a plugin passes ComfyUI model options, which have no counterpart here."""
    for name, value in options.items():
        if value:
            raise RuntimeError(f"{caller}: {name} {sorted(value)} is not supported by nodeflow: the model manager "
                               "chooses every model's device and dtype (--fp16/--bf16/--fp32)")


def load_checkpoint_guess_config(ckpt_path: str, output_vae: bool = True, output_clip: bool = True,
                                 output_clipvision: bool = False, embedding_directory: str | None = None,
                                 output_model: bool = True, model_options: Mapping[str, Any] | None = None,
                                 te_model_options: Mapping[str, Any] | None = None) -> tuple[Any, Any, Any, Any]:
    """ComfyUI's (MODEL, CLIP, VAE, CLIP_VISION) of a single-file checkpoint, each None where not asked for; the
    CLIP_VISION is an SD2.1 unCLIP checkpoint's image encoder (None for other checkpoints, as in ComfyUI). Loaded as
    CheckpointLoaderSimple (or unCLIPCheckpointLoader) loads it. `embedding_directory` is accepted: the prompt
    syntax that reads embeddings is not ComfyUI's here, so it changes nothing."""
    caller = "comfy.sd.load_checkpoint_guess_config"
    refuse_options(caller, model_options=model_options, te_model_options=te_model_options)
    path = model_path(ckpt_path, caller, "ckpt_path")
    environment = current_environment()
    clip_vision = None
    if output_clipvision and is_unclip(safetensors_keys(path, "ckpt_path")):
        model, clip, vae, clip_vision = load_unclip_file(environment.models, path, "ckpt_path")
    else:
        model, clip, vae = loading.load_checkpoint(environment.models, path, "ckpt_path")
    return (model if output_model else None, clip if output_clip else None, vae if output_vae else None,
            clip_vision)


def load_diffusion_model(unet_path: str, model_options: Mapping[str, Any] | None = None) -> DiffusionModel:
    """ComfyUI's MODEL of a file holding the denoising network alone, as UNETLoader loads it."""
    caller = "comfy.sd.load_diffusion_model"
    refuse_options(caller, model_options=model_options)
    return loading.load_diffusion_model(current_environment().models, model_path(unet_path, caller, "unet_path"),
                                        "unet_path")


def _clip_type_name(clip_type: CLIPType, count: int) -> str:
    """Our CLIP loader `type` for ComfyUI's enum and file count: two STABLE_DIFFUSION files are SDXL's CLIP-L and
    CLIP-G, three SD3's, as ComfyUI reads them."""
    name = clip_type.name.lower()
    if clip_type is CLIPType.STABLE_DIFFUSION and count > 1:
        name = "sdxl" if count == 2 else "sd3"
    if name not in registry.clip_types():
        raise RuntimeError(f"comfy.sd.load_clip: clip_type {clip_type.name} is not supported by nodeflow: it runs "
                           f"the text encoders of {', '.join(sorted(registry.clip_types()))} models only")
    return name


def load_clip(ckpt_paths: Sequence[str], embedding_directory: str | None = None,
              clip_type: CLIPType = CLIPType.STABLE_DIFFUSION,
              model_options: Mapping[str, Any] | None = None) -> TextEncoder:
    """ComfyUI's CLIP of one to three text encoder files, as CLIPLoader, DualCLIPLoader and TripleCLIPLoader load
    them (the encoders recognised from their tensors). `embedding_directory` changes nothing (see
    `load_checkpoint_guess_config`)."""
    caller = "comfy.sd.load_clip"
    refuse_options(caller, model_options=model_options)
    if not 1 <= len(ckpt_paths) <= 3:
        raise ValueError(f"{caller}: ckpt_paths: one to three text encoder files, got {len(ckpt_paths)}")
    names = ["clip_name"] if len(ckpt_paths) == 1 else [f"clip_name{index}" for index in range(1, len(ckpt_paths) + 1)]
    paths = {name: model_path(path, caller, "ckpt_paths") for name, path in zip(names, ckpt_paths)}
    return loading.load_text_encoders(current_environment().models, _clip_type_name(clip_type, len(paths)), paths)


def load_lora_for_models(model: DiffusionModel | None, clip: TextEncoder | None, lora: Mapping[str, Any],
                         strength_model: float, strength_clip: float) -> tuple[Any, Any]:
    """ComfyUI's (MODEL, CLIP) with a LoRA state dict (as `comfy.utils.load_torch_file` reads it) applied at the
    two strengths, as LoraLoader applies a file: new values, the loaded ones unchanged; None stays None."""
    caller = "comfy.sd.load_lora_for_models"
    name = f"LoRA state dict ({len(lora)} tensors)"
    targets: list[tuple[Any, float]] = [(model, strength_model), (clip, strength_clip)]
    patches = [None if value is None or strength == 0 else
               LoraPatch(name, *loading.read_lora_state_dict(lora, value.family, name, f"{caller}: lora"), strength)
               for value, strength in targets]
    new_model = model if patches[0] is None else model_with_lora(model, patches[0], required=False)
    new_clip = clip if patches[1] is None else clip_with_lora(clip, patches[1])
    if any(patches) and new_model is model and new_clip is clip:
        raise ValueError(f"{caller}: lora: the {name} matches no layer of the model or the text encoder")
    return new_model, new_clip


class _OurValues(type):
    """Metaclass of ComfyUI's value class names: `isinstance` answers for our own value classes (`_values`)."""

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, cls._values)


class CLIP(metaclass=_OurValues):
    """ComfyUI's CLIP class, for `isinstance(clip, comfy.sd.CLIP)`: true of every family's CLIP value."""

    _values = (TextEncoder,)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("comfy.sd.CLIP(...): building a CLIP from a target class is not supported by nodeflow; "
                           "load text encoder files with comfy.sd.load_clip")


class VAE(metaclass=_OurValues):
    """ComfyUI's VAE class: `isinstance(vae, comfy.sd.VAE)` is true of our VAE values, and `VAE(sd=state_dict)`
    builds one from LDM-layout tensors (as VAELoader reads a file)."""

    _values = (Vae,)

    def __new__(cls, sd: Mapping[str, Any] | None = None, device: Any = None, config: Any = None, dtype: Any = None,
                metadata: Mapping[str, str] | None = None) -> Vae:
        if sd is None:
            raise ValueError("comfy.sd.VAE: sd: a VAE state dict is required (config-built VAEs are not supported)")
        if config is not None or device is not None or dtype is not None:
            raise RuntimeError("comfy.sd.VAE: config, device and dtype are not supported by nodeflow: the VAE's "
                               "architecture is read from its tensors and the model manager places it")
        return loading.vae_from_state_dict(current_environment().models, sd, "VAE state dict", "comfy.sd.VAE: sd")
