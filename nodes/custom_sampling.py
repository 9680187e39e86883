"""Custom-sampling nodes, with ComfyUI's names and inputs: sampling split into its parts, each a value that flows
between nodes. NOISE (RandomNoise, DisableNoise), GUIDER (BasicGuider, CFGGuider, DualCFGGuider,
PerpNegGuider), SAMPLER (KSamplerSelect and the Sampler* nodes with their options) and SIGMAS (the scheduler
nodes, and the nodes that split, flip or extend a schedule) meet in SamplerCustomAdvanced; SamplerCustom is the
same with the noise and a CFG guider built in.

Thin classes over `diffusion.sampling` (`custom` runs the sampling, `guiders`, `samplers` and `sigma_schedules`
hold the maths); SIGMAS are 1-D float32 CPU tensors. Knows nothing of HTTP or the executor; progress and
interrupts go through `engine.progress` inside the sampling run.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from diffusion.components import DiffusionModel
from diffusion.contracts import Conditioning
from diffusion.sampling import custom, guiders, samplers, sigma_schedules
from diffusion.sampling.custom import SamplerChoice
from diffusion.sampling.editing import hand_off

MAX_SEED = 0xFFFFFFFFFFFFFFFF
CUSTOM_SAMPLING = "sampling/custom_sampling"
SCHEDULERS = f"{CUSTOM_SAMPLING}/schedulers"
SIGMAS = f"{CUSTOM_SAMPLING}/sigmas"
SAMPLERS = f"{CUSTOM_SAMPLING}/samplers"
GUIDERS = f"{CUSTOM_SAMPLING}/guiders"
NOISE = f"{CUSTOM_SAMPLING}/noise"
# The SD1 noise range: ComfyUI's defaults for the schedulers that take a sigma range
SD1_SIGMA_MAX, SD1_SIGMA_MIN = 14.614642, 0.0291675

Noise = custom.RandomNoise | custom.DisableNoise
Guider = guiders.CFGGuider | guiders.DualCFGGuider | guiders.PerpNegGuider


# -- checks shared by validation (constants) and execution (linked values) ------------------------------------------


def _above_zero(values: Mapping[str, Any], *names: str) -> str | None:
    """Why one of the inputs `names` (where given) is not above 0, for inputs a schedule divides by or takes the
    log of."""
    for name in names:
        value = values.get(name)
        if value is not None and value <= 0:
            return f"{name}: must be above 0 here, got {value}"
    return None


def _verdict(problem: str | None) -> bool | str:
    return True if problem is None else problem


def _raise_if(problem: str | None) -> None:
    if problem is not None:
        raise ValueError(problem)


# -- input specs ------------------------------------------------------------------------------------------------------


def _float(default: float, low: float, high: float, step: float, tooltip: str, **extra: Any) -> tuple[str, dict]:
    return ("FLOAT", {"default": default, "min": low, "max": high, "step": step, **extra, "tooltip": tooltip})


def _int(default: int, low: int, high: int, tooltip: str) -> tuple[str, dict]:
    return ("INT", {"default": default, "min": low, "max": high, "tooltip": tooltip})


def _model(tooltip: str = "The model whose noise schedule the sigmas follow.") -> tuple[str, dict]:
    return ("MODEL", {"tooltip": tooltip})


def _steps(default: int = 20, high: int = 10000) -> tuple[str, dict]:
    return _int(default, 1, high, "The number of sampling steps (the schedule has one sigma more).")


def _denoise() -> tuple[str, dict]:
    return _float(1.0, 0.0, 1.0, 0.01, "The part of the schedule to keep, from its end: below 1 sampling starts "
                                       "part-way down (img2img); 0 gives no sigmas.")


def _sigma_range() -> dict[str, tuple[str, dict]]:
    return {
        "sigma_max": _float(SD1_SIGMA_MAX, 0.0, 5000.0, 0.01, "The noise level of the first step.", round=False),
        "sigma_min": _float(SD1_SIGMA_MIN, 0.0, 5000.0, 0.01, "The noise level of the last step before 0.",
                            round=False),
    }


def _sigmas_input(tooltip: str = "The noise levels to work on.") -> tuple[str, dict]:
    return ("SIGMAS", {"tooltip": tooltip})


def _cfg(tooltip: str) -> tuple[str, dict]:
    return _float(8.0, 0.0, 100.0, 0.1, tooltip, round=0.01)


def _eta(default: float = 1.0, high: float = 100.0) -> tuple[str, dict]:
    return _float(default, 0.0, high, 0.01, "How much fresh noise each step adds (0: none, deterministic).",
                  round=False)


def _s_noise(high: float = 100.0) -> tuple[str, dict]:
    return _float(1.0, 0.0, high, 0.01, "A scale on the fresh noise each step adds.", round=False)


def _noise_device() -> tuple[list[str], dict]:
    return (["gpu", "cpu"], {"tooltip": "Where the Brownian noise is drawn: gpu (on the model's device) or cpu "
                                        "(the same noise on every machine)."})


# -- sampling ---------------------------------------------------------------------------------------------------------


def _sample(noise: Noise, guider: Guider, sampler: SamplerChoice, sigmas: torch.Tensor,
            latent_image: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(output, denoised_output) as ComfyUI's custom samplers give them: the sampled latents, and the last step's
    denoised estimate (the output itself when no step ran)."""
    last: dict[str, torch.Tensor] = {}

    def keep_denoised(index: int, latents: torch.Tensor, denoised: torch.Tensor) -> None:
        last["denoised"] = denoised

    samples = custom.sample(guider, sampler, sigmas, latent_image, noise, callback=keep_denoised)
    leftover_noise = len(sigmas) > 0 and float(sigmas[-1]) > 0
    output = hand_off({**latent_image, "samples": samples}, latent_image, leftover_noise)
    if "denoised" not in last:
        return output, output
    return output, hand_off({**latent_image, "samples": last["denoised"].float().cpu()}, latent_image, False)


