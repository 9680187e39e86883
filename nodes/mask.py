"""Mask nodes: loading, making (solid, by colour, by threshold) and previewing masks, converting between IMAGE and
MASK, growing, feathering, cropping, combining and compositing.

MASK is float [batch, height, width] in 0..1, 1 where the image is to be changed; IMAGE is float [batch, height,
width, channels] in 0..1. The helpers `as_mask_batch`, `mask_for_size` and `rgb_pixels` are the one place where
masks and images of mismatched shapes are reconciled, so every editing node treats bad input the same way:
a mask of another size but the same aspect ratio is resized (bilinear); another aspect ratio is a ValueError
naming the input. Knows nothing of models, HTTP or the executor.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nodes.environment import current_environment, resolve_inside
from nodes.image import save_images
from nodes.latent import MAX_RESOLUTION

log = logging.getLogger(__name__)

CHANNELS = ("red", "green", "blue", "alpha")
ASPECT_TOLERANCE = 0.02  # relative difference of width/height ratios still treated as "the same shape"


def as_mask_batch(mask: torch.Tensor, input_name: str) -> torch.Tensor:
    """A MASK as [batch, height, width] (a single [height, width] mask becomes a batch of one)."""
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    elif mask.ndim == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.ndim != 3:
        raise ValueError(f"{input_name}: expected a MASK [batch, height, width], got shape {tuple(mask.shape)}")
    return mask.float()


def mask_for_size(mask: torch.Tensor, height: int, width: int, input_name: str) -> torch.Tensor:
    """`mask` as [batch, height, width]: resized (bilinear) when it has the same aspect ratio but another size,
    a ValueError naming the input when its aspect ratio differs (resizing would distort it)."""
    mask = as_mask_batch(mask, input_name)
    mask_height, mask_width = mask.shape[-2:]
    if (mask_height, mask_width) == (height, width):
        return mask
    check_aspect(mask, height, width, input_name)
    log.info("%s: resizing the %dx%d mask to the %dx%d image", input_name, mask_width, mask_height, width, height)
    return F.interpolate(mask.unsqueeze(1), size=(height, width), mode="bilinear").squeeze(1)


def check_aspect(mask: torch.Tensor, height: int, width: int, input_name: str) -> None:
    """A ValueError naming the input when the mask's aspect ratio is not that of a height x width image."""
    mask_height, mask_width = mask.shape[-2:]
    if abs(mask_width / mask_height - width / height) > ASPECT_TOLERANCE * (width / height):
        raise ValueError(f"{input_name}: the mask is {mask_width}x{mask_height} but the image is {width}x{height}; "
                         "masks of another size are only resized when their aspect ratio matches")


def rgb_pixels(pixels: torch.Tensor, input_name: str) -> torch.Tensor:
    """IMAGE as 3-channel RGB: grey images are repeated to three channels, an alpha channel is dropped."""
    if pixels.ndim == 3:
        pixels = pixels.unsqueeze(0)
    if pixels.ndim != 4 or pixels.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{input_name}: expected an IMAGE [batch, height, width, 1/3/4 channels], "
                         f"got shape {tuple(pixels.shape)}")
    if pixels.shape[-1] == 1:
        return pixels.expand(-1, -1, -1, 3)
    return pixels[..., :3]


def repeat_to_batch(tensor: torch.Tensor, batch: int, input_name: str) -> torch.Tensor:
    """A batch of 1 repeated to `batch`; a ValueError naming the input for other mismatches."""
    if tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    raise ValueError(f"{input_name}: batch of {tensor.shape[0]} does not match the image batch of {batch}")


def blend_into(destination: torch.Tensor, source: torch.Tensor, weight: torch.Tensor, left: int, top: int) -> None:
    """Blend [batch, channels, h, w] `source` into [batch, channels, H, W] `destination` in place, its top-left
    corner at (left, top), through `weight` [batch or 1, 1, h, w] (1 = source); what falls outside is cut off."""
    visible_height = max(0, min(source.shape[2], destination.shape[2] - top))
    visible_width = max(0, min(source.shape[3], destination.shape[3] - left))
    weight = weight[:, :, :visible_height, :visible_width]
    region = destination[:, :, top:top + visible_height, left:left + visible_width]
    region.copy_(weight * source[:, :, :visible_height, :visible_width] + (1 - weight) * region)


