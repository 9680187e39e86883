"""ComfyUI's latent extras (comfy_extras/nodes_latent.py) with its contracts: LatentConcat and LatentCut, and the
LATENT_OPERATION nodes: LatentOperationSharpen and LatentOperationTonemapReinhard make an operation,
LatentApplyOperation applies one to a LATENT, LatentApplyOperationCFG to the guidance of every sampling step.

A LATENT_OPERATION is what ComfyUI passes: a callable `operation(latent=tensor) -> tensor` on [batch, channels,
height, width] latents, so operations from plugins and ours mix. LatentApplyOperationCFG is a pre-CFG patch of the
MODEL (`DiffusionModel.pre_cfg`, as ComfyUI's `sampler_pre_cfg_function`): before guidance it replaces the
positive estimate by `operation(positive - negative) + negative`, i.e. it operates on the guidance direction.

LatentApplyOperation works on a LATENT's samples as they are (`nodes.latent` says what they hold); Concat and Cut
only index them. LatentApplyOperationCFG's operation sees the denoised estimates in the sampling (model) space,
`(z - shift_factor) * scale_factor`, as ComfyUI's pre-CFG functions do. Knows nothing of models'
internals, HTTP or the executor.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from diffusion.components import DiffusionModel
from nodes.image_ops import gaussian_kernel
from nodes.latent import MAX_RESOLUTION
from nodes.latent_ops import cycle_to_batch, samples_of

ADVANCED = "latent/advanced"
OPERATIONS = "latent/advanced/operations"
CONCAT_DIMS = ["x", "-x", "y", "-y", "t", "-t"]
CUT_DIMS = ["x", "y", "t"]
# ComfyUI's axes, counted from the end: x is the width, y the height, t the time axis of video latents (on our
# 4-d image latents, as in ComfyUI, that third axis from the end is the channel axis)
AXIS_FROM_END = {"x": 1, "y": 2, "t": 3}
EPSILON_SHARPEN = 1e-6  # ComfyUI's guards against a zero vector norm
EPSILON_TONEMAP = 1e-10

LatentOperation = Callable[..., torch.Tensor]


def _latent_input(tooltip: str) -> tuple[str, dict[str, str]]:
    return ("LATENT", {"tooltip": tooltip})


def _operation_input() -> tuple[str, dict[str, str]]:
    return ("LATENT_OPERATION", {"tooltip": "The operation, from a LatentOperation node."})


def _with_samples(latent: Mapping[str, Any], samples: torch.Tensor) -> dict[str, Any]:
    """A copy of the LATENT dict with new samples (its other keys ride along, as ComfyUI's copy does)."""
    return {**latent, "samples": samples}


# ---------------------------------------------------------------- the operations


def _vector_norm(latent: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The per-pixel norm over channels plus `epsilon`, [batch, 1, height, width]."""
    return (torch.linalg.vector_norm(latent, dim=1) + epsilon)[:, None]


@dataclass(frozen=True)
class SharpenOperation:
    """ComfyUI's latent sharpen: the latent normalized by its per-pixel norm is convolved with an unsharp kernel
    (the Gaussian times -10 alpha, its centre raised so the kernel sums to 1) over mirrored borders, then scaled
    back by the norm."""

    radius: int
    sigma: float
    alpha: float

    def kernel(self) -> torch.Tensor:
        kernel = gaussian_kernel(2 * self.radius + 1, self.sigma) * (self.alpha * -10)
        kernel[self.radius, self.radius] = kernel[self.radius, self.radius] - kernel.sum() + 1.0
        return kernel

    def __call__(self, latent: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if self.radius >= latent.shape[-1] or self.radius >= latent.shape[-2]:
            raise ValueError(f"sharpen_radius: {self.radius} must be smaller than the latent "
                             f"({latent.shape[-1]}x{latent.shape[-2]})")
        luminance = _vector_norm(latent, EPSILON_SHARPEN)
        normalized = latent / luminance
        channels = latent.shape[1]
        weights = self.kernel().to(latent).expand(channels, 1, 2 * self.radius + 1, 2 * self.radius + 1)
        padded = F.pad(normalized, (self.radius,) * 4, mode="reflect")
        return luminance * F.conv2d(padded, weights, groups=channels)


@dataclass(frozen=True)
class TonemapReinhardOperation:
    """ComfyUI's latent Reinhard tonemap: per-pixel vector norms m are compressed to m / (m / top + 1), top being
    (mean + 5 std of the norms per latent) * multiplier, keeping each vector's direction."""

    multiplier: float

    def __call__(self, latent: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        magnitude = _vector_norm(latent, EPSILON_TONEMAP)
        normalized = latent / magnitude
        mean = torch.mean(magnitude, dim=(1, 2, 3), keepdim=True)
        std = torch.std(magnitude, dim=(1, 2, 3), keepdim=True)
        top = (std * 5 + mean) * self.multiplier
        relative = magnitude * (1.0 / top)
        return normalized * (relative / (relative + 1.0) * top)


@dataclass(frozen=True)
class OperationOnGuidance:
    """A pre-CFG patch (`DiffusionModel.pre_cfg`): the positive estimate becomes operation(positive - negative)
    + negative, the negative stays (ComfyUI's LatentApplyOperationCFG). At cfg 1 the skipped negative is zeros, as
    in ComfyUI."""

    operation: LatentOperation

    def __call__(self, args: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        cond, uncond = args["cond_denoised"], args["uncond_denoised"]
        return self.operation(latent=cond - uncond) + uncond, uncond


# ---------------------------------------------------------------- the nodes


class LatentConcat:
    DESCRIPTION = ("Joins two latents side by side (x), one above the other (y) or along the third axis from the "
                   "end (t: time in video latents; the channels of image latents, as in ComfyUI); a leading - puts "
                   "samples2 first. samples2's batch is cycled to samples1's; samples1's mask and batch index ride "
                   "along.")
    CATEGORY = ADVANCED
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The joined latent.",)
    FUNCTION = "concat"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples1": _latent_input("The first latent (its batch size and other keys are kept)."),
            "samples2": _latent_input("The latent joined to it; all its sizes but the joined one must match."),
            "dim": (CONCAT_DIMS, {"tooltip": "The axis to join along: x (width), y (height) or t; -x, -y, -t put "
                                             "samples2 first."}),
        }}

    def concat(self, samples1: dict, samples2: dict, dim: str) -> tuple[dict]:
        first = samples_of(samples1, "samples1")
        second = cycle_to_batch(samples_of(samples2, "samples2"), first.shape[0]).to(first)
        axis = -AXIS_FROM_END[dim.lstrip("-")]
        sizes = [size for index, size in enumerate(first.shape) if index != first.ndim + axis]
        other_sizes = [size for index, size in enumerate(second.shape) if index != second.ndim + axis]
        if sizes != other_sizes:
            raise ValueError(f"samples2: a latent of shape {tuple(second.shape)} cannot be joined to one of shape "
                             f"{tuple(first.shape)} along {dim.lstrip('-')}")
        parts = (second, first) if dim.startswith("-") else (first, second)
        return (_with_samples(samples1, torch.cat(parts, dim=axis)),)


class LatentCut:
    DESCRIPTION = ("Cuts `amount` rows, columns or steps of the third axis from the end (t: time in video latents, "
                   "the channels of image latents, as in ComfyUI) out of a latent, starting at `index` (negative: "
                   "counted from the end); both are clamped to the latent's size. Other keys ride along.")
    CATEGORY = ADVANCED
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The cut-out part.",)
    FUNCTION = "cut"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples": _latent_input("The latent to cut from."),
            "dim": (CUT_DIMS, {"tooltip": "The axis to cut along: x (width), y (height) or t."}),
            "index": ("INT", {"default": 0, "min": -MAX_RESOLUTION, "max": MAX_RESOLUTION, "step": 1,
                              "tooltip": "Where the cut starts, in latent units (negative: from the end)."}),
            "amount": ("INT", {"default": 1, "min": 1, "max": MAX_RESOLUTION, "step": 1,
                               "tooltip": "How many latent units to keep (fewer where the latent ends)."}),
        }}

    def cut(self, samples: dict, dim: str, index: int, amount: int) -> tuple[dict]:
        tensor = samples_of(samples, "samples")
        axis = tensor.ndim - AXIS_FROM_END[dim]
        size = tensor.shape[axis]
        if index >= 0:
            index = min(index, size - 1)
            amount = min(size - index, amount)
        else:
            index = max(index, -size)
            amount = min(-index, amount)
        return (_with_samples(samples, torch.narrow(tensor, axis, index, amount)),)


