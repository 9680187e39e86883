"""The denoising loop behind KSampler: ComfyUI sampler/scheduler names mapped onto diffusers schedulers.

The loop is diffusers' StableDiffusionPipeline loop, step for step (initial noise from a CPU `torch.Generator`
seeded with the seed, `scale_model_input`, one UNet call for [negative, positive], classifier-free guidance,
`scheduler.step` with the same generator), so the same model, seed and settings give the same latents as the
pipeline. `denoise` follows ComfyUI: `steps` steps are run, taken from the end of a schedule of
`int(steps / denoise)` steps (with diffusers' img2img noise at the first of them); for settings where
`int(total * denoise) == steps` that is exactly StableDiffusionImg2ImgPipeline with `strength=denoise`.

Scheduler names are diffusers' timestep/sigma spacing options under ComfyUI's names: `normal` keeps the
model's own scheduler config (what diffusers uses by default), `karras`/`exponential`/`beta` space sigmas
(only for sigma-based samplers), `sgm_uniform` is "trailing" spacing, `simple` "linspace", `ddim_uniform`
"leading". Timesteps are diffusers', not bit-identical to ComfyUI's own samplers.
Knows nothing of nodes; reports progress through `engine.progress` (which also raises on interrupt).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from engine.progress import report_progress
from nodes.models.components import DiffusionModel
from nodes.models.lora import UNET, lora_applied
from nodes.models.text_encoding import Conditioning


@dataclass(frozen=True)
class SamplerChoice:
    scheduler_class: str
    options: Mapping[str, Any]


SAMPLERS: dict[str, SamplerChoice] = {
    "euler": SamplerChoice("EulerDiscreteScheduler", {}),
    "euler_ancestral": SamplerChoice("EulerAncestralDiscreteScheduler", {}),
    "heun": SamplerChoice("HeunDiscreteScheduler", {}),
    "dpm_2": SamplerChoice("KDPM2DiscreteScheduler", {}),
    "dpm_2_ancestral": SamplerChoice("KDPM2AncestralDiscreteScheduler", {}),
    "lms": SamplerChoice("LMSDiscreteScheduler", {}),
    "dpmpp_2m": SamplerChoice("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_sde": SamplerChoice("DPMSolverMultistepScheduler",
                                  {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "dpmpp_sde": SamplerChoice("DPMSolverSDEScheduler", {}),
    "deis": SamplerChoice("DEISMultistepScheduler", {}),
    "uni_pc": SamplerChoice("UniPCMultistepScheduler", {}),
    "ddim": SamplerChoice("DDIMScheduler", {}),
    "ddpm": SamplerChoice("DDPMScheduler", {}),
    "pndm": SamplerChoice("PNDMScheduler", {}),
    "lcm": SamplerChoice("LCMScheduler", {}),
}

SCHEDULERS: dict[str, dict[str, Any]] = {
    "normal": {},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "beta": {"use_beta_sigmas": True},
    "sgm_uniform": {"timestep_spacing": "trailing"},
    "simple": {"timestep_spacing": "linspace"},
    "ddim_uniform": {"timestep_spacing": "leading"},
}


def make_scheduler(model_config: Mapping[str, Any], sampler_name: str, scheduler_name: str, seed: int) -> Any:
    """A fresh diffusers scheduler for a sampler/scheduler pair, built from the model's scheduler config."""
    import diffusers

    if sampler_name not in SAMPLERS:
        raise ValueError(f"sampler_name: unknown sampler {sampler_name!r}; known: {', '.join(SAMPLERS)}")
    if scheduler_name not in SCHEDULERS:
        raise ValueError(f"scheduler: unknown scheduler {scheduler_name!r}; known: {', '.join(SCHEDULERS)}")
    choice = SAMPLERS[sampler_name]
    scheduler_class = getattr(diffusers, choice.scheduler_class)
    accepted = inspect.signature(scheduler_class.__init__).parameters
    overrides = dict(choice.options)
    for option, value in SCHEDULERS[scheduler_name].items():
        if option not in accepted:
            raise ValueError(f"scheduler: {scheduler_name!r} is not available with sampler {sampler_name!r}")
        overrides[option] = value
    if "noise_sampler_seed" in accepted:
        overrides["noise_sampler_seed"] = seed
    return scheduler_class.from_config(dict(model_config), **overrides)


