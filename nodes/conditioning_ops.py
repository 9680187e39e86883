"""Conditioning arithmetic and regional prompting: ComfyUI's ConditioningCombine, Average, Concat, ZeroOut and the
nodes that say where and when an entry applies (SetArea, SetAreaPercentage, SetAreaStrength, SetMask,
SetTimestepRange), ReferenceLatent (an edit model's reference images) and CLIPTextEncodeControlnet (a separate
text for the ControlNets), with ComfyUI's names, inputs and outputs.

A CONDITIONING is a list of [embeddings, options] entries; these nodes return new lists with new option dicts and
never change their inputs. Areas, masks, strengths and timestep ranges are options that the sampler honours
(`diffusion.sampling.regions`, through ComfyUI's samplers and schedulers; the `diffusers` scheduler refuses them).
Knows nothing of HTTP or the executor.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import torch

from diffusion.contracts import Conditioning, TextEncoder
from diffusion.controlnet import CONTROL_TEXT
from diffusion.sampling.reference_latents import REFERENCES
from nodes.environment import release_text_encoders
from nodes.latent import MAX_RESOLUTION

LATENT_SCALE = 8  # pixels per latent pixel: areas are stored in latent units, as ComfyUI stores them
COND_IN = ("CONDITIONING", {"tooltip": "The conditioning to change (every entry of it)."})
CONDITIONING_OUT = ("The conditioning with the change applied to every entry.",)
STRENGTH = {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}
# options that hold a tensor per entry of the same meaning as the embeddings: zeroed along with them
ZEROED_OPTIONS = ("pooled_output", "conditioning_lyrics")

log = logging.getLogger(__name__)


def with_options(conditioning: Conditioning, values: Mapping[str, Any]) -> Conditioning:
    """Every entry of `conditioning` with `values` set in a copy of its options (ComfyUI's
    node_helpers.conditioning_set_values)."""
    return [[entry[0], {**(entry[1] if len(entry) > 1 else {}), **values}] for entry in conditioning]


def _first_of(conditioning: Conditioning, node: str, input_name: str) -> list[Any]:
    if not conditioning:
        raise ValueError(f"{input_name}: empty conditioning")
    if len(conditioning) > 1:
        log.warning("%s: %s has %d entries; only the first is applied", node, input_name, len(conditioning))
    return conditioning[0]


class ConditioningCombine:
    DESCRIPTION = ("Puts the entries of two conditionings side by side: the sampler runs each and blends their "
                   "estimates (weighted by strength, per pixel where they have areas or masks).")
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The entries of conditioning_1, then those of conditioning_2.",)
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "conditioning_1": ("CONDITIONING", {"tooltip": "The first conditioning."}),
            "conditioning_2": ("CONDITIONING", {"tooltip": "The second conditioning."}),
        }}

    def combine(self, conditioning_1: Conditioning, conditioning_2: Conditioning) -> tuple[Conditioning]:
        return (list(conditioning_1) + list(conditioning_2),)


class ConditioningAverage:
    DESCRIPTION = ("Interpolates the embeddings (and pooled outputs) of every entry of conditioning_to with the first "
                   "entry of conditioning_from: strength * to + (1 - strength) * from. A shorter 'from' is padded "
                   "with zeros, a longer one cut to the length of 'to'.")
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("conditioning_to moved towards conditioning_from.",)
    FUNCTION = "addWeighted"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "conditioning_to": ("CONDITIONING", {"tooltip": "The conditioning to move; its options are kept."}),
            "conditioning_from": ("CONDITIONING", {"tooltip": "The conditioning to move towards (its first entry)."}),
            "conditioning_to_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                                   "tooltip": "1 keeps conditioning_to, 0 gives conditioning_from."}),
        }}

    def addWeighted(self, conditioning_to: Conditioning, conditioning_from: Conditioning,
                    conditioning_to_strength: float) -> tuple[Conditioning]:
        source = _first_of(conditioning_from, "ConditioningAverage", "conditioning_from")
        embeddings_from = source[0]
        pooled_from = source[1].get("pooled_output") if len(source) > 1 else None
        weight = conditioning_to_strength
        out = []
        for entry in conditioning_to:
            embeddings_to, options = entry[0], dict(entry[1])
            tokens = embeddings_to.shape[1]
            other = embeddings_from[:, :tokens]
            if other.shape[1] < tokens:
                padding = torch.zeros(other.shape[0], tokens - other.shape[1], other.shape[2], dtype=other.dtype,
                                      device=other.device)
                other = torch.cat([other, padding], dim=1)
            pooled_to = options.get("pooled_output", pooled_from)
            if pooled_from is not None and pooled_to is not None:
                options["pooled_output"] = pooled_to * weight + pooled_from * (1.0 - weight)
            elif pooled_from is not None:
                options["pooled_output"] = pooled_from
            out.append([embeddings_to * weight + other * (1.0 - weight), options])
        return (out,)


class ConditioningConcat:
    DESCRIPTION = ("Appends the tokens of conditioning_from's first entry to every entry of conditioning_to: one "
                   "longer prompt whose parts keep their own attention (unlike Average).")
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("conditioning_to with conditioning_from's tokens appended; conditioning_to's options.",)
    FUNCTION = "concat"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "conditioning_to": ("CONDITIONING", {"tooltip": "The conditioning to extend; its options are kept."}),
            "conditioning_from": ("CONDITIONING", {"tooltip": "The conditioning whose tokens to append (its first "
                                                              "entry)."}),
        }}

    def concat(self, conditioning_to: Conditioning, conditioning_from: Conditioning) -> tuple[Conditioning]:
        embeddings_from = _first_of(conditioning_from, "ConditioningConcat", "conditioning_from")[0]
        out = []
        for entry in conditioning_to:
            if entry[0].shape[-1] != embeddings_from.shape[-1]:
                raise ValueError(f"conditioning_from: its embeddings are {embeddings_from.shape[-1]} wide, "
                                 f"conditioning_to's {entry[0].shape[-1]}; encode both with the same text encoder")
            out.append([torch.cat([entry[0], embeddings_from.to(entry[0])], dim=1), dict(entry[1])])
        return (out,)


def _area_input(default: int, minimum: int, tooltip: str) -> tuple[str, dict[str, Any]]:
    return ("INT", {"default": default, "min": minimum, "max": MAX_RESOLUTION, "step": 8, "tooltip": tooltip})


def _fraction_input(default: float, tooltip: str) -> tuple[str, dict[str, Any]]:
    return ("FLOAT", {"default": default, "min": 0, "max": 1.0, "step": 0.01, "tooltip": tooltip})


class ConditioningSetArea:
    DESCRIPTION = ("Limits the conditioning to a rectangle of the image, in pixels (multiples of 8): the sampler runs "
                   "it on that part of the latents and blends it in, fading over 64 pixels at inner edges. Combine "
                   "it with a prompt for the whole image (ConditioningCombine).")
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = CONDITIONING_OUT
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "conditioning": COND_IN,
            "width": _area_input(64, 64, "The rectangle's width in pixels."),
            "height": _area_input(64, 64, "The rectangle's height in pixels."),
            "x": _area_input(0, 0, "The rectangle's left edge in pixels."),
            "y": _area_input(0, 0, "The rectangle's top edge in pixels."),
            "strength": ("FLOAT", {**STRENGTH, "tooltip": "Its weight where it overlaps other entries."}),
        }}

    def append(self, conditioning: Conditioning, width: int, height: int, x: int, y: int,
               strength: float) -> tuple[Conditioning]:
        area = (height // LATENT_SCALE, width // LATENT_SCALE, y // LATENT_SCALE, x // LATENT_SCALE)
        return (with_options(conditioning, {"area": area, "strength": strength, "set_area_to_bounds": False}),)


class ConditioningSetAreaPercentage:
    DESCRIPTION = ("Limits the conditioning to a rectangle given as fractions of the image's size (resolved to "
                   "latent pixels when sampling), as ConditioningSetArea does in pixels.")
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = CONDITIONING_OUT
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "conditioning": COND_IN,
            "width": _fraction_input(1.0, "The rectangle's width as a fraction of the image's."),
            "height": _fraction_input(1.0, "The rectangle's height as a fraction of the image's."),
            "x": _fraction_input(0, "The rectangle's left edge as a fraction of the image's width."),
            "y": _fraction_input(0, "The rectangle's top edge as a fraction of the image's height."),
            "strength": ("FLOAT", {**STRENGTH, "tooltip": "Its weight where it overlaps other entries."}),
        }}

    def append(self, conditioning: Conditioning, width: float, height: float, x: float, y: float,
               strength: float) -> tuple[Conditioning]:
        area = ("percentage", height, width, y, x)
        return (with_options(conditioning, {"area": area, "strength": strength, "set_area_to_bounds": False}),)


class ConditioningSetAreaStrength:
    DESCRIPTION = "Sets the weight of the conditioning's entries where they are blended with other entries."
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = CONDITIONING_OUT
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "conditioning": COND_IN,
            "strength": ("FLOAT", {**STRENGTH, "tooltip": "The weight (1: equal to an entry without one)."}),
        }}

    def append(self, conditioning: Conditioning, strength: float) -> tuple[Conditioning]:
        return (with_options(conditioning, {"strength": strength}),)


class ConditioningSetMask:
    DESCRIPTION = ("Limits the conditioning to a mask (resized to the latents when sampling): its estimate is "
                   "weighted by mask * strength per pixel. 'mask bounds' also runs it on the mask's bounding box only "
                   "(faster, and the prompt is drawn at that size).")
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = CONDITIONING_OUT
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "conditioning": COND_IN,
            "mask": ("MASK", {"tooltip": "Where the conditioning applies (1: fully)."}),
            "strength": ("FLOAT", {**STRENGTH, "tooltip": "Multiplies the mask."}),
            "set_cond_area": (["default", "mask bounds"], {
                "tooltip": "default: run on the whole image; mask bounds: on the mask's bounding box."}),
        }}

    def append(self, conditioning: Conditioning, mask: torch.Tensor, strength: float,
               set_cond_area: str) -> tuple[Conditioning]:
        if mask.ndim not in (2, 3):
            raise ValueError(f"mask: expected [height, width] or [batch, height, width], got shape "
                             f"{list(mask.shape)}")
        mask = mask.unsqueeze(0) if mask.ndim == 2 else mask
        return (with_options(conditioning, {"mask": mask, "set_area_to_bounds": set_cond_area != "default",
                                            "mask_strength": strength}),)


class ConditioningZeroOut:
    DESCRIPTION = ("Zeroes the embeddings and pooled outputs of every entry, keeping their shapes and other options: "
                   "the 'empty' negative some models (SD3, FLUX) are sampled with.")
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The conditioning with zeros for embeddings.",)
    FUNCTION = "zero_out"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning": ("CONDITIONING", {"tooltip": "The conditioning to zero."})}}

    def zero_out(self, conditioning: Conditioning) -> tuple[Conditioning]:
        out = []
        for entry in conditioning:
            options = dict(entry[1])
            for key in ZEROED_OPTIONS:
                if options.get(key) is not None:
                    options[key] = torch.zeros_like(options[key])
            out.append([torch.zeros_like(entry[0]), options])
        return (out,)


class ReferenceLatent:
    DESCRIPTION = ("Sets the guiding latent for an edit model (FLUX.1 Kontext): the model sees that image beside the "
                   "one it is making. Chain several for several reference images.")
    CATEGORY = "advanced/conditioning/edit_models"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The conditioning with the latent added to its reference latents.",)
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning": ("CONDITIONING", {"tooltip": "The encoded prompt."})},
                "optional": {"latent": ("LATENT", {"tooltip": "The encoded reference image; none leaves the "
                                                              "conditioning as it is."})}}

    def append(self, conditioning: Conditioning, latent: dict[str, Any] | None = None) -> tuple[Conditioning]:
        if latent is None:
            return (conditioning,)
        return ([[entry[0], {**entry[1], REFERENCES: [*(entry[1].get(REFERENCES) or []), latent["samples"]]}]
                 for entry in conditioning],)


class ConditioningSetTimestepRange:
    DESCRIPTION = ("Applies the conditioning only between two points of sampling: 0 is the first step, 1 the end "
                   "(as a fraction of the model's noise levels); outside it the sampler skips the entry.")
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = CONDITIONING_OUT
    FUNCTION = "set_range"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "conditioning": COND_IN,
            "start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                "tooltip": "Where it starts applying (0: from the first step)."}),
            "end": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001,
                              "tooltip": "Where it stops applying (1: to the last step)."}),
        }}

    def set_range(self, conditioning: Conditioning, start: float, end: float) -> tuple[Conditioning]:
        return (with_options(conditioning, {"start_percent": start, "end_percent": end}),)


class CLIPTextEncodeControlnet:
    DESCRIPTION = ("Gives the ControlNets of every entry their own text: the entries keep their prompt for the model, "
                   "while a ControlNet applied to them reads this text's embeddings instead (ComfyUI's experimental "
                   "node; the text's pooled output is stored beside it).")
    CATEGORY = "_for_testing/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The conditioning whose ControlNets read the text.",)
    FUNCTION = "encode"
    EXPERIMENTAL = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "clip": ("CLIP", {"tooltip": "The text encoder the conditioning was made with."}),
            "conditioning": COND_IN,
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True,
                                "tooltip": "The text the ControlNets read."}),
        }}

    def encode(self, clip: TextEncoder, conditioning: Conditioning, text: str) -> tuple[Conditioning]:
        encoded = _first_of(clip.encode_prompt(text), "CLIPTextEncodeControlnet", "clip")
        release_text_encoders(clip)
        pooled = encoded[1].get("pooled_output") if len(encoded) > 1 else None
        return (with_options(conditioning, {CONTROL_TEXT: encoded[0], "pooled_output_controlnet": pooled}),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "ConditioningCombine": ConditioningCombine,
    "ConditioningAverage": ConditioningAverage,
    "ConditioningConcat": ConditioningConcat,
    "ConditioningSetArea": ConditioningSetArea,
    "ConditioningSetAreaPercentage": ConditioningSetAreaPercentage,
    "ConditioningSetAreaStrength": ConditioningSetAreaStrength,
    "ConditioningSetMask": ConditioningSetMask,
    "ConditioningZeroOut": ConditioningZeroOut,
    "ConditioningSetTimestepRange": ConditioningSetTimestepRange,
    "CLIPTextEncodeControlnet": CLIPTextEncodeControlnet,
    "ReferenceLatent": ReferenceLatent,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "ConditioningCombine": "Conditioning (Combine)",
    "ConditioningAverage": "Conditioning (Average)",
    "ConditioningConcat": "Conditioning (Concat)",
    "ConditioningSetArea": "Conditioning (Set Area)",
    "ConditioningSetAreaPercentage": "Conditioning (Set Area with Percentage)",
    "ConditioningSetAreaStrength": "ConditioningSetAreaStrength",
    "ConditioningSetMask": "Conditioning (Set Mask)",
    "ConditioningZeroOut": "ConditioningZeroOut",
    "ConditioningSetTimestepRange": "ConditioningSetTimestepRange",
    "CLIPTextEncodeControlnet": "CLIPTextEncodeControlnet",
    "ReferenceLatent": "ReferenceLatent",
}
