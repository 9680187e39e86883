"""How the shared sampling loop drives a HiDream transformer: rectified flow with diffusers' flow-matching schedulers
(the shift in the MODEL's scheduler config, which ModelSamplingSD3 changes; timesteps sigma x 1000), the network
called with T5's states, every Llama layer's states, the pooled CLIP embedding, the output negated (it predicts
data minus noise).

The latents go in as ComfyUI's HiDream takes them: as patches with no padding, each at its grid position (diffusers'
transformer pads non-square latents to its 4096-patch maximum, and the padding, whose keys it zeroes, still draws
attention, so its non-square images differ from ComfyUI's; square ones are the same). HiDream-E1's editing shows the
model an image (a conditioning's `concat_latent_image`, from InstructPixToPixConditioning) beside the latents, along
the width, as ComfyUI does; the output is cropped back to the latents. Rows with and without an image go through
separate calls. Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from diffusion.contracts import GuidanceBatch
from diffusion.families.flux.loading import config as flux_config
from diffusion.latent_format import LatentFormat
from diffusion.sampling.flow import FlowSampling, padded_to_patches
from diffusion.sampling.guidance import input_rows
from diffusion.sampling.reference_latents import PerRow

IMAGE_BESIDE = "image_beside"  # network input: per row, the image latents shown beside the latents, or None


class HiDreamSampling(FlowSampling):
    """The shared sampling loop's hooks for a HiDreamImageTransformer2DModel."""

    family_title = "HiDream"
    latent_format = LatentFormat.from_config(flux_config()["vae"])  # FLUX's VAE
    FLOW_SAMPLERS = {"euler": "FlowMatchEulerDiscreteScheduler", "heun": "FlowMatchHeunDiscreteScheduler"}
    sampler_names = tuple(FLOW_SAMPLERS)
    fixed_shift = True

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        """Each entry's pooled embedding and Llama states (rows first), `batch` rows each; Llama states of
        different lengths (prompts past 128 tokens) padded with zeros to the longest; the image an entry shows
        beside the latents (in the model's sampling space) for each of its rows."""
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
        images = []
        for options in guidance.options:
            image = options.get("concat_latent_image")
            if image is not None:
                image = self.latent_format.process_in(image.float()).to(device, dtype)
            images += [None if image is None else image[row % image.shape[0]] for row in range(batch)]
        images += [None] * (guidance.rows - len(images))  # three-way guidance's rows without the image
        return {"llama3": llama.to(device, dtype), "pooled": pooled.to(device, dtype), IMAGE_BESIDE: PerRow(images)}

    def network_output(self, network: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                       embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The velocity (noise - data) for latents of any size; rows with an image beside them and rows without
        have different token counts, so each kind goes through a call of its own."""
        rows = model_input.shape[0]
        timesteps = timestep.reshape(-1).expand(rows)
        images = inputs.get(IMAGE_BESIDE) or PerRow([None] * rows)
        with_image = [image is not None for image in images]
        if len(set(with_image)) < 2:
            return self._velocity(network, model_input, timesteps, embeddings, inputs)
        output = torch.empty_like(model_input)
        for kind in (False, True):
            index = torch.tensor([row for row in range(rows) if with_image[row] == kind])
            output[index] = self._velocity(network, model_input[index], timesteps[index], embeddings[index],
                                           input_rows(inputs, index, rows)).to(output.dtype)
        return output

    def _velocity(self, network: Any, model_input: torch.Tensor, timesteps: torch.Tensor, embeddings: torch.Tensor,
                  inputs: Mapping[str, Any]) -> torch.Tensor:
        """One call: the latents (and the rows' images beside them) as unpadded patches at their grid positions."""
        rows, _, height, width = model_input.shape
        images = inputs.get(IMAGE_BESIDE)
        if images is not None and images[0] is not None:
            if any(image.shape[-2:] != (height, width) for image in images):
                raise ValueError(f"concat_latent_image: an image of {tuple(images[0].shape[-2:])} latents beside "
                                 f"{(height, width)} latents; encode the image at the size being sampled")
            model_input = torch.cat([model_input, torch.stack(list(images)).to(model_input)], dim=-1)
        patch = int(network.config.patch_size)
        padded = padded_to_patches(model_input, patch)
        channels, patch_rows, patch_columns = padded.shape[1], padded.shape[2] // patch, padded.shape[3] // patch
        tokens = padded.reshape(rows, channels, patch_rows, patch, patch_columns, patch)
        tokens = tokens.permute(0, 2, 4, 3, 5, 1).reshape(rows, patch_rows * patch_columns, patch * patch * channels)
        positions = torch.zeros(patch_rows, patch_columns, 3, device=tokens.device)
        positions[..., 1] += torch.arange(patch_rows, device=tokens.device)[:, None]
        positions[..., 2] += torch.arange(patch_columns, device=tokens.device)[None, :]
        output = network(hidden_states=tokens, timesteps=timesteps, encoder_hidden_states_t5=embeddings,
                         encoder_hidden_states_llama3=inputs["llama3"].movedim(1, 0),
                         pooled_embeds=inputs["pooled"],
                         hidden_states_masks=torch.ones(rows, tokens.shape[1], device=tokens.device,
                                                        dtype=tokens.dtype),
                         img_ids=positions.reshape(1, -1, 3).expand(rows, -1, -1),
                         img_sizes=[(patch_rows, patch_columns)] * rows, return_dict=False)[0]
        return -output[..., :height, :width]


HIDREAM_SAMPLING = HiDreamSampling()
