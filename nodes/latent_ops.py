"""Latent operation nodes with ComfyUI's contracts: compositing, blending and arithmetic, batches and their
`batch_index`, cropping, flipping and rotating.

LATENT is the dict {"samples": [batch, channels, height/8, width/8], optional "noise_mask" [batch or 1, 1, height,
width] (pixel size, 1 = repaint), optional "batch_index" (the noise draw of each row: a batch split off a larger
one keeps the noise it would have had there)}. Every node returns a new dict with the input's other keys
(a noise mask rides along untouched unless the node says otherwise, as in ComfyUI).

The samples are the VAE's raw latents `z`, as ComfyUI's are (the sampler applies the model's latent format), so
every operation here, Add, Subtract, Multiply and Interpolate included, gives ComfyUI's numbers for every family.
Knows nothing of models, HTTP or the executor.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from nodes import resize
from nodes.latent import LATENT_SCALE, MAX_RESOLUTION
from nodes.mask import as_mask_batch, blend_into

Latent = dict[str, Any]

# -- helpers: the one place where latents of mismatched shapes are reconciled --------------------------------------


def samples_of(latent: Any, input_name: str) -> torch.Tensor:
    """The [batch, channels, height, width] tensor of a LATENT; a ValueError naming the input otherwise."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise ValueError(f"{input_name}: expected a LATENT with samples [batch, channels, height, width], got {shape}")
    return samples


def cycle_to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """`tensor` with `batch` rows along dim 0: cut down, or repeated whole and cut (ComfyUI's repeat_to_batch_size:
    rows 0, 1, 0, 1, ... for a batch of 2 made 4)."""
    if tensor.shape[0] > batch:
        return tensor[:batch]
    if tensor.shape[0] < batch:
        repeats = math.ceil(batch / tensor.shape[0])
        return tensor.repeat(repeats, *([1] * (tensor.ndim - 1)))[:batch]
    return tensor


def shaped_like(reference: torch.Tensor, samples: torch.Tensor, input_name: str, method: str = "bilinear",
                repeat_batch: bool = True) -> torch.Tensor:
    """`samples` made to fit `reference`: another height/width is centre-cropped to the reference's aspect ratio
    and resized with `method`, another batch size cycled to it (unless `repeat_batch` is False). Another channel
    count (latents of another model family) is a ValueError naming the input."""
    if samples.shape[1] != reference.shape[1]:
        raise ValueError(f"{input_name}: latents with {samples.shape[1]} channels cannot be combined with latents "
                         f"with {reference.shape[1]} (they come from different model families)")
    if samples.shape[-2:] != reference.shape[-2:]:
        samples = resize.upscale(samples, reference.shape[-1], reference.shape[-2], method, "center")
    samples = samples.to(reference.device, reference.dtype)
    return cycle_to_batch(samples, reference.shape[0]) if repeat_batch else samples


def _latent_input(tooltip: str) -> tuple[str, dict[str, str]]:
    return ("LATENT", {"tooltip": tooltip})


def _pixel_offset(tooltip: str) -> tuple[str, dict[str, Any]]:
    return ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8, "tooltip": tooltip})


# -- compositing ----------------------------------------------------------------------------------------------------


def feather_weight(height: int, width: int, feather: int, fade_top: bool, fade_bottom: bool, fade_left: bool,
                   fade_right: bool) -> torch.Tensor:
    """[1, 1, height, width] weights: 1 inside, falling linearly to 1/feather over `feather` rows or columns at
    each chosen edge (corners multiply)."""
    ramp = torch.arange(1, feather + 1, dtype=torch.float32) / feather
    rows, columns = torch.ones(height), torch.ones(width)
    for line, fade_start, fade_end in ((rows, fade_top, fade_bottom), (columns, fade_left, fade_right)):
        count = min(feather, line.shape[0])
        if fade_start:
            line[:count] *= ramp[:count]
        if fade_end:
            line[line.shape[0] - count:] *= ramp[:count].flip(0)
    return (rows[:, None] * columns[None, :]).reshape(1, 1, height, width)


