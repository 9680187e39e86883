"""The CLIP value of SDXL (`SdxlClip`): CLIP-L (absent in the refiner) and OpenCLIP-G with projection, read at
the penultimate layer by default, their hidden states side by side and OpenCLIP-G's pooled projection as the
pooled output. Knows nothing of nodes or files."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from diffusion.contracts import Conditioning, LoraPatch
from diffusion.encoders.clip import TextEncoderSlot, check_layer, encode_chunks
from diffusion.encoders.clip_api import ComfyClipApi, Tokens


@dataclass(frozen=True, eq=False)
class SdxlClip(ComfyClipApi):
    """CLIP of SDXL: CLIP-L (absent in the refiner) and OpenCLIP-G with projection, read at `layer_index`
    (-2, the penultimate layer, by default), and LoRAs to apply to either. Answers ComfyUI's CLIP methods
    (`ComfyClipApi`)."""

    clip_l: TextEncoderSlot | None
    clip_g: TextEncoderSlot
    name: str
    layer_index: int = -2
    loras: tuple[LoraPatch, ...] = ()
    family = "sdxl"

    @property
    def refiner(self) -> bool:
        return self.clip_l is None

    @property
    def slots(self) -> list[TextEncoderSlot]:
        return [slot for slot in (self.clip_l, self.clip_g) if slot is not None]

    def with_layer(self, layer_index: int) -> "SdxlClip":
        return dataclasses.replace(self, layer_index=check_layer(layer_index, self.slots, self.name))

    def with_lora(self, patch: LoraPatch) -> "SdxlClip":
        return dataclasses.replace(self, loras=self.loras + (patch,))

    def lora_modules(self) -> list[tuple[str, Any]]:
        return [(slot.lora_component, slot.model) for slot in self.slots]

    def offloadable(self) -> list[Any]:
        return []  # two CLIPs, small beside the UNet

    def parts(self) -> dict[str, Any]:
        """The encoders under ComfyUI's part names (CLIPSave, CLIP merges)."""
        named = {"clip_l": self.clip_l and self.clip_l.model, "clip_g": self.clip_g.model}
        return {part: module for part, module in named.items() if module is not None}

    def with_parts(self, parts: Mapping[str, Any]) -> "SdxlClip":
        """The same CLIP with some encoders replaced (by part name), e.g. merged copies."""
        clip_l = self.clip_l if self.clip_l is None or "clip_l" not in parts else \
            dataclasses.replace(self.clip_l, model=parts["clip_l"])
        clip_g = dataclasses.replace(self.clip_g, model=parts.get("clip_g", self.clip_g.model))
        return dataclasses.replace(self, clip_l=clip_l, clip_g=clip_g)

    def g_only(self) -> "SdxlClip":
        """The OpenCLIP-G part alone (what the refiner's conditioning uses)."""
        return dataclasses.replace(self, clip_l=None)

    def encode_prompt(self, text: str) -> Conditioning:
        return self.encode(text, text, {})

    def tokenize_prompt(self, text: str, word_ids: bool = False) -> dict[str, list[list[tuple[Any, ...]]]]:
        return self.tokenize_pair(text, text, word_ids)

    def tokenize_pair(self, text_g: str, text_l: str, word_ids: bool = False) -> dict[str, list[list[tuple[Any, ...]]]]:
        """ComfyUI's SDXL tokens dict: {"g": OpenCLIP-G's chunks, "l": CLIP-L's (not for the refiner)}, the shorter
        prompt padded with empty chunks to the longer one's length."""
        g_chunks = self.clip_g.chunks(text_g, 0, word_ids)
        if self.clip_l is None:
            return {"g": g_chunks}
        l_chunks = self.clip_l.chunks(text_l, len(g_chunks), word_ids)
        return {"g": self.clip_g.chunks(text_g, len(l_chunks), word_ids), "l": l_chunks}

    def encode(self, text_g: str, text_l: str, options: Mapping[str, Any]) -> Conditioning:
        """[[CLIP-L and OpenCLIP-G hidden states side by side, {"pooled_output": G's projection, **options}]]."""
        return self.encode_tokens(self.tokenize_pair(text_g, text_l), options)

    def encode_tokens(self, tokens: Tokens, options: Mapping[str, Any] | None = None) -> Conditioning:
        """CONDITIONING of a tokens dict (`tokenize_pair`'s, or a pack's edit of it); "g" and "l" must have as many
        chunks (their hidden states are joined side by side)."""
        wanted = ("g",) if self.clip_l is None else ("g", "l")
        if any(key not in tokens for key in wanted) or (self.clip_l and len(tokens["g"]) != len(tokens["l"])):
            raise ValueError(f"tokens: {self.name} needs {' and '.join(map(repr, wanted))} token chunks, as many of "
                             f"each (got {', '.join(f'{key!r}: {len(value)}' for key, value in tokens.items())})")
        hidden, pooled = encode_chunks(self.clip_g, tokens["g"], self.layer_index, self.loras)
        if self.clip_l is not None:
            hidden_l, _ = encode_chunks(self.clip_l, tokens["l"], self.layer_index, self.loras)
            hidden = torch.cat([hidden_l, hidden], dim=-1)
        return [[hidden, {"pooled_output": pooled, **(options or {})}]]


def require_sdxl_clip(clip: Any) -> SdxlClip:
    """`clip` if it is an SDXL CLIP; a ValueError naming the input otherwise."""
    if not isinstance(clip, SdxlClip):
        kind = "an SD1/SD2" if getattr(clip, "family", None) == "sd" else f"a {type(clip).__name__}"
        raise ValueError(f"clip: this node needs an SDXL CLIP, got {kind} text encoder")
    return clip
