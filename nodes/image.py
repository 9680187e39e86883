"""Image nodes: loading from the input folder, saving PNGs to the output/temp folders, resizing.

IMAGE is float [batch, height, width, channels] in 0..1; MASK is float [batch, height, width] (1 where the
image was transparent). Saved PNGs carry the API-format prompt and the editor workflow as `prompt`/`workflow`
text chunks, as ComfyUI writes them; each appears complete or not at all (written under a temporary name, then
moved into place), never replaces another file, and a prompt run again after a crash replaces what its
interrupted run wrote (`SaveJournal`). Knows nothing of HTTP or the executor: the prompt and workflow arrive
through the hidden PROMPT and EXTRA_PNGINFO inputs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nodes import resize
from nodes.environment import current_environment, resolve_inside
from nodes.latent import MAX_RESOLUTION

_COUNTER = re.compile(r"_(\d+)_\.png$")


def load_image_file(path: Path, input_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All frames of an image file as IMAGE [frames, H, W, 3] and MASK [frames, H, W] (1 - alpha)."""
    from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

    try:
        opened = Image.open(path)
        frames = [ImageOps.exif_transpose(frame) for frame in ImageSequence.Iterator(opened)]
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{input_name}: {path.name} is not a readable image ({error})") from error
    images, masks = [], []
    size = frames[0].size
    for frame in frames:
        if frame.size != size:
            continue
        if frame.mode == "I":
            frame = frame.point(lambda value: value * (1 / 255))
        rgb = np.asarray(frame.convert("RGB"), dtype=np.float32) / 255.0
        images.append(torch.from_numpy(rgb))
        if "A" in frame.getbands():
            alpha = np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0
            masks.append(1.0 - torch.from_numpy(alpha))
        elif frame.mode == "P" and "transparency" in frame.info:
            alpha = np.asarray(frame.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
            masks.append(1.0 - torch.from_numpy(alpha))
        else:
            masks.append(torch.zeros(rgb.shape[:2]))
    return torch.stack(images), torch.stack(masks)


class LoadImage:
    DESCRIPTION = "Loads an image from the input folder; its mask is 1 where the image is transparent."
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    OUTPUT_TOOLTIPS = ("The image (all frames of an animation, as a batch).", "1 - the alpha channel.")
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_input_images()
        return {"required": {"image": (names, {"image_upload": True, "tooltip": "The image in the input folder."})}}

    @classmethod
    def IS_CHANGED(cls, image: str) -> str:
        path = resolve_inside(current_environment().folders.input_dir, image, "image")
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def load_image(self, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        path = resolve_inside(current_environment().folders.input_dir, image, "image")
        return load_image_file(path, "image")


def _split_prefix(folder: Path, filename_prefix: str) -> tuple[Path, str, str]:
    """(directory, subfolder, base name) for a prefix like "sub/name", refusing paths outside `folder`."""
    prefix = filename_prefix.replace("\\", "/").strip() or "ComfyUI"
    subfolder, _, base = prefix.rpartition("/")
    directory = (folder / subfolder).resolve()
    root = folder.resolve()
    if directory != root and root not in directory.parents:
        raise ValueError(f"filename_prefix: {filename_prefix!r} points outside {folder}")
    if not base:
        raise ValueError(f"filename_prefix: {filename_prefix!r} has no file name")
    return directory, subfolder, base


def _next_counter(directory: Path, base: str) -> int:
    counters = [int(match.group(1)) for path in directory.glob(f"{_glob_escape(base)}_*_.png")
                if (match := _COUNTER.search(path.name)) and path.name[:-len(match.group(0))] == base]
    return max(counters, default=0) + 1


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _png_metadata(prompt: Any, extra_pnginfo: Any) -> Any:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    if isinstance(extra_pnginfo, dict):
        for key, value in extra_pnginfo.items():
            info.add_text(str(key), json.dumps(value))
    return info


def save_images(images: torch.Tensor, folder: Path, filename_prefix: str, folder_type: str, prompt: Any,
                extra_pnginfo: Any, compress_level: int, journal: "SaveJournal | None" = None) -> list[dict[str, str]]:
    """Write each image as `<prefix>_<counter>_.png` and return the UI entries. Each file is written under a
    hidden temporary name and moved into place complete, never replacing another file; with a `journal` (the
    prompt's run of this node), a re-run of the same prompt after a crash writes to the names its interrupted run
    chose, replacing what that run left, instead of adding files."""
    from PIL import Image

    if images.ndim != 4:
        raise ValueError(f"images: expected [batch, height, width, channels], got shape {tuple(images.shape)}")
    directory, subfolder, base = _split_prefix(folder, filename_prefix)
    directory.mkdir(parents=True, exist_ok=True)
    metadata = _png_metadata(prompt, extra_pnginfo)
    planned = journal.names(directory, base, len(images)) if journal is not None else None
    if planned is None:
        counter = _next_counter(directory, base)
        planned = [f"{base}_{counter + index:05}_.png" for index in range(len(images))]
        if journal is not None:
            journal.record(directory, base, planned)
        replace = False
    else:
        replace = True
        for name in planned:  # what the crashed run was writing when it died
            for leftover in directory.glob(f".{_glob_escape(name)}.*.partial"):
                leftover.unlink(missing_ok=True)
    results = []
    for image, name in zip(images, planned):
        # truncated, not rounded, as ComfyUI's SaveImage does: the same floats give byte-identical files
        array = np.clip(255.0 * image.float().cpu().numpy(), 0, 255).astype(np.uint8)
        pil = Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array)
        written = _write_png(directory, name, base, pil, metadata, compress_level, replace)
        results.append({"filename": written, "subfolder": subfolder, "type": folder_type})
    return results


def _write_png(directory: Path, name: str, base: str, pil: Any, metadata: Any, compress_level: int,
               replace: bool) -> str:
    """Write under a hidden temporary name, then move it to `name` (replacing only when told to; otherwise a
    taken name moves on to the next counter): the file appears complete or not at all."""
    temporary = directory / f".{name}.{secrets.token_hex(4)}.partial"
    try:
        with open(temporary, "xb") as handle:
            pil.save(handle, format="PNG", pnginfo=metadata, compress_level=compress_level)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, directory / name)
            return name
        while True:
            try:
                os.link(temporary, directory / name)  # atomic, and fails if the name is taken
                return name
            except FileExistsError:
                counter = int(_COUNTER.search(name).group(1)) + 1
                name = f"{base}_{counter:05}_.png"
            except OSError:  # a filesystem without hard links: a rename, after looking (not atomic against races)
                if not (directory / name).exists():
                    os.replace(temporary, directory / name)
                    return name
                counter = int(_COUNTER.search(name).group(1)) + 1
                name = f"{base}_{counter:05}_.png"
    finally:
        temporary.unlink(missing_ok=True)


