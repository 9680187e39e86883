"""Image nodes that work on pixels only: making, batching, cropping, flipping, stitching, padding, blending,
filtering, quantizing, morphology and alpha compositing, with ComfyUI's node names, inputs and results.

IMAGE is float [batch, height, width, channels] in 0..1; MASK is float [batch, height, width], 1 = masked (for
alpha: 1 = transparent). Where ComfyUI uses kornia (morphology) the same maths is written here with torch.
Resizing goes through `nodes.resize`, ComfyUI's `common_upscale`. Knows nothing of models, files or HTTP.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nodes import resize
from nodes.latent import MAX_RESOLUTION
from nodes.mask import as_mask_batch

COLOR_VALUES = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "red": (1.0, 0.0, 0.0),
                "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


def check_image(image: torch.Tensor, input_name: str) -> torch.Tensor:
    """An IMAGE [batch, height, width, channels]; a ValueError naming the input for any other shape."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{input_name}: expected an IMAGE [batch, height, width, channels], got {shape}")
    return image


def resize_images(image: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """IMAGE resized to width x height (ComfyUI's `common_upscale` on [B, H, W, C])."""
    return resize.upscale(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1)


def resize_masks(mask: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    return resize.upscale(mask.unsqueeze(1), width, height, method, crop).squeeze(1)


def pad_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Extra channels (an alpha channel) filled with 1, up to `channels`."""
    missing = channels - image.shape[-1]
    return image if missing <= 0 else F.pad(image, (0, missing), value=1.0)


def batch_images(images: list[torch.Tensor]) -> torch.Tensor:
    """One batch of all images: channels padded with 1 to the most any has, sizes resized (bilinear, centre
    crop) to the first image's."""
    channels = max(image.shape[-1] for image in images)
    images = [pad_channels(image, channels) for image in images]
    height, width = images[0].shape[1:3]
    return torch.cat([image if image.shape[1:3] == (height, width)
                      else resize_images(image, width, height, "bilinear", "center") for image in images])


# -- making and batching -------------------------------------------------------------------------------------------


class EmptyImage:
    DESCRIPTION = "Makes a batch of images of one solid colour."
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1, "tooltip": "Image width."}),
            "height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1,
                               "tooltip": "Image height."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "How many images."}),
            "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color",
                              "tooltip": "The colour as 0xRRGGBB."}),
        }}

    def generate(self, width: int, height: int, batch_size: int = 1, color: int = 0) -> tuple[torch.Tensor]:
        rgb = torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=torch.float32) / 0xFF
        return (rgb.expand(batch_size, height, width, 3).clone(),)


class ImageBatch:
    DESCRIPTION = ("Joins two image batches into one; image2 is resized (bilinear, centre crop) to image1's size "
                   "when they differ.")
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "batch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image1": ("IMAGE", {"tooltip": "The first images; they set the size."}),
                             "image2": ("IMAGE", {"tooltip": "The images appended after them."})}}

    def batch(self, image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor]:
        return (batch_images([check_image(image1, "image1"), check_image(image2, "image2")]),)


AUTOGROW_IMAGES = 50  # ComfyUI's BatchImagesNode grows to at most 50 image inputs


class BatchImagesNode:
    DESCRIPTION = ("Joins 2 to 50 image batches into one; all are resized (bilinear, centre crop) to the first's "
                   "size and given an alpha channel if any has one.")
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "batch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        # ComfyUI's growing input group "images": API prompts name its inputs images.image0, images.image1, ...
        required = {f"images.image{index}": ("IMAGE", {"tooltip": f"Image batch {index + 1}."}) for index in range(2)}
        optional = {f"images.image{index}": ("IMAGE", {"tooltip": f"Image batch {index + 1} (optional)."})
                    for index in range(2, AUTOGROW_IMAGES)}
        return {"required": required, "optional": optional}

    def batch(self, **images: torch.Tensor) -> tuple[torch.Tensor]:
        ordered = sorted(images.items(), key=lambda item: int(item[0].rpartition("image")[2]))
        return (batch_images([check_image(image, name) for name, image in ordered if image is not None]),)


class ImageFromBatch:
    DESCRIPTION = "Takes `length` images starting at `batch_index` out of a batch (clamped to the batch)."
    CATEGORY = "image/batch"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "frombatch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The batch."}),
            "batch_index": ("INT", {"default": 0, "min": 0, "max": 4095, "tooltip": "The first image (0-based)."}),
            "length": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "How many images to take."}),
        }}

    def frombatch(self, image: torch.Tensor, batch_index: int, length: int) -> tuple[torch.Tensor]:
        image = check_image(image, "image")
        start = min(image.shape[0] - 1, batch_index)
        return (image[start:start + min(image.shape[0] - start, length)].clone(),)


class RepeatImageBatch:
    DESCRIPTION = "Repeats the whole batch `amount` times."
    CATEGORY = "image/batch"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "repeat"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The batch to repeat."}),
            "amount": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "How many copies."}),
        }}

    def repeat(self, image: torch.Tensor, amount: int) -> tuple[torch.Tensor]:
        return (check_image(image, "image").repeat(amount, 1, 1, 1),)


