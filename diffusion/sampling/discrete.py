"""`DiscreteSampling`: the sampling hooks of UNet families trained on a discrete noise schedule (noise or v
prediction, SD1.x/SD2.x, SDXL, the unCLIP decoder), over diffusers' discrete-time schedulers as
StableDiffusionPipeline uses them. Families that differ (SDXL's added inputs) subclass it and override only
what differs. Knows nothing of nodes, files or particular families.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from diffusion.contracts import FamilySampling
from diffusion.lora import UNET
from diffusion.sampling.schedulers import make_scheduler


class DiscreteSampling(FamilySampling):
    """Noise (epsilon) or v prediction with the diffusers scheduler of the ComfyUI sampler name."""

    lora_component = UNET
    family_title = "Stable Diffusion"

    def make_scheduler(self, config: Mapping[str, Any], sampler_name: str, scheduler_name: str, seed: int) -> Any:
        return make_scheduler(config, sampler_name, scheduler_name, seed)

    def noised(self, scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, first_timestep: torch.Tensor,
               start: int) -> torch.Tensor:
        if start == 0:
            return latents + noise * scheduler.init_noise_sigma
        return scheduler.add_noise(latents, noise, first_timestep.repeat(latents.shape[0]))

    def network_output(self, network: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                       embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        return network(model_input, timestep, encoder_hidden_states=embeddings, return_dict=False, **inputs)[0]

    def predict(self, network: Any, scheduler: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        model_input = scheduler.scale_model_input(model_input, timestep)
        return self.network_output(network, model_input, timestep, embeddings, inputs)

    def denoised(self, scheduler: Any, output: Any, latents: torch.Tensor, prediction: torch.Tensor,
                 sampler_name: str) -> torch.Tensor:
        """The scheduler's own clean estimate of the step (not every scheduler keeps one)."""
        clean = getattr(output, "pred_original_sample", None)
        if clean is None:
            clean = getattr(output, "denoised", None)
        if clean is None:
            raise ValueError(f"return_with_leftover_noise: sampler {sampler_name!r} cannot stop early with a "
                             "fully denoised result; enable return_with_leftover_noise or use another sampler")
        return clean
