"""How the shared sampling loop drives a Qwen-Image transformer: rectified flow with a fixed shift of 1.15 (its
scheduler config, ComfyUI's sampling settings for Qwen-Image; ModelSamplingAuraFlow changes it as in ComfyUI's
templates), sigmas 1 .. 1/steps as QwenImagePipeline makes them, the network given sigma as its time, latents
packed into 2x2 patches (FLUX's packing) with their patch grid for the rotary embedding, and each caption at its
own length: a call's shorter captions are masked past their end, as the pipeline masks padding. Reference latents
(Qwen-Image-Edit: TextEncodeQwenImageEdit, ReferenceLatent) are packed alike and appended to the image tokens, each
its own frame of the rotary embedding (ComfyUI's "index" numbering, the edit pipelines' image shapes), and their
outputs dropped; numbered "index_timestep_zero" (Qwen-Image-Edit 2511's way), the reference tokens are also
modulated at time zero (diffusers' `zero_cond_t`). Sampling runs on
the VAE's latents normalized by its per-channel statistics (the family's latent format; LATENT holds them raw).
Knows nothing of nodes or files."""
from __future__ import annotations

import copy
from typing import Any, Mapping

import numpy as np
import torch

from diffusion.contracts import GuidanceBatch
from diffusion.families.flux.sampling import pack, unpack
from diffusion.files import config_beside
from diffusion.latent_format import LatentFormat
from diffusion.sampling import reference_latents
from diffusion.sampling.flow import CaptionedFlowSampling, padded_to_patches

REFERENCE_METHOD = "index"  # the numbering Qwen-Image's rotary embedding takes (each reference a frame)
ZERO_TIMESTEP_METHOD = "index_timestep_zero"  # the same, the references modulated at time zero (Edit 2511)


def zero_reference_timestep(network: Any) -> Any:
    """A view of a QwenImageTransformer2DModel, sharing its weights, that modulates reference tokens at time zero
    (diffusers' `zero_cond_t`, a flag its forward and its blocks read): the network and its blocks shallow-copied
    with the flag set, so other calls of the same network are left alone."""
    view = copy.copy(network)
    object.__setattr__(view, "_modules", dict(network._modules))
    blocks = []
    for block in network.transformer_blocks:
        block = copy.copy(block)
        block.zero_cond_t = True
        blocks.append(block)
    view.transformer_blocks = torch.nn.ModuleList(blocks)
    view.zero_cond_t = True
    return view


class QwenImageSampling(CaptionedFlowSampling):
    """The shared sampling loop's hooks for a QwenImageTransformer2DModel."""

    family_title = "Qwen-Image"
    latent_format = LatentFormat.from_config(config_beside(__file__)["vae"])

    def set_timesteps(self, scheduler: Any, total: int, latents: torch.Tensor, device: torch.device) -> None:
        """QwenImagePipeline's schedule: sigmas 1 .. 1/steps (in float64, as it makes them), shifted by the
        config."""
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / total, total), device=device)

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        inputs = super().network_inputs(guidance, batch, device, dtype)
        references = reference_latents.rows(guidance.options, batch, self.latent_format, device, dtype,
                                            default_method=REFERENCE_METHOD)
        if references is not None:
            inputs[reference_latents.REFERENCES] = references
        return inputs

    def network_output(self, network: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                       embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The velocity (noise - data) for latents of any size (padded to whole 2x2 patches, cropped back)."""
        rows, _, height, width = model_input.shape
        padded = padded_to_patches(model_input)
        padded_height, padded_width = padded.shape[-2:]
        lengths = self.caption_lengths(inputs, embeddings.shape[1], rows)
        mask = None
        if any(length < embeddings.shape[1] for length in lengths):
            mask = (torch.arange(embeddings.shape[1])[None, :] < torch.tensor(lengths)[:, None])
            mask = mask.to(device=model_input.device, dtype=torch.long)
        tokens = pack(padded)
        image_token_count = tokens.shape[1]
        shapes = [(1, padded_height // 2, padded_width // 2)]
        references = inputs.get(reference_latents.REFERENCES)
        if references and references[0][1]:
            method, stacked = reference_latents.stacked(references)
            if method not in (REFERENCE_METHOD, ZERO_TIMESTEP_METHOD):
                raise ValueError(f"conditioning: reference latents numbered by {method!r} are not supported by "
                                 f"Qwen-Image, whose references are numbered by {REFERENCE_METHOD!r} (or "
                                 f"{ZERO_TIMESTEP_METHOD!r})")
            if method == ZERO_TIMESTEP_METHOD:
                network = zero_reference_timestep(network)
            for reference in stacked:
                reference = padded_to_patches(reference)
                tokens = torch.cat([tokens, pack(reference).to(tokens.dtype)], dim=1)
                shapes.append((1, reference.shape[-2] // 2, reference.shape[-1] // 2))
        output = network(hidden_states=tokens, timestep=timestep.expand(rows).to(model_input.dtype),
                         encoder_hidden_states=embeddings, encoder_hidden_states_mask=mask,
                         img_shapes=[shapes] * rows, return_dict=False)[0]
        return unpack(output[:, :image_token_count], padded_height, padded_width)[..., :height, :width]


QWEN_IMAGE_SAMPLING = QwenImageSampling()
