"""ComfyUI's `.latent` files: SaveLatent writes LATENT samples into the output folder, LoadLatent reads them from
the input folder, both with ComfyUI's contracts (nodes.py) and file format, so files move between ComfyUI and
here unchanged.

A `.latent` file is a safetensors file holding the samples (the VAE's raw latents, as LATENT holds them) as
`latent_tensor`, an empty `latent_format_version_0` tensor marking that format, and the API prompt and editor
workflow as metadata (`prompt` and each EXTRA_PNGINFO entry, JSON-encoded). Files are named and written as SaveImage
writes images (`<prefix>_<counter:05>_.latent`, atomically, never replacing another file, only inside the output
folder). Knows nothing of HTTP or the executor: the prompt and workflow arrive through the hidden PROMPT and
EXTRA_PNGINFO inputs.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from nodes.environment import current_environment, resolve_inside
from nodes.image import SaveJournal, plan_names, split_prefix, write_file
from nodes.model_saving import prompt_metadata

# A file without the format marker is from before, when ComfyUI saved latents scaled by SD's 0.18215: it loads
# divided by that, as ComfyUI does.
LATENT_EXTENSION = ".latent"
LATENT_TENSOR = "latent_tensor"
LATENT_FORMAT_MARKER = "latent_format_version_0"
OLD_FORMAT_SCALE = 0.18215


class SaveLatent:
    DESCRIPTION = ("Saves latents as a ComfyUI .latent file in the output folder (the VAE's raw latents, with the "
                   "workflow in its metadata), to load again with LoadLatent or share with ComfyUI. Existing files "
                   "are never replaced.")
    CATEGORY = "_for_testing"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "The latents to save."}),
                "filename_prefix": ("STRING", {"default": "latents/ComfyUI",
                                               "tooltip": "File name prefix inside the output folder; may start "
                                                          "with subfolders (a/b/name)."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(self, samples: dict[str, Any], filename_prefix: str = "latents/ComfyUI", prompt: Any = None,
             extra_pnginfo: Any = None) -> dict[str, Any]:
        from safetensors.torch import save_file

        latents = samples.get("samples") if isinstance(samples, dict) else None
        if not isinstance(latents, torch.Tensor):
            raise ValueError("samples: expected a LATENT (a dict with a 'samples' tensor)")
        folders = current_environment().folders
        directory, subfolder, base = split_prefix(folders.output_dir, filename_prefix)
        directory.mkdir(parents=True, exist_ok=True)
        (name,), replace = plan_names(directory, base, 1, LATENT_EXTENSION,
                                      SaveJournal.for_current_node(folders.user_dir))
        tensors = {LATENT_TENSOR: latents.detach().contiguous().cpu(), LATENT_FORMAT_MARKER: torch.tensor([])}
        metadata = prompt_metadata(prompt, extra_pnginfo)
        # safetensors writes by path: into the hidden file `write_file` opened, which it then syncs and links into place
        name = write_file(directory, name, base, replace, lambda handle: save_file(tensors, handle.name, metadata))
        return {"ui": {"latents": [{"filename": name, "subfolder": subfolder, "type": "output"}]}}


def _latent_file(name: str) -> Path:
    """The file a LoadLatent choice names: in the input folder, or in the output or temp folder for a name
    annotated " [output]" / " [temp]", as ComfyUI reads annotated names; a ValueError naming the input otherwise."""
    folders = current_environment().folders
    folder = folders.input_dir
    for annotation, where in ((" [output]", folders.output_dir), (" [input]", folders.input_dir),
                              (" [temp]", folders.temp_dir)):
        if name.endswith(annotation):
            name, folder = name[:-len(annotation)], where
            break
    path = resolve_inside(folder, name, "latent")
    if not path.is_file():
        raise ValueError(f"latent: {name!r} is not a file")
    return path


def read_latent_file(path: Path) -> dict[str, torch.Tensor]:
    """LATENT from a .latent file as ComfyUI reads it: `latent_tensor` as float32, divided by 0.18215 when the
    file lacks the format marker (the old scaled format); a ValueError naming the input for anything else."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise ValueError(f"latent: {path.name} is not a readable .latent (safetensors) file: {error}") from error
    if LATENT_TENSOR not in tensors:
        raise ValueError(f"latent: {path.name} holds no {LATENT_TENSOR!r} tensor (keys: {sorted(tensors)[:5]})")
    multiplier = 1.0 if LATENT_FORMAT_MARKER in tensors else 1.0 / OLD_FORMAT_SCALE
    return {"samples": tensors[LATENT_TENSOR].float() * multiplier}


class LoadLatent:
    DESCRIPTION = ("Loads latents from a ComfyUI .latent file in the input folder (as SaveLatent writes them; a file "
                   "from before ComfyUI's raw-latent format is unscaled by 0.18215, as ComfyUI does).")
    CATEGORY = "_for_testing"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The latents the file holds.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        folders = current_environment().folders
        names = folders.listings.files(folders.input_dir, (LATENT_EXTENSION,))
        return {"required": {"latent": (names, {"tooltip": "The .latent file in the input folder."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, latent: str) -> bool | str:
        try:
            _latent_file(latent)
        except ValueError as error:
            return f"Invalid latent file: {error}"
        return True

    @classmethod
    def IS_CHANGED(cls, latent: str) -> str:
        return hashlib.sha256(_latent_file(latent).read_bytes()).hexdigest()

    def load(self, latent: str) -> tuple[dict[str, torch.Tensor]]:
        return (read_latent_file(_latent_file(latent)),)


NODE_CLASS_MAPPINGS = {"SaveLatent": SaveLatent, "LoadLatent": LoadLatent}
# ComfyUI gives these two no display names: they show as their class names
NODE_DISPLAY_NAME_MAPPINGS = {"SaveLatent": "SaveLatent", "LoadLatent": "LoadLatent"}
