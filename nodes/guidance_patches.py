"""Guidance patch nodes, with ComfyUI's names and inputs: CFGNorm, APG, PerturbedAttentionGuidance,
SelfAttentionGuidance, SkipLayerGuidanceSD3 and SkipLayerGuidanceDiT. Each returns a new MODEL with one patch
of `diffusion.sampling.guidance_patches` added to its pre- or post-CFG patches (`DiffusionModel.pre_cfg`,
`post_cfg`), which the sigma-based samplers (KSampler's and the custom-sampling nodes') apply; the loaded model is
never changed. A patch a model's family cannot take (PAG on FLUX, skipped layers on a UNet, a layer the model
does not have) is refused here, naming the input, rather than left to do nothing. Knows nothing of HTTP or the
executor.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

from diffusion.components import DiffusionModel
from diffusion.sampling import guidance_patches as patches
from diffusion.sampling import network_changes

GUIDANCE = "advanced/guidance"


def _model_input(tooltip: str = "The model to patch.") -> tuple[str, dict]:
    return ("MODEL", {"tooltip": tooltip})


def _float(default: float, low: float, high: float, step: float, tooltip: str, **extra: Any) -> tuple[str, dict]:
    return ("FLOAT", {"default": default, "min": low, "max": high, "step": step, **extra, "tooltip": tooltip})


def _with_post_cfg(model: DiffusionModel, patch: Any) -> DiffusionModel:
    return dataclasses.replace(model, post_cfg=model.post_cfg + (patch,))


def _require_middle_attention(model: DiffusionModel, node: str) -> None:
    if network_changes.middle_self_attentions(model.network) is None:
        raise ValueError(f"model: {node} works on the self-attention of a UNet's middle block (SD1.x, SD2.x, "
                         f"SDXL); this {model.sampling.family_title} model ({model.name}) has none")


class CFGNorm:
    DESCRIPTION = ("Scales the guided prediction down, pixel by pixel, so that its norm over channels does not "
                   "exceed the positive prediction's, then by strength.")
    CATEGORY = GUIDANCE
    EXPERIMENTAL = True
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("patched_model",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input(),
            "strength": _float(1.0, 0.0, 100.0, 0.01, "A factor on the normalized prediction (1: none)."),
        }}

    def patch(self, model: DiffusionModel, strength: float) -> tuple[DiffusionModel]:
        return (_with_post_cfg(model, patches.CfgNorm(strength)),)


class APG:
    DESCRIPTION = ("Adaptive Projected Guidance: classifier-free guidance with the guidance direction capped in "
                   "norm, optionally averaged over steps, and its part parallel to the positive prediction "
                   "weighted down, which allows high cfg without oversaturation.")
    CATEGORY = "sampling/custom_sampling"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input(),
            "eta": _float(1.0, -10.0, 10.0, 0.01, "The weight of the guidance part parallel to the positive "
                                                  "prediction (1: plain CFG's)."),
            "norm_threshold": _float(5.0, 0.0, 50.0, 0.1, "The largest norm of the guidance direction; longer "
                                                          "ones are scaled down to it (0: no limit)."),
            "momentum": _float(0.0, -5.0, 1.0, 0.01, "How much of the previous steps' guidance each step keeps "
                                                     "in a running sum (0: none)."),
        }}

    def patch(self, model: DiffusionModel, eta: float, norm_threshold: float,
              momentum: float) -> tuple[DiffusionModel]:
        apg = patches.AdaptiveProjectedGuidance(eta, norm_threshold, momentum)
        return (dataclasses.replace(model, pre_cfg=model.pre_cfg + (apg,)),)


class PerturbedAttentionGuidance:
    DESCRIPTION = ("Perturbed-Attention Guidance: predicts again with the self-attention of the UNet's middle "
                   "block replaced by the identity and guides away from that prediction, which sharpens structure "
                   "(one more model call per step; UNet models).")
    CATEGORY = "model_patches/unet"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input("The model to patch: SD1.x, SD2.x or SDXL."),
            "scale": _float(3.0, 0.0, 100.0, 0.01, "How strongly to guide away from the perturbed prediction "
                                                   "(0: off).", round=0.01),
        }}

    def patch(self, model: DiffusionModel, scale: float) -> tuple[DiffusionModel]:
        _require_middle_attention(model, "PerturbedAttentionGuidance")
        return (_with_post_cfg(model, patches.PerturbedAttentionGuidance(scale)),)


class SelfAttentionGuidance:
    DESCRIPTION = ("Self-Attention Guidance: blurs the negative prediction where the UNet's middle-block "
                   "self-attention concentrates, predicts from it again and guides away from that prediction "
                   "(one more model call per step, and the negative is predicted even at cfg 1; UNet models).")
    CATEGORY = "_for_testing"
    EXPERIMENTAL = True
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input("The model to patch: SD1.x, SD2.x or SDXL."),
            "scale": _float(0.5, -2.0, 5.0, 0.01, "How strongly to guide away from the blurred prediction "
                                                  "(0: off)."),
            "blur_sigma": _float(2.0, 0.0, 10.0, 0.1, "The standard deviation of the Gaussian blur, in latent "
                                                      "pixels (0: no blur)."),
        }}

    def patch(self, model: DiffusionModel, scale: float, blur_sigma: float) -> tuple[DiffusionModel]:
        _require_middle_attention(model, "SelfAttentionGuidance")
        if any(isinstance(patch, patches.SelfAttentionGuidance) for patch in model.post_cfg):
            raise ValueError("model: already has SelfAttentionGuidance; it records one attention map per step, so "
                             "it can be applied once")
        return (_with_post_cfg(model, patches.SelfAttentionGuidance(scale, blur_sigma)),)


def layer_numbers(text: str) -> tuple[int, ...]:
    """The layer numbers in a string such as "7, 8, 9" (every run of digits, as ComfyUI reads it)."""
    return tuple(int(number) for number in re.findall(r"\d+", text))


def layers_to_skip(model: DiffusionModel, node: str,
                   layers: dict[str, tuple[str, tuple[int, ...]]]) -> dict[str, tuple[int, ...]] | None:
    """The DiT blocks a skip-layer node skips, by kind; `layers` maps a block kind ("double", "single") to the
    input naming it and its layer numbers. None for no layers at all (the model is left as it is, as in
    ComfyUI); a model without DiT blocks, a kind of block it lacks and a layer past its last block are refused,
    except "single" layers on a model with no single blocks (SD3), ignored as ComfyUI ignores them when there
    are others to skip."""
    counts = network_changes.dit_block_counts(model.network)
    wanted = {kind: numbers for kind, (_, numbers) in layers.items() if numbers}
    if not wanted:
        return None
    if not counts:
        raise ValueError(f"model: {node} skips blocks of a DiT model (SD3, FLUX); this "
                         f"{model.sampling.family_title} model ({model.name}) is a UNet, which has none")
    skipped = {}
    for kind, numbers in wanted.items():
        input_name = layers[kind][0]
        if kind not in counts:
            if len(wanted) == 1:
                raise ValueError(f"{input_name}: this {model.sampling.family_title} model has no {kind} blocks, "
                                 f"so there is nothing to skip")
            continue
        past = [number for number in numbers if number >= counts[kind]]
        if past:
            raise ValueError(f"{input_name}: layer {past[0]} is past the last of this model's {counts[kind]} "
                             f"{kind} blocks (0-{counts[kind] - 1})")
        skipped[kind] = numbers
    return skipped


def skip_layer_guidance(model: DiffusionModel, node: str, layers: dict[str, tuple[str, tuple[int, ...]]],
                        scale: float, start_percent: float, end_percent: float,
                        rescaling_scale: float = 0.0) -> DiffusionModel:
    """The MODEL with a `SkipLayerGuidance` patch skipping `layers_to_skip`; the noise span is read off the
    model's schedule now, as ComfyUI does."""
    skipped = layers_to_skip(model, node, layers)
    if skipped is None:
        return model
    model_sampling = model.model_sampling
    patch = patches.SkipLayerGuidance(skipped, scale, model_sampling.percent_to_sigma(start_percent),
                                      model_sampling.percent_to_sigma(end_percent), rescaling_scale)
    return _with_post_cfg(model, patch)


