"""The CLIP value of SD3 (`Sd3Clip`): prompts encoded as StableDiffusion3Pipeline encodes them: CLIP-L and
OpenCLIP-G hidden states of the penultimate layer side by side, zero-padded to the T5 width, followed by T5's
256 tokens; the pooled output is both CLIPs' projections concatenated. Without T5 the conditioning holds the CLIP
part only (the sampler adds T5's zero tokens). Either CLIP may be absent too (CLIPLoader/DualCLIPLoader with type
sd3 take any of the three): as in ComfyUI, an absent CLIP's hidden states and pooled output are zeros of its
width (`absent_clip_width` in config.json). Knows nothing of nodes or files."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from diffusion.contracts import Conditioning, LoraPatch
from diffusion.encoders.clip import TextEncoderSlot, TokenChunks, check_layer, encode_chunks
from diffusion.encoders.clip_api import ComfyClipApi, Tokens
from diffusion.encoders.t5 import T5Padding
from diffusion.files import config_beside
from diffusion.lazy_module import resolve
from diffusion.lora import TEXT_ENCODER, TEXT_ENCODER_2


@dataclass(frozen=True, eq=False)
class Sd3Clip(ComfyClipApi):
    """CLIP of SD3: CLIP-L and CLIP-G with projections (read at `layer_index`, the penultimate by default; either
    may be absent) and an optional T5 encoder with its tokenizer; LoRAs apply to the CLIPs. `t5_padding`: ComfyUI's
    T5 tokenizer options (T5TokenizerOptions), which replace the pipeline's padding to 256 tokens. Answers ComfyUI's
    CLIP methods (`ComfyClipApi`; tokens {"l", "g", "t5xxl"} for the encoders present)."""

    clip_l: TextEncoderSlot | None
    clip_g: TextEncoderSlot | None
    t5_tokenizer: Any
    t5: Any
    name: str
    layer_index: int = -2
    loras: tuple[LoraPatch, ...] = ()
    t5_padding: T5Padding | None = None
    family = "sd3"

    @property
    def slots(self) -> list[TextEncoderSlot]:
        return [slot for slot in (self.clip_l, self.clip_g) if slot is not None]

    def with_layer(self, layer_index: int) -> "Sd3Clip":
        if not self.slots:  # T5 alone: ComfyUI's layer choice applies to the CLIPs only
            return self
        return dataclasses.replace(self, layer_index=check_layer(layer_index, self.slots, self.name))

    def parts(self) -> dict[str, Any]:
        """The encoders under ComfyUI's part names (CLIPSave, CLIP merges)."""
        named = {"clip_l": self.clip_l and self.clip_l.model, "clip_g": self.clip_g and self.clip_g.model,
                 "t5xxl": self.t5}
        return {part: module for part, module in named.items() if module is not None}

    def with_parts(self, parts: Mapping[str, Any]) -> "Sd3Clip":
        """The same CLIP with some encoders replaced (by part name), e.g. merged copies."""
        slots = {name: slot if slot is None or name not in parts else dataclasses.replace(slot, model=parts[name])
                 for name, slot in (("clip_l", self.clip_l), ("clip_g", self.clip_g))}
        return dataclasses.replace(self, **slots, t5=parts.get("t5xxl", self.t5))

    def with_lora(self, patch: LoraPatch) -> "Sd3Clip":
        return dataclasses.replace(self, loras=self.loras + (patch,))

    def lora_modules(self) -> list[tuple[str, Any]]:
        return [(slot.lora_component, slot.model) for slot in self.slots]

    def offloadable(self) -> list[Any]:
        """The big text encoders that may be freed after encoding (T5; the CLIPs are small)."""
        return [] if self.t5 is None else [self.t5]

    def with_t5_padding(self, padding: T5Padding) -> "Sd3Clip":
        return dataclasses.replace(self, t5_padding=padding)

    def without_t5(self) -> "Sd3Clip":
        return dataclasses.replace(self, t5_tokenizer=None, t5=None)

    def encode_prompt(self, text: str) -> Conditioning:
        return self.encode(text, text, text)

    def tokenize_prompt(self, text: str, word_ids: bool = False) -> dict[str, list[list[tuple[Any, ...]]]]:
        return self.tokenize_texts(text, text, text, word_ids)

    def tokenize_texts(self, clip_l: str, clip_g: str, t5xxl: str,
                       word_ids: bool = False) -> dict[str, list[list[tuple[Any, ...]]]]:
        """ComfyUI's SD3 tokens dict for the encoders present: "l" and "g" weighted 77-token chunks (as many of
        each), "t5xxl" one chunk of T5's tokens (weight 1; word 0 with `word_ids`), empty texts as the empty prompt."""
        tokens: dict[str, list[list[tuple[Any, ...]]]] = dict(self._clip_chunks(clip_l, clip_g, word_ids))
        if self.t5 is not None:
            tokens["t5xxl"] = [[(token, 1.0, 0)[:3 if word_ids else 2] for token in self._t5_ids(t5xxl, True)]]
        return tokens

    @torch.inference_mode()
    def encode_tokens(self, tokens: Tokens) -> Conditioning:
        """CONDITIONING of a tokens dict (`tokenize_texts`'s, or a pack's edit of it); "l" and "g" need as many
        chunks (their hidden states are joined side by side); T5's token weights must be 1 (none are applied)."""
        wanted = [key for key, present in (("l", self.clip_l), ("g", self.clip_g), ("t5xxl", self.t5)) if present]
        if any(key not in tokens for key in wanted) or len({len(tokens[key]) for key in wanted if key != "t5xxl"}) > 1:
            raise ValueError(f"tokens: {self.name} needs {', '.join(map(repr, wanted))} tokens, as many 'l' as 'g' "
                             f"chunks (got {', '.join(f'{key!r}: {len(value)}' for key, value in tokens.items())})")
        hidden, pooled = (self._encode_clip_chunks({key: tokens[key] for key in ("l", "g") if key in wanted})
                          if self.slots else (None, None))
        return self._conditioning(hidden, pooled, tokens.get("t5xxl"))

    @torch.inference_mode()
    def encode(self, clip_l: str, clip_g: str, t5xxl: str, pad_empty: bool = True) -> Conditioning:
        """CONDITIONING of one text per encoder. `pad_empty` (CLIPTextEncodeSD3's empty_padding "empty_prompt",
        what StableDiffusion3Pipeline does) encodes an empty text as the empty prompt; without it (ComfyUI's
        "none") empty texts give no tokens: with both CLIP texts empty the CLIP part is left out and its pooled
        output is zeros, and an empty T5 text is T5's end token alone; all empty without T5 is zeros. (One empty
        CLIP text beside a non-empty one is encoded as the empty prompt: the two are read side by side.)"""
        if pad_empty:
            return self.encode_tokens(self.tokenize_texts(clip_l, clip_g, t5xxl))
        use_clips = self.slots and (clip_l or clip_g)
        hidden, pooled = self._encode_clip_chunks(self._clip_chunks(clip_l, clip_g)) if use_clips else (None, None)
        t5_tokens = None if self.t5 is None else [[(token, 1.0) for token in self._t5_ids(t5xxl, bool(t5xxl))]]
        return self._conditioning(hidden, pooled, t5_tokens)

    def _conditioning(self, hidden: torch.Tensor | None, pooled: torch.Tensor | None,
                      t5_tokens: TokenChunks | None) -> Conditioning:
        """The CLIPs' part (None: left out) and T5's (None: no T5) joined along the sequence, as ComfyUI joins them."""
        if pooled is None:
            pooled = torch.zeros(1, self._width("clip_l", "projection_dim") + self._width("clip_g", "projection_dim"))
        if t5_tokens is not None:
            if {entry[1] for chunk in t5_tokens for entry in chunk} - {1.0}:
                raise ValueError("tokens: 't5xxl' token weights are not applied by SD3's T5 encoding here; give every "
                                 "T5 token weight 1.0")
            t5_hidden = self._encode_t5([entry[0] for chunk in t5_tokens for entry in chunk])
            hidden = t5_hidden if hidden is None else torch.cat(
                [torch.nn.functional.pad(hidden, (0, t5_hidden.shape[-1] - hidden.shape[-1])), t5_hidden], dim=1)
        elif hidden is None:
            hidden = torch.zeros(1, 77, self._width("clip_l", "hidden_size") + self._width("clip_g", "hidden_size"))
        return [[hidden, {"pooled_output": pooled}]]

    def _width(self, part: str, setting: str) -> int:
        """A CLIP's hidden or projection width; for an absent CLIP ComfyUI's (768 for CLIP-L, 1280 for CLIP-G)."""
        slot = getattr(self, part)
        if slot is None:
            return int(config_beside(__file__)["absent_clip_width"][part])
        return int(getattr(slot.model.config, setting))

    def _clip_chunks(self, clip_l: str, clip_g: str, word_ids: bool = False) -> dict[str, TokenChunks]:
        """{"l", "g": each present CLIP's chunks of its text}, padded with empty chunks to the longer one's count."""
        texts = {key: (slot, text) for key, slot, text in (("l", self.clip_l, clip_l), ("g", self.clip_g, clip_g))
                 if slot is not None}
        count = max((len(slot.chunks(text)) for slot, text in texts.values()), default=0)
        return {key: slot.chunks(text, count, word_ids) for key, (slot, text) in texts.items()}

    def _encode_clip_chunks(self, chunks: Mapping[str, TokenChunks]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled = [], []
        for part, key, slot in (("clip_l", "l", self.clip_l), ("clip_g", "g", self.clip_g)):
            if slot is None:
                hidden.append(None)
                pooled.append(torch.zeros(1, self._width(part, "projection_dim")))
                continue
            part_hidden, part_pooled = encode_chunks(slot, chunks[key], self.layer_index, self.loras)
            hidden.append(part_hidden)
            pooled.append(part_pooled)
        hidden_l, hidden_g = hidden
        if hidden_l is None:  # CLIP-G alone: zeros where CLIP-L's hidden states would be
            joined = torch.nn.functional.pad(hidden_g, (self._width("clip_l", "hidden_size"), 0))
        else:
            joined = hidden_l if hidden_g is None else torch.cat([hidden_l, hidden_g], dim=-1)
        return joined, torch.cat(pooled, dim=-1)

    def _t5_ids(self, text: str, padded: bool) -> list[int]:
        if padded and self.t5_padding is not None:
            return self.t5_padding.token_ids(self.t5_tokenizer, text)[0].tolist()
        if padded:
            return list(self.t5_tokenizer(text, padding="max_length",
                                          max_length=config_beside(__file__)["t5_max_length"], truncation=True,
                                          add_special_tokens=True).input_ids)
        return [self.t5_tokenizer.eos_token_id]

    def _encode_t5(self, ids: list[int]) -> torch.Tensor:
        t5 = resolve(self.t5)
        return t5(torch.tensor([ids]).to(t5.device))[0].float().cpu()


def make_clip(clip_l: Any, tokenizer_l: Any, clip_g: Any, tokenizer_g: Any, t5: Any, t5_tokenizer: Any,
              name: str) -> Sd3Clip:
    """SD3's CLIP from its encoders (any of them None when absent) and their tokenizers."""
    slot_l = None if clip_l is None else TextEncoderSlot(tokenizer_l, clip_l, TEXT_ENCODER)
    slot_g = None if clip_g is None else TextEncoderSlot(tokenizer_g, clip_g, TEXT_ENCODER_2)
    return Sd3Clip(slot_l, slot_g, t5_tokenizer if t5 is not None else None, t5, name,
                   config_beside(__file__)["clip_layer"])
