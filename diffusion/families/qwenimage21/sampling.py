"""How the shared sampling loop drives a Qwen-Image 2.1 transformer: rectified flow on the VAE's 64-channel latents
normalized by their per-channel statistics (the family's latent format; LATENT holds them raw), each latent pixel
one token (no patches), the network given sigma as its time. The text and the image are one block-causal sequence:
the caption's tokens, then the image's, whose rotary frame position is the caption's length. So rows whose captions
differ in length (a prompt and its negative) are run as separate calls, each caption at its own length, as
QwenImage21Pipeline runs them; the transformer reads each 2x2 group of image tokens as one slot of its
vision-language sequence, so latents are padded to even sides and cropped back. QwenImage21Pipeline's schedule:
sigmas 1 .. 1/steps shifted by `mu` from the image's token count (its scheduler config); ComfyUI's fixed shift is
the MODEL's own sampling (`loading.qwen_image21_model`). Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from diffusion.families.flux.sampling import calculate_shift
from diffusion.files import config_beside
from diffusion.latent_format import LatentFormat
from diffusion.sampling.flow import CaptionedFlowSampling, padded_to_patches

TOKENS_PER_SLOT = 4  # image tokens (2x2 latent pixels) per slot of the vision-language sequence


class QwenImage21Sampling(CaptionedFlowSampling):
    """The shared sampling loop's hooks for a QwenImage21Transformer2DModel."""

    family_title = "Qwen-Image 2.1"
    latent_format = LatentFormat.from_config(config_beside(__file__)["vae"])

    def set_timesteps(self, scheduler: Any, total: int, latents: torch.Tensor, device: torch.device) -> None:
        """QwenImage21Pipeline's schedule: sigmas 1 .. 1/steps, shifted by `mu` for the image's token count."""
        height, width = latents.shape[-2:]
        mu = calculate_shift(height * width, scheduler.config)
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / total, total), mu=mu, device=device)

    def network_output(self, network: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                       embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The velocity (noise - data) for latents of any size; rows of one caption length per network call."""
        rows, _, height, width = model_input.shape
        lengths = self.caption_lengths(inputs, embeddings.shape[1], rows)
        timestep = timestep.expand(rows).to(model_input.dtype)
        output = torch.empty_like(model_input)
        for length in sorted(set(lengths)):
            selected = [row for row in range(rows) if lengths[row] == length]
            output[selected] = self._velocity(network, model_input[selected], timestep[selected],
                                              embeddings[selected, :length])
        return output

    @staticmethod
    def _velocity(network: Any, latents: torch.Tensor, timestep: torch.Tensor,
                  embeddings: torch.Tensor) -> torch.Tensor:
        rows, channels, height, width = latents.shape
        padded = padded_to_patches(latents)
        padded_height, padded_width = padded.shape[-2:]
        tokens = padded.flatten(2).transpose(1, 2)
        slots = torch.ones(rows, embeddings.shape[1] + tokens.shape[1] // TOKENS_PER_SLOT, dtype=torch.bool,
                           device=latents.device)
        slots[:, :embeddings.shape[1]] = False
        output = network(hidden_states=tokens, timestep=timestep, encoder_hidden_states=embeddings.to(latents.dtype),
                         img_shapes=[[(1, padded_height, padded_width)]] * rows, img_mask=slots,
                         return_dict=False)[0]
        image = output[:, -tokens.shape[1]:].transpose(1, 2).reshape(rows, channels, padded_height, padded_width)
        return image[..., :height, :width]


QWEN_IMAGE21_SAMPLING = QwenImage21Sampling()