class LatentComposite:
    DESCRIPTION = ("Pastes `samples_from` into `samples_to` with its top-left corner at (x, y) pixels (rounded down "
                   "to the latent grid of 8 pixels); what falls outside is cut off. With `feather`, the pasted "
                   "latents fade into the destination over that many pixels at every edge that lies inside it.")
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples_to": _latent_input("The latents pasted onto (their noise mask and batch index are kept)."),
            "samples_from": _latent_input("The latents pasted (a batch of 1 is pasted into every row)."),
            "x": _pixel_offset("Left edge of the pasted latents, in pixels (a multiple of 8)."),
            "y": _pixel_offset("Top edge of the pasted latents, in pixels (a multiple of 8)."),
            "feather": _pixel_offset("Width of the fade at the inner edges, in pixels (0: a hard edge)."),
        }}

    def composite(self, samples_to: Latent, samples_from: Latent, x: int, y: int, feather: int = 0) -> tuple[Latent]:
        destination = samples_of(samples_to, "samples_to")
        source = samples_of(samples_from, "samples_from")
        if source.shape[1] != destination.shape[1]:
            raise ValueError(f"samples_from: latents with {source.shape[1]} channels cannot be pasted into latents "
                             f"with {destination.shape[1]}")
        if source.shape[0] not in (1, destination.shape[0]):
            raise ValueError(f"samples_from: a batch of {source.shape[0]} cannot be pasted into a batch of "
                             f"{destination.shape[0]} (use a batch of 1 or the same size)")
        left, top, feather = x // LATENT_SCALE, y // LATENT_SCALE, feather // LATENT_SCALE
        output = destination.clone()
        visible = source[:, :, :max(0, output.shape[2] - top), :max(0, output.shape[3] - left)]
        if feather == 0:
            weight = torch.ones(1, 1, *visible.shape[-2:])
        else:
            weight = feather_weight(*visible.shape[-2:], feather, fade_top=top != 0,
                                    fade_bottom=top + visible.shape[2] < output.shape[2], fade_left=left != 0,
                                    fade_right=left + visible.shape[3] < output.shape[3])
        visible = visible.to(output.device, output.dtype).expand(output.shape[0], -1, -1, -1)
        blend_into(output, visible, weight.to(output.device), left, top)
        return ({**samples_to, "samples": output},)


class LatentCompositeMasked:
    DESCRIPTION = ("Pastes `source` into `destination` at (x, y) pixels (rounded down to the latent grid of 8), "
                   "through the mask when one is given (1 = source; resized to the source's size). resize_source "
                   "first scales the source to the destination's size; a source batch is cycled to the "
                   "destination's.")
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "destination": _latent_input("The latents pasted onto (their noise mask and batch index are kept)."),
                "source": _latent_input("The latents pasted."),
                "x": _pixel_offset("Left edge of the pasted latents, in pixels (a multiple of 8)."),
                "y": _pixel_offset("Top edge of the pasted latents, in pixels (a multiple of 8)."),
                "resize_source": ("BOOLEAN", {"default": False,
                                              "tooltip": "Scale the source to the destination's size first."}),
            },
            "optional": {"mask": ("MASK", {"tooltip": "Where the source shows (1) and where it does not (0)."})},
        }

    def composite(self, destination: Latent, source: Latent, x: int, y: int, resize_source: bool,
                  mask: torch.Tensor | None = None) -> tuple[Latent]:
        output = samples_of(destination, "destination").clone()
        pasted = samples_of(source, "source").to(output.device, output.dtype)
        if pasted.shape[1] != output.shape[1]:
            raise ValueError(f"source: latents with {pasted.shape[1]} channels cannot be pasted into latents with "
                             f"{output.shape[1]}")
        if resize_source:
            pasted = F.interpolate(pasted, size=output.shape[-2:], mode="bilinear")
        pasted = cycle_to_batch(pasted, output.shape[0])
        if mask is None:
            weight = torch.ones_like(pasted[:, :1])
        else:
            weight = as_mask_batch(mask, "mask").unsqueeze(1).to(output.device, output.dtype)
            weight = cycle_to_batch(F.interpolate(weight, size=pasted.shape[-2:], mode="bilinear"), pasted.shape[0])
        blend_into(output, pasted, weight, x // LATENT_SCALE, y // LATENT_SCALE)
        return ({**destination, "samples": output},)


class LatentBlend:
    DESCRIPTION = ("Mixes two latent batches: samples1 * blend_factor + samples2 * (1 - blend_factor). samples2 of "
                   "another size is centre-cropped to samples1's aspect ratio and resized (bicubic) first.")
    CATEGORY = "_for_testing"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "blend"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples1": _latent_input("The first latents (their noise mask and batch index are kept)."),
            "samples2": _latent_input("The second latents."),
            "blend_factor": ("FLOAT", {"default": 0.5, "min": 0, "max": 1, "step": 0.01,
                                       "tooltip": "The share of samples1 (1: only samples1, 0: only samples2)."}),
        }}

    def blend(self, samples1: Latent, samples2: Latent, blend_factor: float) -> tuple[Latent]:
        first = samples_of(samples1, "samples1")
        second = shaped_like(first, samples_of(samples2, "samples2"), "samples2", "bicubic", repeat_batch=False)
        if first.shape[0] != second.shape[0] and 1 not in (first.shape[0], second.shape[0]):
            raise ValueError(f"samples2: a batch of {second.shape[0]} cannot be blended with a batch of "
                             f"{first.shape[0]} (use a batch of 1 or the same size)")
        return ({**samples1, "samples": first * blend_factor + second * (1 - blend_factor)},)


