"""Where and when a CONDITIONING entry applies, as ComfyUI's sampler honours it: an area (ConditioningSetArea,
latent units), a mask (ConditioningSetMask, with its own strength and optionally its bounds as the area), a
strength, and a timestep range (ConditioningSetTimestepRange, start/end percent of the schedule).

At each noise level an entry outside its timestep range is skipped; the others run the network on their area of the
latents and their estimates are blended into each side's full estimate with per-pixel weights (mask times strength,
feathered over 8 latent pixels at area edges that are not the image's), divided by the summed weights (ComfyUI's
calc_cond_batch and get_area_and_mult). An area entry on one side gets a twin on every other side (the text of that
side's smallest entry enclosing the area), so both sides of guidance cover the area alike (ComfyUI's
create_cond_with_same_area_if_none). Knows nothing of nodes, files or model families.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from diffusion.sampling.model_sampling import ModelSampling

# options that make an entry regional: only the sigma core honours them
REGIONAL_KEYS = ("area", "mask", "start_percent", "end_percent")
FEATHER = 8  # latent pixels of the weight ramp at an area's inner edges
MIN_BOUNDS = 8  # the smallest area (latent pixels) a mask's bounds give

Area = tuple[int, int, int, int]  # height, width, y, x in latent pixels


def is_regional(options: Mapping[str, Any]) -> bool:
    """Whether a conditioning entry's options ask for an area, a mask or a timestep range."""
    return any(key in options for key in REGIONAL_KEYS)


def regional_problem(conditionings: Mapping[str, Sequence[Sequence[Any]]], where: str) -> str | None:
    """Why regional conditioning cannot run `where` (naming the input that carries it), None when there is none."""
    for input_name, conditioning in conditionings.items():
        for entry in conditioning:
            if len(entry) > 1 and is_regional(entry[1]):
                return (f"{input_name}: area, mask and timestep-range conditioning (ConditioningSetArea, "
                        f"ConditioningSetMask, ConditioningSetTimestepRange, ...) is not supported {where}; use one "
                        "of ComfyUI's schedulers")
    return None


def _resolved_area(area: Sequence[Any], height: int, width: int) -> Area:
    if area[0] == "percentage":
        h, w, y, x = (float(value) for value in area[1:5])
        return max(1, round(h * height)), max(1, round(w * width)), round(y * height), round(x * width)
    return tuple(int(value) for value in area[:4])  # type: ignore[return-value]


def _mask_bounds(mask: torch.Tensor) -> Area:
    """The area of a mask's nonzero pixels over its batch, at least `MIN_BOUNDS` square (8x8 at 0,0 when empty)."""
    ys, xs = torch.where(mask.abs().amax(dim=0) != 0)
    if ys.numel() == 0:
        return MIN_BOUNDS, MIN_BOUNDS, 0, 0
    top, left = int(ys.min()), int(xs.min())
    return (max(MIN_BOUNDS, int(ys.max()) - top + 1), max(MIN_BOUNDS, int(xs.max()) - left + 1), top, left)


def _to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    if tensor.shape[0] < batch:
        tensor = tensor.repeat(math.ceil(batch / tensor.shape[0]), *([1] * (tensor.ndim - 1)))
    return tensor[:batch]


def _feather(weight: torch.Tensor, area: Area, height: int, width: int) -> None:
    """Ramp the weight down over up to `FEATHER` pixels at the area's edges that lie inside the image."""
    h, w, y, x = area
    for dim, (size, offset, full) in ((2, (h, y, height)), (3, (w, x, width))):
        ramp = min(FEATHER, weight.shape[dim] // 4)
        if offset != 0:
            for t in range(ramp):
                weight.narrow(dim, t, 1).mul_((t + 1) / ramp)
        if size + offset < full:
            for t in range(ramp):
                weight.narrow(dim, size - 1 - t, 1).mul_((t + 1) / ramp)


@dataclass(frozen=True, eq=False)
class Region:
    """Where one entry's estimate goes: its `area` of the latents (None: all of them) with per-pixel `weight`
    [batch, C, h, w] there, between noise levels `sigma_start` and `sigma_end` (None: unbounded)."""

    area: Area | None
    weight: torch.Tensor
    sigma_start: float | None = None
    sigma_end: float | None = None

    def active(self, sigma: float) -> bool:
        """Whether the entry runs at noise level `sigma` (ComfyUI compares the first row's sigma)."""
        return not ((self.sigma_start is not None and sigma > self.sigma_start)
                    or (self.sigma_end is not None and sigma < self.sigma_end))

    def crop(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.area is None:
            return tensor
        h, w, y, x = self.area
        return tensor[..., y:y + h, x:x + w]


def resolved_areas(options: Mapping[str, Any], height: int, width: int) -> tuple[Area | None, torch.Tensor | None]:
    """An entry's area (percentages resolved, a mask's bounds when asked) and its mask at the latent size."""
    area = _resolved_area(options["area"], height, width) if "area" in options else None
    mask = options.get("mask")
    if mask is not None:
        mask = mask.float().cpu()
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if tuple(mask.shape[-2:]) != (height, width):
            mask = F.interpolate(mask.unsqueeze(1), size=(height, width), mode="bilinear").squeeze(1)
        if options.get("set_area_to_bounds", False):
            area = _mask_bounds(mask)
    return area, mask


def region(options: Mapping[str, Any], shape: torch.Size, model_sampling: "ModelSampling") -> Region:
    """The `Region` of an entry with `options` on latents of `shape` [B, C, H, W]."""
    batch, channels, height, width = shape
    area, mask = resolved_areas(options, height, width)
    if area is not None:
        h, w, y, x = area
        area = (min(height - y, h), min(width - x, w), y, x)
        if area[0] <= 0 or area[1] <= 0:
            raise ValueError(f"conditioning: the area at x={x * 8}, y={y * 8} lies outside the "
                             f"{width * 8}x{height * 8} image")
    crop = slice(None) if area is None else (slice(area[2], area[2] + area[0]), slice(area[3], area[3] + area[1]))
    if mask is not None:
        mask = _to_batch(mask, batch)
        mask = mask if area is None else mask[:, crop[0], crop[1]]
        weight = (mask * float(options.get("mask_strength", 1.0))).unsqueeze(1).repeat(1, channels, 1, 1)
    else:
        size = (height, width) if area is None else area[:2]
        weight = torch.ones(batch, channels, *size)
    weight = weight * float(options.get("strength", 1.0))
    if mask is None and area is not None:
        _feather(weight, area, height, width)
    start = model_sampling.percent_to_sigma(float(options["start_percent"])) if "start_percent" in options else None
    end = model_sampling.percent_to_sigma(float(options["end_percent"])) if "end_percent" in options else None
    return Region(area, weight, start, end)


def _inside(area: Area, outer: Area) -> bool:
    return (area[2] >= outer[2] and area[3] >= outer[3] and area[0] + area[2] <= outer[0] + outer[2]
            and area[1] + area[3] <= outer[1] + outer[3])


def area_twin(area: Area, side_areas: Sequence[Area | None]) -> int | None:
    """The entry of another side that an area entry's twin takes its text from: the smallest one enclosing the
    area, else the first without an area; None when none fits or one has exactly this area already."""
    smallest: int | None = None
    for index, other in enumerate(side_areas):
        if other is not None and _inside(area, other):
            current = None if smallest is None else side_areas[smallest]
            if smallest is None or current is None or math.prod(current[:2]) > math.prod(other[:2]):
                smallest = index
        elif other is None and smallest is None:
            smallest = index
    if smallest is None or side_areas[smallest] == area:
        return None
    return smallest