_SAMPLED_OUTPUTS = ("The sampled latents (with any noise left at the last sigma).",
                    "The last step's estimate of the fully denoised latents.")


class SamplerCustom:
    DESCRIPTION = ("Samples a latent image along a given schedule (SIGMAS) with a chosen sampler (SAMPLER) and "
                   "classifier-free guidance: SamplerCustomAdvanced with RandomNoise (or none) and a CFGGuider.")
    CATEGORY = CUSTOM_SAMPLING
    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("output", "denoised_output")
    OUTPUT_TOOLTIPS = _SAMPLED_OUTPUTS
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model("The model used for denoising."),
            "add_noise": ("BOOLEAN", {"default": True, "tooltip": "Add seeded noise before the first step (off: "
                                                                   "continue from latents that are still noisy)."}),
            "noise_seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                   "tooltip": "The seed of the noise (also of the noise stochastic samplers add)."}),
            "cfg": _cfg("Classifier-free guidance scale: how closely to follow the positive conditioning."),
            "positive": ("CONDITIONING", {"tooltip": "What the image should show."}),
            "negative": ("CONDITIONING", {"tooltip": "What the image should not show."}),
            "sampler": ("SAMPLER", {"tooltip": "The sampling algorithm, with its options."}),
            "sigmas": _sigmas_input("The noise levels to step through, from the first to the last."),
            "latent_image": ("LATENT", {"tooltip": "The latent image to start from."}),
        }}

    def sample(self, model: DiffusionModel, add_noise: bool, noise_seed: int, cfg: float, positive: Conditioning,
               negative: Conditioning, sampler: SamplerChoice, sigmas: torch.Tensor,
               latent_image: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        noise = custom.RandomNoise(noise_seed) if add_noise else custom.DisableNoise(noise_seed)
        return _sample(noise, guiders.CFGGuider(model, positive, negative, cfg), sampler, sigmas, latent_image)


class SamplerCustomAdvanced:
    DESCRIPTION = ("Samples a latent image from its parts: the initial NOISE, a GUIDER (the model and how its "
                   "conditioning steers it), a SAMPLER and the SIGMAS to step through.")
    CATEGORY = CUSTOM_SAMPLING
    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("output", "denoised_output")
    OUTPUT_TOOLTIPS = _SAMPLED_OUTPUTS
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "noise": ("NOISE", {"tooltip": "The initial noise (RandomNoise or DisableNoise)."}),
            "guider": ("GUIDER", {"tooltip": "The model and its guidance (CFGGuider, BasicGuider, ...)."}),
            "sampler": ("SAMPLER", {"tooltip": "The sampling algorithm, with its options."}),
            "sigmas": _sigmas_input("The noise levels to step through, from the first to the last."),
            "latent_image": ("LATENT", {"tooltip": "The latent image to start from."}),
        }}

    def sample(self, noise: Noise, guider: Guider, sampler: SamplerChoice, sigmas: torch.Tensor,
               latent_image: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        return _sample(noise, guider, sampler, sigmas, latent_image)


# -- schedulers -------------------------------------------------------------------------------------------------------


class BasicScheduler:
    DESCRIPTION = "The sigmas of one of KSampler's schedulers for the model, with KSampler's handling of denoise."
    CATEGORY = SCHEDULERS
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model(),
            "scheduler": (list(sigma_schedules.SCHEDULER_NAMES), {"tooltip": "How the noise levels are spaced."}),
            "steps": _steps(),
            "denoise": _denoise(),
        }}

    def get_sigmas(self, model: DiffusionModel, scheduler: str, steps: int, denoise: float) -> tuple[torch.Tensor]:
        return (sigma_schedules.basic_scheduler_sigmas(model.model_sampling, scheduler, steps, denoise),)