# -- arithmetic ------------------------------------------------------------------------------------------------------


def _two_latents() -> dict[str, Any]:
    return {
        "samples1": _latent_input("The first latents (their noise mask and batch index are kept)."),
        "samples2": _latent_input("The second latents (resized and their batch cycled to the first's if needed)."),
    }


class LatentAdd:
    DESCRIPTION = ("Adds two latent batches element by element; samples2 is fitted to samples1 first (centre crop "
                   "and bilinear resize, batch cycled). On SD3/FLUX latents the result differs from ComfyUI's by "
                   "the VAE shift (see the module notes).")
    CATEGORY = "latent/advanced"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "op"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": _two_latents()}

    def op(self, samples1: Latent, samples2: Latent) -> tuple[Latent]:
        first = samples_of(samples1, "samples1")
        return ({**samples1, "samples": first + shaped_like(first, samples_of(samples2, "samples2"), "samples2")},)


class LatentSubtract:
    DESCRIPTION = ("Subtracts samples2 from samples1 element by element; samples2 is fitted to samples1 first "
                   "(centre crop and bilinear resize, batch cycled).")
    CATEGORY = "latent/advanced"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "op"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": _two_latents()}

    def op(self, samples1: Latent, samples2: Latent) -> tuple[Latent]:
        first = samples_of(samples1, "samples1")
        return ({**samples1, "samples": first - shaped_like(first, samples_of(samples2, "samples2"), "samples2")},)


class LatentMultiply:
    DESCRIPTION = ("Multiplies latents by a number. On SD3/FLUX latents the result differs from ComfyUI's by the "
                   "VAE shift (see the module notes).")
    CATEGORY = "latent/advanced"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "op"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples": _latent_input("The latents to scale."),
            "multiplier": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                                     "tooltip": "The factor every value is multiplied by."}),
        }}

    def op(self, samples: Latent, multiplier: float) -> tuple[Latent]:
        return ({**samples, "samples": samples_of(samples, "samples") * multiplier},)


def _channel_norm(samples: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(samples, dim=1, keepdim=True)


class LatentInterpolate:
    DESCRIPTION = ("Interpolates two latent batches pixel by pixel: the directions (over the channels) are mixed "
                   "by `ratio` and renormalised, the lengths mixed linearly, so the result keeps the latents' "
                   "magnitude where a plain blend would shrink it. samples2 is fitted to samples1 first. ComfyUI "
                   "normalises batches of more than one image with the wrong rows' lengths; this node uses each "
                   "row's own (the same result for a batch of 1).")
    CATEGORY = "latent/advanced"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "op"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            **_two_latents(),
            "ratio": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                "tooltip": "The share of samples1 (1: only samples1, 0: only samples2)."}),
        }}

    def op(self, samples1: Latent, samples2: Latent, ratio: float) -> tuple[Latent]:
        first = samples_of(samples1, "samples1")
        second = shaped_like(first, samples_of(samples2, "samples2"), "samples2")
        length1, length2 = _channel_norm(first), _channel_norm(second)
        mixed = torch.nan_to_num(first / length1) * ratio + torch.nan_to_num(second / length2) * (1.0 - ratio)
        direction = torch.nan_to_num(mixed / _channel_norm(mixed))
        return ({**samples1, "samples": direction * (length1 * ratio + length2 * (1.0 - ratio))},)