class RebatchImages:
    DESCRIPTION = "Splits the incoming images (a list of batches) into batches of `batch_size`."
    CATEGORY = "image/batch"
    RETURN_TYPES = ("IMAGE",)
    INPUT_IS_LIST = True
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "rebatch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The images, one batch or a list of batches."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "Images per output batch."}),
        }}

    def rebatch(self, images: list[torch.Tensor], batch_size: list[int]) -> tuple[list[torch.Tensor]]:
        size = batch_size[0]
        singles = [image[index:index + 1] for image in images for index in range(image.shape[0])]
        return ([torch.cat(singles[start:start + size]) for start in range(0, len(singles), size)],)


# -- geometry ------------------------------------------------------------------------------------------------------


class ImageCrop:
    DESCRIPTION = "Crops a width x height rectangle at (x, y); it stops at the image's edges."
    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The images to crop."}),
            "width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1, "tooltip": "Crop width."}),
            "height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1,
                               "tooltip": "Crop height."}),
            "x": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1, "tooltip": "Left edge."}),
            "y": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1, "tooltip": "Top edge."}),
        }}

    def crop(self, image: torch.Tensor, width: int, height: int, x: int, y: int) -> tuple[torch.Tensor]:
        image = check_image(image, "image")
        x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)
        return (image[:, y:y + height, x:x + width, :],)


class ImageFlip:
    DESCRIPTION = "Mirrors images: upside down (x-axis) or left to right (y-axis)."
    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "flip"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The images to flip."}),
            "flip_method": (["x-axis: vertically", "y-axis: horizontally"], {"tooltip": "The axis to flip about."}),
        }}

    def flip(self, image: torch.Tensor, flip_method: str) -> tuple[torch.Tensor]:
        return (torch.flip(check_image(image, "image"), dims=[1 if flip_method.startswith("x") else 2]),)


class ImageRotate:
    DESCRIPTION = "Rotates images clockwise by a multiple of 90 degrees."
    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "rotate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The images to rotate."}),
            "rotation": (["none", "90 degrees", "180 degrees", "270 degrees"], {"tooltip": "Clockwise rotation."}),
        }}

    def rotate(self, image: torch.Tensor, rotation: str) -> tuple[torch.Tensor]:
        turns = {"90": 1, "180": 2, "270": 3}.get(rotation.split(" ")[0], 0)
        return (torch.rot90(check_image(image, "image"), k=turns, dims=[2, 1]),)