class KarrasScheduler:
    DESCRIPTION = ("Karras et al.'s schedule: noise levels evenly spaced in sigma^(1/rho) between sigma_max and "
                   "sigma_min, then 0.")
    CATEGORY = SCHEDULERS
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "steps": _steps(), **_sigma_range(),
            "rho": _float(7.0, 0.0, 100.0, 0.01, "Larger values spend more steps at low noise.", round=False),
        }}

    ENGINE_CHECKS_ALL_INPUTS = True  # VALIDATE_INPUTS(**widgets) adds to the range and choice checks

    @classmethod
    def VALIDATE_INPUTS(cls, **widgets: Any) -> bool | str:
        return _verdict(_above_zero(widgets, "rho"))

    def get_sigmas(self, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple[torch.Tensor]:
        _raise_if(_above_zero({"rho": rho}, "rho"))
        return (sigma_schedules.karras_sigmas(steps, sigma_min, sigma_max, rho),)


class ExponentialScheduler:
    DESCRIPTION = "Noise levels evenly spaced in log sigma between sigma_max and sigma_min, then 0."
    CATEGORY = SCHEDULERS
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"steps": _steps(), **_sigma_range()}}

    ENGINE_CHECKS_ALL_INPUTS = True  # VALIDATE_INPUTS(**widgets) adds to the range and choice checks

    @classmethod
    def VALIDATE_INPUTS(cls, **widgets: Any) -> bool | str:
        return _verdict(_above_zero(widgets, "sigma_max", "sigma_min"))

    def get_sigmas(self, steps: int, sigma_max: float, sigma_min: float) -> tuple[torch.Tensor]:
        _raise_if(_above_zero({"sigma_max": sigma_max, "sigma_min": sigma_min}, "sigma_max", "sigma_min"))
        return (sigma_schedules.exponential_sigmas(steps, sigma_min, sigma_max),)


class PolyexponentialScheduler:
    DESCRIPTION = ("Log sigma following a ramp raised to rho between sigma_max and sigma_min, then 0 (rho 1: the "
                   "exponential schedule).")
    CATEGORY = SCHEDULERS
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "steps": _steps(), **_sigma_range(),
            "rho": _float(1.0, 0.0, 100.0, 0.01, "Larger values spend more steps at low noise.", round=False),
        }}

    ENGINE_CHECKS_ALL_INPUTS = True  # VALIDATE_INPUTS(**widgets) adds to the range and choice checks

    @classmethod
    def VALIDATE_INPUTS(cls, **widgets: Any) -> bool | str:
        return _verdict(_above_zero(widgets, "sigma_max", "sigma_min"))

    def get_sigmas(self, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple[torch.Tensor]:
        _raise_if(_above_zero({"sigma_max": sigma_max, "sigma_min": sigma_min}, "sigma_max", "sigma_min"))
        return (sigma_schedules.polyexponential_sigmas(steps, sigma_min, sigma_max, rho),)


class LaplaceScheduler:
    DESCRIPTION = ("Log sigma at the quantiles of a Laplace distribution, clamped to sigma_min..sigma_max: most "
                   "steps around sigma e^mu. Ends at sigma_min, not 0.")
    CATEGORY = SCHEDULERS
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "steps": _steps(), **_sigma_range(),
            "mu": _float(0.0, -10.0, 10.0, 0.1, "The log sigma the steps gather around.", round=False),
            "beta": _float(0.5, 0.0, 10.0, 0.1, "How widely the steps spread around mu.", round=False),
        }}

    def get_sigmas(self, steps: int, sigma_max: float, sigma_min: float, mu: float,
                   beta: float) -> tuple[torch.Tensor]:
        return (sigma_schedules.laplace_sigmas(steps, sigma_min, sigma_max, mu, beta),)


class VPScheduler:
    DESCRIPTION = "The continuous variance-preserving schedule (Song et al.) at evenly spaced times, then 0."
    CATEGORY = SCHEDULERS
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "steps": _steps(),
            "beta_d": _float(19.9, 0.0, 5000.0, 0.01, "How fast the noise grows over time.", round=False),
            "beta_min": _float(0.1, 0.0, 5000.0, 0.01, "The noise rate at time 0.", round=False),
            "eps_s": _float(0.001, 0.0, 1.0, 0.0001, "The time of the last step before 0.", round=False),
        }}

    def get_sigmas(self, steps: int, beta_d: float, beta_min: float, eps_s: float) -> tuple[torch.Tensor]:
        return (sigma_schedules.vp_sigmas(steps, beta_d, beta_min, eps_s),)


