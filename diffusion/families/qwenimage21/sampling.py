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
the MODEL's own sampling (`loading.qwen_image21_model`). With a prefix cache (QwenImage21Cache), the caption's and
references' keys and values, the same at every step, are kept from a run's first step (`PrefixCache`). Knows
nothing of nodes or files."""
from __future__ import annotations

from dataclasses import dataclass
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
IMAGE_SLOTS = "image_slots"  # ComfyUI's conditioning option: where each reference latent goes in the text (set by
# the family's CLIP)
PREFIX_CACHE = "qwen_image21_prefix_cache"  # the run's PrefixCache among the network inputs
REFERENCE_METHOD = "index"  # reference_latents' default numbering (unused here: the references sit in the text)


@dataclass(frozen=True)
class PrefixCacheSettings:
    """How a run keeps the prefix's keys and values (QwenImage21Cache): `storage` "default" (the compute
    precision), "int8" or "int4" (per token and head, scaled by its largest magnitude); `device` "auto" (where they
    were computed) or "cpu" (moved back for each step)."""

    storage: str = "default"
    device: str = "auto"


class LayerCache:
    """One block's prefix keys and values, as QwenImage21Transformer2DModel stores and reads them (`store`, `get`):
    stored in `bits` (8, or 4: two values a byte; None: as computed) with a scale per token and head, on `device`
    (None: where they were computed); given back in their own precision and place."""

    def __init__(self, bits: int | None, device: str | None) -> None:
        self.bits, self.device = bits, device
        self.stored: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.computed: tuple[torch.device, torch.dtype] | None = None  # where and in what they were computed

    def store(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.computed = (k.device, k.dtype)
        self.stored = [self._packed(tensor) for tensor in (k, v)]

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.computed is None:
            raise RuntimeError("the prefix cache has not been filled yet")
        k, v = (self._unpacked(*entry) for entry in self.stored)
        return k, v

    def _packed(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        place = tensor.device if self.device is None else torch.device(self.device)
        if self.bits is None:
            return tensor.to(place), None
        top = 2 ** (self.bits - 1) - 1
        scale = tensor.float().abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / top
        values = (tensor.float() / scale).round().clamp(-top, top).to(torch.int8)
        if self.bits == 4:  # two signed 4-bit values a byte, the even ones in the low half
            values = (values[..., 0::2] & 0x0F) | (values[..., 1::2] << 4)
        return values.to(place), scale.to(place)

    def _unpacked(self, values: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        device, dtype = self.computed
        values = values.to(device)
        if scale is None:
            return values
        if self.bits == 4:
            low, high = (values << 4) >> 4, values >> 4  # arithmetic shifts restore the signs
            values = torch.stack([low, high], dim=-1).flatten(-2)
        return (values.float() * scale.to(device)).to(dtype)


@dataclass(frozen=True)
class BlockCaches:
    """Every block's `LayerCache`, as QwenImage21Transformer2DModel reads its `kv_cache` (`get_layer`)."""

    layers: list[LayerCache]

    def get_layer(self, index: int) -> LayerCache:
        return self.layers[index]


class PrefixCache:
    """One sampling run's cache of the prefix's keys and values (the caption's and the references' tokens, which
    attend only to the prefix and are modulated at time 0, so every step computes the same ones): a network call
    whose prefix (its text, its slots, its references' latents) equals a cached one reads them and computes the
    image's tokens only (diffusers' "cached" mode); another prefix is computed whole and cached ("extract"). The
    last `KEPT` prefixes are kept (a prompt and its negative)."""

    KEPT = 4

    def __init__(self, settings: PrefixCacheSettings) -> None:
        self.settings = settings
        self.entries: list[tuple[tuple[torch.Tensor, ...], BlockCaches]] = []

    def lookup(self, prefix: tuple[torch.Tensor, ...], blocks: int) -> tuple[BlockCaches, str]:
        """The cache for `prefix` and the mode to call the network in with it."""
        for index, (cached, cache) in enumerate(self.entries):
            if len(cached) == len(prefix) and all(
                    a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(cached, prefix)):
                self.entries.append(self.entries.pop(index))
                return cache, "cached"
        bits = {"default": None, "int8": 8, "int4": 4}[self.settings.storage]
        device = "cpu" if self.settings.device == "cpu" else None
        cache = BlockCaches([LayerCache(bits, device) for _ in range(blocks)])
        self.entries = (self.entries + [(tuple(tensor.clone() for tensor in prefix), cache)])[-self.KEPT:]
        return cache, "extract"


class QwenImage21Sampling(CaptionedFlowSampling):
    """The shared sampling loop's hooks for a QwenImage21Transformer2DModel; with `prefix_cache`, each run keeps
    the prefix's keys and values between steps (`PrefixCache`)."""

    family_title = "Qwen-Image 2.1"
    latent_format = LatentFormat.from_config(config_beside(__file__)["vae"])

    def __init__(self, prefix_cache: PrefixCacheSettings | None = None) -> None:
        self.prefix_cache = prefix_cache

    def set_timesteps(self, scheduler: Any, total: int, latents: torch.Tensor, device: torch.device) -> None:
        """QwenImage21Pipeline's schedule: sigmas 1 .. 1/steps, shifted by `mu` for the image's token count."""
        height, width = latents.shape[-2:]
        mu = calculate_shift(height * width, scheduler.config)
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / total, total), mu=mu, device=device)

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        inputs = super().network_inputs(guidance, batch, device, dtype)
        if self.prefix_cache is not None:
            inputs[PREFIX_CACHE] = PrefixCache(self.prefix_cache)  # fresh for each run
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
                                              embeddings[selected, :length], row_references, row_slots,
                                              inputs.get(PREFIX_CACHE))
        return output

    @staticmethod
    def _velocity(network: Any, latents: torch.Tensor, timestep: torch.Tensor, embeddings: torch.Tensor,
                  references: list[torch.Tensor], slots: tuple[int, ...],
                  prefix_cache: PrefixCache | None = None) -> torch.Tensor:
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
        text = text.to(latents.dtype)
        cache = {}
        if prefix_cache is not None:
            prefix = (text, slots_mask, *(block for block in blocks[:-1]))
            kv_cache, mode = prefix_cache.lookup(prefix, len(network.transformer_blocks))
            cache = {"kv_cache": kv_cache, "kv_cache_mode": mode}
        output = network(hidden_states=tokens, timestep=timestep, encoder_hidden_states=text,
                         img_shapes=[shapes] * rows, img_mask=slots_mask, return_dict=False, **cache)[0]
        target_tokens = target.shape[-2] * target.shape[-1]
        image = output[:, -target_tokens:].transpose(1, 2).reshape(rows, channels, *target.shape[-2:])
        return image[..., :height, :width]


QWEN_IMAGE21_SAMPLING = QwenImage21Sampling()
