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
from diffusion.encoders.clip_api import ComfyClipApi, Tokens
from diffusion.files import config_beside
from diffusion.lazy_module import resolve
from diffusion.sampling.flow import CAPTION_LENGTH

TINY_QWEN_VOCAB_SIZE = 259  # the project's byte-level tokenizer: 256 bytes and three special tokens
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Qwen3's chat template for one user turn and the opened assistant turn (what the pipeline renders)
CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_qwen_tokenizer() -> Any:
    """The project's small Qwen-style tokenizer (byte-level, no merges: one token per byte), for the tiny models."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<|endoftext|>",
                                      eos_token="<|im_end|>", model_max_length=config_beside(__file__)["max_length"])
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def qwen_tokenizer_for_vocab(vocab_size: int, input_name: str) -> Any:
    if vocab_size == TINY_QWEN_VOCAB_SIZE:
        return tiny_qwen_tokenizer()
    raise ValueError(
        f"{input_name}: a Qwen3 encoder with {vocab_size} tokens needs its own tokenizer, which a single file does "
        "not carry and cannot be downloaded here; load Z-Image from a diffusers folder (with tokenizer/) instead")


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
