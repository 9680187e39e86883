"""The CLIP value of Lumina 2 (`Lumina2Clip`): Gemma 2's second-to-last hidden states of the prompt's tokens (the
beginning token first; no padding: Lumina2Pipeline pads and masks, which a causal model encodes the same). The
system prompt Lumina2Pipeline puts before a prompt is CLIPTextEncodeLumina2's job, as in ComfyUI. Knows nothing of
nodes or files."""
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

TINY_GEMMA_VOCAB_SIZE = 259  # the project's byte-level tokenizer: 256 bytes, <pad>, <bos>, <eos>


def tiny_gemma_tokenizer() -> Any:
    """The project's small Gemma-style tokenizer (byte-level, one token per byte, <bos> first), for tiny models."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: index for index, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<pad>", "<bos>", "<eos>"])
    bos = tokenizer.token_to_id("<bos>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", model_max_length=config_beside(__file__)["max_length"])


def gemma_tokenizer_for_vocab(vocab_size: int, input_name: str) -> Any:
    if vocab_size == TINY_GEMMA_VOCAB_SIZE:
        return tiny_gemma_tokenizer()
    raise ValueError(
        f"{input_name}: a Gemma 2 encoder with {vocab_size} tokens needs its own tokenizer, and this file does not "
        "carry it (ComfyUI's gemma_2_2b files hold it as spiece_model); use such a file, or load Lumina 2 from a "
        "diffusers folder (with tokenizer/)")


@dataclass(frozen=True, eq=False)
class Lumina2Clip(ComfyClipApi):
    """CLIP for Lumina 2: a Gemma 2 model and its tokenizer. Answers ComfyUI's CLIP methods (tokens {"gemma2_2b"})."""

    tokenizer: Any
    model: Any
    name: str
    loras: tuple[LoraPatch, ...] = ()
    family = "lumina2"

    def lora_modules(self) -> list[tuple[str, Any]]:
        return []  # Lumina 2's LoRAs patch the transformer only

    def offloadable(self) -> list[Any]:
        return [self.model]

    def parts(self) -> dict[str, Any]:
        return {"gemma2_2b": self.model}

    def with_parts(self, parts: Mapping[str, Any]) -> "Lumina2Clip":
        return dataclasses.replace(self, model=parts.get("gemma2_2b", self.model))

    def with_lora(self, patch: LoraPatch) -> "Lumina2Clip":
        return dataclasses.replace(self, loras=self.loras + (patch,))

    def with_layer(self, layer_index: int) -> "Lumina2Clip":
        """CLIPSetLastLayer: Lumina 2 reads Gemma's second-to-last layer, always."""
        if layer_index != -1:
            raise ValueError(f"stop_at_clip_layer: Lumina 2 reads Gemma's second-to-last layer; {layer_index} "
                             "is not -1")
        return self

    def tokenize_prompt(self, text: str, word_ids: bool = False) -> dict[str, list[list[tuple[Any, ...]]]]:
        if word_ids:
            raise RuntimeError("clip.tokenize: return_word_ids is not supported by nodeflow for Lumina 2's CLIP")
        ids = self.tokenizer(text, truncation=True, max_length=config_beside(__file__)["max_length"]).input_ids
        return {"gemma2_2b": [[(token, 1.0) for token in ids]]}

    def encode_prompt(self, text: str) -> Conditioning:
        return self.encode_tokens(self.tokenize_prompt(text))

    @torch.inference_mode()
    def encode_tokens(self, tokens: Tokens) -> Conditioning:
        """[[Gemma's second-to-last hidden states [1, tokens, width], {"caption_length": tokens}]], float32 CPU."""
        if set(tokens) != {"gemma2_2b"}:
            raise ValueError(f"tokens: Lumina 2's CLIP needs 'gemma2_2b' tokens only (got "
                             f"{', '.join(map(repr, tokens))})")
        weights = {entry[1] for chunk in tokens["gemma2_2b"] for entry in chunk}
        if weights - {1.0}:
            raise ValueError(f"tokens: weights {sorted(weights - {1.0})} are not applied by Lumina 2's text encoding "
                             "here; give every token weight 1.0")
        ids = torch.tensor([[entry[0] for chunk in tokens["gemma2_2b"] for entry in chunk]])
        model = resolve(self.model)
        hidden = model(input_ids=ids.to(model.device), attention_mask=torch.ones_like(ids).to(model.device),
                       output_hidden_states=True).hidden_states[-2]
        return [[hidden.float().cpu(), {CAPTION_LENGTH: int(ids.shape[1])}]]
