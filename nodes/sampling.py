"""Sampler nodes: KSampler and KSamplerAdvanced, with ComfyUI's inputs and results (`diffusion.sampling.ksampler`:
ComfyUI's samplers over its sigma schedules, or the model's diffusers scheduler with scheduler `diffusers`).

Knows nothing of HTTP or the executor; progress and interrupts go through `engine.progress`.
"""
from __future__ import annotations

from typing import Any

from diffusion.components import DiffusionModel
from diffusion.contracts import Conditioning
from diffusion.sampling.editing import hand_off
from diffusion.sampling.ksampler import ksample, sampler_names, scheduler_names
from nodes.model_facts import sampler_choice

MAX_SEED = 0xFFFFFFFFFFFFFFFF


def _common_inputs() -> dict[str, Any]:
    return {
        "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "The number of denoising steps."}),
        "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                          "tooltip": "Classifier-free guidance scale: how closely to follow the prompt."}),
        "sampler_name": (sampler_names(), {"tooltip": "The sampling algorithm."}),
        "scheduler": (scheduler_names(), {
            "tooltip": "How the noise levels are spaced over the steps; diffusers: the model's own diffusers "
                       "scheduler (diffusers' pipelines' results, for the samplers diffusers has)."}),
        "positive": ("CONDITIONING", {"tooltip": "What the image should show."}),
        "negative": ("CONDITIONING", {"tooltip": "What the image should not show."}),
        "latent_image": ("LATENT", {"tooltip": "The latent image to denoise."}),
    }


def _with_samples(latent: dict[str, Any], samples: Any) -> dict[str, Any]:
    result = dict(latent)
    result["samples"] = samples
    return result


def common_ksampler(model: DiffusionModel, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                    positive: Conditioning, negative: Conditioning, latent: dict[str, Any], denoise: float = 1.0,
                    disable_noise: bool = False, start_step: int | None = None, last_step: int | None = None,
                    force_full_denoise: bool = False) -> tuple[dict[str, Any]]:
    """ComfyUI's `nodes.common_ksampler`, which plugins call: sample `latent` and return `(LATENT,)`, the input
    latent dict with the denoised samples (steps start_step..last_step of `steps` when given)."""
    samples = ksample(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, denoise,
                      add_noise=not disable_noise, start_step=start_step, last_step=last_step,
                      force_full_denoise=force_full_denoise)
    leftover = not force_full_denoise and last_step is not None and last_step < steps
    return (hand_off(_with_samples(latent, samples), latent, leftover),)


class KSampler:
    DESCRIPTION = ("Denoises a latent image with the model, guided by the positive and negative conditioning. "
                   "denoise below 1 keeps part of the input (img2img): steps run from the end of a longer schedule.")
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        common = _common_inputs()
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model used for denoising."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                             "tooltip": "The seed of the initial noise."}),
            **{name: common[name] for name in ("steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                                               "latent_image")},
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "How much of the latent to replace with noise and denoise."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, input_facts: dict[str, Any], **widgets: Any) -> bool | str:
        return sampler_choice(input_facts, widgets)

    def sample(self, model: DiffusionModel, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
               positive: Conditioning, negative: Conditioning, latent_image: dict[str, Any],
               denoise: float = 1.0) -> tuple[dict[str, Any]]:
        return common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                               denoise=denoise)


class KSamplerAdvanced:
    DESCRIPTION = ("KSampler over part of a schedule: run steps start_at_step..end_at_step of `steps`, with or "
                   "without adding noise first and with or without the leftover noise at the end (for multi-pass "
                   "workflows).")
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        common = _common_inputs()
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model used for denoising."}),
            "add_noise": (["enable", "disable"], {"tooltip": "Add seeded noise before the first step."}),
            "noise_seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                   "tooltip": "The seed of the noise."}),
            **{name: common[name] for name in ("steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                                               "latent_image")},
            "start_at_step": ("INT", {"default": 0, "min": 0, "max": 10000, "tooltip": "The first step to run."}),
            "end_at_step": ("INT", {"default": 10000, "min": 0, "max": 10000,
                                    "tooltip": "The step to stop before (beyond `steps` means the end)."}),
            "return_with_leftover_noise": (["disable", "enable"], {
                "tooltip": "enable: stop with the noise that is left; disable: return the fully denoised estimate."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, input_facts: dict[str, Any], **widgets: Any) -> bool | str:
        return sampler_choice(input_facts, widgets)

    def sample(self, model: DiffusionModel, add_noise: str, noise_seed: int, steps: int, cfg: float,
               sampler_name: str, scheduler: str, positive: Conditioning, negative: Conditioning,
               latent_image: dict[str, Any], start_at_step: int, end_at_step: int,
               return_with_leftover_noise: str) -> tuple[dict[str, Any]]:
        return common_ksampler(model, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
                               latent_image, disable_noise=add_noise != "enable", start_step=start_at_step,
                               last_step=end_at_step, force_full_denoise=return_with_leftover_noise != "enable")