# -- batches ---------------------------------------------------------------------------------------------------------


def default_batch_index(latent: Latent, batch: int, offset: int = 0) -> list[int]:
    """The noise draw of each row: the latent's own `batch_index`, else offset, offset + 1, ..."""
    return list(latent["batch_index"]) if "batch_index" in latent else list(range(offset, offset + batch))


class LatentBatch:
    DESCRIPTION = ("Joins two latent batches into one (samples2 resized to samples1's size if needed). The joined "
                   "batch_index lists each row's noise draw, so every image keeps the noise it had in its own "
                   "batch; samples1's noise mask is kept as it is.")
    CATEGORY = "latent/batch"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "batch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples1": _latent_input("The first rows of the batch."),
            "samples2": _latent_input("The rows appended after them."),
        }}

    def batch(self, samples1: Latent, samples2: Latent) -> tuple[Latent]:
        first = samples_of(samples1, "samples1")
        second = shaped_like(first, samples_of(samples2, "samples2"), "samples2", repeat_batch=False)
        batch_index = default_batch_index(samples1, first.shape[0]) + default_batch_index(samples2, second.shape[0])
        return ({**samples1, "samples": torch.cat((first, second)), "batch_index": batch_index},)


def _mask_rows(mask: torch.Tensor, batch: int) -> torch.Tensor:
    """A noise mask with one row per latent row (a shorter batch repeated whole), as ComfyUI pairs them."""
    if mask.shape[0] >= batch:
        return mask
    return mask.repeat(math.ceil(batch / mask.shape[0]), *([1] * (mask.ndim - 1)))[:batch]


class LatentFromBatch:
    DESCRIPTION = ("Takes `length` rows from a latent batch starting at `batch_index` (both clamped to the batch). "
                   "The rows keep their batch_index, so sampling them gives the noise they had in the whole batch.")
    CATEGORY = "latent/batch"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "frombatch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples": _latent_input("The latent batch."),
            "batch_index": ("INT", {"default": 0, "min": 0, "max": 63,
                                    "tooltip": "The first row to take (0-based; past the end: the last row)."}),
            "length": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "How many rows to take."}),
        }}

    def frombatch(self, samples: Latent, batch_index: int, length: int) -> tuple[Latent]:
        rows = samples_of(samples, "samples")
        start = min(rows.shape[0] - 1, batch_index)
        stop = start + min(rows.shape[0] - start, length)
        output = {**samples, "samples": rows[start:stop].clone()}
        if "noise_mask" in samples:
            masks = samples["noise_mask"]
            output["noise_mask"] = masks.clone() if masks.shape[0] == 1 else \
                _mask_rows(masks, rows.shape[0])[start:stop].clone()
        output["batch_index"] = default_batch_index(samples, rows.shape[0])[start:stop]
        return (output,)


class RepeatLatentBatch:
    DESCRIPTION = ("Repeats a latent batch `amount` times. A batch_index is continued past the original rows' "
                   "range, so the copies get new noise. ComfyUI repeats a noise mask batch as it is; this node "
                   "first pairs it with the latent rows, which differs only for a mask batch of another size.")
    CATEGORY = "latent/batch"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "repeat"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples": _latent_input("The latent batch to repeat."),
            "amount": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "How many copies of the batch."}),
        }}

    def repeat(self, samples: Latent, amount: int) -> tuple[Latent]:
        rows = samples_of(samples, "samples")
        output = {**samples, "samples": rows.repeat(amount, 1, 1, 1)}
        mask = samples.get("noise_mask")
        if mask is not None and mask.shape[0] > 1:
            mask = _mask_rows(mask, rows.shape[0])
            output["noise_mask"] = mask.repeat(amount, *([1] * (mask.ndim - 1)))
        if "batch_index" in samples:
            indices = list(samples["batch_index"])
            offset = max(indices) - min(indices) + 1
            output["batch_index"] = indices + [index + copy * offset for copy in range(1, amount) for index in indices]
        return (output,)