class ImageStitch:
    DESCRIPTION = ("Stitches image2 to a side of image1, optionally resizing it (lanczos) to match and putting a "
                   "coloured spacer between; without image2, image1 passes through.")
    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "stitch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image1": ("IMAGE", {"tooltip": "The first images."}),
                "direction": (["right", "down", "left", "up"], {"default": "right",
                                                                "tooltip": "Where image2 goes."}),
                "match_image_size": ("BOOLEAN", {"default": True, "tooltip": (
                    "Resize image2 to image1's height (left/right) or width (up/down), keeping its aspect ratio; "
                    "otherwise the smaller one is padded.")}),
                "spacing_width": ("INT", {"default": 0, "min": 0, "max": 1024, "step": 2,
                                          "tooltip": "Width of the spacer between the images (made even)."}),
                "spacing_color": (["white", "black", "red", "green", "blue"], {
                    "default": "white", "tooltip": "Colour of the spacer."}),
            },
            "optional": {"image2": ("IMAGE", {"tooltip": "The images to stitch on."})},
        }

    def stitch(self, image1: torch.Tensor, direction: str, match_image_size: bool, spacing_width: int,
               spacing_color: str, image2: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        image1 = check_image(image1, "image1")
        if image2 is None:
            return (image1,)
        image2 = check_image(image2, "image2")
        image1, image2 = _repeat_last_to_batch(image1, image2)
        horizontal = direction in ("left", "right")
        if match_image_size:
            height2, width2 = image2.shape[1:3]
            if horizontal:
                size = (int(image1.shape[1] * (width2 / height2)), image1.shape[1])
            else:
                size = (image1.shape[2], int(image1.shape[2] / (width2 / height2)))
            image2 = resize_images(image2, size[0], size[1], "lanczos")
        else:
            pad_value = 0.0 if spacing_color in ("red", "green", "blue") else COLOR_VALUES[spacing_color][0]
            dim = 1 if horizontal else 2
            target = max(image1.shape[dim], image2.shape[dim])
            image1, image2 = (_pad_centered(image, dim, target, pad_value) for image in (image1, image2))
        channels = max(image1.shape[-1], image2.shape[-1])
        image1, image2 = pad_channels(image1, channels), pad_channels(image2, channels)
        parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
        if spacing_width > 0:
            width = spacing_width + spacing_width % 2
            shape = (image1.shape[0], max(image1.shape[1], image2.shape[1]), width, channels) if horizontal else \
                (image1.shape[0], width, max(image1.shape[2], image2.shape[2]), channels)
            spacer = torch.zeros(shape, dtype=image1.dtype, device=image1.device)
            color = torch.tensor(COLOR_VALUES[spacing_color], dtype=image1.dtype)
            spacer[..., :min(3, channels)] = color[:min(3, channels)]
            if channels == 4:
                spacer[..., 3] = 1.0
            parts.insert(1, spacer)
        return (torch.cat(parts, dim=2 if horizontal else 1),)


def _repeat_last_to_batch(first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both batches as long as the longer one, the shorter repeating its last image."""
    batch = max(first.shape[0], second.shape[0])

    def grow(images: torch.Tensor) -> torch.Tensor:
        extra = batch - images.shape[0]
        return images if extra == 0 else torch.cat([images, images[-1:].repeat(extra, 1, 1, 1)])

    return grow(first), grow(second)


def _pad_centered(image: torch.Tensor, dim: int, size: int, value: float) -> torch.Tensor:
    """`image` padded with `value` along `dim` (1 height, 2 width) to `size`, half before and half after."""
    missing = size - image.shape[dim]
    if missing <= 0:
        return image
    before, after = missing // 2, missing - missing // 2
    padding = (0, 0, 0, 0, before, after) if dim == 1 else (0, 0, before, after)
    return F.pad(image, padding, value=value)


class ImagePadForOutpaint:
    DESCRIPTION = ("Adds grey borders for outpainting and a mask that is 1 on them, fading into the image over "
                   "`feathering` pixels along the padded sides.")
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "expand_image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        def side(where: str) -> tuple[str, dict[str, Any]]:
            return ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8,
                            "tooltip": f"Pixels added {where}."})

        return {"required": {
            "image": ("IMAGE", {"tooltip": "The images to extend."}),
            "left": side("on the left"), "top": side("at the top"), "right": side("on the right"),
            "bottom": side("at the bottom"),
            "feathering": ("INT", {"default": 40, "min": 0, "max": MAX_RESOLUTION, "step": 1,
                                   "tooltip": "How far into the image the mask fades out."}),
        }}

    def expand_image(self, image: torch.Tensor, left: int, top: int, right: int, bottom: int,
                     feathering: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = check_image(image, "image")
        batch, height, width, channels = image.shape
        padded = torch.full((batch, height + top + bottom, width + left + right, channels), 0.5,
                            dtype=torch.float32, device=image.device)
        padded[:, top:top + height, left:left + width] = image
        mask = torch.ones(padded.shape[1:3], dtype=torch.float32)
        mask[top:top + height, left:left + width] = _feather(height, width, left, top, right, bottom, feathering)
        return padded, mask.unsqueeze(0)


def _feather(height: int, width: int, left: int, top: int, right: int, bottom: int, feathering: int) -> torch.Tensor:
    """The mask over the original image: ((feathering - d) / feathering)^2 within `feathering` pixels of a padded
    side (d the distance to the nearest one), 0 elsewhere; all 0 when the image is too small to feather."""
    if feathering <= 0 or feathering * 2 >= height or feathering * 2 >= width:
        return torch.zeros(height, width)
    rows = torch.arange(height, dtype=torch.float32).unsqueeze(1)
    cols = torch.arange(width, dtype=torch.float32).unsqueeze(0)
    distances = [rows if top else torch.full_like(rows, height), (height - rows) if bottom else
                 torch.full_like(rows, height), cols if left else torch.full_like(cols, width),
                 (width - cols) if right else torch.full_like(cols, width)]
    nearest = torch.minimum(torch.minimum(distances[0], distances[1]), torch.minimum(distances[2], distances[3]))
    return torch.where(nearest < feathering, ((feathering - nearest) / feathering) ** 2, torch.zeros(()))


class ResizeAndPadImage:
    DESCRIPTION = "Fits images inside target_width x target_height keeping their aspect ratio, padding the rest."
    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "resize_and_pad"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The images to fit."}),
            "target_width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1,
                                     "tooltip": "Output width."}),
            "target_height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1,
                                      "tooltip": "Output height."}),
            "padding_color": (["white", "black"], {"tooltip": "Colour of the padding."}),
            "interpolation": (["area", "bicubic", "nearest-exact", "bilinear", "lanczos"],
                              {"tooltip": "The interpolation method."}),
        }}

    def resize_and_pad(self, image: torch.Tensor, target_width: int, target_height: int, padding_color: str,
                       interpolation: str) -> tuple[torch.Tensor]:
        image = check_image(image, "image")
        batch, height, width, channels = image.shape
        scale = min(target_width / width, target_height / height)
        new_width, new_height = int(width * scale), int(height * scale)
        if new_width < 1 or new_height < 1:
            raise ValueError(f"image: a {width}x{height} image does not fit {target_width}x{target_height} "
                             "with at least one pixel per side")
        resized = resize_images(image, new_width, new_height, interpolation)
        padded = torch.full((batch, target_height, target_width, channels), 0.0 if padding_color == "black" else 1.0,
                            dtype=image.dtype, device=image.device)
        top, left = (target_height - new_height) // 2, (target_width - new_width) // 2
        padded[:, top:top + new_height, left:left + new_width] = resized
        return (padded,)


class GetImageSize:
    DESCRIPTION = "The width, height and batch size of images."
    CATEGORY = "image"
    RETURN_TYPES = ("INT", "INT", "INT")
    RETURN_NAMES = ("width", "height", "batch_size")
    FUNCTION = "get_size"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE", {"tooltip": "The images to measure."})}}

    def get_size(self, image: torch.Tensor) -> tuple[int, int, int]:
        image = check_image(image, "image")
        return image.shape[2], image.shape[1], image.shape[0]


# -- colour and filters --------------------------------------------------------------------------------------------


class ImageInvert:
    DESCRIPTION = "Inverts images (1 - value)."
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE", {"tooltip": "The images to invert."})}}

    def invert(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - image,)


BLEND_MODES = ("normal", "multiply", "screen", "overlay", "soft_light", "difference")


def blend(base: torch.Tensor, layer: torch.Tensor, mode: str) -> torch.Tensor:
    """The blend-mode result of `layer` over `base` (ComfyUI's formulas; "difference" is signed, base - layer)."""
    if mode == "normal":
        return layer
    if mode == "multiply":
        return base * layer
    if mode == "screen":
        return 1 - (1 - base) * (1 - layer)
    if mode == "overlay":
        return torch.where(base <= 0.5, 2 * base * layer, 1 - 2 * (1 - base) * (1 - layer))
    if mode == "soft_light":
        lifted = torch.where(base <= 0.25, ((16 * base - 12) * base + 4) * base, torch.sqrt(base))
        return torch.where(layer <= 0.5, base - (1 - 2 * layer) * base * (1 - base),
                           base + (2 * layer - 1) * (lifted - base))
    if mode == "difference":
        return base - layer
    raise ValueError(f"blend_mode: unknown mode {mode!r}")


class ImageBlend:
    DESCRIPTION = ("Blends image2 over image1 with a blend mode, mixed in by blend_factor; image2 is resized "
                   "(bicubic, centre crop) to image1 when their shapes differ.")
    CATEGORY = "image/postprocessing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "blend_images"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image1": ("IMAGE", {"tooltip": "The base images."}),
            "image2": ("IMAGE", {"tooltip": "The images blended over them."}),
            "blend_factor": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                       "tooltip": "0 keeps image1, 1 gives the full blend."}),
            "blend_mode": (list(BLEND_MODES), {"tooltip": "How the two are combined."}),
        }}

    def blend_images(self, image1: torch.Tensor, image2: torch.Tensor, blend_factor: float,
                     blend_mode: str) -> tuple[torch.Tensor]:
        image1, image2 = check_image(image1, "image1"), check_image(image2, "image2").to(image1.device)
        # image2 takes image1's channels: an alpha is dropped, or added opaque (where ComfyUI pads image1 instead
        # and then fails)
        image2 = pad_channels(image2[..., :image1.shape[-1]], image1.shape[-1])
        if image2.shape[0] not in (1, image1.shape[0]):
            raise ValueError(f"image2: a batch of {image2.shape[0]} cannot blend with image1's {image1.shape[0]}")
        if image1.shape != image2.shape:
            image2 = resize_images(image2, image1.shape[2], image1.shape[1], "bicubic", "center")
        blended = blend(image1, image2, blend_mode)
        return (torch.clamp(image1 * (1 - blend_factor) + blended * blend_factor, 0, 1),)


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """A size x size Gaussian sampled on [-1, 1] x [-1, 1] (sigma in those units, as ComfyUI), summing to 1."""
    axis = torch.linspace(-1, 1, size)
    squared = axis.view(-1, 1) ** 2 + axis.view(1, -1) ** 2
    kernel = torch.exp(-squared / (2.0 * sigma * sigma))
    return kernel / kernel.sum()


