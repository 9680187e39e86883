"""How the shared sampling loop drives a HiDream transformer: rectified flow with diffusers' flow-matching schedulers
(the shift in the MODEL's scheduler config, which ModelSamplingSD3 changes; timesteps sigma x 1000), the network
called as HiDreamImagePipeline calls it: T5's states, every Llama layer's states (layers first), the pooled CLIP
embedding, the output negated (it predicts data minus noise). Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from diffusion.contracts import GuidanceBatch
from diffusion.families.flux.loading import config as flux_config
from diffusion.latent_format import LatentFormat
from diffusion.sampling.flow import FlowSampling, padded_to_patches


class HiDreamSampling(FlowSampling):
    """The shared sampling loop's hooks for a HiDreamImageTransformer2DModel."""

    family_title = "HiDream"
    latent_format = LatentFormat.from_config(flux_config()["vae"])  # FLUX's VAE
    FLOW_SAMPLERS = {"euler": "FlowMatchEulerDiscreteScheduler", "heun": "FlowMatchHeunDiscreteScheduler"}
    sampler_names = tuple(FLOW_SAMPLERS)
    fixed_shift = True

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        """Each entry's pooled embedding and Llama states, `batch` rows each; Llama states of different lengths
        (prompts past 128 tokens) padded with zeros to the longest."""
        if any(options.get("concat_latent_image") is not None for options in guidance.options):
            # HiDream-E1's editing (ComfyUI places the image beside the latents); sampling it as text-to-image
            # would silently ignore the image
            raise ValueError("conditioning: an image shown beside the latents (concat_latent_image, from "
                             "InstructPixToPixConditioning: HiDream-E1's editing) is not supported by nodeflow for "
                             "HiDream yet")
        if any(options.get("conditioning_llama3") is None or options.get("pooled_output") is None
               for options in guidance.options):
            raise ValueError("conditioning: HiDream needs its four text encoders' outputs; encode the prompt with a "
                             "HiDream CLIP (QuadrupleCLIPLoader)")
        states = [options["conditioning_llama3"] for options in guidance.options]
        length = max(state.shape[2] for state in states)
        states = [torch.nn.functional.pad(state, (0, 0, 0, length - state.shape[2])) for state in states]
        llama = torch.cat([state.expand(batch, -1, -1, -1) for state in states])
        pooled = torch.cat([options["pooled_output"].reshape(1, -1).expand(batch, -1)
                            for options in guidance.options])
        return {"llama3": llama.movedim(1, 0).to(device, dtype), "pooled": pooled.to(device, dtype)}

    def network_output(self, network: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                       embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The velocity (noise - data) for latents of any size (padded to whole patches, cropped back)."""
        rows, _, height, width = model_input.shape
        output = network(hidden_states=padded_to_patches(model_input, int(network.config.patch_size)),
                         timesteps=timestep.reshape(-1).expand(rows), encoder_hidden_states_t5=embeddings,
                         encoder_hidden_states_llama3=inputs["llama3"], pooled_embeds=inputs["pooled"],
                         return_dict=False)[0]
        return -output[..., :height, :width]


HIDREAM_SAMPLING = HiDreamSampling()
