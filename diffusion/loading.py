"""Loading models from the files people download, whatever their family: the entry points of the loader nodes.

Each asks the family registry (`diffusion.registry`) which family a file or folder belongs to and lets that
family's loader read it; the model manager caches the result per file version and keeps it within the memory
budget. Errors are ValueErrors that name the node input and the file. Knows nothing of nodes or folders: callers
pass resolved paths and the input name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Hashable, Mapping

import torch

from diffusion import gguf, ldm, registry, weight_storage
from diffusion.components import DiffusionModel, Vae
from diffusion.encoders import text_encoder_files
from diffusion.files import (
    MODEL_INDEX,
    fp8_parameters,
    keeps_fp8,
    pipeline_class,
    read_safetensors,
    safetensors_keys,
)
from diffusion.manager import ModelManager
from diffusion.read_ahead import ReadAhead

ModelTriple = tuple[Any, Any, Any]  # MODEL, CLIP (None for a file without text encoders), VAE


def load_checkpoint(models: ModelManager, path: Path, input_name: str = "ckpt_name",
                    reads: ReadAhead | None = None) -> ModelTriple:
    """MODEL, CLIP and VAE from an all-in-one single-file checkpoint (.safetensors, original layout); an fp8
    file's linear layers keep their fp8 weights when the manager says so (`ModelManager.keeps_fp8_weights`).
    The file's tensors come from `reads` when a read of it was started there (`read_ahead`)."""
    path = Path(path)

    def load() -> ModelTriple:
        state = _read_model_file(models, reads, path, input_name, models.keeps_fp8_weights)
        try:
            return registry.checkpoint_family(state.keys()).load_checkpoint(state, path.name, models.place)
        except ValueError as error:
            raise ValueError(f"{input_name}: {path.name}: {error}") from error

    return models.cached("checkpoint", path, input_name, load)


def load_diffusers(models: ModelManager, folder: Path, input_name: str = "model_path") -> ModelTriple:
    """MODEL, CLIP and VAE from a diffusers pipeline folder (one with model_index.json)."""
    folder = Path(folder)
    index = folder / MODEL_INDEX
    if not index.is_file():
        raise ValueError(f"{input_name}: {folder} is not a diffusers model folder (no {MODEL_INDEX})")

    def load() -> ModelTriple:
        try:
            pipeline = pipeline_class(folder)
            return registry.pipeline_family(pipeline).load_folder(folder, folder.name, models.place)
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{input_name}: {folder.name} could not be loaded as a diffusers model: "
                             f"{error}") from error

    return models.cached("diffusers", index, input_name, load)


def load_vae(models: ModelManager, path: Path, input_name: str = "vae_name") -> Vae:
    """A VAE from a standalone LDM-layout .safetensors file (or the VAE inside a full checkpoint); its latent
    statistics are those of the family whose standalone VAE has its latent channels."""
    path = Path(path)

    def load() -> Vae:
        return vae_from_state_dict(models, read_safetensors(path, input_name, models.dtype), path.name, input_name)

    return models.cached("vae", path, input_name, load)


def vae_from_state_dict(models: ModelManager, state: Mapping[str, torch.Tensor], name: str,
                        input_name: str = "vae_name") -> Vae:
    """A VAE from LDM-layout tensors (a standalone VAE's, or those inside a full checkpoint), placed by the manager
    but not cached (the caller holds the tensors, not a file)."""
    family = registry.vae_family(state.keys())  # a family's own VAE (FLUX.2's has the LDM layout too)
    if family is not None:
        try:
            return family.load_vae(state, name, models.place)
        except ValueError as error:
            raise ValueError(f"{input_name}: {error}") from error
    prefix = ldm.vae_prefix(state)
    if prefix is None:
        raise ValueError(f"{input_name}: {name} holds {registry.describe_other_file(state.keys())}, not a VAE")
    try:
        factors = registry.standalone_vae_factors(state[prefix + "decoder.conv_in.weight"].shape[1])
        config = ldm.vae_config(state, prefix, factors[0] if factors else None)
        if factors and factors[1]:
            config["shift_factor"] = factors[1]
        autoencoder = ldm.build_vae(state, config)
    except (KeyError, IndexError) as error:
        raise ValueError(f"{input_name}: {name}: VAE tensors incomplete ({error})") from error
    except ValueError as error:
        raise ValueError(f"{input_name}: {name}: {error}") from error
    return Vae(models.place(autoencoder), name)


