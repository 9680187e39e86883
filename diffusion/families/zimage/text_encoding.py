"""The CLIP value of Z-Image (`ZImageClip`): the prompt put in Qwen3's chat template as ZImagePipeline does (a user
turn, then the assistant's turn opened), tokenized, and Qwen3's second-to-last hidden states of its tokens (no
padding: the pipeline pads and keeps only the unpadded tokens, which a causal model encodes the same). Knows nothing
of nodes or files."""
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
from diffusion.sampling.flow import CAPTION_LENGTH

# the tiny models' tokenizer: the 256 bytes and these
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TINY_QWEN_VOCAB_SIZE = 256 + len(TINY_SPECIAL_TOKENS)


def tiny_qwen_tokenizer() -> Any:
    return qwen_tokenizer.tiny_qwen_tokenizer(TINY_SPECIAL_TOKENS, config_beside(__file__)["max_length"])


def qwen_tokenizer_for_vocab(vocab_size: int, input_name: str) -> Any:
    """Qwen3's tokenizer (the tiny models' for their vocabulary)."""
    return qwen_tokenizer.tokenizer_for_vocab(vocab_size, qwen_tokenizer.QWEN3_SPECIAL_TOKENS, TINY_SPECIAL_TOKENS,
                                              config_beside(__file__)["max_length"], "Qwen3", input_name)


@dataclass(frozen=True, eq=False)
class ZImageClip(ComfyClipApi):
    """CLIP for Z-Image: a Qwen3 model and its tokenizer. Answers ComfyUI's CLIP methods (tokens {"qwen3_4b"})."""

    tokenizer: Any
    model: Any
    name: str
    loras: tuple[LoraPatch, ...] = ()
    family = "zimage"

    def lora_modules(self) -> list[tuple[str, Any]]:
        return []  # Z-Image's LoRAs patch the transformer only

    def offloadable(self) -> list[Any]:
        return [self.model]

    def parts(self) -> dict[str, Any]:
        return {"qwen3_4b": self.model}

    def with_parts(self, parts: Mapping[str, Any]) -> "ZImageClip":
        return dataclasses.replace(self, model=parts.get("qwen3_4b", self.model))

    def with_lora(self, patch: LoraPatch) -> "ZImageClip":
        return dataclasses.replace(self, loras=self.loras + (patch,))

    def with_layer(self, layer_index: int) -> "ZImageClip":
        """CLIPSetLastLayer: Z-Image reads Qwen3's second-to-last layer, always."""
        if layer_index != -1:
            raise ValueError(f"stop_at_clip_layer: Z-Image reads Qwen3's second-to-last layer; {layer_index} "
                             "is not -1")
        return self

    def tokenize_prompt(self, text: str, word_ids: bool = False) -> dict[str, list[list[tuple[Any, ...]]]]:
        if word_ids:
            raise RuntimeError("clip.tokenize: return_word_ids is not supported by nodeflow for Z-Image's CLIP")
        settings = config_beside(__file__)
        ids = self.tokenizer(settings["prompt_template"].format(text), truncation=True,
                             max_length=settings["max_length"]).input_ids
        return {"qwen3_4b": [[(token, 1.0) for token in ids]]}

    def encode_prompt(self, text: str) -> Conditioning:
        return self.encode_tokens(self.tokenize_prompt(text))

    @torch.inference_mode()
    def encode_tokens(self, tokens: Tokens) -> Conditioning:
        """[[Qwen3's second-to-last hidden states [1, tokens, width], {"caption_length": tokens}]], float32 CPU."""
        if set(tokens) != {"qwen3_4b"}:
            raise ValueError(f"tokens: Z-Image's CLIP needs 'qwen3_4b' tokens only (got "
                             f"{', '.join(map(repr, tokens))})")
        weights = {entry[1] for chunk in tokens["qwen3_4b"] for entry in chunk}
        if weights - {1.0}:
            raise ValueError(f"tokens: weights {sorted(weights - {1.0})} are not applied by Z-Image's text encoding "
                             "here; give every token weight 1.0")
        ids = torch.tensor([[entry[0] for chunk in tokens["qwen3_4b"] for entry in chunk]])
        model = resolve(self.model)
        hidden = model(input_ids=ids.to(model.device), output_hidden_states=True).hidden_states[-2]
        return [[hidden.float().cpu(), {CAPTION_LENGTH: int(ids.shape[1])}]]
