"""Small image nodes of ComfyUI's extras with its contracts: ImageAddNoise (comfy_extras/nodes_images.py) and the
YCbCr split and join ImageRGBToYUV / ImageYUVToRGB (comfy_extras/nodes_morphology.py).

IMAGE is float [batch, height, width, channels] in 0..1. ComfyUI converts colours with kornia's full-range BT.601
YCbCr (`rgb_to_ycbcr`, `ycbcr_to_rgb`, chroma offset by 0.5); the same maths is written here with torch. Noise is
drawn on the CPU from a generator seeded with `seed`, which gives the numbers ComfyUI draws after
`torch.manual_seed(seed)` (without touching the global generator). Knows nothing of models, files or HTTP.
"""
from __future__ import annotations

from typing import Any

import torch

from nodes.image_ops import check_image
from nodes.sampling import MAX_SEED

# kornia's YCbCr: Y = 0.299 R + 0.587 G + 0.114 B, Cb = (B - Y) 0.564 + 0.5, Cr = (R - Y) 0.713 + 0.5, and back
LUMA = (0.299, 0.587, 0.114)
CB_SCALE, CR_SCALE, CHROMA_OFFSET = 0.564, 0.713, 0.5
TO_RGB = ((1.0, 0.0, 1.403), (1.0, -0.344, -0.714), (1.0, 1.773, 0.0))  # rows R, G, B of (Y, Cb, Cr - offsets)


def rgb_to_ycbcr(image: torch.Tensor) -> torch.Tensor:
    """IMAGE [..., 3] RGB -> [..., 3] (Y, Cb, Cr) as kornia computes it."""
    red, green, blue = image.unbind(-1)
    luma = LUMA[0] * red + LUMA[1] * green + LUMA[2] * blue
    return torch.stack([luma, (blue - luma) * CB_SCALE + CHROMA_OFFSET, (red - luma) * CR_SCALE + CHROMA_OFFSET], -1)


def ycbcr_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """[..., 3] (Y, Cb, Cr) -> RGB in 0..1 as kornia computes it (clamped, as its current versions do)."""
    centred = image - image.new_tensor((0.0, CHROMA_OFFSET, CHROMA_OFFSET))
    return (centred @ image.new_tensor(TO_RGB).T).clamp(0.0, 1.0)


def _rgb_image(image: Any, input_name: str) -> torch.Tensor:
    image = check_image(image, input_name)
    if image.shape[-1] != 3:
        raise ValueError(f"{input_name}: expected an RGB image (3 channels), got {image.shape[-1]} channels")
    return image


class ImageAddNoise:
    DESCRIPTION = ("Adds Gaussian noise to an image: image + strength * noise (a standard normal draw from the "
                   "seed, ComfyUI's numbers for the same seed), clamped to 0..1.")
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The noisy image.",)
    FUNCTION = "repeat"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The image to add noise to."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                             "tooltip": "The random seed used for creating the noise."}),
            "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                   "tooltip": "The noise's standard deviation, in 0..1 pixel values."}),
        }}

    def repeat(self, image: torch.Tensor, seed: int, strength: float) -> tuple[torch.Tensor]:
        image = check_image(image, "image")
        generator = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn(image.size(), generator=generator, device="cpu").to(image)
        return (torch.clamp(image + strength * noise, min=0.0, max=1.0),)


class ImageRGBToYUV:
    DESCRIPTION = ("Splits an RGB image into its Y (luma), U (Cb) and V (Cr) planes (full-range BT.601 YCbCr, chroma "
                   "centred on 0.5), each as a grey image.")
    CATEGORY = "image/batch"
    RETURN_TYPES = ("IMAGE", "IMAGE", "IMAGE")
    RETURN_NAMES = ("Y", "U", "V")
    OUTPUT_TOOLTIPS = ("Luma as a grey image.", "Blue-difference chroma (Cb) as a grey image.",
                       "Red-difference chroma (Cr) as a grey image.")
    FUNCTION = "split"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE", {"tooltip": "The RGB image to split."})}}

    def split(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = _rgb_image(image, "image")
        planes = rgb_to_ycbcr(image)
        return tuple(planes[..., index:index + 1].expand_as(image) for index in range(3))


class ImageYUVToRGB:
    DESCRIPTION = ("Joins Y (luma), U (Cb) and V (Cr) planes back into an RGB image (full-range BT.601 YCbCr); each "
                   "plane is read as the mean of its image's channels.")
    CATEGORY = "image/batch"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The RGB image.",)
    FUNCTION = "join"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "Y": ("IMAGE", {"tooltip": "The luma plane."}),
            "U": ("IMAGE", {"tooltip": "The blue-difference chroma (Cb) plane."}),
            "V": ("IMAGE", {"tooltip": "The red-difference chroma (Cr) plane."}),
        }}

    def join(self, Y: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor]:
        planes = {name: check_image(plane, name) for name, plane in (("Y", Y), ("U", U), ("V", V))}
        for name in ("U", "V"):
            if planes[name].shape[:3] != Y.shape[:3]:
                raise ValueError(f"{name}: a plane of {tuple(planes[name].shape[:3])} (batch, height, width) does "
                                 f"not match Y's {tuple(Y.shape[:3])}")
        ycbcr = torch.cat([plane.mean(dim=-1, keepdim=True) for plane in planes.values()], dim=-1)
        return (ycbcr_to_rgb(ycbcr),)


NODE_CLASS_MAPPINGS: dict[str, type] = {node.__name__: node for node in (ImageAddNoise, ImageRGBToYUV, ImageYUVToRGB)}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {name: name for name in NODE_CLASS_MAPPINGS}