class SaveJournal:
    """Which file names one node of one prompt chose, kept in the user folder until the prompt is long done, so
    that a prompt run again after a crash (the same prompt id) replaces its own earlier files. A journal entry is
    written before any image, atomically; entries older than `KEEP_SECONDS` are pruned as new ones are written."""

    KEEP_SECONDS = 7 * 24 * 3600

    def __init__(self, folder: Path, prompt_id: str, node_id: str) -> None:
        self.folder = folder
        key = hashlib.sha256(f"{prompt_id}\0{node_id}".encode()).hexdigest()[:32]
        self.path = folder / f"{key}.json"

    @classmethod
    def for_current_node(cls, user_dir: Path) -> "SaveJournal | None":
        """The journal of the node running now; None outside a prompt (a script calling the node)."""
        from engine.progress import current_node_context

        context = current_node_context()
        if context is None or not context.prompt_id:
            return None
        return cls(user_dir / "save-journal", context.prompt_id, context.node_id)

    def names(self, directory: Path, base: str, count: int) -> list[str] | None:
        """The names an earlier run of this node chose for the same folder, prefix and number of images."""
        try:
            entry = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        names = entry.get("names") if isinstance(entry, dict) else None
        if entry.get("directory") != str(directory) or entry.get("base") != base or not isinstance(names, list) \
                or len(names) != count or not all(isinstance(name, str) and "/" not in name for name in names):
            return None
        return names

    def record(self, directory: Path, base: str, names: list[str]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._prune()
        temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.partial")
        try:
            temporary.write_text(json.dumps({"directory": str(directory), "base": base, "names": names}))
            os.replace(temporary, self.path)
        finally:
            temporary.unlink(missing_ok=True)

    def _prune(self) -> None:
        cutoff = time.time() - self.KEEP_SECONDS
        for old in self.folder.glob("*.json"):
            try:
                if old.stat().st_mtime < cutoff:
                    old.unlink()
            except OSError:
                continue


class SaveImage:
    DESCRIPTION = ("Saves images as PNG files in the output folder, with the workflow embedded; existing files are "
                   "never replaced (a prompt run again after a crash replaces only its own earlier files).")
    CATEGORY = "image"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save_images"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI",
                                               "tooltip": "File name prefix; may start with subfolders (a/b/name)."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save_images(self, images: torch.Tensor, filename_prefix: str = "ComfyUI", prompt: Any = None,
                    extra_pnginfo: Any = None) -> dict[str, Any]:
        folders = current_environment().folders
        saved = save_images(images, folders.output_dir, filename_prefix, "output", prompt, extra_pnginfo,
                            compress_level=4, journal=SaveJournal.for_current_node(folders.user_dir))
        return {"ui": {"images": saved}}


class PreviewImage:
    DESCRIPTION = "Shows images without keeping them: they are written to the temporary folder."
    CATEGORY = "image"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save_images"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"images": ("IMAGE", {"tooltip": "The images to preview."})},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save_images(self, images: torch.Tensor, prompt: Any = None, extra_pnginfo: Any = None) -> dict[str, Any]:
        folder = current_environment().folders.temp_dir
        prefix = "ComfyUI_temp_" + secrets.token_hex(3)
        saved = save_images(images, folder, prefix, "temp", prompt, extra_pnginfo, compress_level=1)
        return {"ui": {"images": saved}}


class ImageScale:
    DESCRIPTION = "Resizes images to a width and height (0 keeps the aspect ratio), optionally centre-cropping."
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The images to resize."}),
            "upscale_method": (list(resize.IMAGE_METHODS), {"tooltip": "The interpolation method."}),
            "width": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1,
                              "tooltip": "Target width (0 follows the height)."}),
            "height": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1,
                               "tooltip": "Target height (0 follows the width)."}),
            "crop": (list(resize.CROP_MODES), {"tooltip": "Crop to the target aspect ratio first."}),
        }}

    def upscale(self, image: torch.Tensor, upscale_method: str, width: int, height: int,
                crop: str) -> tuple[torch.Tensor]:
        samples = image.movedim(-1, 1)
        return (resize.upscale(samples, width, height, upscale_method, crop).movedim(1, -1),)
