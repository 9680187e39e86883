"""How the shared sampling loop drives an SD3Transformer2DModel: rectified flow with diffusers' flow-matching
schedulers (the shift in the MODEL's scheduler config, which ModelSamplingSD3 changes), the pooled CLIP outputs
as `pooled_projections`, and CLIP-only conditioning widened with the zero tokens StableDiffusion3Pipeline uses
when there is no T5, so any CLIP pair works with any SD3 transformer. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from diffusion.contracts import GuidanceBatch
from diffusion.files import config_beside
from diffusion.latent_format import LatentFormat
from diffusion.sampling.flow import FlowSampling, padded_to_patches


class Sd3Sampling(FlowSampling):
    """The shared sampling loop's hooks for an SD3Transformer2DModel (rectified flow, velocity prediction)."""

    family_title = "SD3"
    latent_format = LatentFormat.from_config(config_beside(__file__)["vae"])
    # ComfyUI sampler names -> diffusers flow-matching schedulers (each checked against StableDiffusion3Pipeline)
    FLOW_SAMPLERS = {"euler": "FlowMatchEulerDiscreteScheduler", "heun": "FlowMatchHeunDiscreteScheduler"}
    sampler_names = tuple(FLOW_SAMPLERS)
    fixed_shift = True

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        pooled = []
        for options in guidance.options:
            if options.get("pooled_output") is None:
                raise ValueError("conditioning: SD3 needs the pooled CLIP-L and CLIP-G outputs; encode the prompt "
                                 "with an SD3 CLIP (the SD3 checkpoint's, or TripleCLIPLoader)")
            pooled.append(options["pooled_output"].reshape(1, -1).expand(batch, -1))
        return {"pooled_projections": torch.cat(pooled).to(device, dtype)}

    def network_output(self, network: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                       embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        pooled = inputs["pooled_projections"]
        if pooled.shape[-1] != network.config.pooled_projection_dim:
            raise ValueError(f"conditioning: pooled text embedding of {pooled.shape[-1]} values, but this SD3 "
                             f"model takes {network.config.pooled_projection_dim}; use this model's CLIP")
        embeddings = with_t5_width(embeddings, int(network.config.joint_attention_dim))
        # an odd height or width (an area's crop) padded to whole patches, the output cropped back, as in ComfyUI
        rows, _, height, width = model_input.shape
        output = network(hidden_states=padded_to_patches(model_input, int(network.config.patch_size)),
                         timestep=timestep.expand(rows), encoder_hidden_states=embeddings,
                         pooled_projections=pooled, return_dict=False,
                         block_controlnet_hidden_states=inputs.get("block_controlnet_hidden_states"))[0]
        return output[..., :height, :width]


SD3_SAMPLING = Sd3Sampling()


def with_t5_width(embeddings: torch.Tensor, width: int) -> torch.Tensor:
    """CLIP-only embeddings (narrower than the transformer's joint width) padded to it and followed by the zero
    tokens StableDiffusion3Pipeline uses when there is no T5; T5-width embeddings as they are."""
    if embeddings.shape[-1] == width:
        return embeddings
    if embeddings.shape[-1] > width:
        raise ValueError(f"conditioning: text embeddings of width {embeddings.shape[-1]} do not fit this SD3 model "
                         f"(joint attention width {width})")
    padded = torch.nn.functional.pad(embeddings, (0, width - embeddings.shape[-1]))
    zeros = padded.new_zeros(embeddings.shape[0], config_beside(__file__)["t5_max_length"], width)
    return torch.cat([padded, zeros], dim=1)
