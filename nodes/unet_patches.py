"""UNet patch nodes with ComfyUI's names and inputs: FreeU, FreeU_V2, PatchModelAddDownscale (Kohya deep shrink),
HyperTile, TomePatchModel (token merging), Epsilon Scaling and DifferentialDiffusion.

Each returns a new MODEL (`dataclasses.replace`) recording the patch; the loaded network is never changed. The
patches take effect while the sigma-based samplers run (`diffusion.sampling.unet_patches`, applied by
`diffusion.sampling.custom`): block and self-attention patches for UNet models (SD1.x, SD2.x, SDXL), the mask
function for sampling with a noise mask, and Epsilon Scaling as a post-CFG patch of the guided estimate. Knows
nothing of HTTP or the executor.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from diffusion import registry
from diffusion.components import DiffusionModel
from diffusion.sampling import unet_patches

UNET_PATCHES = "model_patches/unet"
PATCHED_MODEL = ("The model with the patch, applied while it is sampled.",)


def _model_input() -> tuple[str, dict]:
    return ("MODEL", {"tooltip": "The model to patch."})


def _unet_family(input_facts: Mapping[str, Mapping[str, Any]], node: str) -> bool | str:
    """True, or why the linked model (its family known at validation) has no UNet to patch."""
    name = input_facts.get("model", {}).get("family")
    if name is None:
        return True
    try:
        family = registry.family(name)
    except ValueError:  # a family some plugin states about its own models
        return True
    if getattr(family.sampling, "lora_component", "unet") == "unet":
        return True
    return f"model: {node} works on UNet models (SD1.x, SD2.x, SDXL); this one is a {family.title} model"


class _UNetPatchNode:
    """What the UNet patch nodes share: refusing, at validation, a model known to have no UNet."""

    @classmethod
    def VALIDATE_INPUTS(cls, input_facts: Mapping[str, Mapping[str, Any]], **widgets: Any) -> bool | str:
        return _unet_family(input_facts, cls.NODE_NAME)


def _with_unet_patch(model: DiffusionModel, patch: Any, node: str) -> DiffusionModel:
    problem = unet_patches.unsupported(model.network, (patch,))
    if problem is not None:
        raise ValueError(f"model: {node}: {problem}")
    return dataclasses.replace(model, unet_patches=model.unet_patches + (patch,))


def _base_channels(model: DiffusionModel, node: str) -> int:
    channels = getattr(getattr(model.network, "config", None), "block_out_channels", None)
    if not channels:
        raise ValueError(f"model: {node} works on UNet models (SD1.x, SD2.x, SDXL); this model's network is a "
                         f"{type(model.network).__name__}")
    return int(channels[0])


def _freeu_inputs(b1: float, b2: float) -> dict[str, Any]:
    def factor(default: float, tooltip: str) -> tuple[str, dict]:
        return ("FLOAT", {"default": default, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip": tooltip})

    return {"required": {
        "model": _model_input(),
        "b1": factor(b1, "Backbone factor of the deepest output blocks (4x the base channels): above 1 "
                         "strengthens the backbone's features (denoising)."),
        "b2": factor(b2, "Backbone factor of the next output blocks (2x the base channels)."),
        "s1": factor(0.9, "Skip factor of the deepest output blocks: the low frequencies of the skip "
                          "connection are scaled by it (below 1 weakens the skip's fine details' pull)."),
        "s2": factor(0.2, "Skip factor of the next output blocks."),
    }}


class FreeU(_UNetPatchNode):
    NODE_NAME = "FreeU"
    DESCRIPTION = ("FreeU (version 1): during sampling, scales half of the UNet decoder's backbone channels by b1/b2 "
                   "and the low frequencies of its skip connections by s1/s2, for more detail without training.")
    CATEGORY = UNET_PATCHES
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = PATCHED_MODEL
    FUNCTION = "patch"
    VERSION = 1

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return _freeu_inputs(1.1, 1.2)

    def patch(self, model: DiffusionModel, b1: float, b2: float, s1: float, s2: float) -> tuple[DiffusionModel]:
        patch = unet_patches.FreeU(_base_channels(model, self.NODE_NAME), b1, b2, s1, s2, self.VERSION)
        return (_with_unet_patch(model, patch, self.NODE_NAME),)


class FreeU_V2(FreeU):
    NODE_NAME = "FreeU_V2"
    DESCRIPTION = ("FreeU version 2: as FreeU, but each backbone position is scaled in proportion to its mean "
                   "activation (1 where it is weakest, b1/b2 where it is strongest).")
    VERSION = 2

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return _freeu_inputs(1.3, 1.4)


class PatchModelAddDownscale(_UNetPatchNode):
    NODE_NAME = "PatchModelAddDownscale"
    DESCRIPTION = ("Kohya's deep shrink: for the first steps (start_percent to end_percent of the schedule) the UNet "
                   "works on a downscaled hidden state after an input block and scales it back up at the matching "
                   "output block, which keeps the composition coherent at sizes above the model's training size.")
    CATEGORY = UNET_PATCHES
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = PATCHED_MODEL
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        def percent(default: float, tooltip: str) -> tuple[str, dict]:
            return ("FLOAT", {"default": default, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip": tooltip})

        methods = list(unet_patches.RESIZE_METHODS)
        return {"required": {
            "model": _model_input(),
            "block_number": ("INT", {"default": 3, "min": 1, "max": 32, "step": 1,
                                     "tooltip": "The input block after which to downscale, counted as ComfyUI "
                                                "counts them (0 is the input convolution; 3 is SD's first "
                                                "downsampler)."}),
            "downscale_factor": ("FLOAT", {"default": 2.0, "min": 0.1, "max": 9.0, "step": 0.001,
                                           "tooltip": "How much smaller the hidden state gets (per side)."}),
            "start_percent": percent(0.0, "Where in the schedule the downscaling starts."),
            "end_percent": percent(0.35, "Where in the schedule the downscaling ends."),
            "downscale_after_skip": ("BOOLEAN", {"default": True,
                                                 "tooltip": "Downscale only what goes on to the next block, "
                                                            "keeping the block's skip connection at full size."}),
            "downscale_method": (methods, {"tooltip": "The interpolation that shrinks the hidden state."}),
            "upscale_method": (methods, {"tooltip": "The interpolation that scales it back up."}),
        }}

    def patch(self, model: DiffusionModel, block_number: int, downscale_factor: float, start_percent: float,
              end_percent: float, downscale_after_skip: bool, downscale_method: str,
              upscale_method: str) -> tuple[DiffusionModel]:
        model_sampling = model.model_sampling
        patch = unet_patches.DeepShrink(block_number, downscale_factor, model_sampling.percent_to_sigma(start_percent),
                                        model_sampling.percent_to_sigma(end_percent), downscale_after_skip,
                                        downscale_method, upscale_method)
        return (_with_unet_patch(model, patch, "PatchModelAddDownscale"),)


class HyperTile(_UNetPatchNode):
    NODE_NAME = "HyperTile"
    DESCRIPTION = ("HyperTile: splits the self-attention of the UNet's first levels into tiles, which speeds up "
                   "large images (the tiles' sizes are drawn at random from the seed).")
    CATEGORY = UNET_PATCHES
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = PATCHED_MODEL
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input(),
            "tile_size": ("INT", {"default": 256, "min": 1, "max": 2048, "step": 1,
                                  "tooltip": "The smallest tile side, in pixels (at least 32)."}),
            "swap_size": ("INT", {"default": 2, "min": 1, "max": 128, "step": 1,
                                  "tooltip": "Among how many of the largest tile counts to draw."}),
            "max_depth": ("INT", {"default": 0, "min": 0, "max": 10, "step": 1,
                                  "tooltip": "How many levels below the full resolution are tiled too."}),
            "scale_depth": ("BOOLEAN", {"default": False,
                                        "tooltip": "Double the smallest tile side at each deeper level."}),
        }}

    def patch(self, model: DiffusionModel, tile_size: int, swap_size: int, max_depth: int,
              scale_depth: bool) -> tuple[DiffusionModel]:
        patch = unet_patches.HyperTile(tile_size, swap_size, max_depth, scale_depth)
        return (_with_unet_patch(model, patch, "HyperTile"),)


class TomePatchModel(_UNetPatchNode):
    NODE_NAME = "TomePatchModel"
    DESCRIPTION = ("Token merging (ToMe for SD): merges the most similar tokens of the full-resolution "
                   "self-attention before attending and splits them after, which speeds up large images.")
    CATEGORY = UNET_PATCHES
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = PATCHED_MODEL
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input(),
            "ratio": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01,
                                "tooltip": "The share of tokens merged away (0: none)."}),
        }}

    def patch(self, model: DiffusionModel, ratio: float) -> tuple[DiffusionModel]:
        return (_with_unet_patch(model, unet_patches.TokenMerging(ratio), "TomePatchModel"),)


@dataclass(frozen=True)
class ScaledEpsilon:
    """Post-CFG: the guided noise prediction (input - denoised) divided by `factor` (Ning et al. 2023, "Elucidating
    the Exposure Bias in Diffusion Models", uniform schedule)."""

    factor: float

    def __call__(self, args: Mapping[str, Any]) -> torch.Tensor:
        x = args["input"]
        return x - (x - args["denoised"]) / self.factor


class EpsilonScaling:
    DESCRIPTION = ("Epsilon Scaling: divides the guided noise prediction by a factor at every step, which counters "
                   "the exposure bias of diffusion sampling (slightly above 1 is typical).")
    CATEGORY = UNET_PATCHES
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = PATCHED_MODEL
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input(),
            "scaling_factor": ("FLOAT", {"default": 1.005, "min": 0.5, "max": 1.5, "step": 0.001, "display": "number",
                                         "tooltip": "What the predicted noise is divided by (1: unchanged)."}),
        }}

    def patch(self, model: DiffusionModel, scaling_factor: float) -> tuple[DiffusionModel]:
        return (dataclasses.replace(model, post_cfg=model.post_cfg + (ScaledEpsilon(scaling_factor),)),)


