"""Brightness, contrast, blur, text overlay and a solid colour, on IMAGE tensors [batch, height, width, channels]
with values in 0..1, the convention every ComfyUI node pack shares."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from comfy.utils import ProgressBar


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray((image.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8))


def from_pil(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB")).astype(np.float32) / 255.0)


class ImageBrightness:
    DESCRIPTION = "Scales every pixel: 1.0 keeps the image, 0 makes it black, 2 doubles it (clipped at white)."
    CATEGORY = "example/adjust"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "adjust"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "the images to adjust"}),
            "factor": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 4.0, "step": 0.05,
                                 "tooltip": "brightness multiplier"}),
        }}

    def adjust(self, image: torch.Tensor, factor: float):
        return ((image * factor).clamp(0, 1),)


class ImageContrast:
    DESCRIPTION = "Moves pixels away from (or towards) each image's mean grey level."
    CATEGORY = "example/adjust"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "adjust"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE",),
            "factor": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 4.0, "step": 0.05,
                                 "tooltip": "1.0 keeps the image, 0 gives flat grey"}),
        }}

    def adjust(self, image: torch.Tensor, factor: float):
        mean = image.mean(dim=(1, 2, 3), keepdim=True)
        return ((image - mean) * factor + mean).clamp(0, 1),


class ImageBlur:
    DESCRIPTION = "Gaussian blur with Pillow, one image of the batch at a time (reports progress per image)."
    CATEGORY = "example/adjust"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "blur"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE",),
            "radius": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 64.0, "step": 0.5, "tooltip": "blur radius in pixels"}),
        }}

    def blur(self, image: torch.Tensor, radius: float):
        bar = ProgressBar(image.shape[0])
        blurred = []
        for single in image:
            blurred.append(from_pil(to_pil(single).filter(ImageFilter.GaussianBlur(radius))))
            bar.update(1)
        return (torch.stack(blurred),)


class TextOverlay:
    DESCRIPTION = "Writes a line of text on every image of the batch."
    CATEGORY = "example/adjust"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "overlay"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE",),
            "text": ("STRING", {"default": "hello", "multiline": False}),
            "x": ("INT", {"default": 8, "min": 0, "max": 16384}),
            "y": ("INT", {"default": 8, "min": 0, "max": 16384}),
            "color": ("STRING", {"default": "#ffffff", "tooltip": "a CSS colour; the editor shows a colour picker"}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, color: str):
        try:
            Image.new("RGB", (1, 1), color)
        except ValueError:
            return f"color: {color!r} is not a colour"
        return True

    def overlay(self, image: torch.Tensor, text: str, x: int, y: int, color: str):
        font = ImageFont.load_default()
        results = []
        for single in image:
            canvas = to_pil(single)
            ImageDraw.Draw(canvas).text((x, y), text, fill=color, font=font)
            results.append(from_pil(canvas))
        return (torch.stack(results),)


class SolidColor:
    DESCRIPTION = "A batch of images of one colour; handy as a test input."
    CATEGORY = "example/generate"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 64, "min": 1, "max": 16384}),
            "height": ("INT", {"default": 64, "min": 1, "max": 16384}),
            "color": ("STRING", {"default": "#808080"}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
        }}

    def make(self, width: int, height: int, color: str, batch_size: int):
        single = from_pil(Image.new("RGB", (width, height), color))
        return (single.unsqueeze(0).repeat(batch_size, 1, 1, 1),)


NODE_CLASS_MAPPINGS = {
    "ExampleImageBrightness": ImageBrightness,
    "ExampleImageContrast": ImageContrast,
    "ExampleImageBlur": ImageBlur,
    "ExampleTextOverlay": TextOverlay,
    "ExampleSolidColor": SolidColor,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ExampleImageBrightness": "Brightness (example)",
    "ExampleImageContrast": "Contrast (example)",
    "ExampleImageBlur": "Blur (example)",
    "ExampleTextOverlay": "Text overlay (example)",
    "ExampleSolidColor": "Solid colour (example)",
}