def load_diffusion_model(models: ModelManager, path: Path, input_name: str = "unet_name",
                         weight_dtype: str = "default", reads: ReadAhead | None = None) -> DiffusionModel:
    """MODEL from a file holding the denoising network alone (UNETLoader); with a `weight_dtype` of
    `weight_storage.WEIGHT_DTYPES` other than "default", its weights stored in that precision. The file's tensors
    come from `reads` when a read of it was started there (`read_ahead`).

    An fp8 file's linear layers keep their fp8 weights as read (`quantized.load_quantized`) with "default" when the
    manager says so (`ModelManager.keeps_fp8_weights`), and always with a `weight_dtype` of the file's own fp8: then
    the file is not converted to the engine's precision first (peak memory about the file's size), and the layers
    it holds in higher precision are stored in fp8 as the weight_dtype says."""
    path = Path(path)
    storage = weight_storage.WEIGHT_DTYPES[weight_dtype]

    def load() -> DiffusionModel:
        if path.suffix.lower() == gguf.GGUF_SUFFIX:
            state = gguf.read_gguf(path, input_name)
        else:
            state = _read_model_file(models, reads, path, input_name,
                                     _keeps_fp8_weights(models, path, input_name, storage))
        family = registry.diffusion_model_family(state.keys())
        if family is None:
            raise ValueError(f"{input_name}: this file holds {registry.describe_diffusion_model(state.keys())}, "
                             f"not a transformer UNETLoader runs ({', '.join(registry.diffusion_model_titles())}; "
                             "use CheckpointLoaderSimple for Stable Diffusion checkpoints)")
        model = family.load_diffusion_model(state, path.name, models.place)
        if storage is not None:
            weight_storage.with_weights_stored_in(model.network, storage, "weight_dtype")
        return model

    return models.cached(_diffusion_model_kind(weight_dtype), path, input_name, load)


def _diffusion_model_kind(weight_dtype: str) -> str:
    """The manager's kind for a UNETLoader model: one per weight_dtype, as each stores the weights differently."""
    return "diffusion_model" if weight_dtype == "default" else f"diffusion_model-{weight_dtype}"


def _keeps_fp8_weights(models: ModelManager, path: Path, input_name: str,
                       storage: torch.dtype | None) -> Callable[[int], bool]:
    """UNETLoader's rule for an fp8 file: the manager's, except that a weight_dtype choice stores the weights in
    fp8, so a file of that fp8 keeps its own as they are."""
    if storage is None:
        return models.keeps_fp8_weights
    return lambda parameters: storage in fp8_parameters(path, input_name)[0]


StateDict = dict[str, torch.Tensor]


def _model_file_read(models: ModelManager, path: Path, input_name: str,
                     keeps_fp8_weights: Callable[[int], bool]) -> tuple[Hashable, Callable[[], StateDict]]:
    """How a loader reads a model file (`files.read_weights` in the manager's precision), and the key naming
    everything that read depends on: the file's version, the precision, whether its fp8 weights stay fp8."""
    keep_fp8 = keeps_fp8(path, input_name, keeps_fp8_weights)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, models.dtype, keep_fp8)
    return key, lambda: read_safetensors(path, input_name, models.dtype, keep_fp8=keep_fp8)


def _read_model_file(models: ModelManager, reads: ReadAhead | None, path: Path, input_name: str,
                     keeps_fp8_weights: Callable[[int], bool]) -> StateDict:
    """The file's tensors: those a read ahead of this file version with these settings gave, else read now."""
    key, read = _model_file_read(models, path, input_name, keeps_fp8_weights)
    state = None if reads is None else reads.take(key)
    return read() if state is None else state


def read_ahead(reads: ReadAhead, models: ModelManager, kind: str, path: Path, input_name: str,
               weight_dtype: str = "default") -> None:
    """Start reading the model file a loader will load with `models` (`kind` "checkpoint": `load_checkpoint`;
    "diffusion_model": `load_diffusion_model` with `weight_dtype`) in the background, in `reads`, for that
    loader to take (`diffusion.read_ahead`). Nothing is started for a model the manager holds already, a GGUF
    file, or a file that cannot be read: its loader meets and reports the problem."""
    path = Path(path)
    if weight_dtype not in weight_storage.WEIGHT_DTYPES:
        return
    held_as = _diffusion_model_kind(weight_dtype) if kind == "diffusion_model" else kind
    if (held_as, str(path.resolve())) in models.loaded() or path.suffix.lower() == gguf.GGUF_SUFFIX:
        return
    storage = weight_storage.WEIGHT_DTYPES[weight_dtype] if kind == "diffusion_model" else None
    try:
        key, read = _model_file_read(models, path, input_name, _keeps_fp8_weights(models, path, input_name, storage))
    except (OSError, ValueError):
        return
    reads.start(key, read)