class LatentApplyOperation:
    DESCRIPTION = "Applies a latent operation (sharpen, tonemap, ...) to a latent."
    CATEGORY = OPERATIONS
    EXPERIMENTAL = True
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The latent after the operation.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": _latent_input("The latent to change."), "operation": _operation_input()}}

    def apply(self, samples: dict, operation: LatentOperation) -> tuple[dict]:
        return (_with_samples(samples, operation(latent=samples_of(samples, "samples"))),)


class LatentApplyOperationCFG:
    DESCRIPTION = ("Applies a latent operation to the guidance of every sampling step: before classifier-free "
                   "guidance the positive prediction becomes operation(positive - negative) + negative (for the "
                   "sigma-based samplers).")
    CATEGORY = OPERATIONS
    EXPERIMENTAL = True
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with the operation in its guidance.",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL", {"tooltip": "The model to patch."}), "operation": _operation_input()}}

    def patch(self, model: DiffusionModel, operation: LatentOperation) -> tuple[DiffusionModel]:
        return (dataclasses.replace(model, pre_cfg=model.pre_cfg + (OperationOnGuidance(operation),)),)


class LatentOperationTonemapReinhard:
    DESCRIPTION = ("A latent operation compressing strong latent vectors (Reinhard tonemapping of the per-pixel "
                   "norms against mean + 5 std of the norms, times the multiplier); for LatentApplyOperation(CFG).")
    CATEGORY = OPERATIONS
    EXPERIMENTAL = True
    RETURN_TYPES = ("LATENT_OPERATION",)
    OUTPUT_TOOLTIPS = ("The tonemap operation.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "multiplier": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.01,
                                     "tooltip": "Scales the norm the compression saturates at (higher: milder)."}),
        }}

    def make(self, multiplier: float) -> tuple[LatentOperation]:
        return (TonemapReinhardOperation(multiplier),)


