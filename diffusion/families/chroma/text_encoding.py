"""The CLIP value of Chroma (`ChromaClip`): T5 alone, encoding as ComfyUI does (CLIPLoader type chroma): the
prompt's tokens and end token, unpadded, through T5 and seen by the transformer whole, no mask. ComfyUI's T5
tokenizer options (T5TokenizerOptions, as Chroma's ComfyUI workflows set them: min_padding 1 or 0) add padding
that is encoded and seen the same way. (ChromaPipeline instead pads to 512 tokens and masks all but the first
padding token, so its images differ slightly from ComfyUI's; given our embeddings it gives ours.) Knows nothing
of nodes or files."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from diffusion.contracts import Conditioning, LoraPatch
from diffusion.encoders.clip_api import ComfyClipApi, Tokens
from diffusion.encoders.t5 import T5Padding
from diffusion.lazy_module import resolve

# a conditioning option ComfyUI's encoders may give ([1, tokens], 1 for the tokens the transformer attends to); this
# CLIP gives none
ATTENTION_MASK = "attention_mask"


@dataclass(frozen=True, eq=False)
class ChromaClip(ComfyClipApi):
    """CLIP for Chroma: a T5 encoder and its tokenizer. Answers ComfyUI's CLIP methods (tokens {"t5xxl"})."""

    t5_tokenizer: Any
    t5_model: Any
    name: str
    loras: tuple[LoraPatch, ...] = ()
    t5_padding: T5Padding = T5Padding()  # ComfyUI's T5 tokenizer options; by default none: unpadded
    family = "chroma"

    def lora_modules(self) -> list[tuple[str, Any]]:
        return []  # Chroma's LoRAs patch the transformer only

    def offloadable(self) -> list[Any]:
        return [self.t5_model]

    def parts(self) -> dict[str, Any]:
        return {"t5xxl": self.t5_model}

    def with_parts(self, parts: Mapping[str, Any]) -> "ChromaClip":
        return dataclasses.replace(self, t5_model=parts.get("t5xxl", self.t5_model))

    def with_lora(self, patch: LoraPatch) -> "ChromaClip":
        return dataclasses.replace(self, loras=self.loras + (patch,))

    def with_t5_padding(self, padding: T5Padding) -> "ChromaClip":
        return dataclasses.replace(self, t5_padding=padding)

    def with_layer(self, layer_index: int) -> "ChromaClip":
        """CLIPSetLastLayer: Chroma reads T5's last layer only, so -1 is the one choice."""
        if layer_index != -1:
            raise ValueError(f"stop_at_clip_layer: Chroma's T5 gives its last layer only; {layer_index} is not -1")
        return self

    def tokenize_prompt(self, text: str, word_ids: bool = False) -> dict[str, list[list[tuple[Any, ...]]]]:
        """{"t5xxl": one chunk of the prompt's tokens and end token, then the T5 tokenizer options' padding},
        weight 1 each."""
        if word_ids:
            raise RuntimeError("clip.tokenize: return_word_ids is not supported by nodeflow for Chroma's CLIP")
        ids = self.t5_padding.token_ids(self.t5_tokenizer, text)[0].tolist()
        return {"t5xxl": [[(token, 1.0) for token in ids]]}

    def encode_prompt(self, text: str) -> Conditioning:
        return self.encode_tokens(self.tokenize_prompt(text))

    @torch.inference_mode()
    def encode_tokens(self, tokens: Tokens) -> Conditioning:
        """[[T5 hidden states [1, tokens, width], {}]], float32 CPU: every token encoded and seen, none masked
        (ComfyUI's)."""
        if set(tokens) != {"t5xxl"}:
            raise ValueError(f"tokens: Chroma's CLIP needs 't5xxl' tokens only (got {', '.join(map(repr, tokens))})")
        weights = {entry[1] for chunk in tokens["t5xxl"] for entry in chunk}
        if weights - {1.0}:
            raise ValueError(f"tokens: weights {sorted(weights - {1.0})} are not applied by Chroma's text encoding "
                             "here; give every token weight 1.0")
        ids = torch.tensor([[entry[0] for chunk in tokens["t5xxl"] for entry in chunk]])
        t5_model = resolve(self.t5_model)
        return [[t5_model(ids.to(t5_model.device), output_hidden_states=False)[0].float().cpu(), {}]]