def filter_images(image: torch.Tensor, kernel: torch.Tensor, radius: int, input_name: str) -> torch.Tensor:
    """Each channel convolved with `kernel` ((2 radius + 1) square), the borders mirrored."""
    if radius >= image.shape[1] or radius >= image.shape[2]:
        raise ValueError(f"{input_name}: {radius} must be smaller than the image ({image.shape[2]}x{image.shape[1]})")
    channels = image.shape[-1]
    weights = kernel.to(image).expand(channels, 1, *kernel.shape)
    padded = F.pad(image.movedim(-1, 1), (radius, radius, radius, radius), mode="reflect")
    return F.conv2d(padded, weights, groups=channels).movedim(1, -1)


class ImageBlur:
    DESCRIPTION = "Gaussian blur."
    CATEGORY = "image/postprocessing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "blur"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The images to blur."}),
            "blur_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1,
                                    "tooltip": "Kernel radius in pixels (the kernel is 2 radius + 1 wide)."}),
            "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1,
                                "tooltip": "Spread of the Gaussian, relative to the kernel (1 = its half-width)."}),
        }}

    def blur(self, image: torch.Tensor, blur_radius: int, sigma: float) -> tuple[torch.Tensor]:
        image = check_image(image, "image")
        return (filter_images(image, gaussian_kernel(2 * blur_radius + 1, sigma), blur_radius, "blur_radius"),)