# ComfyUI reads a lone OpenCLIP-G file given as stable_diffusion as the SDXL refiner's CLIP, Qwen3 under lumina2 as
# Z-Image's, Qwen3-VL under qwen_image as Qwen-Image 2.1's
FILE_ROLE_FAMILIES = {("stable_diffusion", text_encoder_files.CLIP_G): "sdxl",
                      ("lumina2", text_encoder_files.QWEN3): "zimage",
                      ("qwen_image", text_encoder_files.QWEN3_VL): "qwenimage21"}


def text_encoders_family(clip_type: str, paths: Mapping[str, Path]) -> registry.Family:
    """The family that reads these text encoder files (input name -> path) under a ComfyUI CLIP loader `type`
    (`registry.clip_type_family`, or for a single file of another family's role that family, as ComfyUI does)."""
    family = registry.clip_type_family(clip_type)
    if len(paths) == 1:
        (input_name, path), = paths.items()
        role = text_encoder_files.file_role(safetensors_keys(Path(path), input_name))
        if (clip_type, role) in FILE_ROLE_FAMILIES:
            return registry.family(FILE_ROLE_FAMILIES[clip_type, role])
    return family


def load_text_encoders(models: ModelManager, clip_type: str, paths: Mapping[str, Path]) -> Any:
    """CLIP from text encoder files (input name -> path) of the family whose ComfyUI CLIP loader `type` this is."""
    return text_encoders_family(clip_type, paths).load_text_encoders(models, paths)


def text_encoders_family_name(clip_type: str, paths: Mapping[str, Path]) -> str | None:
    """The family of what `load_text_encoders` would give, for facts known at validation (tensor names only);
    None when it cannot be told."""
    try:
        return text_encoders_family(clip_type, paths).name
    except ValueError:
        return None


def load_lora(models: ModelManager, path: Path, family_name: str,
              input_name: str = "lora_name") -> tuple[Mapping[str, torch.Tensor], Any]:
    """A LoRA file's state dict in diffusers/peft keys and its network alphas, read with the key conventions of
    the family it is applied to (kohya and other layouts converted)."""
    family = registry.family(family_name)
    path = Path(path)

    def load() -> tuple[Mapping[str, torch.Tensor], Any]:
        if family.read_lora is None:  # before reading the file
            raise ValueError(f"{input_name}: {family.title} models take no LoRAs")
        return read_lora_state_dict(read_safetensors(path, input_name), family_name, path.name, input_name)

    return models.cached(f"lora-{family.name}", path, input_name, load)


def read_lora_state_dict(state: Mapping[str, torch.Tensor], family_name: str, name: str,
                         input_name: str = "lora_name") -> tuple[Mapping[str, torch.Tensor], Any]:
    """A LoRA's tensors (a file's, or a state dict a caller holds) in diffusers/peft keys and its network alphas,
    read with the key conventions of the family it is applied to (kohya and other layouts converted)."""
    family = registry.family(family_name)
    if family.read_lora is None:
        raise ValueError(f"{input_name}: {family.title} models take no LoRAs")
    if not state or not all("lora" in key or key.endswith((".alpha", ".diff", ".diff_b")) for key in state):
        raise ValueError(f"{input_name}: {name} is not a LoRA file (no lora_* tensors)")
    try:
        return family.read_lora(state)
    except (ValueError, KeyError) as error:
        raise ValueError(f"{input_name}: {name}: unsupported LoRA layout ({error})") from error


def file_family(path: Path, input_name: str) -> str | None:
    """The family of a checkpoint or diffusion-model file from its tensor names alone (the header, no tensor
    data), for facts known at validation; None when no family claims it or it cannot be read."""
    path = Path(path)
    try:
        keys = set(gguf.gguf_keys(path, input_name) if path.suffix.lower() == gguf.GGUF_SUFFIX
                   else safetensors_keys(path, input_name))
    except ValueError:
        return None
    try:
        return registry.checkpoint_family(keys).name
    except ValueError:
        family = registry.diffusion_model_family(keys)
        return None if family is None else family.name


def folder_family(folder: Path) -> str | None:
    """The family of a diffusers folder from its model_index.json, for facts known at validation; None when no
    family reads it or it cannot be read."""
    try:
        return registry.pipeline_family(pipeline_class(Path(folder))).name
    except ValueError:
        return None
