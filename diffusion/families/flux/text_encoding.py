"""The CLIP value of FLUX (`FluxClip`): T5 hidden states as the sequence, CLIP-L's pooled output as
`pooled_output`, tokenized as FluxPipeline does (no emphasis syntax, CLIP-L to 77 tokens, T5 padded to 512; with
ComfyUI's T5 tokenizer options set, T5 as `T5Padding` says).
Knows nothing of nodes or files."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from diffusion.contracts import Conditioning, LoraPatch
from diffusion.encoders.clip_api import ComfyClipApi, Tokens
from diffusion.encoders.t5 import T5Padding
from diffusion.files import config_beside
from diffusion.lazy_module import resolve
from diffusion.lora import TEXT_ENCODER, lora_applied


@dataclass(frozen=True, eq=False)
class FluxClip(ComfyClipApi):
    """CLIP for FLUX: CLIP-L (pooled output) and T5 (hidden states), with their tokenizers and LoRAs to apply.
    Answers ComfyUI's CLIP methods (`ComfyClipApi`; tokens {"l", "t5xxl"}, all of weight 1)."""

    clip_tokenizer: Any
    clip_model: Any
    t5_tokenizer: Any
    t5_model: Any
    name: str
    loras: tuple[LoraPatch, ...] = ()
    t5_padding: T5Padding | None = None  # ComfyUI's T5 tokenizer options (T5TokenizerOptions)
    family = "flux"

    def lora_modules(self) -> list[tuple[str, Any]]:
        return [(TEXT_ENCODER, self.clip_model)]

    def offloadable(self) -> list[Any]:
        """The big text encoders that may be freed after encoding (T5; CLIP-L is small)."""
        return [self.t5_model]

    def parts(self) -> dict[str, Any]:
        """The encoders under ComfyUI's part names (CLIPSave, CLIP merges)."""
        return {"clip_l": self.clip_model, "t5xxl": self.t5_model}

    def with_parts(self, parts: Mapping[str, Any]) -> "FluxClip":
        """The same CLIP with some encoders replaced (by part name), e.g. merged copies."""
        return dataclasses.replace(self, clip_model=parts.get("clip_l", self.clip_model),
                                   t5_model=parts.get("t5xxl", self.t5_model))

    def with_t5_padding(self, padding: T5Padding) -> "FluxClip":
        return dataclasses.replace(self, t5_padding=padding)

    def with_lora(self, patch: LoraPatch) -> "FluxClip":
        return dataclasses.replace(self, loras=self.loras + (patch,))

    def with_layer(self, layer_index: int) -> "FluxClip":
        """CLIPSetLastLayer: FLUX reads only CLIP-L's pooled output (from the last layer, as in ComfyUI) and T5's
        last layer, so a valid layer choice changes nothing."""
        layers = int(self.clip_model.config.num_hidden_layers)
        if not -layers <= layer_index <= -1:
            raise ValueError(f"stop_at_clip_layer: {layer_index} is outside -1..-{layers} for {self.name}")
        return self

    def tokenize_prompt(self, text: str, word_ids: bool = False) -> dict[str, list[list[tuple[Any, ...]]]]:
        return self.tokenize_pair(text, text, word_ids)

    def tokenize_pair(self, text: str, t5_text: str, word_ids: bool = False) -> dict[str, list[list[tuple[Any, ...]]]]:
        """ComfyUI's FLUX tokens dict: {"l": one chunk of CLIP-L's 77 tokens, "t5xxl": one chunk of T5's}, weight 1
        each (FluxPipeline's tokenization: no emphasis syntax; T5 as `t5_padding` says when set)."""
        if word_ids:
            raise RuntimeError("clip.tokenize: return_word_ids is not supported by nodeflow for FLUX's CLIP: its "
                               "prompts are tokenized as FluxPipeline does, without ComfyUI's word split")
        lengths = config_beside(__file__)
        clip_ids = self.clip_tokenizer(text, padding="max_length", max_length=lengths["clip_max_length"],
                                       truncation=True).input_ids
        if self.t5_padding is not None:
            t5_ids = self.t5_padding.token_ids(self.t5_tokenizer, t5_text)[0].tolist()
        else:
            t5_ids = self.t5_tokenizer(t5_text, padding="max_length", max_length=lengths["t5_max_length"],
                                       truncation=True).input_ids
        return {"l": [[(token, 1.0) for token in clip_ids]], "t5xxl": [[(token, 1.0) for token in t5_ids]]}

    def encode_prompt(self, text: str, t5_text: str | None = None) -> Conditioning:
        """[[T5 hidden states [1, 512, width], {"pooled_output": CLIP-L pooled [1, width]}]], float32 CPU (T5's
        length as `t5_padding` says when set); `t5_text` gives T5 another prompt than CLIP-L (CLIPTextEncodeFlux)."""
        return self.encode_tokens(self.tokenize_pair(text, text if t5_text is None else t5_text))

    @torch.inference_mode()
    def encode_tokens(self, tokens: Tokens) -> Conditioning:
        """CONDITIONING of a tokens dict (`tokenize_pair`'s, or a pack's edit of it): CLIP-L's single chunk gives
        the pooled output, T5's tokens the hidden states. Token weights other than 1 are refused (FLUX's encoding
        here applies none)."""
        if "l" not in tokens or "t5xxl" not in tokens or len(tokens["l"]) != 1:
            raise ValueError(f"tokens: FLUX's CLIP needs one 'l' chunk and 't5xxl' tokens (got "
                             f"{', '.join(f'{key!r}: {len(value)} chunks' for key, value in tokens.items())})")
        weights = {entry[1] for chunks in (tokens["l"], tokens["t5xxl"]) for chunk in chunks for entry in chunk}
        if weights - {1.0}:
            raise ValueError(f"tokens: weights {sorted(weights - {1.0})} are not applied by FLUX's text encoding "
                             "here; give every token weight 1.0")
        clip_ids = torch.tensor([[entry[0] for entry in tokens["l"][0]]])
        t5_ids = torch.tensor([[entry[0] for chunk in tokens["t5xxl"] for entry in chunk]])
        with lora_applied(self.clip_model, TEXT_ENCODER, self.loras):
            pooled = self.clip_model(clip_ids.to(self.clip_model.device), output_hidden_states=False).pooler_output
        t5_model = resolve(self.t5_model)
        hidden = t5_model(t5_ids.to(t5_model.device), output_hidden_states=False)[0]
        return [[hidden.float().cpu(), {"pooled_output": pooled.float().cpu()}]]
