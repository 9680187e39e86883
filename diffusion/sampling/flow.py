"""`FlowSampling`: the sampling hooks shared by flow-matching families (SD3, FLUX): velocity prediction over
diffusers' flow-matching schedulers, with ComfyUI's scheduler names mapped onto their sigma spacing options.
`CaptionedFlowSampling` adds what the NextDiT families (Lumina 2, Z-Image) share: each caption at its own length,
timesteps that are sigmas.

A family subclass names the sampler names it runs (`FLOW_SAMPLERS`: which diffusers scheduler each is) and how
its network is called; `padded_to_patches` gives its patchifying transformer latents of any size (an area
conditioning's crop can be odd-sized). Knows nothing of nodes, files or particular families.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import TYPE_CHECKING, Any, Mapping

import torch
import torch.nn.functional as F

from diffusion.contracts import FamilySampling, GuidanceBatch
from diffusion.lora import TRANSFORMER
from diffusion.sampling.reference_latents import PerRow
from diffusion.sampling.schedulers import installed

if TYPE_CHECKING:
    from diffusion.components import DiffusionModel

CAPTION_LENGTH = "caption_length"  # conditioning option: the caption's own token count (NextDiT families' CLIPs)

# ComfyUI scheduler names -> sigma spacing options; "normal", "simple" and "sgm_uniform" are the shifted linear
# schedule the flow models were trained with
FLOW_SCHEDULERS: dict[str, Mapping[str, Any]] = {
    "normal": {}, "simple": {}, "sgm_uniform": {}, "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True}, "beta": {"use_beta_sigmas": True},
}


def padded_to_patches(latents: torch.Tensor, patch_size: int = 2) -> torch.Tensor:
    """`latents` [B, C, H, W] padded at the bottom and right to whole `patch_size` patches by wrapping around
    (ComfyUI's pad_to_patch_size, circular); the network's output for them is cropped back to H x W. Latents of
    whole patches as they are."""
    height, width = latents.shape[-2:]
    padding = (0, -width % patch_size, 0, -height % patch_size)
    return F.pad(latents, padding, mode="circular") if any(padding) else latents


class FlowSampling(FamilySampling):
    """Rectified flow: x_t = sigma * noise + (1 - sigma) * x0, the network predicting the velocity noise - x0."""

    lora_component = TRANSFORMER
    limit_reason = " (flow matching)"
    scheduler_names = tuple(FLOW_SCHEDULERS)
    # ComfyUI sampler name -> diffusers flow-matching scheduler class; a subclass sets both this and
    # `sampler_names = tuple(FLOW_SAMPLERS)`
    FLOW_SAMPLERS: Mapping[str, str] = {}
    # timesteps sigma x 1000 and a fixed shift in the scheduler config, which ModelSamplingSD3 sets (SD3, HiDream)
    fixed_shift = False

    def make_scheduler(self, config: Mapping[str, Any], sampler_name: str, scheduler_name: str, seed: int) -> Any:
        import diffusers

        problem = self.choice_problem(sampler_name, scheduler_name)
        if problem is not None:
            raise ValueError(problem)
        scheduler_class = getattr(diffusers, self.FLOW_SAMPLERS[sampler_name])
        accepted = inspect.signature(scheduler_class.__init__).parameters
        spacing = FLOW_SCHEDULERS[scheduler_name]
        if any(option not in accepted for option in spacing):
            raise ValueError(f"scheduler: {scheduler_name!r} is not available with sampler {sampler_name!r} for "
                             f"{self.family_title}")
        if "use_beta_sigmas" in spacing and not installed(("scipy",)):
            raise ValueError("scheduler: 'beta' needs scipy, which is not installed")
        return scheduler_class.from_config(dict(config), **spacing)

    def predict(self, network: Any, scheduler: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """diffusers' flow-matching schedulers count timesteps as sigma * 1000, the network's own convention."""
        return self.network_output(network, model_input, timestep, embeddings, inputs)

    def noised(self, scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, first_timestep: torch.Tensor,
               start: int) -> torch.Tensor:
        """sigma * noise + (1 - sigma) * latents: pure noise at the first sigma of a full schedule (1)."""
        if start == 0 and hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        return scheduler.scale_noise(latents, first_timestep.reshape(1), noise)

    def denoised(self, scheduler: Any, output: Any, latents: torch.Tensor, prediction: torch.Tensor,
                 sampler_name: str) -> torch.Tensor:
        """x0 = x_t - sigma * v (the model predicts the velocity from data to noise)."""
        sigma = scheduler.sigmas[scheduler.step_index - 1]
        return latents - sigma * prediction


class CaptionedFlowSampling(FlowSampling):
    """Flow matching for transformers that take each caption at its own length and count time in sigmas (their
    MODEL's timesteps are sigmas, as under ComfyUI's ModelSamplingAuraFlow): a guidance call shares one caption
    length, repeating shorter captions whole, and each row's own length ("caption_length", set by the family's
    CLIP) travels with it so the family can cut or mask the repeats."""

    FLOW_SAMPLERS = {"euler": "FlowMatchEulerDiscreteScheduler"}
    sampler_names = tuple(FLOW_SAMPLERS)

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        return {CAPTION_LENGTH: PerRow(options.get(CAPTION_LENGTH) for options in guidance.options
                                       for _ in range(batch))}

    def predict(self, network: Any, scheduler: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """diffusers' scheduler counts sigma x 1000; the network's convention here is sigma."""
        rows = model_input.shape[0]
        return self.network_output(network, model_input, timestep.expand(rows).to(model_input.dtype) / 1000,
                                   embeddings, inputs)

    @staticmethod
    def caption_lengths(inputs: Mapping[str, Any], shared: int, rows: int) -> list[int]:
        """Each row's own caption length inside the call's `shared` length (all of it when unknown, or when it
        does not divide the shared length: then the caption was not repeated, e.g. concatenated)."""
        lengths = inputs.get(CAPTION_LENGTH) or [None] * rows
        return [shared if length is None or length >= shared or shared % length else length for length in lengths]


def with_shift(model: "DiffusionModel", shift: float) -> "DiffusionModel":
    """The MODEL sampled with another timestep shift (ComfyUI's ModelSamplingSD3): the shift of its scheduler
    config, which both the diffusers loop and the sigma core read (rectified flow, timesteps x1000: SD3, HiDream);
    it replaces any schedule an earlier ModelSampling* node set, as ComfyUI's last model-sampling patch wins."""
    if not getattr(model.sampling, "fixed_shift", False):
        raise ValueError(f"model: ModelSamplingSD3 needs an SD3 or HiDream model; {model.name} is not one")
    return dataclasses.replace(model, scheduler_config={**model.scheduler_config, "shift": float(shift)},
                               schedule_override=None)
