"""Upscaling nodes: loading upscale models (ESRGAN, Real-ESRGAN, SwinIR, ... through spandrel) from
models/upscale_models and running them over images tile by tile, and resizing images by a factor, to a number of
pixels or to a longest side. ComfyUI's class names, inputs, defaults and outputs, so its workflows run unchanged.

IMAGE is float [batch, height, width, channels] in 0..1. Loading and running the models is `diffusion.upscale`'s;
resizing is `nodes.resize`'s, shared with ImageScale. Knows nothing of HTTP or the executor.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from diffusion.upscale import UPSCALE_MODEL_EXTENSIONS, UpscaleModel, load_upscale_model, upscale_image
from engine.progress import ProgressBar
from nodes import resize
from nodes.environment import current_environment
from nodes.latent import MAX_RESOLUTION

UPSCALE_MODELS = "upscale_models"
# ComfyUI's ImageScaleToMaxDimension offers its methods in this order (it lists "bilinear" twice; once here).
MAX_DIMENSION_METHODS = ("area", "lanczos", "bilinear", "nearest-exact", "bicubic")


def _resized(image: torch.Tensor, width: int, height: int, method: str) -> torch.Tensor:
    """IMAGE resized to width x height (each at least 1) with one of ComfyUI's upscale methods."""
    samples = image.movedim(-1, 1)
    return resize.upscale(samples, max(1, width), max(1, height), method, "disabled").movedim(1, -1)


class UpscaleModelLoader:
    DESCRIPTION = ("Loads an upscale model (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, ... any single-image model "
                   "spandrel recognises) from the upscale_models folder.")
    CATEGORY = "loaders"
    RETURN_TYPES = ("UPSCALE_MODEL",)
    OUTPUT_TOOLTIPS = ("The upscale model, for Upscale Image (using Model).",)
    FUNCTION = "load_model"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models(UPSCALE_MODELS, UPSCALE_MODEL_EXTENSIONS)
        return {"required": {"model_name": (names, {"tooltip": "The model file (.safetensors or .pth)."})}}

    def load_model(self, model_name: str) -> tuple[UpscaleModel]:
        environment = current_environment()
        path = environment.folders.model_file(UPSCALE_MODELS, model_name, "model_name")
        return (load_upscale_model(environment.models, path, "model_name"),)


class ImageUpscaleWithModel:
    DESCRIPTION = ("Upscales images with an upscale model, in overlapping tiles (512 pixels, smaller when memory "
                   "is short) blended together, as ComfyUI does.")
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The images, the model's scale times larger.",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "upscale_model": ("UPSCALE_MODEL", {"tooltip": "The model from Load Upscale Model."}),
            "image": ("IMAGE", {"tooltip": "The images to upscale."}),
        }}

    def upscale(self, upscale_model: UpscaleModel, image: torch.Tensor) -> tuple[torch.Tensor]:
        bar = ProgressBar(0)
        return (upscale_image(upscale_model, image, progress=bar.update_absolute),)


class ImageScaleBy:
    DESCRIPTION = "Resizes images by a factor (both sides multiplied by it, rounded)."
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    upscale_methods = list(resize.IMAGE_METHODS)  # ComfyUI's class attribute, which plugins read

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The images to resize."}),
            "upscale_method": (list(cls.upscale_methods), {"tooltip": "The interpolation method."}),
            "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01,
                                   "tooltip": "The factor; below 1 shrinks."}),
        }}

    def upscale(self, image: torch.Tensor, upscale_method: str, scale_by: float) -> tuple[torch.Tensor]:
        height, width = image.shape[1:3]
        return (_resized(image, round(width * scale_by), round(height * scale_by), upscale_method),)


class ImageScaleToTotalPixels:
    DESCRIPTION = ("Resizes images, keeping their aspect ratio, to about a number of megapixels "
                   "(1 megapixel = 1024 x 1024 pixels).")
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The images to resize."}),
            "upscale_method": (list(resize.IMAGE_METHODS), {"tooltip": "The interpolation method."}),
            "megapixels": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 16.0, "step": 0.01,
                                     "tooltip": "The number of pixels wanted, in units of 1024 x 1024."}),
        }}

    def upscale(self, image: torch.Tensor, upscale_method: str, megapixels: float) -> tuple[torch.Tensor]:
        height, width = image.shape[1:3]
        scale_by = math.sqrt(int(megapixels * 1024 * 1024) / (width * height))
        return (_resized(image, round(width * scale_by), round(height * scale_by), upscale_method),)


class ImageScaleToMaxDimension:
    DESCRIPTION = "Resizes images, keeping their aspect ratio, so that their longer side is `largest_size`."
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The images to resize."}),
            "upscale_method": (list(MAX_DIMENSION_METHODS), {"tooltip": "The interpolation method."}),
            "largest_size": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1,
                                     "tooltip": "The length of the longer side, in pixels."}),
        }}

    def upscale(self, image: torch.Tensor, upscale_method: str, largest_size: int) -> tuple[torch.Tensor]:
        if largest_size < 1:
            raise ValueError("largest_size: must be at least 1 pixel")
        height, width = image.shape[1:3]
        if height > width:
            width, height = round(width / height * largest_size), largest_size
        elif width > height:
            width, height = largest_size, round(height / width * largest_size)
        else:
            width = height = largest_size
        return (_resized(image, width, height, upscale_method),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "UpscaleModelLoader": UpscaleModelLoader,
    "ImageUpscaleWithModel": ImageUpscaleWithModel,
    "ImageScaleBy": ImageScaleBy,
    "ImageScaleToTotalPixels": ImageScaleToTotalPixels,
    "ImageScaleToMaxDimension": ImageScaleToMaxDimension,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "UpscaleModelLoader": "Load Upscale Model",
    "ImageUpscaleWithModel": "Upscale Image (using Model)",
    "ImageScaleBy": "Upscale Image By",
    "ImageScaleToTotalPixels": "Scale Image to Total Pixels",
    "ImageScaleToMaxDimension": "ImageScaleToMaxDimension",
}
