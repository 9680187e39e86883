"""The CLIP value of Stable Diffusion 1.x/2.x (`SdClip`): one CLIP text encoder read at a chosen layer, with
ComfyUI's emphasis syntax and 77-token chunks (`diffusion.encoders.prompt`).

A layer other than the last is read as diffusers' `clip_skip` reads it: that hidden state with the final layer
norm applied. Without emphasis, a prompt of up to 75 tokens encodes exactly as StableDiffusionPipeline encodes it.
Knows nothing of nodes or files.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from diffusion.contracts import Conditioning, LoraPatch
from diffusion.encoders.clip_api import ComfyClipApi, Tokens
from diffusion.encoders.prompt import tokenize_weighted
from diffusion.lora import TEXT_ENCODER, lora_applied


@dataclass(frozen=True, eq=False)
class SdClip(ComfyClipApi):
    """CLIP: tokenizer, text encoder, the layer whose output is used (-1 the last, -2 the one before, as
    ComfyUI's CLIPSetLastLayer counts) and LoRAs to apply. Answers ComfyUI's CLIP methods (`ComfyClipApi`)."""

    tokenizer: Any
    text_encoder: Any
    name: str
    layer_index: int = -1
    loras: tuple[LoraPatch, ...] = ()
    family = "sd"

    @property
    def layer_count(self) -> int:
        return int(self.text_encoder.config.num_hidden_layers)

    def with_layer(self, layer_index: int) -> "SdClip":
        if not -self.layer_count <= layer_index <= -1:
            raise ValueError(f"stop_at_clip_layer: {layer_index} is outside -1..-{self.layer_count} for {self.name}")
        return dataclasses.replace(self, layer_index=layer_index)

    def with_lora(self, patch: LoraPatch) -> "SdClip":
        return dataclasses.replace(self, loras=self.loras + (patch,))

    def lora_modules(self) -> list[tuple[str, Any]]:
        return [(TEXT_ENCODER, self.text_encoder)]

    def offloadable(self) -> list[Any]:
        return []  # one CLIP, small beside the UNet

    def parts(self) -> dict[str, Any]:
        """The encoder under ComfyUI's part name (CLIPSave, CLIP merges): SD1's CLIP-L (quick-GELU) or SD2's
        OpenCLIP-H (GELU)."""
        part = "clip_h" if self.text_encoder.config.hidden_act == "gelu" else "clip_l"
        return {part: self.text_encoder}

    def with_parts(self, parts: Mapping[str, Any]) -> "SdClip":
        """The same CLIP with its encoder replaced (e.g. by a merged copy)."""
        (part,) = self.parts()
        return dataclasses.replace(self, text_encoder=parts.get(part, self.text_encoder))

    def _encode_ids(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states of the chosen layer (final layer norm applied, as diffusers' clip_skip) and pooled output."""
        text_encoder = self.text_encoder
        ids = ids.to(text_encoder.device)
        if self.layer_index == -1:
            output = text_encoder(ids)
            return output.last_hidden_state, output.pooler_output
        output = text_encoder(ids, output_hidden_states=True)
        final_norm = getattr(text_encoder, "final_layer_norm", None) or text_encoder.text_model.final_layer_norm
        return final_norm(output.hidden_states[self.layer_index]), output.pooler_output

    @property
    def token_key(self) -> str:
        """The key of ComfyUI's tokens dict for this encoder: "l" (SD1's CLIP-L) or "h" (SD2's OpenCLIP-H)."""
        (part,) = self.parts()
        return part.removeprefix("clip_")

    def tokenize_prompt(self, text: str, word_ids: bool = False) -> dict[str, list[list[tuple[Any, ...]]]]:
        """ComfyUI's tokens dict of a prompt: {"l" or "h": weighted 77-token chunks}."""
        return {self.token_key: tokenize_weighted(self.tokenizer, text, word_ids)}

    def encode_prompt(self, text: str) -> Conditioning:
        """A prompt as ComfyUI CONDITIONING: [[embeddings [1, 77*chunks, width] float32 CPU, {"pooled_output"}]]."""
        return self.encode_tokens(self.tokenize_prompt(text))

    @torch.inference_mode()
    def encode_tokens(self, tokens: Tokens) -> Conditioning:
        """CONDITIONING of a tokens dict (`tokenize_prompt`'s, or a pack's edit of it): the chunks are encoded and
        concatenated; a weight w moves a token's embedding away from the empty prompt's by w."""
        if self.token_key not in tokens:
            raise ValueError(f"tokens: no {self.token_key!r} entry for {self.name}'s text encoder "
                             f"(got {', '.join(map(repr, tokens)) or 'none'})")
        chunks = tokens[self.token_key]
        weights = torch.tensor([[entry[1] for entry in chunk] for chunk in chunks])
        ids = torch.tensor([[entry[0] for entry in chunk] for chunk in chunks])
        weighted = bool((weights != 1.0).any())
        if weighted:
            ids = torch.cat([ids, torch.tensor([[token for token, _ in tokenize_weighted(self.tokenizer, "")[0]]])])
        with lora_applied(self.text_encoder, TEXT_ENCODER, self.loras):
            hidden, pooled = self._encode_ids(ids)
        hidden = hidden.float().cpu()
        if weighted:
            empty = hidden[-1:]
            hidden = hidden[:-1]
            hidden = (hidden - empty) * weights.unsqueeze(-1) + empty
        embeddings = hidden.reshape(1, -1, hidden.shape[-1])
        return [[embeddings, {"pooled_output": pooled[:1].float().cpu()}]]
