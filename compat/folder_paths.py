"""ComfyUI's `folder_paths` for plugins, answered from the current node environment's folders.

Module attributes such as `output_directory` are computed on access (PEP 562), so they always follow the
environment the program (or a test) installed.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodes.environment import current_environment, resolve_inside

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
CUSTOM_NODES_DIR = Path(__file__).resolve().parents[1] / "custom_nodes"

# ComfyUI's model kinds with their folders: one kind can list several folders (text_encoders also reads clip/,
# diffusion_models also unet/), and the legacy names map onto the new ones (`map_legacy`).
_SEVERAL_FOLDERS = {"text_encoders": ("text_encoders", "clip"), "diffusion_models": ("unet", "diffusion_models"),
                    "controlnet": ("controlnet", "t2i_adapter")}
_OWN_EXTENSIONS = {"configs": {".yaml"}, "diffusers": {"folder"}, "classifiers": {""}}
KNOWN_MODEL_FOLDERS = ("checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
                       "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen",
                       "upscale_models", "hypernetworks", "photomaker", "classifiers", "model_patches",
                       "audio_encoders")


@dataclass
class _ModelsTables:
    """The mutable tables of one models folder: plugins add kinds and folders to `folder_names_and_paths` and
    they stay (one instance per models folder, so a test's environment gets its own)."""

    folder_names_and_paths: dict[str, tuple[list[str], set[str]]]
    filename_list_cache: dict[str, tuple[list[str], dict[str, float], float]] = field(default_factory=dict)


_tables: dict[Path, _ModelsTables] = {}


def _folders():
    return current_environment().folders


def _state() -> _ModelsTables:
    models_dir = _folders().models_dir
    if models_dir not in _tables:
        table = {kind: ([str(models_dir / name) for name in _SEVERAL_FOLDERS.get(kind, (kind,))],
                        _OWN_EXTENSIONS.get(kind, supported_pt_extensions)) for kind in KNOWN_MODEL_FOLDERS}
        table["custom_nodes"] = ([str(CUSTOM_NODES_DIR)], set())
        _tables[models_dir] = _ModelsTables(table)
    return _tables[models_dir]


def get_input_directory() -> str:
    return str(_folders().input_dir)


def get_output_directory() -> str:
    return str(_folders().output_dir)


def get_temp_directory() -> str:
    return str(_folders().temp_dir)


def get_user_directory() -> str:
    return str(_folders().user_dir)


def get_directory_by_type(type_name: str) -> str | None:
    return {"output": get_output_directory, "input": get_input_directory,
            "temp": get_temp_directory}.get(type_name, lambda: None)()


def __getattr__(name: str) -> Any:
    attributes = {"models_dir": lambda: str(_folders().models_dir), "output_directory": get_output_directory,
                  "input_directory": get_input_directory, "temp_directory": get_temp_directory,
                  "user_directory": get_user_directory,
                  "base_path": lambda: str(Path(get_output_directory()).parent),
                  "folder_names_and_paths": lambda: _state().folder_names_and_paths,
                  "filename_list_cache": lambda: _state().filename_list_cache}
    if name in attributes:
        return attributes[name]()
    raise AttributeError(f"module 'folder_paths' has no attribute {name!r}")


def map_legacy(folder_name: str) -> str:
    return {"unet": "diffusion_models", "clip": "text_encoders"}.get(folder_name, folder_name)


def get_folder_paths(folder_name: str) -> list[str]:
    """The folders of a model kind (a copy); KeyError for a kind nobody registered, as in ComfyUI."""
    return list(_state().folder_names_and_paths[map_legacy(folder_name)][0])


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    """Add a folder to a model kind (first with `is_default`), or register a new kind that lists every file.
    For plugins' own use: the built-in loaders read only the models folder."""
    table = _state().folder_names_and_paths
    folder_name = map_legacy(folder_name)
    if folder_name not in table:
        table[folder_name] = ([full_folder_path], set())
        return
    paths = table[folder_name][0]
    if full_folder_path in paths:
        if is_default and paths[0] != full_folder_path:
            paths.remove(full_folder_path)
            paths.insert(0, full_folder_path)
    elif is_default:
        paths.insert(0, full_folder_path)
    else:
        paths.append(full_folder_path)


def filter_files_extensions(files: list[str], extensions: set[str] | list[str]) -> list[str]:
    wanted = {e.lower() for e in extensions}
    return sorted(f for f in files if not wanted or os.path.splitext(f)[-1].lower() in wanted)


def recursive_search(directory: str, excluded_dir_names: list[str] | None = None) -> tuple[list[str], dict[str, float]]:
    excluded = set(excluded_dir_names or [])
    found: list[str] = []
    folders: dict[str, float] = {}
    if not os.path.isdir(directory):
        return found, folders
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = [d for d in dirs if d not in excluded and not d.startswith(".")]
        folders[root] = os.path.getmtime(root)
        for file in files:
            found.append(os.path.relpath(os.path.join(root, file), directory).replace(os.sep, "/"))
    return found, folders


def _cached_listing(folder_name: str) -> tuple[list[str], dict[str, float], float] | None:
    """The cached listing while none of its folders changed and no new folder of that kind appeared."""
    cached = _state().filename_list_cache.get(folder_name)
    if cached is None:
        return None
    for folder, modified in cached[1].items():
        if not os.path.isdir(folder) or os.path.getmtime(folder) != modified:
            return None
    if any(os.path.isdir(folder) and folder not in cached[1] for folder in get_folder_paths(folder_name)):
        return None
    return cached


def get_filename_list(folder_name: str) -> list[str]:
    """The model files of a kind (relative names with `/`), cached in `filename_list_cache` as ComfyUI does."""
    folder_name = map_legacy(folder_name)
    listing = _cached_listing(folder_name)
    if listing is None:
        folders, extensions = _state().folder_names_and_paths[folder_name]
        names: set[str] = set()
        modified: dict[str, float] = {}
        for folder in folders:
            found, seen = recursive_search(folder, [".git"])
            names.update(filter_files_extensions(found, extensions))
            modified.update(seen)
        listing = (sorted(names), modified, time.perf_counter())
        _state().filename_list_cache[folder_name] = listing
    return list(listing[0])


def get_full_path(folder_name: str, filename: str) -> str | None:
    """The file's path in the first folder of that kind that has it; never a path outside those folders, except
    through a symbolic link the machine's owner put there when `--allow-model-links` follows them."""
    if map_legacy(folder_name) not in _state().folder_names_and_paths:
        return None
    follow_links = _folders().follow_model_links
    for folder in get_folder_paths(folder_name):
        try:
            candidate = resolve_inside(Path(folder), os.path.normpath("/" + filename).lstrip("/"), "filename",
                                       follow_links)
        except ValueError:
            continue
        if candidate.is_file():
            return str(candidate)
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    path = get_full_path(folder_name, filename)
    if path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return path


def annotated_filepath(name: str) -> tuple[str, str | None]:
    for annotation, kind in ((" [output]", "output"), (" [input]", "input"), (" [temp]", "temp")):
        if name.endswith(annotation):
            return name[: -len(annotation)], get_directory_by_type(kind)
    return name, None


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    name, base_dir = annotated_filepath(name)
    if base_dir is None:
        base_dir = default_dir if default_dir is not None else get_input_directory()
    root = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(root, name))
    if path != root and not path.startswith(root + os.sep):
        raise ValueError(f"{name!r} points outside {base_dir}")
    return path


