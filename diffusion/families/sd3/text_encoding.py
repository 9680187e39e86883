"""The CLIP value of SD3 (`Sd3Clip`): prompts encoded as StableDiffusion3Pipeline encodes them: CLIP-L and
OpenCLIP-G hidden states of the penultimate layer side by side, zero-padded to the T5 width, followed by T5's
256 tokens; the pooled output is both CLIPs' projections concatenated. Without T5 the conditioning holds the CLIP
part only (the sampler adds T5's zero tokens). Knows nothing of nodes or files."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from diffusion.contracts import Conditioning, LoraPatch
from diffusion.encoders.clip import TextEncoderSlot, check_layer, encode_chunks
from diffusion.files import config_beside
from diffusion.lazy_module import resolve
from diffusion.lora import TEXT_ENCODER, TEXT_ENCODER_2


@dataclass(frozen=True, eq=False)
class Sd3Clip:
    """CLIP of SD3: CLIP-L and CLIP-G with projections (read at `layer_index`, the penultimate by default) and an
    optional T5 encoder with its tokenizer; LoRAs apply to the two CLIPs."""

    clip_l: TextEncoderSlot
    clip_g: TextEncoderSlot
    t5_tokenizer: Any
    t5: Any
    name: str
    layer_index: int = -2
    loras: tuple[LoraPatch, ...] = ()
    family = "sd3"

    @property
    def slots(self) -> list[TextEncoderSlot]:
        return [self.clip_l, self.clip_g]

    def with_layer(self, layer_index: int) -> "Sd3Clip":
        return dataclasses.replace(self, layer_index=check_layer(layer_index, self.slots, self.name))

    def with_lora(self, patch: LoraPatch) -> "Sd3Clip":
        return dataclasses.replace(self, loras=self.loras + (patch,))

    def lora_modules(self) -> list[tuple[str, Any]]:
        return [(slot.lora_component, slot.model) for slot in self.slots]

    def offloadable(self) -> list[Any]:
        """The big text encoders that may be freed after encoding (T5; the CLIPs are small)."""
        return [] if self.t5 is None else [self.t5]

    def without_t5(self) -> "Sd3Clip":
        return dataclasses.replace(self, t5_tokenizer=None, t5=None)

    def encode_prompt(self, text: str) -> Conditioning:
        return self.encode(text, text, text)

    @torch.inference_mode()
    def encode(self, clip_l: str, clip_g: str, t5xxl: str, pad_empty: bool = True) -> Conditioning:
        """CONDITIONING of one text per encoder. `pad_empty` (CLIPTextEncodeSD3's empty_padding "empty_prompt",
        what StableDiffusion3Pipeline does) encodes an empty text as the empty prompt; without it (ComfyUI's
        "none") empty texts give no tokens: with both CLIP texts empty the CLIP part is left out and its pooled
        output is zeros, and an empty T5 text is T5's end token alone; all empty without T5 is zeros. (One empty
        CLIP text beside a non-empty one is encoded as the empty prompt: the two are read side by side.)"""
        hidden, pooled = self._encode_clips(clip_l, clip_g) if pad_empty or clip_l or clip_g else (None, None)
        if pooled is None:
            width = sum(int(slot.model.config.projection_dim) for slot in self.slots)
            pooled = torch.zeros(1, width)
        if self.t5 is not None:
            t5_hidden = self._encode_t5(t5xxl, pad_empty or bool(t5xxl))
            hidden = t5_hidden if hidden is None else torch.cat(
                [torch.nn.functional.pad(hidden, (0, t5_hidden.shape[-1] - hidden.shape[-1])), t5_hidden], dim=1)
        elif hidden is None:
            hidden = torch.zeros(1, 77, sum(int(slot.model.config.hidden_size) for slot in self.slots))
        return [[hidden, {"pooled_output": pooled}]]

    def _encode_clips(self, clip_l: str, clip_g: str) -> tuple[torch.Tensor, torch.Tensor]:
        count = max(len(self.clip_l.chunks(clip_l)), len(self.clip_g.chunks(clip_g)))
        hidden_l, pooled_l = encode_chunks(self.clip_l, self.clip_l.chunks(clip_l, count), self.layer_index,
                                           self.loras)
        hidden_g, pooled_g = encode_chunks(self.clip_g, self.clip_g.chunks(clip_g, count), self.layer_index,
                                           self.loras)
        return torch.cat([hidden_l, hidden_g], dim=-1), torch.cat([pooled_l, pooled_g], dim=-1)

    def _encode_t5(self, text: str, padded: bool) -> torch.Tensor:
        if padded:
            ids = self.t5_tokenizer(text, padding="max_length", max_length=config_beside(__file__)["t5_max_length"],
                                    truncation=True, add_special_tokens=True, return_tensors="pt").input_ids
        else:
            ids = torch.tensor([[self.t5_tokenizer.eos_token_id]])
        t5 = resolve(self.t5)
        return t5(ids.to(t5.device))[0].float().cpu()


def make_clip(clip_l: Any, tokenizer_l: Any, clip_g: Any, tokenizer_g: Any, t5: Any, t5_tokenizer: Any,
              name: str) -> Sd3Clip:
    slot_l = TextEncoderSlot(tokenizer_l, clip_l, TEXT_ENCODER)
    slot_g = TextEncoderSlot(tokenizer_g, clip_g, TEXT_ENCODER_2)
    return Sd3Clip(slot_l, slot_g, t5_tokenizer if t5 is not None else None, t5, name,
                   config_beside(__file__)["clip_layer"])