class ImageSharpen:
    DESCRIPTION = "Sharpens by subtracting a Gaussian blur (unsharp masking), clamped to 0..1."
    CATEGORY = "image/postprocessing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "sharpen"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The images to sharpen."}),
            "sharpen_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1,
                                       "tooltip": "Kernel radius in pixels."}),
            "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.01,
                                "tooltip": "Spread of the Gaussian, relative to the kernel."}),
            "alpha": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 5.0, "step": 0.01, "tooltip": "Strength."}),
        }}

    def sharpen(self, image: torch.Tensor, sharpen_radius: int, sigma: float, alpha: float) -> tuple[torch.Tensor]:
        image = check_image(image, "image")
        size = 2 * sharpen_radius + 1
        kernel = gaussian_kernel(size, sigma) * -(alpha * 10)
        kernel[size // 2, size // 2] += 1.0 - kernel.sum()
        return (torch.clamp(filter_images(image, kernel, sharpen_radius, "sharpen_radius"), 0, 1),)


DITHERS = ("none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16")


def bayer_matrix(order: int) -> np.ndarray:
    """The order x order ordered-dither matrix, centred on 0 and scaled to [-0.5, 0.5)."""
    matrix = np.zeros((1, 1), dtype=np.float64)
    for level in range(1, int(math.log2(order)) + 1):
        scale = 4 ** level
        grown = scale * matrix
        matrix = np.block([[grown - 1.5, grown + 0.5], [grown + 1.5, grown - 0.5]]) / scale
    return matrix


def quantize(pil: Any, colors: int, dither: str) -> Any:
    """A PIL RGB image reduced to a palette of `colors` (median cut), dithered as asked."""
    from PIL import Image

    palette = pil.quantize(colors=colors)  # pillow needs a palette image to dither against
    if dither == "none":
        return pil.quantize(palette=palette, dither=Image.Dither.NONE)
    if dither == "floyd-steinberg":
        return pil.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
    order = int(dither.split("-")[-1])
    spread = 2 * 256 / (len(palette.getpalette()) // 3)
    threshold = spread * bayer_matrix(order) + 0.5
    pixels = np.asarray(pil).astype(np.float32)
    height, width = pixels.shape[:2]
    tiled = np.tile(threshold, (math.ceil(height / order), math.ceil(width / order)))[:height, :width, None]
    shifted = np.clip(pixels + tiled.astype(np.float32), 0, 255).astype(np.uint8)
    return Image.fromarray(shifted).quantize(palette=palette, dither=Image.Dither.NONE)


class ImageQuantize:
    DESCRIPTION = "Reduces images to a palette of at most `colors` colours, optionally dithered (an alpha is kept)."
    CATEGORY = "image/postprocessing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "quantize"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The images to quantize."}),
            "colors": ("INT", {"default": 256, "min": 1, "max": 256, "step": 1, "tooltip": "Palette size."}),
            "dither": (list(DITHERS), {"tooltip": "Dithering: none, error diffusion or an ordered Bayer pattern."}),
        }}

    def quantize(self, image: torch.Tensor, colors: int, dither: str) -> tuple[torch.Tensor]:
        from PIL import Image

        image = check_image(image, "image")
        if image.shape[-1] not in (3, 4):
            raise ValueError(f"image: expected RGB or RGBA images, got {image.shape[-1]} channels")
        result = image.clone()
        for index, pixels in enumerate(image[..., :3].cpu()):
            pil = Image.fromarray((pixels * 255).to(torch.uint8).numpy())
            quantized = np.asarray(quantize(pil, colors, dither).convert("RGB"), dtype=np.float32) / 255
            result[index, ..., :3] = torch.from_numpy(quantized).to(result)
        return (result,)


MORPHOLOGY_OPERATIONS = ("erode", "dilate", "open", "close", "gradient", "bottom_hat", "top_hat")


def _neighbourhood(images: torch.Tensor, size: int, largest: bool) -> torch.Tensor:
    """The max (or min) over a size x size window at each pixel of [B, C, H, W], the window's anchor at size // 2
    and pixels outside the image ignored (kornia's flat structuring element with its geodesic border)."""
    before, after = size // 2, size - size // 2 - 1
    sign = 1.0 if largest else -1.0
    padded = F.pad(sign * images, (before, after, before, after), value=-math.inf)
    return sign * F.max_pool2d(padded, size, stride=1)


def morphology(images: torch.Tensor, operation: str, size: int) -> torch.Tensor:
    """Grey-scale morphology of [B, C, H, W] with a size x size square."""
    def dilate(x: torch.Tensor) -> torch.Tensor:
        return _neighbourhood(x, size, largest=True)

    def erode(x: torch.Tensor) -> torch.Tensor:
        return _neighbourhood(x, size, largest=False)

    operations = {
        "erode": lambda: erode(images), "dilate": lambda: dilate(images),
        "open": lambda: dilate(erode(images)), "close": lambda: erode(dilate(images)),
        "gradient": lambda: dilate(images) - erode(images),
        "top_hat": lambda: images - dilate(erode(images)), "bottom_hat": lambda: erode(dilate(images)) - images,
    }
    if operation not in operations:
        raise ValueError(f"operation: unknown operation {operation!r}")
    return operations[operation]()


class Morphology:
    DESCRIPTION = ("Grey-scale morphology with a square kernel: erode, dilate, open, close, gradient, top hat and "
                   "bottom hat.")
    CATEGORY = "image/postprocessing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "process"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The images to process."}),
            "operation": (list(MORPHOLOGY_OPERATIONS), {"tooltip": "The morphological operation."}),
            "kernel_size": ("INT", {"default": 3, "min": 3, "max": 999, "step": 1,
                                    "tooltip": "Side of the square kernel in pixels."}),
        }}

    def process(self, image: torch.Tensor, operation: str, kernel_size: int) -> tuple[torch.Tensor]:
        image = check_image(image, "image")
        return (morphology(image.movedim(-1, 1), operation, kernel_size).movedim(1, -1),)


