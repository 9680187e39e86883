"""How the shared sampling loop drives a Z-Image transformer: rectified flow with a fixed shift of 3 (its scheduler
config; ComfyUI samples it as ModelSamplingAuraFlow does, timesteps = sigma), the network called as ZImagePipeline
calls it: one [C, 1, H, W] latent and one caption [tokens, width] per row, each at its own length
(`CaptionedFlowSampling`), time as 1 - sigma, and its output negated (it predicts data minus noise). Knows nothing
of nodes or files."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from diffusion.files import config_beside
from diffusion.latent_format import LatentFormat
from diffusion.sampling.flow import CaptionedFlowSampling, padded_to_patches


class ZImageSampling(CaptionedFlowSampling):
    """The shared sampling loop's hooks for a ZImageTransformer2DModel."""

    family_title = "Z-Image"
    latent_format = LatentFormat.from_config(config_beside(__file__)["vae"])

    def set_timesteps(self, scheduler: Any, total: int, latents: torch.Tensor, device: torch.device) -> None:
        """ZImagePipeline's schedule: sigmas 1 .. 1/steps (in float32, as it makes them), shifted by the config."""
        scheduler.set_timesteps(sigmas=torch.linspace(1.0, 1 / total, total).tolist(), device=device)

    def network_output(self, network: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                       embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The velocity (noise - data) for latents of any size (padded to whole 2x2 patches, cropped back)."""
        rows, _, height, width = model_input.shape
        padded = padded_to_patches(model_input)
        lengths = self.caption_lengths(inputs, embeddings.shape[1], rows)
        captions = [row[:length] for row, length in zip(embeddings.unbind(0), lengths)]
        time = 1 - timestep.reshape(-1).expand(rows).to(model_input.dtype)
        outputs = network(list(padded.unsqueeze(2).unbind(0)), time, captions, return_dict=False)[0]
        return -torch.stack([output.float() for output in outputs]).squeeze(2)[..., :height, :width].to(model_input)


ZIMAGE_SAMPLING = ZImageSampling()
