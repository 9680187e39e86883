"""Loading a folder of images as one IMAGE batch, for applying one edit to many images.

Images come from a folder inside the input folder (never outside it), in name order; each is converted to RGB
(grey, palette, CMYK, 16-bit) with its alpha as the MASK, as LoadImage does. Knows nothing of models or HTTP.
"""
from __future__ import annotations

import hashlib
from typing import Any

import torch

from nodes import resize
from nodes.environment import IMAGE_EXTENSIONS, current_environment, resolve_inside
from nodes.image import load_image_file


class LoadImagesFromDir:
    DESCRIPTION = ("Loads the images of a folder inside the input folder, in name order, as one batch (one output "
                   "per image downstream). Images whose size differs from the first one are resized (Lanczos) to "
                   "its size; animations contribute their first frame. The mask is 1 - alpha.")
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK", "INT")
    RETURN_NAMES = ("images", "masks", "count")
    FUNCTION = "load_images"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "directory": ("STRING", {"default": "", "tooltip": "A folder inside the input folder."}),
            "image_load_cap": ("INT", {"default": 0, "min": 0, "max": 100000, "step": 1,
                                       "tooltip": "The most images to load (0: all)."}),
            "start_index": ("INT", {"default": 0, "min": 0, "max": 100000, "step": 1,
                                    "tooltip": "How many images (in name order) to skip first."}),
        }}

    @classmethod
    def IS_CHANGED(cls, directory: str, image_load_cap: int = 0, start_index: int = 0) -> str:
        digest = hashlib.sha256()
        for path in _image_paths(directory, image_load_cap, start_index):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()

    def load_images(self, directory: str, image_load_cap: int = 0,
                    start_index: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
        images, masks = [], []
        for path in _image_paths(directory, image_load_cap, start_index):
            frames, frame_masks = load_image_file(path, "directory")
            image, mask = frames[:1], frame_masks[:1]
            if images and image.shape[1:3] != images[0].shape[1:3]:
                height, width = images[0].shape[1:3]
                image = resize.upscale(image.movedim(-1, 1), width, height, "lanczos", "disabled").movedim(1, -1)
                mask = resize.upscale(mask.unsqueeze(1), width, height, "bilinear", "disabled").squeeze(1)
            images.append(image)
            masks.append(mask)
        return torch.cat(images), torch.cat(masks), len(images)


def _image_paths(directory: str, image_load_cap: int, start_index: int) -> list:
    input_dir = current_environment().folders.input_dir
    folder = resolve_inside(input_dir, directory or ".", "directory")
    if not folder.is_dir():
        raise ValueError(f"directory: {directory!r} is not a folder in {input_dir}")
    paths = sorted(path for path in folder.iterdir()
                   if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("."))
    paths = paths[start_index:]
    if image_load_cap:
        paths = paths[:image_load_cap]
    if not paths:
        raise ValueError(f"directory: no images in {directory!r} (from index {start_index})")
    return paths


NODE_CLASS_MAPPINGS = {"LoadImagesFromDir": LoadImagesFromDir}
NODE_DISPLAY_NAME_MAPPINGS = {"LoadImagesFromDir": "Load Images From Folder"}