class LatentBatchSeedBehavior:
    DESCRIPTION = ("How the rows of a batch get their noise: `fixed` gives every row the first row's noise draw "
                   "(the same seed for all), `random` drops the batch_index so each row draws its own.")
    CATEGORY = "latent/advanced"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "op"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples": _latent_input("The latent batch."),
            "seed_behavior": (["random", "fixed"], {"default": "fixed",
                                                    "tooltip": "fixed: every row the same noise; random: its own."}),
        }}

    def op(self, samples: Latent, seed_behavior: str) -> tuple[Latent]:
        rows = samples_of(samples, "samples")
        output = dict(samples)
        if seed_behavior == "random":
            output.pop("batch_index", None)
        else:
            output["batch_index"] = [samples.get("batch_index", [0])[0]] * rows.shape[0]
        return (output,)


def _noise_mask_or_ones(latent: Latent, rows: torch.Tensor) -> torch.Tensor:
    """The latent's noise mask as [batch, 1, pixel height, pixel width] with one row per latent row (all ones
    when it has none)."""
    height, width = rows.shape[-2] * LATENT_SCALE, rows.shape[-1] * LATENT_SCALE
    mask = latent.get("noise_mask")
    if mask is None:
        return torch.ones(rows.shape[0], 1, height, width, device=rows.device)
    mask = as_mask_batch(mask, "latents").unsqueeze(1).to(rows.device)
    if mask.shape[-2:] != (height, width):
        mask = F.interpolate(mask, size=(height, width), mode="bilinear")
    return _mask_rows(mask, rows.shape[0])


class RebatchLatents:
    DESCRIPTION = ("Regroups a list of latent batches into batches of `batch_size` rows (the last may be smaller), "
                   "keeping each row's noise mask and batch_index; latents of different sizes are never put in "
                   "one batch. Use it to sample a large batch a few images at a time.")
    CATEGORY = "latent/batch"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_IS_LIST = (True,)
    INPUT_IS_LIST = True
    FUNCTION = "rebatch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "latents": _latent_input("The latent batches (a list is taken whole)."),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "Rows per output batch."}),
        }}

    def rebatch(self, latents: list[Latent], batch_size: list[int]) -> tuple[list[Latent]]:
        size = batch_size[0]
        groups: list[list[tuple[torch.Tensor, torch.Tensor, int]]] = []  # runs of rows of one latent size
        seen = 0
        for latent in latents:
            rows = samples_of(latent, "latents")
            masks = _noise_mask_or_ones(latent, rows)
            indices = default_batch_index(latent, rows.shape[0], offset=seen)
            seen += len(indices)
            if not groups or groups[-1][0][0].shape[-2:] != rows.shape[-2:]:
                groups.append([])
            groups[-1].extend(zip(rows, masks, indices))
        output = []
        for group in groups:
            for start in range(0, len(group), size):
                chunk = group[start:start + size]
                batch = {"samples": torch.stack([row for row, _, _ in chunk]),
                         "noise_mask": torch.stack([mask for _, mask, _ in chunk]),
                         "batch_index": [index for _, _, index in chunk]}
                if batch["noise_mask"].mean() == 1.0:
                    del batch["noise_mask"]
                output.append(batch)
        return (output,)


# -- transforms ------------------------------------------------------------------------------------------------------


