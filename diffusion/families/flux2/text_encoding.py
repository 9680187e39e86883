"""The CLIP value of FLUX.2 (`Flux2Clip`): the prompt in its language model's chat template, tokenized, the model
run with any padding masked, and the hidden states of three of its layers side by side for every token, as
ComfyUI encodes it. FLUX.2 [klein] reads Qwen3 (thinking turned off: a user turn, the assistant's turn opened with
an empty thought; padded to 512 tokens with Qwen's end-of-text, layers 9, 18 and 27, as Flux2KleinPipeline does
too); FLUX.2 [dev] reads Mistral Small 3.x (`<s>`, then BFL's system prompt and the prompt as an instruction,
unpadded as in ComfyUI, layers 10, 20 and 30). Knows nothing of nodes or files."""
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


@dataclass(frozen=True)
class PromptFormat:
    """How one of FLUX.2's text encoders reads a prompt (`text_encoders` in config.json beside this module)."""

    key: str  # ComfyUI's name of the token stream
    model: str  # "qwen3" or "mistral"
    text_layers: tuple[int, ...]  # hidden states read (0: the embeddings), side by side
    min_length: int  # the tokens are padded with `pad_token` up to this length (0: never)
    pad_token: str
    start_token: str | None  # put before the templated prompt
    prompt_template: str

    @classmethod
    def of(cls, key: str, model: str) -> "PromptFormat":
        values = settings()["text_encoders"][model]
        return cls(key, model, tuple(values["text_layers"]), values["min_length"], values["pad_token"],
                   values["start_token"], values["prompt_template"])


def settings() -> dict[str, Any]:
    return config_beside(__file__)


def tiny_tokenizer() -> Any:
    return qwen_tokenizer.tiny_qwen_tokenizer(TINY_SPECIAL_TOKENS, PromptFormat.of("qwen3_4b", "qwen3").min_length)


def tokenizer_for_vocab(vocab_size: int, input_name: str) -> Any:
    """Qwen3's tokenizer (the tiny models' for their vocabulary)."""
    return qwen_tokenizer.tokenizer_for_vocab(vocab_size, qwen_tokenizer.QWEN3_SPECIAL_TOKENS, TINY_SPECIAL_TOKENS,
                                              PromptFormat.of("qwen3_4b", "qwen3").min_length, "Qwen3", input_name)


def qwen3_format(width: int) -> PromptFormat:
    """FLUX.2 [klein]'s format; ComfyUI names the tokens Qwen3 4B's (the 4B model) or Qwen3 8B's (9B)."""
    return PromptFormat.of("qwen3_8b" if width >= 4096 else "qwen3_4b", "qwen3")


def mistral_format() -> PromptFormat:
    """FLUX.2 [dev]'s format (ComfyUI's tokens "mistral3_24b")."""
    return PromptFormat.of("mistral3_24b", "mistral")


@dataclass(frozen=True, eq=False)
class Flux2Clip(ComfyClipApi):
    """CLIP for FLUX.2: a language model, its tokenizer and how it reads prompts. Answers ComfyUI's CLIP methods
    (tokens {"qwen3_4b"}, {"qwen3_8b"} or {"mistral3_24b"})."""

    tokenizer: Any
    model: Any
    name: str
    format: PromptFormat
    loras: tuple[LoraPatch, ...] = ()
    family = "flux2"

    def lora_modules(self) -> list[tuple[str, Any]]:
        return []  # FLUX.2's LoRAs patch the transformer only

    def offloadable(self) -> list[Any]:
        return [self.model]

    def parts(self) -> dict[str, Any]:
        return {self.format.key: self.model}

    def with_parts(self, parts: Mapping[str, Any]) -> "Flux2Clip":
        return dataclasses.replace(self, model=parts.get(self.format.key, self.model))

    def with_lora(self, patch: LoraPatch) -> "Flux2Clip":
        return dataclasses.replace(self, loras=self.loras + (patch,))

    def with_layer(self, layer_index: int) -> "Flux2Clip":
        """CLIPSetLastLayer: FLUX.2 reads three fixed layers of its language model."""
        if layer_index != -1:
            raise ValueError(f"stop_at_clip_layer: FLUX.2 reads its text encoder's layers "
                             f"{list(self.format.text_layers)}; {layer_index} is not -1")
        return self

    def tokenize_prompt(self, text: str, word_ids: bool = False) -> dict[str, list[list[tuple[Any, ...]]]]:
        """The templated prompt's tokens (after the start token, if any), padded to the format's length (longer
        prompts are not cut, as in ComfyUI)."""
        if word_ids:
            raise RuntimeError("clip.tokenize: return_word_ids is not supported by nodeflow for FLUX.2's CLIP")
        form = self.format
        start = [self.tokenizer.convert_tokens_to_ids(form.start_token)] if form.start_token else []
        ids = start + self.tokenizer(form.prompt_template.format(text), add_special_tokens=False).input_ids
        ids += [self.tokenizer.convert_tokens_to_ids(form.pad_token)] * (form.min_length - len(ids))
        return {form.key: [[(token, 1.0) for token in ids]]}

    def encode_prompt(self, text: str) -> Conditioning:
        return self.encode_tokens(self.tokenize_prompt(text))

    @torch.inference_mode()
    def encode_tokens(self, tokens: Tokens) -> Conditioning:
        """[[the format's three layers side by side [1, tokens, 3 x width], {}]], float32 CPU; the padding (the
        pad tokens after the last real one) is masked in the encoder."""
        key = self.format.key
        if set(tokens) != {key}:
            raise ValueError(f"tokens: FLUX.2's CLIP needs {key!r} tokens only (got {', '.join(map(repr, tokens))})")
        weights = {entry[1] for chunk in tokens[key] for entry in chunk}
        if weights - {1.0}:
            raise ValueError(f"tokens: weights {sorted(weights - {1.0})} are not applied by FLUX.2's text encoding "
                             "(ComfyUI ignores them too); give every token weight 1.0")
        ids = torch.tensor([[entry[0] for chunk in tokens[key] for entry in chunk]])
        pad = self.tokenizer.convert_tokens_to_ids(self.format.pad_token)
        real = (ids != pad).long()
        # padding is what follows the last real token (an end-of-text inside the prompt stays seen)
        mask = (torch.arange(ids.shape[1]) < int(real.nonzero()[:, 1].max()) + 1).long()[None] if real.any() \
            else torch.ones_like(ids)
        model = resolve(self.model)
        states = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                       output_hidden_states=True, use_cache=False).hidden_states
        stacked = torch.stack([states[layer] for layer in self.format.text_layers], dim=2)
        return [[stacked.reshape(1, ids.shape[1], -1).float().cpu(), {}]]
