"""How the shared sampling loop drives a Lumina 2 transformer: rectified flow with a fixed shift of 6 (its scheduler
config; ComfyUI samples it with ModelSamplingAuraFlow, timesteps = sigma), the network called as Lumina2Pipeline
calls it: time 1 - sigma, the captions with their attention mask (each at its own length, `CaptionedFlowSampling`:
the repeats of shorter captions masked), the output negated (it predicts data minus noise). Knows nothing of nodes
or files."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from diffusion.files import config_beside
from diffusion.latent_format import LatentFormat
from diffusion.sampling.flow import CaptionedFlowSampling, padded_to_patches


class Lumina2Sampling(CaptionedFlowSampling):
    """The shared sampling loop's hooks for a Lumina2Transformer2DModel."""

    family_title = "Lumina 2"
    latent_format = LatentFormat.from_config(config_beside(__file__)["vae"])

    def set_timesteps(self, scheduler: Any, total: int, latents: torch.Tensor, device: torch.device) -> None:
        """Lumina2Pipeline's schedule: sigmas 1 .. 1/steps, shifted by the config."""
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / total, total), device=device)

    def network_output(self, network: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                       embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The velocity (noise - data) for latents of any size (padded to whole 2x2 patches, cropped back)."""
        rows, _, height, width = model_input.shape
        mask = torch.zeros(rows, embeddings.shape[1], dtype=torch.bool, device=embeddings.device)
        for row, length in enumerate(self.caption_lengths(inputs, embeddings.shape[1], rows)):
            mask[row, :length] = True
        time = 1 - timestep.reshape(-1).expand(rows).to(model_input.dtype)
        output = network(hidden_states=padded_to_patches(model_input), timestep=time,
                         encoder_hidden_states=embeddings, encoder_attention_mask=mask, return_dict=False)[0]
        return -output[..., :height, :width]


LUMINA2_SAMPLING = Lumina2Sampling()