def _lcm_repeat(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Repeat token sequences to a common length (their least common multiple), as ComfyUI does."""
    lengths = [tensor.shape[1] for tensor in tensors]
    common = math.lcm(*lengths)
    return [tensor.repeat(1, common // tensor.shape[1], 1) for tensor in tensors]


@dataclass(frozen=True)
class GuidanceBatch:
    """Text embeddings for one UNet call: negatives first, then positives, each `batch` rows."""

    embeddings: torch.Tensor
    negative_weights: list[float]
    positive_weights: list[float]
    uses_negative: bool


def _entries(conditioning: Conditioning, input_name: str) -> list[tuple[torch.Tensor, float]]:
    if not conditioning:
        raise ValueError(f"{input_name}: empty conditioning")
    return [(entry[0], float(entry[1].get("strength", 1.0)) if len(entry) > 1 else 1.0) for entry in conditioning]


def guidance_batch(positive: Conditioning, negative: Conditioning, batch: int, cfg: float,
                   device: torch.device, dtype: torch.dtype) -> GuidanceBatch:
    positives = _entries(positive, "positive")
    negatives = _entries(negative, "negative") if cfg != 1.0 else []
    tensors = _lcm_repeat([tensor for tensor, _ in negatives + positives])
    rows = [tensor.expand(batch, -1, -1) if tensor.shape[0] == 1 else tensor for tensor in tensors]
    for row in rows:
        if row.shape[0] != batch:
            raise ValueError(f"conditioning batch {row.shape[0]} does not match the latent batch {batch}")
    return GuidanceBatch(torch.cat(rows).to(device, dtype), [w for _, w in negatives], [w for _, w in positives],
                         bool(negatives))


def _weighted_mean(predictions: torch.Tensor, weights: list[float], batch: int) -> torch.Tensor:
    groups = predictions.split(batch)
    total = sum(weight * group for weight, group in zip(weights, groups))
    return total / sum(weights)


def _guided(noise_pred: torch.Tensor, guidance: GuidanceBatch, batch: int, cfg: float) -> torch.Tensor:
    negative_count = len(guidance.negative_weights)
    negative_rows = negative_count * batch
    positive = _weighted_mean(noise_pred[negative_rows:], guidance.positive_weights, batch)
    if not guidance.uses_negative:
        return positive
    negative = _weighted_mean(noise_pred[:negative_rows], guidance.negative_weights, batch)
    return negative + cfg * (positive - negative)


def _step_kwargs(scheduler: Any, generator: torch.Generator) -> dict[str, Any]:
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


@dataclass(frozen=True)
class SamplingRange:
    """Which steps of a `total`-step schedule to run, and how to start and finish."""

    total: int
    start: int
    end: int
    add_noise: bool = True
    return_with_leftover_noise: bool = False

    @classmethod
    def from_denoise(cls, steps: int, denoise: float) -> "SamplingRange":
        total = steps if denoise >= 1.0 else int(steps / denoise)
        return cls(total, total - steps, total)


def initial_noise(latent: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(tuple(latent.shape), generator=generator, device=torch.device("cpu"), dtype=torch.float32)


@torch.inference_mode()
def sample(model: DiffusionModel, seed: int, cfg: float, sampler_name: str, scheduler_name: str,
           positive: Conditioning, negative: Conditioning, latent: torch.Tensor,
           steps: SamplingRange) -> torch.Tensor:
    """Denoise `latent` (float32 [B, 4, h, w]) over `steps`; returns float32 CPU latents."""
    if steps.start >= steps.end:
        return latent.clone()
    unet, device, dtype = model.unet, model.device, model.dtype
    batch = latent.shape[0]
    generator = torch.Generator("cpu").manual_seed(seed)

    # 1. Timesteps: the part of the schedule this call runs.
    scheduler = make_scheduler(model.scheduler_config, sampler_name, scheduler_name, seed)
    scheduler.set_timesteps(steps.total, device=device)
    order = scheduler.order
    stop = None if steps.end >= steps.total else steps.end * order  # PNDM's schedule has one extra entry
    timesteps = scheduler.timesteps[steps.start * order:stop]
    if steps.start > 0 and hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(steps.start * order)

    # 2. Starting latents: noise as txt2img (a full schedule) or img2img (a later start) would add it.
    latents = latent.to(device, dtype)
    if steps.add_noise:
        noise = initial_noise(latent, generator).to(device, dtype)
        if steps.start == 0:
            latents = latents + noise * scheduler.init_noise_sigma
        else:
            latents = scheduler.add_noise(latents, noise, timesteps[:1].repeat(batch))

    # 3. Conditioning for one UNet call per step.
    guidance = guidance_batch(positive, negative, batch, cfg, device, dtype)
    copies = len(guidance.negative_weights) + len(guidance.positive_weights)
    step_kwargs = _step_kwargs(scheduler, generator)
    finish_clean = steps.end < steps.total and not steps.return_with_leftover_noise

    # 4. Denoising loop.
    with lora_applied(unet, UNET, model.loras):
        for index, timestep in enumerate(timesteps):
            model_input = torch.cat([latents] * copies) if copies > 1 else latents
            model_input = scheduler.scale_model_input(model_input, timestep)
            noise_pred = unet(model_input, timestep, encoder_hidden_states=guidance.embeddings, return_dict=False)[0]
            noise_pred = _guided(noise_pred, guidance, batch, cfg)
            output = scheduler.step(noise_pred, timestep, latents, **step_kwargs, return_dict=True)
            latents = output.prev_sample
            if finish_clean and index == len(timesteps) - 1:
                latents = _clean_prediction(output, sampler_name)
            report_progress(index + 1, len(timesteps))
    return latents.float().cpu()


def _clean_prediction(output: Any, sampler_name: str) -> torch.Tensor:
    clean = getattr(output, "pred_original_sample", None)
    if clean is None:
        clean = getattr(output, "denoised", None)
    if clean is None:
        raise ValueError(f"return_with_leftover_noise: sampler {sampler_name!r} cannot stop early with a "
                         "fully denoised result; enable return_with_leftover_noise or use another sampler")
    return clean