class BetaSamplingScheduler:
    DESCRIPTION = ("Entries of the model's noise table at the quantiles of a Beta(alpha, beta) distribution "
                   "(Lee et al. 2024); the defaults spend more steps at both ends.")
    CATEGORY = SCHEDULERS
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model(),
            "steps": _steps(),
            "alpha": _float(0.6, 0.0, 50.0, 0.01, "The Beta distribution's alpha: lower puts more steps at high "
                                                  "noise.", round=False),
            "beta": _float(0.6, 0.0, 50.0, 0.01, "The Beta distribution's beta: lower puts more steps at low "
                                                 "noise.", round=False),
        }}

    ENGINE_CHECKS_ALL_INPUTS = True  # VALIDATE_INPUTS(**widgets) adds to the range and choice checks

    @classmethod
    def VALIDATE_INPUTS(cls, **widgets: Any) -> bool | str:
        return _verdict(_above_zero(widgets, "alpha", "beta"))

    def get_sigmas(self, model: DiffusionModel, steps: int, alpha: float, beta: float) -> tuple[torch.Tensor]:
        _raise_if(_above_zero({"alpha": alpha, "beta": beta}, "alpha", "beta"))
        return (sigma_schedules.beta_sigmas(model.model_sampling, steps, alpha, beta),)


class SDTurboScheduler:
    DESCRIPTION = ("SD-Turbo's schedule: its distillation timesteps 999, 899, ..., 99 for the model, then 0; "
                   "denoise below 1 skips the first ones.")
    CATEGORY = SCHEDULERS
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model(),
            "steps": _steps(1, 10),
            "denoise": _float(1.0, 0, 1.0, 0.01, "Skips the first 10 - int(10 * denoise) timesteps (img2img)."),
        }}

    def get_sigmas(self, model: DiffusionModel, steps: int, denoise: float) -> tuple[torch.Tensor]:
        return (sigma_schedules.sd_turbo_sigmas(model.model_sampling, steps, denoise),)


class AlignYourStepsScheduler:
    DESCRIPTION = ("NVIDIA's Align Your Steps schedules, optimized per model type for 10 steps and interpolated "
                   "log-linearly to other step counts.")
    CATEGORY = SCHEDULERS
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model_type": (list(sigma_schedules.ALIGN_YOUR_STEPS_NOISE_LEVELS),
                           {"tooltip": "The model family the schedule was optimized for."}),
            "steps": _steps(10),
            "denoise": _denoise(),
        }}

    def get_sigmas(self, model_type: str, steps: int, denoise: float) -> tuple[torch.Tensor]:
        return (sigma_schedules.align_your_steps_sigmas(model_type, steps, denoise),)


def _gits_coeff_problem(values: Mapping[str, Any]) -> str | None:
    coeff = values.get("coeff")
    if coeff is None or round(coeff, 2) in sigma_schedules.GITS_NOISE_LEVELS:
        return None
    return (f"coeff: GITS has schedules for {', '.join(f'{c:.2f}' for c in sigma_schedules.GITS_NOISE_LEVELS)}, "
            f"not {coeff}")


class GITSScheduler:
    DESCRIPTION = ("GITS's schedules (Chen et al. 2024), searched for SD1 per coefficient: fewer steps at high "
                   "noise for larger coefficients.")
    CATEGORY = SCHEDULERS
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "coeff": _float(1.20, 0.80, 1.50, 0.05, "The schedule's coefficient (0.80 to 1.50 in steps of 0.05)."),
            "steps": _int(10, 2, 1000, "The number of sampling steps (beyond 20: the 20-step schedule "
                                       "interpolated)."),
            "denoise": _denoise(),
        }}

    ENGINE_CHECKS_ALL_INPUTS = True  # VALIDATE_INPUTS(**widgets) adds to the range and choice checks

    @classmethod
    def VALIDATE_INPUTS(cls, **widgets: Any) -> bool | str:
        return _verdict(_gits_coeff_problem(widgets))

    def get_sigmas(self, coeff: float, steps: int, denoise: float) -> tuple[torch.Tensor]:
        _raise_if(_gits_coeff_problem({"coeff": coeff}))
        return (sigma_schedules.gits_sigmas(coeff, steps, denoise),)


# -- sigma manipulations ----------------------------------------------------------------------------------------------


