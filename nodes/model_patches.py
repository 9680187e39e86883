"""MODEL patch nodes, with ComfyUI's names and inputs: the ModelSampling* nodes, which give a model another noise
schedule or prediction type (`DiffusionModel.schedule_override`, a `diffusion.sampling.model_sampling`
ModelSampling), and RescaleCFG and CFGZeroStar, which change the guided estimate (`DiffusionModel.post_cfg`,
applied by `diffusion.sampling.guiders` after guidance).

A patch is a new MODEL value (`dataclasses.replace`); the loaded model is never changed. Only the sigma-based
samplers (KSampler's and the custom-sampling nodes') read these patches. ModelSamplingSD3 lives in `nodes.sd3`.
Knows nothing of HTTP or the executor.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch

from diffusion.components import DiffusionModel
from diffusion.sampling import model_sampling as schedules
from diffusion.sampling.guiders import replaces_cfg
from nodes.latent import MAX_RESOLUTION

MODEL_PATCHES = "advanced/model"

DISCRETE_PREDICTIONS: dict[str, schedules.Prediction] = {
    "eps": schedules.EPS, "v_prediction": schedules.V_PREDICTION, "lcm": schedules.LCM, "x0": schedules.X0,
    "img_to_img": schedules.IMG_TO_IMG,
}
# ModelSamplingContinuousEDM's choices: (prediction, sigma_data), or why this engine cannot take the choice
CONTINUOUS_EDM_PREDICTIONS: dict[str, tuple[schedules.Prediction, float]] = {
    "v_prediction": (schedules.V_PREDICTION, 1.0), "edm": (schedules.EDM, 0.5), "eps": (schedules.EPS, 1.0),
}
UNSUPPORTED_CONTINUOUS_EDM = {
    "edm_playground_v2.5": "it also changes the latent format (Playground v2.5's per-channel latent mean and "
                           "spread), which here belongs to the VAE, not the MODEL",
    "cosmos_rflow": "Cosmos' rectified-flow schedule is not implemented",
}


def _with_schedule(model: DiffusionModel, model_sampling: schedules.ModelSampling) -> DiffusionModel:
    return dataclasses.replace(model, schedule_override=model_sampling)


def _model_input(tooltip: str = "The model to patch.") -> tuple[str, dict]:
    return ("MODEL", {"tooltip": tooltip})


def _continuous_range(sigma_max: float, sigma_min: float) -> dict[str, tuple[str, dict]]:
    return {
        "sigma_max": ("FLOAT", {"default": sigma_max, "min": 0.0, "max": 1000.0, "step": 0.001, "round": False,
                                "tooltip": "The largest noise level of the schedule."}),
        "sigma_min": ("FLOAT", {"default": sigma_min, "min": 0.0, "max": 1000.0, "step": 0.001, "round": False,
                                "tooltip": "The smallest noise level of the schedule."}),
    }


def _sigma_range_problem(values: Mapping[str, Any]) -> str | None:
    """Why a log-uniform sigma range cannot be built (where the values are given)."""
    sigma_min, sigma_max = values.get("sigma_min"), values.get("sigma_max")
    if sigma_min is not None and sigma_min <= 0:
        return f"sigma_min: must be above 0 (the noise levels are spaced in log sigma), got {sigma_min}"
    if sigma_min is not None and sigma_max is not None and sigma_min >= sigma_max:
        # (the message names no other input: validation reports it against the first input it names)
        return f"sigma_min: must be below the largest noise level ({sigma_max}), got {sigma_min}"
    return None


def _verdict(problem: str | None) -> bool | str:
    return True if problem is None else problem


def _raise_if(problem: str | None) -> None:
    if problem is not None:
        raise ValueError(problem)


class ModelSamplingDiscrete:
    DESCRIPTION = ("Samples a discrete-time model (SD1.x, SD2.x, SDXL) with another prediction type over its own "
                   "beta schedule, optionally rescaled to zero terminal SNR; lcm keeps LCM's 50 distilled "
                   "timesteps.")
    CATEGORY = MODEL_PATCHES
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input(),
            "sampling": (list(DISCRETE_PREDICTIONS), {"tooltip": "What the network predicts: the noise (eps), v, "
                                                                 "LCM's consistency output, the clean latents "
                                                                 "(x0), or those from unscaled input "
                                                                 "(img_to_img)."}),
            "zsnr": ("BOOLEAN", {"default": False, "tooltip": "Rescale the schedule to zero terminal SNR (for "
                                                              "models trained that way)."}),
        }}

    def patch(self, model: DiffusionModel, sampling: str, zsnr: bool) -> tuple[DiffusionModel]:
        schedule = _trained_beta_schedule(model)
        prediction = DISCRETE_PREDICTIONS[sampling]
        if sampling == "lcm":
            return (_with_schedule(model, schedules.DistilledDiscreteModelSampling(schedule, prediction, zsnr)),)
        return (_with_schedule(model, schedules.DiscreteModelSampling(schedule, prediction, zsnr)),)


def _trained_beta_schedule(model: DiffusionModel) -> schedules.BetaSchedule:
    """The betas the model was trained with (its scheduler config's); ComfyUI's default (SD1's) for a model
    whose config has none."""
    trained = schedules.ModelSampling.from_scheduler_config(model.scheduler_config)
    if isinstance(trained, schedules.DiscreteModelSampling):
        return trained.schedule
    return schedules.BetaSchedule()


def flow_sampling(model: DiffusionModel, shift: float, multiplier: float) -> DiffusionModel:
    """The MODEL sampled as rectified flow with SD3's time `shift`, timesteps scaled by `multiplier` (ComfyUI's
    ModelSamplingSD3 with 1000, ModelSamplingAuraFlow with 1)."""
    return _with_schedule(model, schedules.DiscreteFlowModelSampling(shift=shift, multiplier=multiplier))


def _shift_problem(values: Mapping[str, Any]) -> str | None:
    shift = values.get("shift")
    if shift is not None and shift <= 0:
        return f"shift: must be above 0 (a shift of 0 puts every noise level at 0), got {shift}"
    return None


class ModelSamplingAuraFlow:
    DESCRIPTION = ("Samples the model as rectified flow with a timestep shift, timesteps in 0..1 (AuraFlow; higher "
                   "shifts spend more steps at high noise).")
    CATEGORY = MODEL_PATCHES
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch_aura"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input(),
            "shift": ("FLOAT", {"default": 1.73, "min": 0.0, "max": 100.0, "step": 0.01,
                                "tooltip": "The timestep shift of the flow schedule (1.73 is AuraFlow's)."}),
        }}

    ENGINE_CHECKS_ALL_INPUTS = True  # VALIDATE_INPUTS(**widgets) adds to the range and choice checks

    @classmethod
    def VALIDATE_INPUTS(cls, **widgets: Any) -> bool | str:
        return _verdict(_shift_problem(widgets))

    def patch_aura(self, model: DiffusionModel, shift: float) -> tuple[DiffusionModel]:
        _raise_if(_shift_problem({"shift": shift}))
        return (flow_sampling(model, shift, multiplier=1.0),)


class ModelSamplingFlux:
    DESCRIPTION = ("Sets FLUX's timestep shift for an image size: interpolated between base_shift (256 image "
                   "tokens) and max_shift (4096 tokens, a 1024x1024 image).")
    CATEGORY = MODEL_PATCHES
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        def size(tooltip: str) -> tuple[str, dict]:
            return ("INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 8, "tooltip": tooltip})

        return {"required": {
            "model": _model_input("A FLUX model."),
            "max_shift": ("FLOAT", {"default": 1.15, "min": 0.0, "max": 100.0, "step": 0.01,
                                    "tooltip": "The shift at 4096 image tokens."}),
            "base_shift": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 100.0, "step": 0.01,
                                     "tooltip": "The shift at 256 image tokens."}),
            "width": size("The width of the image to be sampled, in pixels."),
            "height": size("The height of the image to be sampled, in pixels."),
        }}

    def patch(self, model: DiffusionModel, max_shift: float, base_shift: float, width: int,
              height: int) -> tuple[DiffusionModel]:
        sampling = schedules.FluxModelSampling.for_image_size(width, height, base_shift, max_shift)
        return (_with_schedule(model, sampling),)


class ModelSamplingContinuousEDM:
    DESCRIPTION = ("Samples the model with continuous log-uniform noise levels between sigma_min and sigma_max and "
                   "EDM's timesteps, with the chosen prediction type (Playground v2.5, EDM and v-prediction EDM "
                   "checkpoints).")
    CATEGORY = MODEL_PATCHES
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input(),
            "sampling": (["v_prediction", "edm", "edm_playground_v2.5", "eps", "cosmos_rflow"], {
                "tooltip": "What the network predicts: v, EDM's preconditioned output (sigma_data 0.5) or the "
                           "noise. edm_playground_v2.5 and cosmos_rflow are not available here."}),
            **_continuous_range(120.0, 0.002),
        }}

    ENGINE_CHECKS_ALL_INPUTS = True  # VALIDATE_INPUTS(**widgets) adds to the range and choice checks

    @classmethod
    def VALIDATE_INPUTS(cls, **widgets: Any) -> bool | str:
        return _verdict(_continuous_edm_problem(widgets))

    def patch(self, model: DiffusionModel, sampling: str, sigma_max: float, sigma_min: float) -> tuple[DiffusionModel]:
        _raise_if(_continuous_edm_problem({"sampling": sampling, "sigma_max": sigma_max, "sigma_min": sigma_min}))
        prediction, sigma_data = CONTINUOUS_EDM_PREDICTIONS[sampling]
        return (_with_schedule(model, schedules.ContinuousEDMModelSampling(prediction, sigma_min, sigma_max,
                                                                           sigma_data)),)


def _continuous_edm_problem(values: Mapping[str, Any]) -> str | None:
    reason = UNSUPPORTED_CONTINUOUS_EDM.get(values.get("sampling"))
    if reason is not None:
        return f"sampling: {values['sampling']} is not supported: {reason}"
    return _sigma_range_problem(values)


class ModelSamplingContinuousV:
    DESCRIPTION = ("Samples a continuous-time v-prediction model with log-uniform noise levels between sigma_min "
                   "and sigma_max and timesteps atan(sigma) * 2 / pi.")
    CATEGORY = MODEL_PATCHES
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input(),
            "sampling": (["v_prediction"], {"tooltip": "What the network predicts (v)."}),
            **_continuous_range(500.0, 0.03),
        }}

    ENGINE_CHECKS_ALL_INPUTS = True  # VALIDATE_INPUTS(**widgets) adds to the range and choice checks

    @classmethod
    def VALIDATE_INPUTS(cls, **widgets: Any) -> bool | str:
        return _verdict(_sigma_range_problem(widgets))

    def patch(self, model: DiffusionModel, sampling: str, sigma_max: float, sigma_min: float) -> tuple[DiffusionModel]:
        _raise_if(_sigma_range_problem({"sigma_max": sigma_max, "sigma_min": sigma_min}))
        return (_with_schedule(model, schedules.ContinuousVModelSampling(schedules.V_PREDICTION, sigma_min,
                                                                         sigma_max)),)


@dataclass(frozen=True)
class RescaledCfg:
    """RescaleCFG's guidance (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed"):
    classifier-free guidance computed on v-prediction outputs, with its spread rescaled to the positive's and
    mixed with the plain result by `multiplier`. It replaces the cfg function (`replaces_cfg`): it recomputes the
    guided estimate from the two estimates, with ComfyUI's numbers."""

    multiplier: float
    replaces_cfg: ClassVar[bool] = True

    def __call__(self, args: Mapping[str, Any]) -> torch.Tensor:
        x = args["input"]
        cond, uncond = x - args["cond_denoised"], x - args["uncond_denoised"]  # ComfyUI's cfg function sees these
        sigma = args["sigma"]
        sigma = sigma.view(sigma.shape[:1] + (1,) * (cond.ndim - 1))
        variance_preserving = x / (sigma * sigma + 1.0)
        v_cond = ((variance_preserving - (x - cond)) * (sigma ** 2 + 1.0) ** 0.5) / sigma
        v_uncond = ((variance_preserving - (x - uncond)) * (sigma ** 2 + 1.0) ** 0.5) / sigma
        v_cfg = v_uncond + args["cond_scale"] * (v_cond - v_uncond)
        rows = tuple(range(1, cond.ndim))
        spread_ratio = torch.std(v_cond, dim=rows, keepdim=True) / torch.std(v_cfg, dim=rows, keepdim=True)
        v_final = self.multiplier * (v_cfg * spread_ratio) + (1.0 - self.multiplier) * v_cfg
        guided_noise = x - (variance_preserving - v_final * sigma / (sigma * sigma + 1.0) ** 0.5)
        return x - guided_noise


class RescaleCFG:
    DESCRIPTION = ("Rescales classifier-free guidance to keep the guided prediction's spread near the positive's, "
                   "which avoids overexposure at high cfg (for v-prediction and zero-terminal-SNR models).")
    CATEGORY = MODEL_PATCHES
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model_input(),
            "multiplier": ("FLOAT", {"default": 0.7, "min": 0.0, "max": 1.0, "step": 0.01,
                                     "tooltip": "How much of the rescaled guidance to use (0: plain CFG)."}),
        }}

    def patch(self, model: DiffusionModel, multiplier: float) -> tuple[DiffusionModel]:
        # ComfyUI keeps one cfg function and runs it before every post-CFG patch, whatever the order of the nodes
        others = tuple(patch for patch in model.post_cfg if not replaces_cfg(patch))
        return (dataclasses.replace(model, post_cfg=(RescaledCfg(multiplier),) + others),)


