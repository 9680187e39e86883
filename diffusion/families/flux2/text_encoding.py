"""The CLIP value of FLUX.2 [klein] (`Flux2Clip`): the prompt in Qwen3's chat template with thinking turned off (a
user turn, the assistant's turn opened with an empty thought), tokenized with Qwen's tokenizer and padded to 512
tokens, Qwen3 run with the padding masked, and the hidden states of three of its layers (9, 18 and 27) side by
side for every token, padding included, as Flux2KleinPipeline and ComfyUI encode it. Knows nothing of nodes or
files."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from diffusion.contracts import Conditioning, LoraPatch
from diffusion.encoders import qwen_tokenizer
from diffusion.encoders.clip_api import ComfyClipApi, Tokens
from diffusion.files import config_beside
from diffusion.lazy_module import resolve

# the tiny models' tokenizer: the 256 bytes and these
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
TINY_VOCAB_SIZE = 256 + len(TINY_SPECIAL_TOKENS)
PAD_TOKEN = "<|endoftext|>"


def settings() -> dict[str, Any]:
    return config_beside(__file__)


def tiny_tokenizer() -> Any:
    return qwen_tokenizer.tiny_qwen_tokenizer(TINY_SPECIAL_TOKENS, settings()["max_length"])


def tokenizer_for_vocab(vocab_size: int, input_name: str) -> Any:
    """Qwen3's tokenizer (the tiny models' for their vocabulary)."""
    return qwen_tokenizer.tokenizer_for_vocab(vocab_size, qwen_tokenizer.QWEN3_SPECIAL_TOKENS, TINY_SPECIAL_TOKENS,
                                              settings()["max_length"], "Qwen3", input_name)


def tokens_key(width: int) -> str:
    """ComfyUI's name of the token stream: Qwen3 4B's (FLUX.2 [klein] 4B) or Qwen3 8B's (9B)."""
    return "qwen3_8b" if width >= 4096 else "qwen3_4b"


@dataclass(frozen=True, eq=False)
class Flux2Clip(ComfyClipApi):
    """CLIP for FLUX.2 [klein]: a Qwen3 model and its tokenizer. Answers ComfyUI's CLIP methods (tokens
    {"qwen3_4b"} or {"qwen3_8b"})."""

    tokenizer: Any
    model: Any
    name: str
    key: str = "qwen3_4b"
    loras: tuple[LoraPatch, ...] = ()
    family = "flux2"

    def lora_modules(self) -> list[tuple[str, Any]]:
        return []  # FLUX.2's LoRAs patch the transformer only

    def offloadable(self) -> list[Any]:
        return [self.model]

    def parts(self) -> dict[str, Any]:
        return {self.key: self.model}

    def with_parts(self, parts: Mapping[str, Any]) -> "Flux2Clip":
        return dataclasses.replace(self, model=parts.get(self.key, self.model))

    def with_lora(self, patch: LoraPatch) -> "Flux2Clip":
        return dataclasses.replace(self, loras=self.loras + (patch,))

    def with_layer(self, layer_index: int) -> "Flux2Clip":
        """CLIPSetLastLayer: FLUX.2 reads three fixed layers of Qwen3."""
        if layer_index != -1:
            raise ValueError(f"stop_at_clip_layer: FLUX.2 reads Qwen3's layers {settings()['text_layers']}; "
                             f"{layer_index} is not -1")
        return self

    def tokenize_prompt(self, text: str, word_ids: bool = False) -> dict[str, list[list[tuple[Any, ...]]]]:
        """The templated prompt's tokens, padded with Qwen's end-of-text token to 512 (longer prompts are not
        cut, as in ComfyUI)."""
        if word_ids:
            raise RuntimeError("clip.tokenize: return_word_ids is not supported by nodeflow for FLUX.2's CLIP")
        ids = self.tokenizer(settings()["prompt_template"].format(text)).input_ids
        pad = self.tokenizer.convert_tokens_to_ids(PAD_TOKEN)
        ids = ids + [pad] * (settings()["max_length"] - len(ids))
        return {self.key: [[(token, 1.0) for token in ids]]}

    def encode_prompt(self, text: str) -> Conditioning:
        return self.encode_tokens(self.tokenize_prompt(text))

    @torch.inference_mode()
    def encode_tokens(self, tokens: Tokens) -> Conditioning:
        """[[Qwen3's layers 9, 18 and 27 side by side [1, tokens, 3 x width], {}]], float32 CPU; the padding
        (the end-of-text tokens after the last real one) is masked in the encoder."""
        if set(tokens) != {self.key}:
            raise ValueError(f"tokens: FLUX.2's CLIP needs {self.key!r} tokens only (got "
                             f"{', '.join(map(repr, tokens))})")
        weights = {entry[1] for chunk in tokens[self.key] for entry in chunk}
        if weights - {1.0}:
            raise ValueError(f"tokens: weights {sorted(weights - {1.0})} are not applied by FLUX.2's text encoding "
                             "(ComfyUI ignores them too); give every token weight 1.0")
        ids = torch.tensor([[entry[0] for chunk in tokens[self.key] for entry in chunk]])
        pad = self.tokenizer.convert_tokens_to_ids(PAD_TOKEN)
        real = (ids != pad).long()
        # padding is what follows the last real token (an end-of-text inside the prompt stays seen)
        mask = (torch.arange(ids.shape[1]) < int(real.nonzero()[:, 1].max()) + 1).long()[None] if real.any() \
            else torch.ones_like(ids)
        model = resolve(self.model)
        states = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                       output_hidden_states=True, use_cache=False).hidden_states
        stacked = torch.stack([states[layer] for layer in settings()["text_layers"]], dim=2)
        return [[stacked.reshape(1, ids.shape[1], -1).float().cpu(), {}]]