class SplitSigmas:
    DESCRIPTION = "Splits a schedule at a step: the steps before it and the steps from it, sharing that sigma."
    CATEGORY = SIGMAS
    RETURN_TYPES = ("SIGMAS", "SIGMAS")
    RETURN_NAMES = ("high_sigmas", "low_sigmas")
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "sigmas": _sigmas_input("The schedule to split."),
            "step": _int(0, 0, 10000, "The step to split at."),
        }}

    def get_sigmas(self, sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return sigma_schedules.split_sigmas(sigmas, step)


class SplitSigmasDenoise:
    DESCRIPTION = ("Splits a schedule by a denoise fraction: its last round(steps * denoise) steps as the low "
                   "part, what comes before as the high part.")
    CATEGORY = SIGMAS
    RETURN_TYPES = ("SIGMAS", "SIGMAS")
    RETURN_NAMES = ("high_sigmas", "low_sigmas")
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "sigmas": _sigmas_input("The schedule to split."),
            "denoise": _float(1.0, 0.0, 1.0, 0.01, "The fraction of the steps that goes to the low part."),
        }}

    def get_sigmas(self, sigmas: torch.Tensor, denoise: float) -> tuple[torch.Tensor, torch.Tensor]:
        return sigma_schedules.split_sigmas_denoise(sigmas, denoise)


class FlipSigmas:
    DESCRIPTION = ("Reverses a schedule, to step from the clean image towards noise (unsampling); a first sigma of "
                   "0 becomes 0.0001.")
    CATEGORY = SIGMAS
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"sigmas": _sigmas_input("The schedule to reverse.")}}

    def get_sigmas(self, sigmas: torch.Tensor) -> tuple[torch.Tensor]:
        return (sigma_schedules.flip_sigmas(sigmas),)


class SetFirstSigma:
    DESCRIPTION = "Replaces the first sigma of a schedule."
    CATEGORY = SIGMAS
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "set_first_sigma"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "sigmas": _sigmas_input("The schedule to change."),
            "sigma": _float(136.0, 0.0, 20000.0, 0.001, "The new first sigma.", round=False),
        }}

    def set_first_sigma(self, sigmas: torch.Tensor, sigma: float) -> tuple[torch.Tensor]:
        if len(sigmas) == 0:
            raise ValueError("sigmas: the schedule is empty; there is no first sigma to set")
        return (sigma_schedules.set_first_sigma(sigmas, sigma),)


class ExtendIntermediateSigmas:
    DESCRIPTION = ("Splits each step that starts between end_at_sigma and start_at_sigma into several smaller "
                   "steps.")
    CATEGORY = SIGMAS
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "extend"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "sigmas": _sigmas_input("The schedule to extend."),
            "steps": _int(2, 1, 100, "How many steps each affected step becomes."),
            "start_at_sigma": _float(-1.0, -1.0, 20000.0, 0.01, "Only steps starting at or below this sigma "
                                                                "(-1: no upper bound).", round=False),
            "end_at_sigma": _float(12.0, 0.0, 20000.0, 0.01, "Only steps starting at or above this sigma.",
                                   round=False),
            "spacing": (list(sigma_schedules.INTERMEDIATE_SPACINGS),
                        {"tooltip": "Where the new sigmas fall within a step: linear evenly, cosine nearer its "
                                    "end, sine nearer its start."}),
        }}

    def extend(self, sigmas: torch.Tensor, steps: int, start_at_sigma: float, end_at_sigma: float,
               spacing: str) -> tuple[torch.Tensor]:
        return (sigma_schedules.extend_intermediate_sigmas(sigmas, steps, start_at_sigma, end_at_sigma, spacing),)


class SamplingPercentToSigma:
    DESCRIPTION = "The model's noise level at a fraction of the way through sampling."
    CATEGORY = SIGMAS
    RETURN_TYPES = ("FLOAT",)
    RETURN_NAMES = ("sigma_value",)
    FUNCTION = "get_sigma"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model(),
            "sampling_percent": _float(0.0, 0.0, 1.0, 0.0001, "How far through sampling: 0 the start, 1 the end."),
            "return_actual_sigma": ("BOOLEAN", {
                "default": False, "tooltip": "At 0 and 1, the model's own largest and smallest sigma instead of the "
                                             "values beyond them used for interval checks."}),
        }}

    def get_sigma(self, model: DiffusionModel, sampling_percent: float, return_actual_sigma: bool) -> tuple[float]:
        return (sigma_schedules.sampling_percent_to_sigma(model.model_sampling, sampling_percent,
                                                          return_actual_sigma),)


# -- samplers ---------------------------------------------------------------------------------------------------------


class KSamplerSelect:
    DESCRIPTION = "Chooses one of KSampler's samplers by name, with its default options."
    CATEGORY = SAMPLERS
    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"sampler_name": (list(samplers.SAMPLER_NAMES), {"tooltip": "The sampling algorithm."})}}

    def get_sampler(self, sampler_name: str) -> tuple[SamplerChoice]:
        return (SamplerChoice(sampler_name),)


class _SamplerOptions:
    """What the Sampler* nodes share: each makes a SAMPLER (a sampler name with its options) from its widgets."""

    CATEGORY = SAMPLERS
    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"


