"""The one denoising loop behind every sampler node and every model family (`sample`); one step of it is the body
of its `for` loop: the network's predictions for all guidance rows, classifier-free guidance, the scheduler step.

The loop is diffusers' StableDiffusionPipeline loop, step for step (initial noise from a CPU `torch.Generator`
seeded with the seed, `scale_model_input`, one network call for [negative, positive], classifier-free guidance,
`scheduler.step` with the same generator), so the same model, seed and settings give the same latents as the
pipeline. What differs per family (scheduler, noise, network inputs, the call) are the model's `FamilySampling`
hooks. `denoise` follows ComfyUI: `steps` steps are run, taken from the end of a schedule of
`int(steps / denoise)` steps (with diffusers' img2img noise at the first of them); for settings where
`int(total * denoise) == steps` that is exactly StableDiffusionImg2ImgPipeline with `strength=denoise`.
The LATENT's raw VAE latents are scaled into the model's sampling space by its latent format on the way in
(`diffusion.latent_format`, as the pipelines scale what the VAE encodes; an all-zero latent stays zero) and back
on the way out (as the pipelines unscale before decoding).
Knows nothing of nodes; reports progress through `engine.progress` (which also raises on interrupt).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from diffusion.components import DiffusionModel
from diffusion.contracts import Conditioning, FamilySampling, GuidanceBatch
from diffusion.lora import lora_applied
from diffusion.sampling import editing, run_seed
from diffusion.sampling.guidance import guidance_batch, guided, input_rows
from diffusion.sampling.preview import LatentPreview
from diffusion.speedups import speedups_applied
from engine.progress import report_progress


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


def _step_kwargs(scheduler: Any, generator: torch.Generator) -> dict[str, Any]:
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def _predict(family: FamilySampling, network: Any, scheduler: Any, model_input: torch.Tensor, timestep: torch.Tensor,
             guidance: GuidanceBatch, inputs: Mapping[str, Any]) -> torch.Tensor:
    """The network's unguided predictions for every row of the guidance batch: one call per embedding group."""
    if len(guidance.groups) == 1:
        with_channels = network if guidance.concat is None else editing.ExtraChannels(network, guidance.concat)
        return family.predict(with_channels, scheduler, model_input, timestep, guidance.groups[0].embeddings, inputs)
    predictions = []
    for group in guidance.groups:
        rows = slice(group.start, group.stop)
        with_channels = network if guidance.concat is None else editing.ExtraChannels(network, guidance.concat[rows])
        predictions.append(family.predict(with_channels, scheduler, model_input[rows], timestep, group.embeddings,
                                          input_rows(inputs, rows, guidance.rows)))
    return torch.cat(predictions)


@torch.inference_mode()
def sample(model: DiffusionModel, seed: int, cfg: float, sampler_name: str, scheduler_name: str,
           positive: Conditioning, negative: Conditioning, latent: torch.Tensor,
           steps: SamplingRange, edit: editing.EditInputs | None = None) -> torch.Tensor:
    """Denoise `latent` (raw float32 [B, C, h, w], as LATENT holds it) over `steps`; returns raw float32 CPU
    latents. `edit` carries the inputs of inpainting and InstructPix2Pix (`diffusion.sampling.editing`)."""
    if steps.start >= steps.end:
        return latent.clone()
    network, device, dtype = model.network, model.device, model.dtype
    family = model.sampling
    latent_format = model.latent_format
    latent = latent_format.sampling_input(latent.float())
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

    # 3. Conditioning for the network calls of each step.
    guidance = guidance_batch(positive, negative, batch, cfg, device, dtype, edit)
    if any(options.get("control") is not None for options in guidance.options):
        raise ValueError("scheduler: the 'diffusers' scheduler does not run ControlNets; choose another scheduler")
    if any(options.get("hooks") is not None for options in guidance.options):
        raise ValueError("scheduler: the 'diffusers' scheduler does not apply conditioning hooks (CreateHookLora, "
                         "SetClipHooks with apply_to_conds, ...); choose another scheduler")
    with run_seed.seeded(seed):
        inputs = family.network_inputs(guidance, batch, device, dtype)
    copies = guidance.rows // batch
    step_kwargs = _step_kwargs(scheduler, generator)
    finish_clean = steps.end < steps.total and not steps.return_with_leftover_noise

    # 4. Denoising loop: one step is predict, guide, scheduler step.
    with lora_applied(network, family.lora_component, model.loras), speedups_applied(network, model.speedups) as fast:
        for index, timestep in enumerate(timesteps):
            model_input = torch.cat([latents] * copies) if copies > 1 else latents
            noise_pred = _predict(family, fast, scheduler, model_input, timestep, guidance, inputs)
            noise_pred = guided(noise_pred, guidance, batch, cfg)
            output = scheduler.step(noise_pred, timestep, latents, **step_kwargs, return_dict=True)
            if finish_clean and index == len(timesteps) - 1:
                latents = family.denoised(scheduler, output, latents, noise_pred, sampler_name)
            else:
                latents = output.prev_sample
            if keep_mask is not None:
                last = index == len(timesteps) - 1 and not leftover
                next_timestep = None if last else scheduler.timesteps[steps.start * order + index + 1]
                latents = editing.keep_unmasked(latents, keep_mask, source, noise, scheduler, next_timestep)
            report_progress(index + 1, len(timesteps), preview=LatentPreview(latents, latent_format))
    return latent_format.process_out(latents.float().cpu())