def _optimized_scale(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Per batch row, the scale that best fits `negative` to `positive` (least squares), shaped to broadcast."""
    positive_rows = positive.reshape(positive.shape[0], -1)
    negative_rows = negative.reshape(negative.shape[0], -1)
    dot_product = torch.sum(positive_rows * negative_rows, dim=1, keepdim=True)
    squared_norm = torch.sum(negative_rows ** 2, dim=1, keepdim=True) + 1e-8
    return (dot_product / squared_norm).reshape([positive.shape[0]] + [1] * (positive.ndim - 1))


@dataclass(frozen=True)
class CfgZeroStar:
    """CFG-Zero* (Fan et al. 2025): the unconditional estimate scaled by the least-squares fit of the conditional
    noise to the unconditional noise before guidance is applied to it."""

    def __call__(self, args: Mapping[str, Any]) -> torch.Tensor:
        x, cond, uncond = args["input"], args["cond_denoised"], args["uncond_denoised"]
        alpha = _optimized_scale(x - cond, x - uncond)
        return args["denoised"] + uncond * (alpha - 1.0) + args["cond_scale"] * uncond * (1.0 - alpha)


class CFGZeroStar:
    DESCRIPTION = ("CFG-Zero*: corrects classifier-free guidance by an optimized scale of the unconditional "
                   "estimate (mostly for flow-matching models).")
    CATEGORY = "advanced/guidance"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("patched_model",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": _model_input()}}

    def patch(self, model: DiffusionModel) -> tuple[DiffusionModel]:
        return (dataclasses.replace(model, post_cfg=model.post_cfg + (CfgZeroStar(),)),)


NODE_CLASS_MAPPINGS: dict[str, type] = {node.__name__: node for node in (
    ModelSamplingDiscrete, ModelSamplingAuraFlow, ModelSamplingFlux, ModelSamplingContinuousEDM,
    ModelSamplingContinuousV, RescaleCFG, CFGZeroStar,
)}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {name: name for name in NODE_CLASS_MAPPINGS}