def _layers_input(tooltip: str) -> tuple[str, dict]:
    return ("STRING", {"default": "7, 8, 9", "multiline": False, "tooltip": tooltip})


def _slg_inputs() -> dict[str, tuple[str, dict]]:
    return {
        "scale": _float(3.0, 0.0, 10.0, 0.1, "How strongly to guide away from the prediction with layers skipped "
                                             "(0: off)."),
        "start_percent": _float(0.01, 0.0, 1.0, 0.001, "Where in sampling the guidance starts (0: the first "
                                                       "step)."),
        "end_percent": _float(0.15, 0.0, 1.0, 0.001, "Where in sampling the guidance ends (1: the last step)."),
    }


class SkipLayerGuidanceSD3:
    DESCRIPTION = ("Skip-Layer Guidance for SD3: over part of sampling, predicts again with some transformer "
                   "blocks skipped and guides away from that prediction, which improves anatomy and structure "
                   "(one more model call per guided step; DiT models).")
    CATEGORY = GUIDANCE
    EXPERIMENTAL = True
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input("The model to patch: SD3, or another DiT (its double blocks)."),
            "layers": _layers_input("The numbers of the transformer blocks to skip, from 0 (any separators)."),
            **_slg_inputs(),
        }}

    def patch(self, model: DiffusionModel, layers: str, scale: float, start_percent: float,
              end_percent: float) -> tuple[DiffusionModel]:
        return (skip_layer_guidance(model, "SkipLayerGuidanceSD3", {"double": ("layers", layer_numbers(layers))},
                                    scale, start_percent, end_percent),)


