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
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from engine.progress import report_progress
from nodes.previews import LatentPreview
from nodes.models import editing
from nodes.models.components import DiffusionModel
from nodes.models.lora import UNET, lora_applied
from nodes.models.speedups import speedups_applied
from nodes.models.text_encoding import Conditioning


@dataclass(frozen=True)
class SamplerChoice:
    scheduler_class: str
    options: Mapping[str, Any]
    requires: tuple[str, ...] = ()  # optional packages the diffusers scheduler imports


SAMPLERS: dict[str, SamplerChoice] = {
    "euler": SamplerChoice("EulerDiscreteScheduler", {}),
    "euler_ancestral": SamplerChoice("EulerAncestralDiscreteScheduler", {}),
    "heun": SamplerChoice("HeunDiscreteScheduler", {}),
    "dpm_2": SamplerChoice("KDPM2DiscreteScheduler", {}),
    "dpm_2_ancestral": SamplerChoice("KDPM2AncestralDiscreteScheduler", {}),
    "lms": SamplerChoice("LMSDiscreteScheduler", {}, ("scipy",)),
    "dpmpp_2m": SamplerChoice("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_sde": SamplerChoice("DPMSolverMultistepScheduler",
                                  {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "dpmpp_sde": SamplerChoice("DPMSolverSDEScheduler", {}, ("scipy", "torchsde")),
    "deis": SamplerChoice("DEISMultistepScheduler", {}),
    "uni_pc": SamplerChoice("UniPCMultistepScheduler", {}),
    "ddim": SamplerChoice("DDIMScheduler", {}),
    "ddpm": SamplerChoice("DDPMScheduler", {}),
    "pndm": SamplerChoice("PNDMScheduler", {}),
    "lcm": SamplerChoice("LCMScheduler", {}),
}

SCHEDULER_REQUIRES = {"beta": ("scipy",)}
SCHEDULERS: dict[str, dict[str, Any]] = {
    "normal": {},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "beta": {"use_beta_sigmas": True},
    "sgm_uniform": {"timestep_spacing": "trailing"},
    "simple": {"timestep_spacing": "linspace"},
    "ddim_uniform": {"timestep_spacing": "leading"},
}


def _installed(packages: tuple[str, ...]) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(package) is not None for package in packages)


def available_samplers() -> list[str]:
    """Sampler names whose diffusers scheduler can be built here (lms and dpmpp_sde need scipy/torchsde)."""
    return [name for name, choice in SAMPLERS.items() if _installed(choice.requires)]


def available_schedulers() -> list[str]:
    return [name for name in SCHEDULERS if _installed(SCHEDULER_REQUIRES.get(name, ()))]


def make_scheduler(model_config: Mapping[str, Any], sampler_name: str, scheduler_name: str, seed: int) -> Any:
    """A fresh diffusers scheduler for a sampler/scheduler pair, built from the model's scheduler config."""
    import diffusers

    if sampler_name not in available_samplers():
        raise ValueError(f"sampler_name: unknown sampler {sampler_name!r}; known: {', '.join(available_samplers())}")
    if scheduler_name not in available_schedulers():
        raise ValueError(f"scheduler: unknown scheduler {scheduler_name!r}; known: {', '.join(available_schedulers())}")
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
    """Text embeddings for one UNet call: negatives first, then positives, each `batch` rows; `options` are the
    conditioning entries' option dicts (pooled output, sizes, ...) in the same order."""

    embeddings: torch.Tensor
    negative_weights: list[float]
    positive_weights: list[float]
    uses_negative: bool
    options: tuple[Mapping[str, Any], ...] = ()
    concat: torch.Tensor | None = None  # extra input channels per row (inpainting and InstructPix2Pix UNets)
    unconditional_weights: list[float] = field(default_factory=list)  # three-way guidance rows, last
    image_cfg: float | None = None


def _entries(conditioning: Conditioning, input_name: str) -> list[tuple[torch.Tensor, float, Mapping[str, Any]]]:
    if not conditioning:
        raise ValueError(f"{input_name}: empty conditioning")
    return [(entry[0], float(entry[1].get("strength", 1.0)) if len(entry) > 1 else 1.0,
             entry[1] if len(entry) > 1 else {}) for entry in conditioning]


def guidance_batch(positive: Conditioning, negative: Conditioning, batch: int, cfg: float,
                   device: torch.device, dtype: torch.dtype, edit: editing.EditInputs | None = None) -> GuidanceBatch:
    positives = _entries(positive, "positive")
    image_cfg = edit.image_cfg if edit is not None else None
    negatives = _entries(negative, "negative") if cfg != 1.0 or image_cfg is not None else []
    unconditionals = negatives if image_cfg is not None else []  # negative text without the image
    tensors = _lcm_repeat([tensor for tensor, _, _ in negatives + positives + unconditionals])
    rows = [tensor.expand(batch, -1, -1) if tensor.shape[0] == 1 else tensor for tensor in tensors]
    for row in rows:
        if row.shape[0] != batch:
            raise ValueError(f"conditioning batch {row.shape[0]} does not match the latent batch {batch}")
    concat = editing.concat_rows(edit, [options for _, _, options in negatives + positives], len(unconditionals))
    return GuidanceBatch(torch.cat(rows).to(device, dtype), [w for _, w, _ in negatives],
                         [w for _, w, _ in positives], bool(negatives),
                         tuple(options for _, _, options in negatives + positives),
                         None if concat is None else concat.to(device, dtype), [w for _, w, _ in unconditionals],
                         image_cfg)


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
    if guidance.image_cfg is None:
        return negative + cfg * (positive - negative)
    unconditional_rows = noise_pred[negative_rows + len(guidance.positive_weights) * batch:]
    unconditional = _weighted_mean(unconditional_rows, guidance.unconditional_weights, batch)
    return unconditional + cfg * (positive - negative) + guidance.image_cfg * (negative - unconditional)


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


class UNetSampling:
    """How the loop drives a model family's network. This one is for SD1.x/SD2.x UNets (noise or v prediction
    with the diffusers schedulers above); a family that differs (SDXL's added inputs, SD3's flow matching) puts
    a subclass on its DiffusionModel (`DiffusionModel.sampling`) that overrides only what differs."""

    lora_component = UNET

    def make_scheduler(self, config: Mapping[str, Any], sampler_name: str, scheduler_name: str, seed: int) -> Any:
        return make_scheduler(config, sampler_name, scheduler_name, seed)

    def set_timesteps(self, scheduler: Any, total: int, latents: torch.Tensor, device: torch.device) -> None:
        """The schedule of `total` steps (FLUX's depends on the image size, so the latents are passed)."""
        scheduler.set_timesteps(total, device=device)

    def noised(self, scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, first_timestep: torch.Tensor,
               start: int) -> torch.Tensor:
        """Latents with the starting noise: txt2img's for a full schedule, img2img's for a later start."""
        if start == 0:
            return latents + noise * scheduler.init_noise_sigma
        return scheduler.add_noise(latents, noise, first_timestep.repeat(latents.shape[0]))

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        """Network inputs besides the text embeddings, from the conditioning entries' options
        (`guidance.options`, negatives first)."""
        return {}

    def predict(self, network: Any, scheduler: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        model_input = scheduler.scale_model_input(model_input, timestep)
        return network(model_input, timestep, encoder_hidden_states=embeddings, return_dict=False, **inputs)[0]

    def denoised(self, scheduler: Any, output: Any, latents: torch.Tensor, prediction: torch.Tensor,
                 sampler_name: str) -> torch.Tensor:
        """The fully denoised estimate after the last step run (`latents`: the input of that step)."""
        return _clean_prediction(output, sampler_name)


UNET_SAMPLING = UNetSampling()


@torch.inference_mode()
def sample(model: DiffusionModel, seed: int, cfg: float, sampler_name: str, scheduler_name: str,
           positive: Conditioning, negative: Conditioning, latent: torch.Tensor,
           steps: SamplingRange, edit: editing.EditInputs | None = None) -> torch.Tensor:
    """Denoise `latent` (float32 [B, 4, h, w]) over `steps`; returns float32 CPU latents. `edit` carries the
    inputs of inpainting and InstructPix2Pix (`nodes.models.editing`)."""
    if steps.start >= steps.end:
        return latent.clone()
    unet, device, dtype = model.unet, model.device, model.dtype
    family = model.sampling or UNET_SAMPLING
    batch = latent.shape[0]
    generator = torch.Generator("cpu").manual_seed(seed)

    # 1. Timesteps: the part of the schedule this call runs.
    scheduler = family.make_scheduler(model.scheduler_config, sampler_name, scheduler_name, seed)
    family.set_timesteps(scheduler, steps.total, latent, device)
    order = scheduler.order
    stop = None if steps.end >= steps.total else steps.end * order  # PNDM's schedule has one extra entry
    timesteps = scheduler.timesteps[steps.start * order:stop]
    if steps.start > 0 and hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(steps.start * order)

    # 2. Starting latents: noise as txt2img (a full schedule) or img2img (a later start) would add it.
    # Editing at full denoise starts from pure noise, as diffusers' inpaint and InstructPix2Pix pipelines do.
    latents = latent.to(device, dtype)
    if edit is not None:  # contiguous, as the pipelines hold it (CPU kernels round differently by memory layout)
        latents = latents.contiguous()
    if steps.add_noise or edit is not None:
        noise = initial_noise(latent, generator).to(device, dtype)
    if steps.add_noise:
        pure_noise = edit is not None and steps.start == 0
        start_latents = torch.zeros(latents.shape, device=device, dtype=dtype) if pure_noise else latents
        latents = family.noised(scheduler, start_latents, noise, timesteps[:1], steps.start)
    keep_mask = edit.keep_mask().to(device, dtype) if edit is not None and edit.keeps_source else None
    source = edit.source.to(device, dtype).contiguous() if keep_mask is not None else None
    leftover = steps.return_with_leftover_noise and steps.end < steps.total

    # 3. Conditioning for one UNet call per step.
    guidance = guidance_batch(positive, negative, batch, cfg, device, dtype, edit)
    inputs = family.network_inputs(guidance, batch, device, dtype)
    copies = guidance.embeddings.shape[0] // batch
    step_kwargs = _step_kwargs(scheduler, generator)
    finish_clean = steps.end < steps.total and not steps.return_with_leftover_noise

    # 4. Denoising loop.
    with lora_applied(unet, family.lora_component, model.loras), speedups_applied(unet, model.speedups) as fast:
        network = fast if guidance.concat is None else editing.ExtraChannels(fast, guidance.concat)
        for index, timestep in enumerate(timesteps):
            model_input = torch.cat([latents] * copies) if copies > 1 else latents
            noise_pred = family.predict(network, scheduler, model_input, timestep, guidance.embeddings, inputs)
            noise_pred = _guided(noise_pred, guidance, batch, cfg)
            output = scheduler.step(noise_pred, timestep, latents, **step_kwargs, return_dict=True)
            if finish_clean and index == len(timesteps) - 1:
                latents = family.denoised(scheduler, output, latents, noise_pred, sampler_name)
            else:
                latents = output.prev_sample
            if keep_mask is not None:
                last = index == len(timesteps) - 1 and not leftover
                next_timestep = None if last else scheduler.timesteps[steps.start * order + index + 1]
                latents = editing.keep_unmasked(latents, keep_mask, source, noise, scheduler, next_timestep)
            report_progress(index + 1, len(timesteps), preview=LatentPreview(latents))
    return latents.float().cpu()


def _clean_prediction(output: Any, sampler_name: str) -> torch.Tensor:
    clean = getattr(output, "pred_original_sample", None)
    if clean is None:
        clean = getattr(output, "denoised", None)
    if clean is None:
        raise ValueError(f"return_with_leftover_noise: sampler {sampler_name!r} cannot stop early with a "
                         "fully denoised result; enable return_with_leftover_noise or use another sampler")
    return clean