def _on_device(name: str, noise_device: str) -> str:
    """The sampler name drawing its Brownian noise on `noise_device` (the `_gpu` variants: the model's device)."""
    return name if noise_device == "cpu" else f"{name}_gpu"


class SamplerEulerAncestral(_SamplerOptions):
    DESCRIPTION = "Euler steps that each add fresh noise (euler_ancestral), with its noise options."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"eta": _eta(), "s_noise": _s_noise()}}

    def get_sampler(self, eta: float, s_noise: float) -> tuple[SamplerChoice]:
        return (SamplerChoice("euler_ancestral", {"eta": eta, "s_noise": s_noise}),)


class SamplerEulerAncestralCFGPP(_SamplerOptions):
    DESCRIPTION = ("Ancestral Euler with CFG++ (euler_ancestral_cfg_pp): steps along the unguided estimate; for low "
                   "cfg values.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"eta": _eta(high=1.0), "s_noise": _s_noise(high=10.0)}}

    def get_sampler(self, eta: float, s_noise: float) -> tuple[SamplerChoice]:
        return (SamplerChoice("euler_ancestral_cfg_pp", {"eta": eta, "s_noise": s_noise}),)


class SamplerLMS(_SamplerOptions):
    DESCRIPTION = "Linear multistep (lms) of a chosen order."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"order": _int(4, 1, 100, "How many earlier estimates each step combines.")}}

    def get_sampler(self, order: int) -> tuple[SamplerChoice]:
        return (SamplerChoice("lms", {"order": order}),)


class SamplerDPMPP_3M_SDE(_SamplerOptions):
    DESCRIPTION = "DPM-Solver++(3M) SDE (dpmpp_3m_sde), with its noise options."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"eta": _eta(), "s_noise": _s_noise(), "noise_device": _noise_device()}}

    def get_sampler(self, eta: float, s_noise: float, noise_device: str) -> tuple[SamplerChoice]:
        return (SamplerChoice(_on_device("dpmpp_3m_sde", noise_device), {"eta": eta, "s_noise": s_noise}),)


class SamplerDPMPP_2M_SDE(_SamplerOptions):
    DESCRIPTION = "DPM-Solver++(2M) SDE (dpmpp_2m_sde), with its solver and noise options."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "solver_type": (["midpoint", "heun"], {"tooltip": "The second-order correction: midpoint or heun."}),
            "eta": _eta(), "s_noise": _s_noise(), "noise_device": _noise_device(),
        }}

    def get_sampler(self, solver_type: str, eta: float, s_noise: float, noise_device: str) -> tuple[SamplerChoice]:
        return (SamplerChoice(_on_device("dpmpp_2m_sde", noise_device),
                              {"eta": eta, "s_noise": s_noise, "solver_type": solver_type}),)


class SamplerDPMPP_SDE(_SamplerOptions):
    DESCRIPTION = "DPM-Solver++ SDE (dpmpp_sde), with its noise options and the place of its midpoint."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "eta": _eta(), "s_noise": _s_noise(),
            "r": _float(0.5, 0.0, 100.0, 0.01, "Where the intermediate evaluation falls within a step.",
                        round=False),
            "noise_device": _noise_device(),
        }}

    def get_sampler(self, eta: float, s_noise: float, r: float, noise_device: str) -> tuple[SamplerChoice]:
        return (SamplerChoice(_on_device("dpmpp_sde", noise_device), {"eta": eta, "s_noise": s_noise, "r": r}),)


class SamplerDPMPP_2S_Ancestral(_SamplerOptions):
    DESCRIPTION = "DPM-Solver++(2S) ancestral (dpmpp_2s_ancestral), with its noise options."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"eta": _eta(), "s_noise": _s_noise()}}

    def get_sampler(self, eta: float, s_noise: float) -> tuple[SamplerChoice]:
        return (SamplerChoice("dpmpp_2s_ancestral", {"eta": eta, "s_noise": s_noise}),)