class LoadImageMask:
    DESCRIPTION = ("Loads one channel of an image in the input folder as a mask: alpha gives 1 - alpha (transparent "
                   "= to be changed), red/green/blue give the channel's value (white = to be changed). Choosing "
                   "alpha for an image without an alpha channel is an error: it would be an empty mask.")
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_input_images()
        return {"required": {
            "image": (names, {"image_upload": True, "tooltip": "The image in the input folder."}),
            "channel": (["alpha", "red", "green", "blue"], {"tooltip": "The channel to read the mask from."}),
        }}

    @classmethod
    def IS_CHANGED(cls, image: str, channel: str) -> str:
        path = resolve_inside(current_environment().folders.input_dir, image, "image")
        return hashlib.sha256(path.read_bytes()).hexdigest() + channel

    def load_image(self, image: str, channel: str) -> tuple[torch.Tensor]:
        from PIL import Image, ImageOps, UnidentifiedImageError

        path = resolve_inside(current_environment().folders.input_dir, image, "image")
        try:
            picture = ImageOps.exif_transpose(Image.open(path))
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"image: {path.name} is not a readable image ({error})") from error
        has_alpha = "A" in picture.getbands() or (picture.mode == "P" and "transparency" in picture.info)
        if channel == "alpha" and not has_alpha:
            raise ValueError(f"channel: {path.name} has no alpha channel; choose red, green or blue to read a "
                             "black-and-white mask")
        if picture.mode == "I":
            picture = picture.point(lambda value: value * (1 / 255))
        values = np.asarray(picture.convert("RGBA").getchannel(channel[0].upper()), dtype=np.float32) / 255.0
        mask = torch.from_numpy(values.copy())
        return ((1.0 - mask if channel == "alpha" else mask).unsqueeze(0),)


class ImageToMask:
    DESCRIPTION = "Takes one channel of an image as a mask (grey images have only one channel, read as any colour)."
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The image to take the channel from."}),
            "channel": (list(CHANNELS), {"tooltip": "The channel that becomes the mask."}),
        }}

    def image_to_mask(self, image: torch.Tensor, channel: str) -> tuple[torch.Tensor]:
        if image.ndim != 4:
            raise ValueError(f"image: expected [batch, height, width, channels], got shape {tuple(image.shape)}")
        index = CHANNELS.index(channel)
        if image.shape[-1] == 1 and channel != "alpha":
            index = 0
        if index >= image.shape[-1]:
            raise ValueError(f"channel: the image has {image.shape[-1]} channels and no {channel} channel")
        return (image[..., index].float().clone(),)


class MaskToImage:
    DESCRIPTION = "Turns a mask into a grey RGB image (white where the mask is 1)."
    CATEGORY = "mask"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "mask_to_image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"mask": ("MASK", {"tooltip": "The mask to show as an image."})}}

    def mask_to_image(self, mask: torch.Tensor) -> tuple[torch.Tensor]:
        mask = as_mask_batch(mask, "mask")
        return (mask.unsqueeze(-1).expand(-1, -1, -1, 3).clone(),)


class InvertMask:
    DESCRIPTION = "Inverts a mask: 1 - mask."
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"mask": ("MASK", {"tooltip": "The mask to invert."})}}

    def invert(self, mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - as_mask_batch(mask, "mask"),)


def _dilate(mask: torch.Tensor, tapered_corners: bool) -> torch.Tensor:
    """One step of grey dilation with a 3x3 footprint (a cross when tapered), edges replicated."""
    padded = F.pad(mask.unsqueeze(1), (1, 1, 1, 1), mode="replicate").squeeze(1)
    height, width = mask.shape[-2:]
    result = mask.clone()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if tapered_corners and dy and dx:
                continue
            result = torch.maximum(result, padded[:, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width])
    return result