# -- alpha compositing ---------------------------------------------------------------------------------------------


class JoinImageWithAlpha:
    DESCRIPTION = "Adds an alpha channel to images from a mask (alpha = 1 - mask, resized to the images)."
    CATEGORY = "mask/compositing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "join"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The images (their first three channels are used)."}),
            "alpha": ("MASK", {"tooltip": "The mask: 1 becomes transparent."}),
        }}

    def join(self, image: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor]:
        image = check_image(image, "image")
        mask = as_mask_batch(alpha, "alpha")
        batch = min(image.shape[0], mask.shape[0])
        mask = F.interpolate(mask[:batch].unsqueeze(1), size=image.shape[1:3], mode="bilinear").squeeze(1)
        return (torch.cat([image[:batch, ..., :3], (1.0 - mask).unsqueeze(-1).to(image)], dim=-1),)


class SplitImageWithAlpha:
    DESCRIPTION = "Splits images into RGB and a mask from their alpha channel (mask = 1 - alpha; 0 without one)."
    CATEGORY = "mask/compositing"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "split"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE", {"tooltip": "The images, with or without alpha."})}}

    def split(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = check_image(image, "image")
        alpha = image[..., 3] if image.shape[-1] > 3 else torch.ones_like(image[..., 0])
        return image[..., :3], 1.0 - alpha


PORTER_DUFF_MODES = ("ADD", "CLEAR", "DARKEN", "DST", "DST_ATOP", "DST_IN", "DST_OUT", "DST_OVER", "LIGHTEN",
                     "MULTIPLY", "OVERLAY", "SCREEN", "SRC", "SRC_ATOP", "SRC_IN", "SRC_OUT", "SRC_OVER", "XOR")


def porter_duff(source: torch.Tensor, source_alpha: torch.Tensor, destination: torch.Tensor,
                destination_alpha: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Porter-Duff compositing of straight-alpha colours with alphas [..., 1]: (colour, alpha), straight again."""
    src, dst = source * source_alpha, destination * destination_alpha  # premultiplied
    a_s, a_d = source_alpha, destination_alpha
    union = a_s + a_d - a_s * a_d
    results = {
        "ADD": lambda: (torch.clamp(src + dst, 0, 1), torch.clamp(a_s + a_d, 0, 1)),
        "CLEAR": lambda: (torch.zeros_like(dst), torch.zeros_like(a_d)),
        "DARKEN": lambda: ((1 - a_d) * src + (1 - a_s) * dst + torch.min(src, dst), union),
        "DST": lambda: (dst, a_d),
        "DST_ATOP": lambda: (a_s * dst + (1 - a_d) * src, a_s),
        "DST_IN": lambda: (dst * a_s, a_s * a_d),
        "DST_OUT": lambda: ((1 - a_s) * dst, (1 - a_s) * a_d),
        "DST_OVER": lambda: (dst + (1 - a_d) * src, a_d + (1 - a_d) * a_s),
        "LIGHTEN": lambda: ((1 - a_d) * src + (1 - a_s) * dst + torch.max(src, dst), union),
        "MULTIPLY": lambda: (src * dst, a_s * a_d),
        "OVERLAY": lambda: (torch.where(2 * dst < a_d, 2 * src * dst, a_s * a_d - 2 * (a_d - src) * (a_s - dst)),
                            union),
        "SCREEN": lambda: (src + dst - src * dst, union),
        "SRC": lambda: (src, a_s),
        "SRC_ATOP": lambda: (a_d * src + (1 - a_s) * dst, a_d),
        "SRC_IN": lambda: (src * a_d, a_s * a_d),
        "SRC_OUT": lambda: ((1 - a_d) * src, (1 - a_d) * a_s),
        "SRC_OVER": lambda: (src + (1 - a_s) * dst, a_s + (1 - a_s) * a_d),
        "XOR": lambda: ((1 - a_d) * src + (1 - a_s) * dst, (1 - a_d) * a_s + (1 - a_s) * a_d),
    }
    if mode not in results:
        raise ValueError(f"mode: unknown Porter-Duff mode {mode!r}")
    colour, alpha = results[mode]()
    colour = torch.where(alpha > 1e-5, colour / alpha, torch.zeros_like(colour))
    return torch.clamp(colour, 0, 1), alpha


class PorterDuffImageComposite:
    DESCRIPTION = ("Composites source over destination with a Porter-Duff operator; the alphas are masks "
                   "(1 = transparent). Source and its alpha are resized (bicubic, centre crop) to the destination.")
    CATEGORY = "mask/compositing"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "source": ("IMAGE", {"tooltip": "The source images."}),
            "source_alpha": ("MASK", {"tooltip": "The source's transparency mask (1 = transparent)."}),
            "destination": ("IMAGE", {"tooltip": "The destination images; they set the size."}),
            "destination_alpha": ("MASK", {"tooltip": "The destination's transparency mask (1 = transparent)."}),
            "mode": (list(PORTER_DUFF_MODES), {"default": "DST", "tooltip": "The Porter-Duff operator."}),
        }}

    def composite(self, source: torch.Tensor, source_alpha: torch.Tensor, destination: torch.Tensor,
                  destination_alpha: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        source, destination = check_image(source, "source"), check_image(destination, "destination")
        source_mask, destination_mask = as_mask_batch(source_alpha, "source_alpha"), \
            as_mask_batch(destination_alpha, "destination_alpha")
        if source.shape[-1] != destination.shape[-1]:
            raise ValueError(f"source: {source.shape[-1]} channels, but destination has {destination.shape[-1]}")
        batch = min(len(source), len(source_mask), len(destination), len(destination_mask))
        source, destination = source[:batch], destination[:batch]
        source_mask, destination_mask = source_mask[:batch], destination_mask[:batch]
        height, width = destination.shape[1:3]
        if destination_mask.shape[1:] != (height, width):
            destination_mask = resize_masks(destination_mask, width, height, "bicubic", "center")
        if source.shape != destination.shape:
            source = resize_images(source, width, height, "bicubic", "center")
        if source_mask.shape != destination_mask.shape:
            source_mask = resize_masks(source_mask, width, height, "bicubic", "center")
        colour, alpha = porter_duff(source, (1 - source_mask).unsqueeze(-1), destination,
                                    (1 - destination_mask).unsqueeze(-1), mode)
        return colour, 1 - alpha.squeeze(-1)


# -- resizing images or masks --------------------------------------------------------------------------------------

RESIZE_TYPES = ("scale dimensions", "scale by multiplier", "scale longer dimension", "scale shorter dimension",
                "scale width", "scale height", "scale total pixels", "match size", "scale to multiple")


def _scaled_sides(height: int, width: int, side: int, longer: bool) -> tuple[int, int]:
    """(width, height) with the longer (or shorter) side set to `side`, keeping the aspect ratio."""
    if height == width:
        return side, side
    if (height > width) == longer:
        return round(width / height * side), side
    return side, round(height / width * side)


def _multiple_cover(samples: torch.Tensor, multiple: int, method: str) -> torch.Tensor:
    """Scaled just enough to cover the largest multiple-of-`multiple` size inside it, then centre-cropped to it."""
    height, width = samples.shape[-2:]
    target_w, target_h = width // multiple * multiple, height // multiple * multiple
    if multiple <= 1 or target_w == 0 or target_h == 0 or (target_w, target_h) == (width, height):
        return samples
    if target_w / width >= target_h / height:
        scaled_w, scaled_h = target_w, max(target_h, math.ceil(height * (target_w / width)))
    else:
        scaled_w, scaled_h = max(target_w, math.ceil(width * (target_h / height))), target_h
    scaled = resize.upscale(samples, scaled_w, scaled_h, method, "disabled")
    left, top = (scaled_w - target_w) // 2, (scaled_h - target_h) // 2
    return scaled[..., top:top + target_h, left:left + target_w]


def resize_image_or_mask(samples: torch.Tensor, resize_type: str, options: dict[str, Any], method: str) -> torch.Tensor:
    """[B, C, H, W] resized as `resize_type` says, with that type's options (ComfyUI's Resize Image/Mask)."""
    height, width = samples.shape[-2:]

    def option(name: str) -> Any:
        if options.get(name) is None:
            raise ValueError(f"resize_type.{name}: needed for {resize_type!r}")
        return options[name]

    if resize_type == "scale dimensions":
        new_w, new_h, crop = option("width"), option("height"), option("crop")
        return samples if new_w == 0 and new_h == 0 else resize.upscale(samples, new_w, new_h, method, crop)
    if resize_type in ("scale width", "scale height"):
        size = option("width" if resize_type == "scale width" else "height")
        new_w, new_h = (size, 0) if resize_type == "scale width" else (0, size)
        return samples if size == 0 else resize.upscale(samples, new_w, new_h, method, "disabled")
    if resize_type == "scale by multiplier":
        multiplier = option("multiplier")
        return resize.upscale(samples, round(width * multiplier), round(height * multiplier), method, "disabled")
    if resize_type in ("scale longer dimension", "scale shorter dimension"):
        longer = resize_type == "scale longer dimension"
        new_w, new_h = _scaled_sides(height, width, option("longer_size" if longer else "shorter_size"), longer)
        return resize.upscale(samples, new_w, new_h, method, "disabled")
    if resize_type == "scale total pixels":
        scale = math.sqrt(int(option("megapixels") * 1024 * 1024) / (width * height))
        return resize.upscale(samples, round(width * scale), round(height * scale), method, "disabled")
    if resize_type == "match size":
        match = option("match")
        match_height, match_width = match.shape[1:3]
        return resize.upscale(samples, match_width, match_height, method, option("crop"))
    if resize_type == "scale to multiple":
        return _multiple_cover(samples, option("multiple"), method)
    raise ValueError(f"resize_type: unknown resize type {resize_type!r}")


class ResizeImageMaskNode:
    DESCRIPTION = "Resize an image or mask using various scaling methods."
    CATEGORY = "transform"
    RETURN_TYPES = ("IMAGE,MASK",)
    RETURN_NAMES = ("resized",)
    OUTPUT_TOOLTIPS = ("The resized image or mask (the same type as the input).",)
    FUNCTION = "resize"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        # ComfyUI's resize_type shows only the options of the chosen type; API prompts name them resize_type.<name>
        def size(what: str) -> tuple[str, dict[str, Any]]:
            return ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1, "tooltip": what})

        crop = (list(resize.CROP_MODES), {"default": "center", "tooltip": (
            "How to handle an aspect ratio mismatch: 'disabled' stretches to fit, 'center' crops to keep it.")})
        return {
            "required": {
                "input": ("IMAGE,MASK", {"tooltip": "The image or mask to resize."}),
                "resize_type": (list(RESIZE_TYPES), {"tooltip": (
                    "How to resize: exact dimensions, a factor, a side, total pixels, another image's size or a "
                    "multiple; each uses its own options below.")}),
                "scale_method": (list(resize.IMAGE_METHODS), {"default": "area", "tooltip": (
                    "Interpolation: 'area' is best for shrinking, 'lanczos' for enlarging, 'nearest-exact' for "
                    "pixel art.")}),
            },
            "optional": {
                "resize_type.width": size("Target width (scale dimensions: 0 follows the height)."),
                "resize_type.height": size("Target height (scale dimensions: 0 follows the width)."),
                "resize_type.crop": crop,
                "resize_type.multiplier": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01,
                                                     "tooltip": "Scale factor (2 doubles, 0.5 halves)."}),
                "resize_type.longer_size": size("The longer side becomes this; the aspect ratio is kept."),
                "resize_type.shorter_size": size("The shorter side becomes this; the aspect ratio is kept."),
                "resize_type.megapixels": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 16.0, "step": 0.01,
                                                     "tooltip": "Target megapixels (1.0 is about 1024x1024)."}),
                "resize_type.match": ("IMAGE,MASK", {"tooltip": "Resize to the size of this image or mask."}),
                "resize_type.multiple": ("INT", {"default": 8, "min": 1, "max": MAX_RESOLUTION, "step": 1, "tooltip": (
                    "Width and height become multiples of this (scaled to cover, then centre-cropped).")}),
            },
        }

    def resize(self, input: torch.Tensor, resize_type: str, scale_method: str, **options: Any) -> tuple[torch.Tensor]:
        is_image = input.ndim == 4
        if not is_image:
            input = as_mask_batch(input, "input")
        samples = input.movedim(-1, 1) if is_image else input.unsqueeze(1)
        defaults = {name.partition(".")[2]: spec[1].get("default")
                    for name, spec in self.INPUT_TYPES()["optional"].items()}
        chosen = defaults | {name.partition(".")[2]: value for name, value in options.items() if value is not None}
        if chosen.get("match") is not None and chosen["match"].ndim == 2:
            chosen["match"] = chosen["match"].unsqueeze(0)
        resized = resize_image_or_mask(samples, resize_type, chosen, scale_method)
        return (resized.movedim(1, -1) if is_image else resized.squeeze(1),)


NODE_CLASS_MAPPINGS = {
    "EmptyImage": EmptyImage,
    "ImageBatch": ImageBatch,
    "BatchImagesNode": BatchImagesNode,
    "ImageFromBatch": ImageFromBatch,
    "RepeatImageBatch": RepeatImageBatch,
    "RebatchImages": RebatchImages,
    "ImageCrop": ImageCrop,
    "ImageFlip": ImageFlip,
    "ImageRotate": ImageRotate,
    "ImageStitch": ImageStitch,
    "ImagePadForOutpaint": ImagePadForOutpaint,
    "ResizeAndPadImage": ResizeAndPadImage,
    "GetImageSize": GetImageSize,
    "ImageInvert": ImageInvert,
    "ImageBlend": ImageBlend,
    "ImageBlur": ImageBlur,
    "ImageSharpen": ImageSharpen,
    "ImageQuantize": ImageQuantize,
    "Morphology": Morphology,
    "JoinImageWithAlpha": JoinImageWithAlpha,
    "SplitImageWithAlpha": SplitImageWithAlpha,
    "PorterDuffImageComposite": PorterDuffImageComposite,
    "ResizeImageMaskNode": ResizeImageMaskNode,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "EmptyImage": "EmptyImage",
    "ImageBatch": "Batch Images",
    "BatchImagesNode": "Batch Images",
    "ImageFromBatch": "ImageFromBatch",
    "RepeatImageBatch": "RepeatImageBatch",
    "RebatchImages": "Rebatch Images",
    "ImageCrop": "Image Crop",
    "ImageFlip": "ImageFlip",
    "ImageRotate": "ImageRotate",
    "ImageStitch": "Image Stitch",
    "ImagePadForOutpaint": "Pad Image for Outpainting",
    "ResizeAndPadImage": "ResizeAndPadImage",
    "GetImageSize": "Get Image Size",
    "ImageInvert": "Invert Image",
    "ImageBlend": "Image Blend",
    "ImageBlur": "Image Blur",
    "ImageSharpen": "Image Sharpen",
    "ImageQuantize": "Image Quantize",
    "Morphology": "ImageMorphology",
    "JoinImageWithAlpha": "Join Image with Alpha",
    "SplitImageWithAlpha": "Split Image with Alpha",
    "PorterDuffImageComposite": "Porter-Duff Image Composite",
    "ResizeImageMaskNode": "Resize Image/Mask",
}
