"""Image nodes: loading from the input folder, saving PNGs to the output/temp folders, resizing.

IMAGE is float [batch, height, width, channels] in 0..1; MASK is float [batch, height, width] (1 where the
image was transparent). Saved PNGs carry the API-format prompt and the editor workflow as `prompt`/`workflow`
text chunks, as ComfyUI writes them, and never replace an existing file. Knows nothing of HTTP or the executor:
the prompt and workflow arrive through the hidden PROMPT and EXTRA_PNGINFO inputs.
"""
from __future__ import annotations

import hashlib
import json
import re
import secrets
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
                extra_pnginfo: Any, compress_level: int) -> list[dict[str, str]]:
    """Write each image as `<prefix>_<counter>_.png` (never replacing a file); return the UI entries."""
    from PIL import Image

    if images.ndim != 4:
        raise ValueError(f"images: expected [batch, height, width, channels], got shape {tuple(images.shape)}")
    directory, subfolder, base = _split_prefix(folder, filename_prefix)
    directory.mkdir(parents=True, exist_ok=True)
    metadata = _png_metadata(prompt, extra_pnginfo)
    results = []
    counter = _next_counter(directory, base)
    for image in images:
        array = np.clip(image.float().cpu().numpy() * 255.0, 0, 255).round().astype(np.uint8)
        pil = Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array)
        while True:
            name = f"{base}_{counter:05}_.png"
            try:
                with open(directory / name, "xb") as handle:
                    pil.save(handle, format="PNG", pnginfo=metadata, compress_level=compress_level)
                break
            except FileExistsError:
                counter += 1
        results.append({"filename": name, "subfolder": subfolder, "type": folder_type})
        counter += 1
    return results


class SaveImage:
    DESCRIPTION = ("Saves images as PNG files in the output folder, with the workflow embedded; existing files are "
                   "never replaced.")
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
        folder = current_environment().folders.output_dir
        saved = save_images(images, folder, filename_prefix, "output", prompt, extra_pnginfo, compress_level=4)
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