def grow_mask(mask: torch.Tensor, expand: int, tapered_corners: bool) -> torch.Tensor:
    """Grow (expand > 0) or shrink (expand < 0) a [batch, height, width] mask by |expand| pixels."""
    result = mask
    for _ in range(abs(expand)):
        result = _dilate(result, tapered_corners) if expand > 0 else -_dilate(-result, tapered_corners)
    return result


class GrowMask:
    DESCRIPTION = ("Grows the mask by `expand` pixels (shrinks it when negative), like ComfyUI's GrowMask (grey "
                   "dilation/erosion with a 3x3 footprint, repeated); tapered corners use a cross footprint.")
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "expand_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "mask": ("MASK", {"tooltip": "The mask to grow or shrink."}),
            "expand": ("INT", {"default": 0, "min": -MAX_RESOLUTION, "max": MAX_RESOLUTION, "step": 1,
                               "tooltip": "Pixels to grow by (negative: shrink)."}),
            "tapered_corners": ("BOOLEAN", {"default": True, "tooltip": "Round the corners off while growing."}),
        }}

    def expand_mask(self, mask: torch.Tensor, expand: int, tapered_corners: bool) -> tuple[torch.Tensor]:
        return (grow_mask(as_mask_batch(mask, "mask"), expand, tapered_corners),)


class FeatherMask:
    DESCRIPTION = ("Fades the mask out towards the chosen edges: over `left` pixels from the left edge the mask is "
                   "multiplied by 1/left, 2/left, ... up to 1 (and likewise for the other edges; ComfyUI's own "
                   "node misses the outermost right and bottom line by an indexing slip, this one does not).")
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "feather"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        edge = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}
        return {"required": {
            "mask": ("MASK", {"tooltip": "The mask to feather."}),
            "left": ("INT", {**edge, "tooltip": "Width of the fade at the left edge, in pixels."}),
            "top": ("INT", {**edge, "tooltip": "Height of the fade at the top edge, in pixels."}),
            "right": ("INT", {**edge, "tooltip": "Width of the fade at the right edge, in pixels."}),
            "bottom": ("INT", {**edge, "tooltip": "Height of the fade at the bottom edge, in pixels."}),
        }}

    def feather(self, mask: torch.Tensor, left: int, top: int, right: int, bottom: int) -> tuple[torch.Tensor]:
        output = as_mask_batch(mask, "mask").clone()
        height, width = output.shape[-2:]
        for size, count, axis, from_end in ((left, width, 2, False), (right, width, 2, True),
                                            (top, height, 1, False), (bottom, height, 1, True)):
            size = min(size, count)
            ramp = torch.arange(1, size + 1, dtype=output.dtype) / max(size, 1)
            index = torch.arange(count - 1, count - 1 - size, -1) if from_end else torch.arange(size)
            shape = (1, size, 1) if axis == 1 else (1, 1, size)
            output.index_copy_(axis, index, output.index_select(axis, index) * ramp.reshape(shape))
        return (output,)


