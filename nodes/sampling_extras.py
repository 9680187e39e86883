"""Sampling extras of ComfyUI's core, with its names and inputs: the samplers of its advanced-samplers nodes
(SamplerEulerCFGpp, SamplerLCMUpscale), the OptimalStepsScheduler, guidance patches of a MODEL (TCFG, FreSca,
Mahiro, RenormCFG, the deprecated PerpNeg and SkipLayerGuidanceDiTSimple) and ModelComputeDtype.

Thin classes over `diffusion.sampling` (`samplers` runs the samplers, `sigma_schedules` holds the schedule,
`cfg_patches` the patches, which the guiders apply as pre- and post-CFG patches) and `diffusion.speedups` (the
dtype the network computes in while it samples). A patch is a new MODEL value; the
loaded model is never changed, and only the sigma-based samplers (KSampler's and the custom-sampling nodes') read
the patches. Knows nothing of HTTP or the executor.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from diffusion.components import DiffusionModel
from diffusion.contracts import Conditioning
from diffusion.sampling import cfg_patches, sigma_schedules
from diffusion.sampling.custom import SamplerChoice
from diffusion.sampling.guiders import replaces_cfg
from diffusion.sampling.samplers.advanced import UPSCALE_METHODS
from diffusion.speedups import COMPUTE_DTYPES
from nodes.custom_sampling import SAMPLERS, SCHEDULERS
from nodes.guidance_patches import layer_numbers, layers_to_skip

GUIDANCE = "advanced/guidance"
TESTING = "_for_testing"


def _float(default: float, low: float, high: float, step: float, tooltip: str) -> tuple[str, dict]:
    return ("FLOAT", {"default": default, "min": low, "max": high, "step": step, "tooltip": tooltip})


def _model_input(tooltip: str = "The model to patch.") -> tuple[str, dict]:
    return ("MODEL", {"tooltip": tooltip})


def _with_pre_cfg(model: DiffusionModel, patch: Any) -> DiffusionModel:
    return dataclasses.replace(model, pre_cfg=model.pre_cfg + (patch,))


def _with_post_cfg(model: DiffusionModel, patch: Any) -> DiffusionModel:
    return dataclasses.replace(model, post_cfg=model.post_cfg + (patch,))


def _with_cfg_function(model: DiffusionModel, patch: Any) -> DiffusionModel:
    """The MODEL whose cfg function is `patch`: ComfyUI keeps one and runs it before every post-CFG patch, whatever
    the order of the nodes, so it replaces an earlier one (RescaleCFG, ...) and comes first."""
    others = tuple(existing for existing in model.post_cfg if not replaces_cfg(existing))
    return dataclasses.replace(model, post_cfg=(patch,) + others)


def _with_negative_change(model: DiffusionModel, patch: Any) -> DiffusionModel:
    """The MODEL with `patch`, which changes the negative estimate guidance uses, right after its cfg function
    (where one is set) and before its other post-CFG patches, as ComfyUI changes the negative before all of them."""
    cfg_functions = tuple(existing for existing in model.post_cfg if replaces_cfg(existing))
    others = tuple(existing for existing in model.post_cfg if not replaces_cfg(existing))
    return dataclasses.replace(model, post_cfg=cfg_functions + (patch,) + others)


# -- samplers ---------------------------------------------------------------------------------------------------------


class SamplerEulerCFGpp:
    DESCRIPTION = ("Euler with CFG++: steps from the guided estimate along the unguided estimate's noise, for low "
                   "cfg values (about 0.5 to 2). regular is KSampler's euler_cfg_pp; alternative takes the slope "
                   "at the latents with the unguided noise added back.")
    CATEGORY = TESTING
    EXPERIMENTAL = True
    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"version": (["regular", "alternative"], {
            "tooltip": "regular: euler_cfg_pp; alternative: ComfyUI's other formulation of the same idea."})}}

    def get_sampler(self, version: str) -> tuple[SamplerChoice]:
        return (SamplerChoice("euler_cfg_pp_alternative" if version == "alternative" else "euler_cfg_pp"),)


class SamplerLCMUpscale:
    DESCRIPTION = ("LCM sampling that enlarges the latents during the first steps, so that a consistency model "
                   "generates a larger image from a small start.")
    CATEGORY = SAMPLERS
    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "scale_ratio": _float(1.0, 0.1, 20.0, 0.01, "How many times larger the latents end, on each side."),
            "scale_steps": ("INT", {"default": -1, "min": -1, "max": 1000, "step": 1,
                                    "tooltip": "Over how many steps the size grows, evenly (-1: about half of "
                                               "them)."}),
            "upscale_method": (list(UPSCALE_METHODS), {"tooltip": "How the latents are resized at each step."}),
        }}

    def get_sampler(self, scale_ratio: float, scale_steps: int, upscale_method: str) -> tuple[SamplerChoice]:
        options = {"total_upscale": scale_ratio, "upscale_steps": None if scale_steps < 0 else scale_steps,
                   "upscale_method": upscale_method}
        return (SamplerChoice("lcm_upscale", options),)


# -- schedulers -------------------------------------------------------------------------------------------------------


class OptimalStepsScheduler:
    DESCRIPTION = ("The noise levels that Optimal Stepsize for Diffusion Sampling found for a flow model, "
                   "interpolated to the number of steps.")
    CATEGORY = SCHEDULERS
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model_type": (list(sigma_schedules.OPTIMAL_STEPS_NOISE_LEVELS), {
                "tooltip": "Whose searched schedule to use (the table holds FLUX's, Wan's and Chroma's)."}),
            "steps": ("INT", {"default": 20, "min": 3, "max": 1000,
                              "tooltip": "The number of sampling steps (the schedule has one sigma more)."}),
            "denoise": _float(1.0, 0.0, 1.0, 0.01, "The part of the schedule to keep, from its end: below 1 "
                                                   "sampling starts part-way down (img2img); 0 gives no sigmas."),
        }}

    def get_sigmas(self, model_type: str, steps: int, denoise: float) -> tuple[torch.Tensor]:
        return (sigma_schedules.optimal_steps_sigmas(model_type, steps, denoise),)


# -- guidance patches -------------------------------------------------------------------------------------------------


class TCFG:
    DESCRIPTION = ("TCFG - Tangential Damping CFG (2503.18137): refines the negative prediction to align with the "
                   "positive one, which improves quality.")
    CATEGORY = GUIDANCE
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("patched_model",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": _model_input()}}

    def patch(self, model: DiffusionModel) -> tuple[DiffusionModel]:
        return (_with_pre_cfg(model, cfg_patches.TangentialDamping()),)


class FreSca:
    DESCRIPTION = "Applies frequency-dependent scaling to the guidance (FreSca)."
    CATEGORY = TESTING
    EXPERIMENTAL = True
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input(),
            "scale_low": _float(1.0, 0, 10, 0.01, "Scaling factor for low-frequency components."),
            "scale_high": _float(1.25, 0, 10, 0.01, "Scaling factor for high-frequency components."),
            "freq_cutoff": ("INT", {"default": 20, "min": 1, "max": 10000, "step": 1,
                                    "tooltip": "Number of frequency indices around center to consider as "
                                               "low-frequency."}),
        }}

    def patch(self, model: DiffusionModel, scale_low: float, scale_high: float,
              freq_cutoff: int) -> tuple[DiffusionModel]:
        return (_with_pre_cfg(model, cfg_patches.FrequencyScaledGuidance(scale_low, scale_high, freq_cutoff)),)


class Mahiro:
    DESCRIPTION = ("Modifies the guidance to scale more on the 'direction' of the positive prompt rather than the "
                   "difference between the negative prompt.")
    CATEGORY = TESTING
    EXPERIMENTAL = True
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("patched_model",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": _model_input()}}

    def patch(self, model: DiffusionModel) -> tuple[DiffusionModel]:
        return (_with_post_cfg(model, cfg_patches.MahiroGuidance()),)


class RenormCFG:
    DESCRIPTION = ("Classifier-free guidance renormalized (Lumina 2): the guided prediction is scaled down to at "
                   "most renorm_cfg times the positive prediction's norm, and below the noise level cfg_trunc "
                   "only (above it, the positive prediction alone).")
    CATEGORY = "advanced/model"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input(),
            "cfg_trunc": _float(100, 0.0, 100.0, 0.01, "Guidance applies while sigma is below this; above it the "
                                                       "positive prediction is used alone."),
            "renorm_cfg": _float(1.0, 0.0, 100.0, 0.01, "The guided prediction's largest norm, in multiples of the "
                                                        "positive prediction's (0: no limit)."),
        }}

    def patch(self, model: DiffusionModel, cfg_trunc: float, renorm_cfg: float) -> tuple[DiffusionModel]:
        return (_with_cfg_function(model, cfg_patches.RenormalizedCfg(cfg_trunc, renorm_cfg)),)


class PerpNeg:
    DESCRIPTION = ("Perp-Neg guidance as a model patch (deprecated: use PerpNegGuider): guides from an empty "
                   "prompt's prediction towards the positive and away from only the part of the negative that is "
                   "perpendicular to it (one more model call per step).")
    CATEGORY = TESTING
    EXPERIMENTAL = True
    DEPRECATED = True
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input(),
            "empty_conditioning": ("CONDITIONING", {"tooltip": "The conditioning of an empty prompt."}),
            "neg_scale": _float(1.0, 0.0, 100.0, 0.01, "How strongly to guide away from the perpendicular part of "
                                                       "the negative."),
        }}

    def patch(self, model: DiffusionModel, empty_conditioning: Conditioning,
              neg_scale: float) -> tuple[DiffusionModel]:
        if not empty_conditioning:
            raise ValueError("empty_conditioning: empty conditioning")
        return (_with_cfg_function(model, cfg_patches.PerpNegCfg(empty_conditioning, neg_scale)),)


def _layers_input(tooltip: str) -> tuple[str, dict]:
    return ("STRING", {"default": "7, 8, 9", "multiline": False, "tooltip": tooltip})


class SkipLayerGuidanceDiTSimple:
    DESCRIPTION = ("Simple version of the SkipLayerGuidanceDiT node that only modifies the uncond pass: the "
                   "negative is predicted with some transformer blocks skipped (DiT models: SD3, FLUX).")
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
            "start_percent": _float(0.0, 0.0, 1.0, 0.001, "Where in sampling the skipping starts (0: the first "
                                                          "step)."),
            "end_percent": _float(1.0, 0.0, 1.0, 0.001, "Where in sampling the skipping ends (1: the last step)."),
        }}

    def patch(self, model: DiffusionModel, double_layers: str, single_layers: str, start_percent: float,
              end_percent: float) -> tuple[DiffusionModel]:
        layers = {"double": ("double_layers", layer_numbers(double_layers)),
                  "single": ("single_layers", layer_numbers(single_layers))}
        skipped = layers_to_skip(model, "SkipLayerGuidanceDiTSimple", layers)
        if skipped is None:
            return (model,)
        model_sampling = model.model_sampling
        patch = cfg_patches.SkipLayerNegative(skipped, model_sampling.percent_to_sigma(start_percent),
                                              model_sampling.percent_to_sigma(end_percent))
        return (_with_negative_change(model, patch),)


# -- precision --------------------------------------------------------------------------------------------------------


class ModelComputeDtype:
    DESCRIPTION = ("Runs the model's network in another dtype while it samples: its weights are cast for the run "
                   "(a copy while it lasts; the loaded model is unchanged), inputs and outputs converted at the "
                   "network's edges. default: the dtype the model was loaded in.")
    CATEGORY = "advanced/debug/model"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input(),
            "dtype": (["default", *COMPUTE_DTYPES], {"tooltip": "The dtype the network computes in (default: the "
                                                                "one it was loaded in)."}),
        }}

    def patch(self, model: DiffusionModel, dtype: str) -> tuple[DiffusionModel]:
        return (model.with_speedups(dataclasses.replace(model.speedups, compute_dtype=dtype)),)


NODE_CLASS_MAPPINGS: dict[str, type] = {node.__name__: node for node in (
    SamplerEulerCFGpp, SamplerLCMUpscale, OptimalStepsScheduler, TCFG, FreSca, Mahiro, RenormCFG, PerpNeg,
    SkipLayerGuidanceDiTSimple, ModelComputeDtype,
)}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {name: name for name in NODE_CLASS_MAPPINGS} | {
    "SamplerEulerCFGpp": "SamplerEulerCFG++",
    "TCFG": "Tangential Damping CFG",
    "Mahiro": "Mahiro is so cute that she deserves a better guidance function!! (。・ω・。)",
    "PerpNeg": "Perp-Neg (DEPRECATED by PerpNegGuider)",
}
