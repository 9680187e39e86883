"""How the shared sampling loop drives a Qwen-Image 2.1 transformer: rectified flow on the VAE's 64-channel latents
normalized by their per-channel statistics (the family's latent format; LATENT holds them raw), each latent pixel
one token (no patches), the network given sigma as its time. The text and the image are one block-causal sequence:
the caption's tokens, then the image's, whose rotary frame position is the caption's length. So rows whose captions
differ in length (a prompt and its negative) are run as separate calls, each caption at its own length, as
QwenImage21Pipeline runs them; the transformer reads each 2x2 group of image tokens as one slot of its
vision-language sequence, so latents are padded to even sides and cropped back. Reference latents (Qwen-Image 2.1's
editing: TextEncodeQwenImage21 with a VAE, ReferenceLatent) are spliced into the caption where the CLIP recorded
their images ("image_slots"; the end of the text when none is recorded), each its own block of the sequence, at
time 0 like the caption; only the image's own outputs are kept. QwenImage21Pipeline's schedule:
sigmas 1 .. 1/steps shifted by `mu` from the image's token count (its scheduler config); ComfyUI's fixed shift is
the MODEL's own sampling (`loading.qwen_image21_model`). Knows nothing of nodes or files."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from diffusion.contracts import GuidanceBatch
from diffusion.families.flux.sampling import calculate_shift
from diffusion.files import config_beside
from diffusion.latent_format import LatentFormat
from diffusion.sampling import reference_latents
from diffusion.sampling.flow import CaptionedFlowSampling, padded_to_patches
from diffusion.sampling.reference_latents import PerRow

TOKENS_PER_SLOT = 4  # image tokens (2x2 latent pixels) per slot of the vision-language sequence
IMAGE_SLOTS = "image_slots"  # where each reference latent goes in the text (set by the family's CLIP)
REFERENCE_METHOD = "index"  # reference_latents' default numbering (unused here: the references sit in the text)


class QwenImage21Sampling(CaptionedFlowSampling):
    """The shared sampling loop's hooks for a QwenImage21Transformer2DModel."""

    family_title = "Qwen-Image 2.1"
    latent_format = LatentFormat.from_config(config_beside(__file__)["vae"])

    def set_timesteps(self, scheduler: Any, total: int, latents: torch.Tensor, device: torch.device) -> None:
        """QwenImage21Pipeline's schedule: sigmas 1 .. 1/steps, shifted by `mu` for the image's token count."""
        height, width = latents.shape[-2:]
        mu = calculate_shift(height * width, scheduler.config)
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / total, total), mu=mu, device=device)

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        inputs = super().network_inputs(guidance, batch, device, dtype)
        references = reference_latents.rows(guidance.options, batch, self.latent_format, device, dtype,
                                            default_method=REFERENCE_METHOD)
        if references is not None:
            inputs[reference_latents.REFERENCES] = references
            inputs[IMAGE_SLOTS] = PerRow(tuple(options.get(IMAGE_SLOTS) or ()) for options in guidance.options
                                         for _ in range(batch))
        return inputs

    def network_output(self, network: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                       embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The velocity (noise - data) for latents of any size; rows of one caption length (and one placing of
        the references in it) per network call."""
        rows = model_input.shape[0]
        lengths = self.caption_lengths(inputs, embeddings.shape[1], rows)
        references = inputs.get(reference_latents.REFERENCES)
        slots = inputs.get(IMAGE_SLOTS) or [()] * rows
        timestep = timestep.expand(rows).to(model_input.dtype)
        output = torch.empty_like(model_input)
        for length, row_slots in sorted(set(zip(lengths, slots))):
            selected = [row for row in range(rows) if (lengths[row], slots[row]) == (length, row_slots)]
            row_references = []
            if references and references[0][1]:
                # a numbering method does not apply: the references sit in the text, as in ComfyUI
                _, row_references = reference_latents.stacked(PerRow(references[row] for row in selected))
            output[selected] = self._velocity(network, model_input[selected], timestep[selected],
                                              embeddings[selected, :length], row_references, row_slots)
        return output

    @staticmethod
    def _velocity(network: Any, latents: torch.Tensor, timestep: torch.Tensor, embeddings: torch.Tensor,
                  references: list[torch.Tensor], slots: tuple[int, ...]) -> torch.Tensor:
        """One call: the caption with each reference's placeholder slots spliced in at its text position (the end
        of the text for a reference without one, as ComfyUI places it), then the image's slots; the references'
        tokens, then the image's, fill the slots in order."""
        rows, channels, height, width = latents.shape
        blocks = [padded_to_patches(reference.to(latents.dtype)) for reference in references] + [
            padded_to_patches(latents)]
        text_length = embeddings.shape[1]
        places = [min(slot, text_length) for slot in slots[:len(references)]]
        places += [text_length] * (len(references) - len(places))
        pieces, mask, cursor = [], [], 0
        for place, block in zip(places, blocks):
            pieces.append(embeddings[:, cursor:place])
            mask.append(torch.zeros(place - cursor, dtype=torch.bool))
            slot_count = block.shape[-2] * block.shape[-1] // TOKENS_PER_SLOT
            pieces.append(embeddings.new_zeros(rows, slot_count, embeddings.shape[2]))
            mask.append(torch.ones(slot_count, dtype=torch.bool))
            cursor = place
        pieces.append(embeddings[:, cursor:])
        mask.append(torch.zeros(text_length - cursor, dtype=torch.bool))
        target = blocks[-1]
        mask.append(torch.ones(target.shape[-2] * target.shape[-1] // TOKENS_PER_SLOT, dtype=torch.bool))
        text = torch.cat(pieces, dim=1)
        slots_mask = torch.cat(mask).to(latents.device)[None].expand(rows, -1)
        tokens = torch.cat([block.flatten(2).transpose(1, 2) for block in blocks], dim=1)
        shapes = [(1, block.shape[-2], block.shape[-1]) for block in blocks]
        output = network(hidden_states=tokens, timestep=timestep, encoder_hidden_states=text.to(latents.dtype),
                         img_shapes=[shapes] * rows, img_mask=slots_mask, return_dict=False)[0]
        target_tokens = target.shape[-2] * target.shape[-1]
        image = output[:, -target_tokens:].transpose(1, 2).reshape(rows, channels, *target.shape[-2:])
        return image[..., :height, :width]


QWEN_IMAGE21_SAMPLING = QwenImage21Sampling()