class ImageCompositeMasked:
    DESCRIPTION = ("Pastes `source` onto `destination` at (x, y), through the mask when one is given (1 = source). "
                   "The mask is resized to the source's size; resize_source first scales the source to the "
                   "destination's size.")
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "destination": ("IMAGE", {"tooltip": "The image pasted onto."}),
                "source": ("IMAGE", {"tooltip": "The image pasted."}),
                "x": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1,
                              "tooltip": "Left edge of the pasted image in the destination."}),
                "y": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1,
                              "tooltip": "Top edge of the pasted image in the destination."}),
                "resize_source": ("BOOLEAN", {"default": False,
                                              "tooltip": "Scale the source to the destination's size first."}),
            },
            "optional": {"mask": ("MASK", {"tooltip": "Where the source shows (1) and where it does not (0)."})},
        }

    def composite(self, destination: torch.Tensor, source: torch.Tensor, x: int, y: int, resize_source: bool,
                  mask: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        output = destination.clone().movedim(-1, 1)
        pasted = source.to(output.dtype).movedim(-1, 1)
        if pasted.shape[1] != output.shape[1]:
            pasted = rgb_pixels(source, "source").movedim(-1, 1) if output.shape[1] == 3 else pasted
            if pasted.shape[1] != output.shape[1]:
                raise ValueError(f"source: {pasted.shape[1]} channels cannot be pasted onto {output.shape[1]}")
        if resize_source:
            pasted = F.interpolate(pasted, size=output.shape[-2:], mode="bilinear")
        pasted = repeat_to_batch(pasted, output.shape[0], "source")
        if mask is None:
            weight = torch.ones_like(pasted[:, :1])
        else:
            weight = as_mask_batch(mask, "mask").unsqueeze(1)
            weight = F.interpolate(weight, size=pasted.shape[-2:], mode="bilinear")
            weight = repeat_to_batch(weight, output.shape[0], "mask")
        blend_into(output, pasted, weight, x, y)
        return (output.movedim(1, -1),)


class SolidMask:
    DESCRIPTION = "A mask of one value everywhere (1: change everything, 0: nothing)."
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "solid"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "value": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                "tooltip": "The value of every pixel."}),
            "width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1,
                              "tooltip": "Width in pixels."}),
            "height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1,
                               "tooltip": "Height in pixels."}),
        }}

    def solid(self, value: float, width: int, height: int) -> tuple[torch.Tensor]:
        return (torch.full((1, height, width), value, dtype=torch.float32),)


MASK_OPERATIONS = ("multiply", "add", "subtract", "and", "or", "xor")


def combine_masks(destination: torch.Tensor, source: torch.Tensor, operation: str) -> torch.Tensor:
    """`destination` (op) `source`, element by element; the logical operations round both to 0/1 first."""
    if operation == "multiply":
        return destination * source
    if operation == "add":
        return destination + source
    if operation == "subtract":
        return destination - source
    logical = {"and": torch.logical_and, "or": torch.logical_or, "xor": torch.logical_xor}[operation]
    return logical(destination.round().bool(), source.round().bool()).float()


class MaskComposite:
    DESCRIPTION = ("Combines `source` into `destination` with its top-left corner at (x, y): multiply, add or "
                   "subtract the values, or and/or/xor them as 0/1 masks (rounded). Outside the source the "
                   "destination is kept; the result is clamped to 0..1. A batch of 1 is combined with every row "
                   "of the other.")
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        offset = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}
        return {"required": {
            "destination": ("MASK", {"tooltip": "The mask combined into (its size is the result's)."}),
            "source": ("MASK", {"tooltip": "The mask combined with it; what falls outside is cut off."}),
            "x": ("INT", {**offset, "tooltip": "Left edge of the source in the destination, in pixels."}),
            "y": ("INT", {**offset, "tooltip": "Top edge of the source in the destination, in pixels."}),
            "operation": (list(MASK_OPERATIONS), {"tooltip": "How the two masks' values are combined."}),
        }}

    def combine(self, destination: torch.Tensor, source: torch.Tensor, x: int, y: int,
                operation: str) -> tuple[torch.Tensor]:
        output = as_mask_batch(destination, "destination")
        source = as_mask_batch(source, "source")
        if output.shape[0] != source.shape[0]:
            batch = max(output.shape[0], source.shape[0])
            output = repeat_to_batch(output, batch, "destination")
            source = repeat_to_batch(source, batch, "source")
        output = output.clone()
        visible_height = max(0, min(source.shape[1], output.shape[1] - y))
        visible_width = max(0, min(source.shape[2], output.shape[2] - x))
        region = output[:, y:y + visible_height, x:x + visible_width]
        region.copy_(combine_masks(region, source[:, :visible_height, :visible_width], operation))
        return (output.clamp(0.0, 1.0),)


