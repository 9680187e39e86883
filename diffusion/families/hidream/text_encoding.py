"""The CLIP value of HiDream (`HiDreamClip`): a prompt read by four encoders as HiDreamImagePipeline and ComfyUI read
it: CLIP-L's and CLIP-G's projected pooled outputs side by side (the pooled text embedding), T5's hidden states over
128 tokens (the padding masked), and Llama 3.1's hidden states of every layer (not the embeddings; the last layer's
after the final norm) over `<|begin_of_text|>`, the prompt and `<|eot_id|>` padding to 128 tokens (the padding
masked). The conditioning is ComfyUI's: T5's states as the sequence, with {"pooled_output", "conditioning_llama3":
[1, layers, tokens, width]}. CLIPTextEncodeHiDream gives each encoder its own text. An absent encoder (fewer than
four files) counts as zeros of the real model's size (`absent` in config.json), as in ComfyUI. Knows nothing of
nodes or files."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from diffusion.contracts import Conditioning, LoraPatch
from diffusion.encoders.clip import TextEncoderSlot, TokenChunks, encode_chunks
from diffusion.encoders.clip_api import ComfyClipApi, Tokens
from diffusion.encoders.llama_tokenizer import END_OF_TURN
from diffusion.files import config_beside
from diffusion.lazy_module import resolve

TOKEN_KEYS = ("l", "g", "t5xxl", "llama")  # ComfyUI's names of HiDream's token streams


def _settings() -> dict[str, Any]:
    return config_beside(__file__)


def _padding_mask(ids: torch.Tensor, pad: int) -> torch.Tensor:
    """1 up to the last token that is not `pad` (an end token inside the text stays seen), 0 after."""
    real = (ids[0] != pad).nonzero()
    length = int(real.max()) + 1 if len(real) else ids.shape[1]
    return (torch.arange(ids.shape[1]) < length).long()[None]


@dataclass(frozen=True, eq=False)
class HiDreamClip(ComfyClipApi):
    """CLIP of HiDream: CLIP-L and CLIP-G with projections (LoRAs apply to them), T5 and Llama (each read on the
    first encode and freeable after it) with their tokenizers; any of them None when absent. Answers ComfyUI's CLIP
    methods (tokens {"l", "g", "t5xxl", "llama"} of the encoders present)."""

    clip_l: TextEncoderSlot | None
    clip_g: TextEncoderSlot | None
    t5_tokenizer: Any
    t5: Any
    llama_tokenizer: Any
    llama: Any
    name: str
    loras: tuple[LoraPatch, ...] = ()
    family = "hidream"

    def with_layer(self, layer_index: int) -> "HiDreamClip":
        """CLIPSetLastLayer: HiDream reads the CLIPs' pooled outputs only, which no layer choice changes."""
        if layer_index >= 0:
            raise ValueError(f"stop_at_clip_layer: {layer_index} is not a layer counted from the end (-1, -2, ...)")
        return self

    @property
    def slots(self) -> list[TextEncoderSlot]:
        return [slot for slot in (self.clip_l, self.clip_g) if slot is not None]

    def parts(self) -> dict[str, Any]:
        named = {"clip_l": self.clip_l and self.clip_l.model, "clip_g": self.clip_g and self.clip_g.model,
                 "t5xxl": self.t5, "llama": self.llama}
        return {part: module for part, module in named.items() if module is not None}

    def with_parts(self, parts: Mapping[str, Any]) -> "HiDreamClip":
        slots = {name: slot if slot is None or name not in parts else dataclasses.replace(slot, model=parts[name])
                 for name, slot in (("clip_l", self.clip_l), ("clip_g", self.clip_g))}
        return dataclasses.replace(self, **slots, t5=parts.get("t5xxl", self.t5), llama=parts.get("llama", self.llama))

    def with_lora(self, patch: LoraPatch) -> "HiDreamClip":
        return dataclasses.replace(self, loras=self.loras + (patch,))

    def lora_modules(self) -> list[tuple[str, Any]]:
        return [(slot.lora_component, slot.model) for slot in self.slots]

    def offloadable(self) -> list[Any]:
        """T5 and Llama (the CLIPs are small)."""
        return [module for module in (self.t5, self.llama) if module is not None]

    def encode_prompt(self, text: str) -> Conditioning:
        return self.encode_tokens(self.tokenize_prompt(text))

    def tokenize_prompt(self, text: str, word_ids: bool = False) -> dict[str, list[list[tuple[Any, ...]]]]:
        return self.tokenize_texts(text, text, text, text, word_ids)

    def tokenize_texts(self, clip_l: str, clip_g: str, t5xxl: str, llama: str,
                       word_ids: bool = False) -> dict[str, list[list[tuple[Any, ...]]]]:
        """ComfyUI's HiDream tokens of the encoders present: weighted 77-token chunks for "l" and "g", T5's first
        128 tokens with its end token (padded to 128), Llama's begin-of-text and tokens padded to 128 with
        end-of-turn."""
        settings = _settings()

        def unweighted(ids: list[int]) -> TokenChunks:
            return [[(token, 1.0, 0)[:3 if word_ids else 2] for token in ids]]

        tokens = {key: slot.chunks(text, word_ids=word_ids)
                  for key, slot, text in (("l", self.clip_l, clip_l), ("g", self.clip_g, clip_g)) if slot is not None}
        if self.t5 is not None:
            tokens["t5xxl"] = unweighted(self.t5_tokenizer(t5xxl, padding="max_length", max_length=settings[
                "t5_length"], truncation=True, add_special_tokens=True).input_ids)
        if self.llama is not None:
            llama_ids = self.llama_tokenizer(llama, add_special_tokens=True).input_ids  # <|begin_of_text|> first
            pad = self.llama_tokenizer.convert_tokens_to_ids(END_OF_TURN)
            tokens["llama"] = unweighted(llama_ids + [pad] * (settings["llama_min_length"] - len(llama_ids)))
        return tokens

    @torch.inference_mode()
    def encode_tokens(self, tokens: Tokens) -> Conditioning:
        """[[T5's hidden states [1, 128, width], {"pooled_output": [1, L + G], "conditioning_llama3": [1, layers,
        tokens, width]}]], float32 CPU; zeros of the real model's size for an absent encoder (its tokens, if given,
        are not used). T5's and Llama's token weights must be 1 (ComfyUI applies none)."""
        present = {key for key, module in zip(TOKEN_KEYS, (self.clip_l, self.clip_g, self.t5, self.llama))
                   if module is not None}
        if present - set(tokens):
            raise ValueError(f"tokens: this HiDream CLIP needs {', '.join(map(repr, sorted(present)))} tokens (got "
                             f"{', '.join(map(repr, tokens))})")
        for key in {"t5xxl", "llama"} & present:
            if {entry[1] for chunk in tokens[key] for entry in chunk} - {1.0}:
                raise ValueError(f"tokens: {key!r} token weights are not applied by HiDream's text encoding; give "
                                 "every token weight 1.0")
        absent = _settings()["absent"]
        pooled = [torch.zeros(1, absent[part]) if slot is None else encode_chunks(slot, tokens[key], -1,
                                                                                   self.loras)[1]
                  for slot, key, part in ((self.clip_l, "l", "clip_l"), (self.clip_g, "g", "clip_g"))]
        t5 = torch.zeros(1, *absent["t5"]) if self.t5 is None else self._t5_states(tokens["t5xxl"])
        llama = torch.zeros(1, *absent["llama"]) if self.llama is None else self._llama_states(tokens["llama"])
        return [[t5, {"pooled_output": torch.cat(pooled, dim=-1), "conditioning_llama3": llama}]]

    def _t5_states(self, chunks: TokenChunks) -> torch.Tensor:
        ids = torch.tensor([[entry[0] for chunk in chunks for entry in chunk]])
        t5 = resolve(self.t5)
        mask = _padding_mask(ids, self.t5_tokenizer.pad_token_id)
        return t5(ids.to(t5.device), attention_mask=mask.to(t5.device))[0].float().cpu()

    def _llama_states(self, chunks: TokenChunks) -> torch.Tensor:
        ids = torch.tensor([[entry[0] for chunk in chunks for entry in chunk]])
        llama = resolve(self.llama)
        mask = _padding_mask(ids, self.llama_tokenizer.convert_tokens_to_ids(END_OF_TURN))
        states = llama(input_ids=ids.to(llama.device), attention_mask=mask.to(llama.device),
                       output_hidden_states=True, use_cache=False).hidden_states[1:]
        return torch.stack(states, dim=1).float().cpu()