def exists_annotated_filepath(name: str) -> bool:
    try:
        return os.path.exists(get_annotated_filepath(name))
    except ValueError:
        return False


def get_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0,
                        image_height: int = 0) -> tuple[str, str, int, str, str]:
    """ComfyUI's contract: (folder, file base name, next free counter, subfolder, expanded prefix)."""
    now = time.localtime()
    for key, value in {"%width%": str(image_width), "%height%": str(image_height), "%year%": str(now.tm_year),
                       "%month%": f"{now.tm_mon:02}", "%day%": f"{now.tm_mday:02}",
                       "%hour%": f"{now.tm_hour:02}", "%minute%": f"{now.tm_min:02}",
                       "%second%": f"{now.tm_sec:02}"}.items():
        filename_prefix = filename_prefix.replace(key, value)
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((os.path.abspath(output_dir), os.path.abspath(full_output_folder))) != \
            os.path.abspath(output_dir):
        raise ValueError(f"Saving image outside the output folder is not allowed: {filename_prefix!r}")
    os.makedirs(full_output_folder, exist_ok=True)
    counters = []
    for existing in os.listdir(full_output_folder):
        if existing.startswith(filename + "_"):
            digits = existing[len(filename) + 1:].split("_")[0]
            if digits.isdigit():
                counters.append(int(digits))
    return full_output_folder, filename, max(counters, default=0) + 1, subfolder, filename_prefix