class CropMask:
    DESCRIPTION = ("Cuts a width x height region out of a mask, its top-left corner at (x, y); a region reaching "
                   "past the mask's edge is cut short there.")
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        offset = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}
        size = {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}
        return {"required": {
            "mask": ("MASK", {"tooltip": "The mask to crop."}),
            "x": ("INT", {**offset, "tooltip": "Left edge of the region, in pixels."}),
            "y": ("INT", {**offset, "tooltip": "Top edge of the region, in pixels."}),
            "width": ("INT", {**size, "tooltip": "Width of the region, in pixels."}),
            "height": ("INT", {**size, "tooltip": "Height of the region, in pixels."}),
        }}

    def crop(self, mask: torch.Tensor, x: int, y: int, width: int, height: int) -> tuple[torch.Tensor]:
        mask = as_mask_batch(mask, "mask")
        mask_height, mask_width = mask.shape[-2:]
        for name, start, extent in (("x", x, mask_width), ("y", y, mask_height)):
            if start >= extent:
                raise ValueError(f"{name}: {start} lies outside the {mask_width}x{mask_height} mask")
        return (mask[:, y:y + height, x:x + width].clone(),)


class ThresholdMask:
    DESCRIPTION = "Turns a soft mask into a hard one: 1 where the mask is above `value`, else 0."
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "mask": ("MASK", {"tooltip": "The mask to threshold."}),
            "value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                "tooltip": "Values above this become 1, the others 0."}),
        }}

    def image_to_mask(self, mask: torch.Tensor, value: float) -> tuple[torch.Tensor]:
        return ((as_mask_batch(mask, "mask") > value).float(),)


class ImageColorToMask:
    DESCRIPTION = ("A mask of the pixels of one exact colour: 1 where the image's colour, rounded to 8 bits per "
                   "channel, is `color` (0xRRGGBB), else 0.")
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The image to find the colour in."}),
            "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color",
                              "tooltip": "The colour as one number, 0xRRGGBB (red * 65536 + green * 256 + blue)."}),
        }}

    def image_to_mask(self, image: torch.Tensor, color: int) -> tuple[torch.Tensor]:
        levels = (rgb_pixels(image, "image").clamp(0, 1) * 255.0).round().to(torch.int64)
        packed = levels[..., 0] * 65536 + levels[..., 1] * 256 + levels[..., 2]
        return ((packed == color).float(),)


class MaskPreview:
    DESCRIPTION = ("Shows masks as grey images (white = 1) without keeping them: they are written to the temporary "
                   "folder.")
    CATEGORY = "mask"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"mask": ("MASK", {"tooltip": "The masks to preview."})},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def execute(self, mask: torch.Tensor, prompt: Any = None, extra_pnginfo: Any = None) -> dict[str, Any]:
        images = as_mask_batch(mask, "mask").unsqueeze(-1).expand(-1, -1, -1, 3)
        folder = current_environment().folders.temp_dir
        prefix = "ComfyUI_temp_" + secrets.token_hex(3)
        saved = save_images(images, folder, prefix, "temp", prompt, extra_pnginfo, compress_level=4)
        return {"ui": {"images": saved}}


NODE_CLASS_MAPPINGS = {
    "LoadImageMask": LoadImageMask,
    "ImageToMask": ImageToMask,
    "MaskToImage": MaskToImage,
    "InvertMask": InvertMask,
    "GrowMask": GrowMask,
    "FeatherMask": FeatherMask,
    "ImageCompositeMasked": ImageCompositeMasked,
    "SolidMask": SolidMask,
    "MaskComposite": MaskComposite,
    "CropMask": CropMask,
    "ThresholdMask": ThresholdMask,
    "ImageColorToMask": ImageColorToMask,
    "MaskPreview": MaskPreview,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadImageMask": "Load Image (as Mask)",
    "ImageToMask": "Convert Image to Mask",
    "MaskToImage": "Convert Mask to Image",
    "InvertMask": "Invert Mask",
    "GrowMask": "Grow Mask",
    "FeatherMask": "Feather Mask",
    "ImageCompositeMasked": "Image Composite Masked",
    # ComfyUI gives these no display name: the editor shows the class name
    "SolidMask": "SolidMask",
    "MaskComposite": "MaskComposite",
    "CropMask": "CropMask",
    "ThresholdMask": "ThresholdMask",
    "ImageColorToMask": "ImageColorToMask",
    "MaskPreview": "MaskPreview",
}