class LatentCrop:
    DESCRIPTION = ("Cuts a width x height region (in pixels, rounded down to the latent grid of 8) out of latents, "
                   "its top-left corner at (x, y); the corner is kept at least 64 pixels from the right and bottom "
                   "edges. As in ComfyUI, a noise mask is passed on uncropped.")
    CATEGORY = "latent/transform"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"default": 512, "min": 64, "max": MAX_RESOLUTION, "step": 8}
        return {"required": {
            "samples": _latent_input("The latents to crop."),
            "width": ("INT", {**size, "tooltip": "Width of the region, in pixels."}),
            "height": ("INT", {**size, "tooltip": "Height of the region, in pixels."}),
            "x": _pixel_offset("Left edge of the region, in pixels."),
            "y": _pixel_offset("Top edge of the region, in pixels."),
        }}

    def crop(self, samples: Latent, width: int, height: int, x: int, y: int) -> tuple[Latent]:
        rows = samples_of(samples, "samples")
        left = max(0, min(x // LATENT_SCALE, rows.shape[3] - LATENT_SCALE))
        top = max(0, min(y // LATENT_SCALE, rows.shape[2] - LATENT_SCALE))
        cropped = rows[:, :, top:top + height // LATENT_SCALE, left:left + width // LATENT_SCALE]
        return ({**samples, "samples": cropped},)


FLIP_METHODS = ("x-axis: vertically", "y-axis: horizontally")
ROTATIONS = ("none", "90 degrees", "180 degrees", "270 degrees")


class LatentFlip:
    DESCRIPTION = "Mirrors latents: upside down (x-axis) or left to right (y-axis). A noise mask is passed on as is."
    CATEGORY = "latent/transform"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "flip"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples": _latent_input("The latents to mirror."),
            "flip_method": (list(FLIP_METHODS), {"tooltip": "The axis to mirror across."}),
        }}

    def flip(self, samples: Latent, flip_method: str) -> tuple[Latent]:
        dim = 2 if flip_method == FLIP_METHODS[0] else 3
        return ({**samples, "samples": torch.flip(samples_of(samples, "samples"), dims=[dim])},)


class LatentRotate:
    DESCRIPTION = ("Rotates latents clockwise by a quarter, half or three quarters turn. A noise mask is passed on "
                   "as is.")
    CATEGORY = "latent/transform"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "rotate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples": _latent_input("The latents to rotate."),
            "rotation": (list(ROTATIONS), {"tooltip": "The clockwise rotation."}),
        }}

    def rotate(self, samples: Latent, rotation: str) -> tuple[Latent]:
        quarter_turns = ROTATIONS.index(rotation)
        return ({**samples, "samples": torch.rot90(samples_of(samples, "samples"), k=quarter_turns, dims=[3, 2])},)


NODE_CLASS_MAPPINGS = {
    "LatentComposite": LatentComposite,
    "LatentCompositeMasked": LatentCompositeMasked,
    "LatentBlend": LatentBlend,
    "LatentAdd": LatentAdd,
    "LatentSubtract": LatentSubtract,
    "LatentMultiply": LatentMultiply,
    "LatentInterpolate": LatentInterpolate,
    "LatentBatch": LatentBatch,
    "LatentFromBatch": LatentFromBatch,
    "RepeatLatentBatch": RepeatLatentBatch,
    "LatentBatchSeedBehavior": LatentBatchSeedBehavior,
    "RebatchLatents": RebatchLatents,
    "LatentCrop": LatentCrop,
    "LatentFlip": LatentFlip,
    "LatentRotate": LatentRotate,
}
NODE_DISPLAY_NAME_MAPPINGS = {  # ComfyUI's; the nodes it gives no display name show their class name
    "LatentComposite": "Latent Composite",
    "LatentCompositeMasked": "LatentCompositeMasked",
    "LatentBlend": "Latent Blend",
    "LatentAdd": "LatentAdd",
    "LatentSubtract": "LatentSubtract",
    "LatentMultiply": "LatentMultiply",
    "LatentInterpolate": "LatentInterpolate",
    "LatentBatch": "LatentBatch",
    "LatentFromBatch": "Latent From Batch",
    "RepeatLatentBatch": "Repeat Latent Batch",
    "LatentBatchSeedBehavior": "LatentBatchSeedBehavior",
    "RebatchLatents": "Rebatch Latents",
    "LatentCrop": "Crop Latent",
    "LatentFlip": "Flip Latent",
    "LatentRotate": "Rotate Latent",
}
