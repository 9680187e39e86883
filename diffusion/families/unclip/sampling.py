"""How the shared sampling loop drives the unCLIP decoder UNet: the discrete-schedule hooks with no text, the image
embedding added to the time embedding, and only the noise half of its learned-variance output used, which gives
KandinskyV22Pipeline's (and its img2img pipeline's) loop step for step. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from diffusion.contracts import GuidanceBatch
from diffusion.latent_format import IDENTITY
from diffusion.sampling.discrete import DiscreteSampling


class DecoderSampling(DiscreteSampling):
    """The shared loop's hooks for an unCLIP decoder UNet: no text, the image embedding added to the time
    embedding, and only the noise half of its learned-variance output used (as KandinskyV22Pipeline does for
    schedulers without learned variance)."""

    family_title = "unCLIP decoder"
    latent_format = IDENTITY  # the MoVQ latents are sampled unscaled, as KandinskyV22Pipeline does

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        if any(group.embeddings.shape[1] != 1 for group in guidance.groups):
            raise ValueError("positive: an unCLIP decoder is conditioned on image embeddings, not on encoded text; "
                             "sample it with UnCLIPDecoderSampler")
        return {}

    def network_output(self, network: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                       embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        prediction = network(sample=model_input, timestep=timestep, encoder_hidden_states=None,
                             added_cond_kwargs={"image_embeds": embeddings[:, 0]}, return_dict=False)[0]
        return prediction[:, :model_input.shape[1]]


DECODER_SAMPLING = DecoderSampling()