class LatentOperationSharpen:
    DESCRIPTION = ("A latent operation sharpening the direction of the latent vectors with an unsharp Gaussian "
                   "kernel, keeping their norms; for LatentApplyOperation(CFG).")
    CATEGORY = OPERATIONS
    EXPERIMENTAL = True
    RETURN_TYPES = ("LATENT_OPERATION",)
    OUTPUT_TOOLTIPS = ("The sharpen operation.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "sharpen_radius": ("INT", {"default": 9, "min": 1, "max": 31, "step": 1,
                                       "tooltip": "Kernel radius in latent pixels (must be below the latent's "
                                                  "width and height)."}),
            "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1,
                                "tooltip": "Spread of the Gaussian, relative to the kernel (1 = its half-width)."}),
            "alpha": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 5.0, "step": 0.01,
                                "tooltip": "Strength of the sharpening (0: none)."}),
        }}

    def make(self, sharpen_radius: int, sigma: float, alpha: float) -> tuple[LatentOperation]:
        return (SharpenOperation(sharpen_radius, sigma, alpha),)


NODE_CLASS_MAPPINGS: dict[str, type] = {node.__name__: node for node in (
    LatentConcat, LatentCut, LatentApplyOperation, LatentApplyOperationCFG, LatentOperationTonemapReinhard,
    LatentOperationSharpen,
)}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {name: name for name in NODE_CLASS_MAPPINGS}