class DifferentialDiffusion:
    DESCRIPTION = ("Differential Diffusion: with a LATENT noise mask, each area is changed for as many steps as its "
                   "mask value asks (a soft mask becomes a per-step threshold), for smooth inpainting edges.")
    CATEGORY = "_for_testing"
    EXPERIMENTAL = True
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = PATCHED_MODEL
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": _model_input()}, "optional": {
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                   "tooltip": "How much of the thresholded mask to use, the rest the mask as it "
                                              "is (1: thresholded only)."}),
        }}

    def apply(self, model: DiffusionModel, strength: float = 1.0) -> tuple[DiffusionModel]:
        return (dataclasses.replace(model, denoise_mask_function=unet_patches.DifferentialMask(strength)),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "FreeU": FreeU,
    "FreeU_V2": FreeU_V2,
    "PatchModelAddDownscale": PatchModelAddDownscale,
    "HyperTile": HyperTile,
    "TomePatchModel": TomePatchModel,
    "Epsilon Scaling": EpsilonScaling,
    "DifferentialDiffusion": DifferentialDiffusion,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "FreeU": "FreeU",
    "FreeU_V2": "FreeU_V2",
    "PatchModelAddDownscale": "PatchModelAddDownscale (Kohya Deep Shrink)",
    "HyperTile": "HyperTile",
    "TomePatchModel": "TomePatchModel",
    "Epsilon Scaling": "Epsilon Scaling",
    "DifferentialDiffusion": "Differential Diffusion",
}