class SkipLayerGuidanceDiT:
    DESCRIPTION = ("Skip-Layer Guidance for any DiT model (SD3, FLUX): over part of sampling, predicts again with "
                   "some double and single blocks skipped and guides away from that prediction, optionally "
                   "rescaled (one more model call per guided step).")
    CATEGORY = GUIDANCE
    EXPERIMENTAL = True
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input("The model to patch: SD3 or FLUX."),
            "double_layers": _layers_input("The double (joint) blocks to skip, from 0; SD3's blocks are all "
                                           "double."),
            "single_layers": _layers_input("The single blocks to skip, from 0 (FLUX); ignored for SD3, which "
                                           "has none, when there are double layers to skip."),
            **_slg_inputs(),
            "rescaling_scale": _float(0.0, 0.0, 10.0, 0.01, "How far to rescale the result towards the spread of "
                                                            "the positive prediction (0: not at all)."),
        }}

    def patch(self, model: DiffusionModel, double_layers: str, single_layers: str, scale: float,
              start_percent: float, end_percent: float, rescaling_scale: float) -> tuple[DiffusionModel]:
        layers = {"double": ("double_layers", layer_numbers(double_layers)),
                  "single": ("single_layers", layer_numbers(single_layers))}
        return (skip_layer_guidance(model, "SkipLayerGuidanceDiT", layers, scale, start_percent, end_percent,
                                    rescaling_scale),)


NODE_CLASS_MAPPINGS: dict[str, type] = {node.__name__: node for node in (
    CFGNorm, APG, PerturbedAttentionGuidance, SelfAttentionGuidance, SkipLayerGuidanceSD3, SkipLayerGuidanceDiT,
)}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {name: name for name in NODE_CLASS_MAPPINGS} | {
    "APG": "Adaptive Projected Guidance", "SelfAttentionGuidance": "Self-Attention Guidance",
}