class SamplerDPMAdaptative(_SamplerOptions):
    DESCRIPTION = ("Adaptive-step DPM-Solver (dpm_adaptive): chooses its own steps between the first and last sigma "
                   "to stay within the error tolerances.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        def option(default: float, tooltip: str) -> tuple[str, dict]:
            return _float(default, 0.0, 100.0, 0.01, tooltip, round=False)

        return {"required": {
            "order": _int(3, 2, 3, "The solver's order."),
            "rtol": option(0.05, "The relative error tolerance of a step."),
            "atol": option(0.0078, "The absolute error tolerance of a step."),
            "h_init": option(0.05, "The first step size."),
            "pcoeff": option(0.0, "Step-size controller: the proportional coefficient."),
            "icoeff": option(1.0, "Step-size controller: the integral coefficient."),
            "dcoeff": option(0.0, "Step-size controller: the derivative coefficient."),
            "accept_safety": option(0.81, "How far below the tolerance a step's error must be to accept it."),
            "eta": _eta(default=0.0),
            "s_noise": _s_noise(),
        }}

    def get_sampler(self, **options: Any) -> tuple[SamplerChoice]:
        return (SamplerChoice("dpm_adaptive", options),)


class SamplerER_SDE(_SamplerOptions):
    DESCRIPTION = ("The extended reverse-time SDE solver (er_sde), as ER-SDE, a plain reverse-time SDE or the ODE.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "solver_type": (["ER-SDE", "Reverse-time SDE", "ODE"], {
                "tooltip": "ER-SDE: its own noise scale; Reverse-time SDE: noise of strength eta; ODE: no noise."}),
            "max_stage": _int(3, 1, 3, "The solver's highest stage (order)."),
            "eta": _float(1.0, 0.0, 100.0, 0.01, "The reverse-time SDE's stochastic strength (0: the ODE); unused "
                                                 "by ER-SDE.", round=False),
            "s_noise": _s_noise(),
        }}

    def get_sampler(self, solver_type: str, max_stage: int, eta: float, s_noise: float) -> tuple[SamplerChoice]:
        return (SamplerChoice("er_sde", {"solver_type": solver_type, "max_stage": max_stage, "eta": eta,
                                         "s_noise": s_noise}),)


class SamplerSASolver(_SamplerOptions):
    DESCRIPTION = ("SA-Solver (sa_solver): a stochastic Adams predictor-corrector, adding noise only within the SDE "
                   "interval.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model("The model being sampled: the SDE interval's percentages are read on its schedule."),
            "eta": _float(1.0, 0.0, 10.0, 0.01, "The stochastic strength within the SDE interval (0: none).",
                          round=False),
            "sde_start_percent": _float(0.2, 0.0, 1.0, 0.001, "Where the SDE interval starts, as a fraction of "
                                                              "sampling."),
            "sde_end_percent": _float(0.8, 0.0, 1.0, 0.001, "Where the SDE interval ends, as a fraction of "
                                                            "sampling."),
            "s_noise": _s_noise(),
            "predictor_order": _int(3, 1, 6, "How many estimates the predictor combines."),
            "corrector_order": _int(4, 0, 6, "How many estimates the corrector combines (0: no corrector)."),
            "use_pece": ("BOOLEAN", {"default": False, "tooltip": "Evaluate the model again on the corrected "
                                                                   "state (one more evaluation per step)."}),
            "simple_order_2": ("BOOLEAN", {"default": False, "tooltip": "Use the simpler second-order weights."}),
        }}

    def get_sampler(self, model: DiffusionModel, **options: Any) -> tuple[SamplerChoice]:
        # the sampler converts the percentages on the schedule of the model it samples, which is this one
        return (SamplerChoice("sa_solver", options),)


# -- noise and guiders ------------------------------------------------------------------------------------------------


class RandomNoise:
    DESCRIPTION = "Seeded initial noise, the same as KSampler's for the same seed."
    CATEGORY = NOISE
    RETURN_TYPES = ("NOISE",)
    FUNCTION = "get_noise"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"noise_seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED,
                                                    "control_after_generate": True,
                                                    "tooltip": "The seed of the noise."})}}

    def get_noise(self, noise_seed: int) -> tuple[custom.RandomNoise]:
        return (custom.RandomNoise(noise_seed),)


class DisableNoise:
    DESCRIPTION = "No initial noise: sampling continues from the latents as they are."
    CATEGORY = NOISE
    RETURN_TYPES = ("NOISE",)
    FUNCTION = "get_noise"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {}}

    def get_noise(self) -> tuple[custom.DisableNoise]:
        return (custom.DisableNoise(),)


class AddNoise:
    DESCRIPTION = ("Adds noise to a latent image as the model's schedule mixes it in, at the noise level spanned by "
                   "the sigmas (their first minus their last).")
    CATEGORY = "_for_testing/custom_sampling/noise"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "add_noise"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model("The model whose noise scaling is used."),
            "noise": ("NOISE", {"tooltip": "The noise to add."}),
            "sigmas": _sigmas_input("The schedule whose span sets the noise level (one sigma: that level)."),
            "latent_image": ("LATENT", {"tooltip": "The latent image to noise."}),
        }}

    def add_noise(self, model: DiffusionModel, noise: Noise, sigmas: torch.Tensor,
                  latent_image: dict[str, Any]) -> tuple[dict[str, Any]]:
        if len(sigmas) == 0:
            return (latent_image,)
        return ({**latent_image, "samples": custom.add_noise(model, noise, sigmas, latent_image)},)


