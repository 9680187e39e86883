"""The CLIP value of Qwen-Image 2.1 (`QwenImage21Clip`): the prompt put in Qwen-Image 2.1's chat template (a
system turn asking to comprehend the prompt, the prompt as the user's turn, the assistant's turn opened), tokenized
with Qwen's tokenizer, and Qwen3-VL's last layer's hidden states before its final norm (what the transformer was
trained on; the model is built without that norm) from the user's turn on: everything before the second
"<|im_start|>" is dropped, as ComfyUI and QwenImage21Pipeline drop the system turn. A prompt that starts with
"<|im_start|>" is taken as a whole template of the user's own. Knows nothing of nodes or files."""
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

TOKENS_KEY = "qwen3vl_8b"  # ComfyUI's name for Qwen-Image 2.1's token stream
TEMPLATE_START = "<|im_start|>"
TINY_SPECIAL_TOKENS = qwen_tokenizer.TINY_VL_SPECIAL_TOKENS
TINY_VOCAB_SIZE = 256 + len(TINY_SPECIAL_TOKENS)


def settings() -> dict[str, Any]:
    return config_beside(__file__)


def tiny_tokenizer() -> Any:
    return qwen_tokenizer.tiny_qwen_tokenizer(TINY_SPECIAL_TOKENS, settings()["max_length"])


def tokenizer_for_vocab(vocab_size: int, input_name: str) -> Any:
    """Qwen3-VL's tokenizer (Qwen3's; the tiny models' for their vocabulary)."""
    return qwen_tokenizer.tokenizer_for_vocab(vocab_size, qwen_tokenizer.QWEN3_SPECIAL_TOKENS, TINY_SPECIAL_TOKENS,
                                              settings()["max_length"], "Qwen3-VL", input_name)


def template_end(ids: list[int], tokenizer: Any) -> int:
    """How many leading tokens the encoding drops: those before the second "<|im_start|>" (the user's turn), none
    when there is no second one."""
    start_id = tokenizer.convert_tokens_to_ids(TEMPLATE_START)
    starts = [index for index, token in enumerate(ids) if token == start_id]
    return starts[1] if len(starts) > 1 else 0


@dataclass(frozen=True, eq=False)
class QwenImage21Clip(ComfyClipApi):
    """CLIP for Qwen-Image 2.1: a Qwen3-VL language model (without its final norm) and its tokenizer. Answers
    ComfyUI's CLIP methods (tokens {"qwen3vl_8b"})."""

    tokenizer: Any
    model: Any
    name: str
    loras: tuple[LoraPatch, ...] = ()
    family = "qwenimage21"

    def lora_modules(self) -> list[tuple[str, Any]]:
        return []  # Qwen-Image 2.1's LoRAs patch the transformer only

    def offloadable(self) -> list[Any]:
        return [self.model]

    def parts(self) -> dict[str, Any]:
        return {TOKENS_KEY: self.model}

    def with_parts(self, parts: Mapping[str, Any]) -> "QwenImage21Clip":
        return dataclasses.replace(self, model=parts.get(TOKENS_KEY, self.model))

    def with_lora(self, patch: LoraPatch) -> "QwenImage21Clip":
        return dataclasses.replace(self, loras=self.loras + (patch,))

    def with_layer(self, layer_index: int) -> "QwenImage21Clip":
        """CLIPSetLastLayer: Qwen-Image 2.1 reads Qwen3-VL's last layer, always."""
        if layer_index != -1:
            raise ValueError(f"stop_at_clip_layer: Qwen-Image 2.1 reads Qwen3-VL's last layer; {layer_index} is "
                             "not -1")
        return self

    def tokenize_prompt(self, text: str, word_ids: bool = False) -> dict[str, list[list[tuple[Any, ...]]]]:
        if word_ids:
            raise RuntimeError("clip.tokenize: return_word_ids is not supported by nodeflow for Qwen-Image 2.1's "
                               "CLIP")
        # Qwen has no start token, so an empty prompt would leave the user's turn without text (ComfyUI's and
        # the pipeline's fix: a space)
        templated = text if text.startswith(TEMPLATE_START) else settings()["prompt_template"].format(text or " ")
        ids = self.tokenizer(templated, truncation=True, max_length=settings()["max_length"]).input_ids
        return {TOKENS_KEY: [[(token, 1.0) for token in ids]]}

    def encode_prompt(self, text: str) -> Conditioning:
        return self.encode_tokens(self.tokenize_prompt(text))

    @torch.inference_mode()
    def encode_tokens(self, tokens: Tokens) -> Conditioning:
        """[[Qwen3-VL's last hidden states (unnormed) from the user's turn on [1, tokens, width],
        {"caption_length"}]], float32 CPU."""
        if set(tokens) != {TOKENS_KEY}:
            raise ValueError(f"tokens: Qwen-Image 2.1's CLIP needs {TOKENS_KEY!r} tokens only (got "
                             f"{', '.join(map(repr, tokens))})")
        entries = [entry for chunk in tokens[TOKENS_KEY] for entry in chunk]
        if {entry[1] for entry in entries} - {1.0}:
            raise ValueError("tokens: weights are not applied by Qwen-Image 2.1's text encoding (ComfyUI ignores "
                             "them too); give every token weight 1.0")
        if any(not isinstance(entry[0], int) for entry in entries):
            raise ValueError("tokens: Qwen-Image 2.1's CLIP encodes text tokens only here; reference images are "
                             "not supported")
        ids = [entry[0] for entry in entries]
        model = resolve(self.model)
        hidden = model(input_ids=torch.tensor([ids], device=model.device)).last_hidden_state
        kept = hidden[:, template_end(ids, self.tokenizer):].float().cpu()
        return [[kept, {CAPTION_LENGTH: int(kept.shape[1])}]]