class BasicGuider:
    DESCRIPTION = "Guides the model by one conditioning, without a negative (cfg 1; for distilled models like FLUX)."
    CATEGORY = GUIDERS
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model("The model used for denoising."),
            "conditioning": ("CONDITIONING", {"tooltip": "What the image should show."}),
        }}

    def get_guider(self, model: DiffusionModel, conditioning: Conditioning) -> tuple[guiders.CFGGuider]:
        return (guiders.basic_guider(model, conditioning),)


class CFGGuider:
    DESCRIPTION = "Classifier-free guidance: the positive conditioning's estimate pushed away from the negative's."
    CATEGORY = GUIDERS
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model("The model used for denoising."),
            "positive": ("CONDITIONING", {"tooltip": "What the image should show."}),
            "negative": ("CONDITIONING", {"tooltip": "What the image should not show."}),
            "cfg": _cfg("The guidance scale: how closely to follow the positive conditioning (1: no negative)."),
        }}

    def get_guider(self, model: DiffusionModel, positive: Conditioning, negative: Conditioning,
                   cfg: float) -> tuple[guiders.CFGGuider]:
        return (guiders.CFGGuider(model, positive, negative, cfg),)


class DualCFGGuider:
    DESCRIPTION = ("Guidance by two conditionings and a negative, with a scale each: regular adds cond1's "
                   "difference from cond2 to cond2 guided against the negative; nested guides cond1 against cond2, "
                   "then that against the negative.")
    CATEGORY = GUIDERS
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model("The model used for denoising."),
            "cond1": ("CONDITIONING", {"tooltip": "The first conditioning (the full prompt)."}),
            "cond2": ("CONDITIONING", {"tooltip": "The second conditioning, between cond1 and the negative."}),
            "negative": ("CONDITIONING", {"tooltip": "What the image should not show."}),
            "cfg_conds": _cfg("The scale of cond1 against cond2."),
            "cfg_cond2_negative": _cfg("The scale of cond2 against the negative."),
            "style": (["regular", "nested"], {"tooltip": "regular: the two guidances added; nested: one inside "
                                                         "the other."}),
        }}

    def get_guider(self, model: DiffusionModel, cond1: Conditioning, cond2: Conditioning, negative: Conditioning,
                   cfg_conds: float, cfg_cond2_negative: float, style: str) -> tuple[guiders.DualCFGGuider]:
        return (guiders.DualCFGGuider(model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative,
                                      nested=style == "nested"),)


class PerpNegGuider:
    DESCRIPTION = ("Perp-Neg guidance: away from the negative only in the direction perpendicular to the positive, "
                   "both measured from an empty prompt, so the negative cannot cancel the positive.")
    CATEGORY = "_for_testing"
    EXPERIMENTAL = True
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": _model("The model used for denoising."),
            "positive": ("CONDITIONING", {"tooltip": "What the image should show."}),
            "negative": ("CONDITIONING", {"tooltip": "What the image should not show."}),
            "empty_conditioning": ("CONDITIONING", {"tooltip": "The empty prompt's conditioning, the origin of "
                                                              "both directions."}),
            "cfg": _cfg("The guidance scale along the positive direction."),
            "neg_scale": _float(1.0, 0.0, 100.0, 0.01, "How strongly to move away from the negative (0: not at "
                                                       "all)."),
        }}

    def get_guider(self, model: DiffusionModel, positive: Conditioning, negative: Conditioning,
                   empty_conditioning: Conditioning, cfg: float, neg_scale: float) -> tuple[guiders.PerpNegGuider]:
        return (guiders.PerpNegGuider(model, positive, negative, empty_conditioning, cfg, neg_scale),)


NODE_CLASS_MAPPINGS: dict[str, type] = {node.__name__: node for node in (
    SamplerCustom, SamplerCustomAdvanced,
    BasicScheduler, KarrasScheduler, ExponentialScheduler, PolyexponentialScheduler, VPScheduler,
    BetaSamplingScheduler, SDTurboScheduler, AlignYourStepsScheduler, LaplaceScheduler, GITSScheduler,
    SplitSigmas, SplitSigmasDenoise, FlipSigmas, SetFirstSigma, ExtendIntermediateSigmas, SamplingPercentToSigma,
    KSamplerSelect, SamplerEulerAncestral, SamplerEulerAncestralCFGPP, SamplerLMS, SamplerDPMPP_2M_SDE,
    SamplerDPMPP_3M_SDE, SamplerDPMPP_SDE, SamplerDPMPP_2S_Ancestral, SamplerDPMAdaptative, SamplerER_SDE,
    SamplerSASolver,
    RandomNoise, DisableNoise, AddNoise, BasicGuider, CFGGuider, DualCFGGuider, PerpNegGuider,
)}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    **{name: name for name in NODE_CLASS_MAPPINGS},
    "SamplerEulerAncestralCFGPP": "SamplerEulerAncestralCFG++",
}
