"""The CLIP value of Qwen-Image (`QwenImageClip`): the prompt put in Qwen-Image's chat template (a system turn that
asks for a description of the image, the prompt as the user's turn, the assistant's turn opened), tokenized with
Qwen's tokenizer, and Qwen2.5-VL's last hidden states from the user's turn on: the system turn and the
"<|im_start|>user\\n" opening are dropped, as ComfyUI drops them (the 34 tokens QwenImagePipeline drops). A prompt
that starts with "<|im_start|>" is taken as a whole template of the user's own. Knows nothing of nodes or files."""
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

TOKENS_KEY = "qwen25_7b"  # ComfyUI's name for Qwen-Image's token stream
TEMPLATE_START = "<|im_start|>"
USER_TURN = "user\n"
# the tiny models' tokenizer: the 256 bytes and these (Qwen2.5-VL's chat and image tokens)
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>")
TINY_VOCAB_SIZE = 256 + len(TINY_SPECIAL_TOKENS)


def settings() -> dict[str, Any]:
    return config_beside(__file__)


def tiny_tokenizer() -> Any:
    return qwen_tokenizer.tiny_qwen_tokenizer(TINY_SPECIAL_TOKENS, settings()["max_length"])


def tokenizer_for_vocab(vocab_size: int, input_name: str) -> Any:
    """Qwen2.5-VL's tokenizer (the tiny models' for their vocabulary)."""
    return qwen_tokenizer.tokenizer_for_vocab(vocab_size, qwen_tokenizer.QWEN25_SPECIAL_TOKENS, TINY_SPECIAL_TOKENS,
                                              settings()["max_length"], "Qwen2.5-VL", input_name)


def template_end(ids: list[int], tokenizer: Any) -> int:
    """How many leading tokens the encoding drops: up to the second "<|im_start|>" (the user's turn; the first
    when there is one), and the "user\\n" after it."""
    start_id = tokenizer.convert_tokens_to_ids(TEMPLATE_START)
    starts = [index for index, token in enumerate(ids) if token == start_id][:2]
    if not starts:
        return 0
    end = starts[-1]
    user = tokenizer(USER_TURN).input_ids
    if ids[end + 1:end + 1 + len(user)] == user:
        end += 1 + len(user)
    return end


@dataclass(frozen=True, eq=False)
class QwenImageClip(ComfyClipApi):
    """CLIP for Qwen-Image: a Qwen2.5-VL language model and its tokenizer. Answers ComfyUI's CLIP methods (tokens
    {"qwen25_7b"})."""

    tokenizer: Any
    model: Any
    name: str
    loras: tuple[LoraPatch, ...] = ()
    family = "qwenimage"

    def lora_modules(self) -> list[tuple[str, Any]]:
        return []  # Qwen-Image's LoRAs patch the transformer only

    def offloadable(self) -> list[Any]:
        return [self.model]

    def parts(self) -> dict[str, Any]:
        return {TOKENS_KEY: self.model}

    def with_parts(self, parts: Mapping[str, Any]) -> "QwenImageClip":
        return dataclasses.replace(self, model=parts.get(TOKENS_KEY, self.model))

    def with_lora(self, patch: LoraPatch) -> "QwenImageClip":
        return dataclasses.replace(self, loras=self.loras + (patch,))

    def with_layer(self, layer_index: int) -> "QwenImageClip":
        """CLIPSetLastLayer: Qwen-Image reads Qwen2.5-VL's last layer, always."""
        if layer_index != -1:
            raise ValueError(f"stop_at_clip_layer: Qwen-Image reads Qwen2.5-VL's last layer; {layer_index} is not -1")
        return self

    def tokenize_prompt(self, text: str, word_ids: bool = False) -> dict[str, list[list[tuple[Any, ...]]]]:
        if word_ids:
            raise RuntimeError("clip.tokenize: return_word_ids is not supported by nodeflow for Qwen-Image's CLIP")
        templated = text if text.startswith(TEMPLATE_START) else settings()["prompt_template"].format(text)
        ids = self.tokenizer(templated, truncation=True, max_length=settings()["max_length"]).input_ids
        return {TOKENS_KEY: [[(token, 1.0) for token in ids]]}

    def encode_prompt(self, text: str) -> Conditioning:
        return self.encode_tokens(self.tokenize_prompt(text))

    @torch.inference_mode()
    def encode_tokens(self, tokens: Tokens) -> Conditioning:
        """[[Qwen2.5-VL's last hidden states from the user's turn on [1, tokens, width], {"caption_length"}]],
        float32 CPU."""
        if set(tokens) != {TOKENS_KEY}:
            raise ValueError(f"tokens: Qwen-Image's CLIP needs {TOKENS_KEY!r} tokens only (got "
                             f"{', '.join(map(repr, tokens))})")
        weights = {entry[1] for chunk in tokens[TOKENS_KEY] for entry in chunk}
        if weights - {1.0}:
            raise ValueError(f"tokens: weights {sorted(weights - {1.0})} are not applied by Qwen-Image's text "
                             "encoding (ComfyUI ignores them too); give every token weight 1.0")
        ids = [entry[0] for chunk in tokens[TOKENS_KEY] for entry in chunk]
        model = resolve(self.model)
        hidden = model(input_ids=torch.tensor([ids], device=model.device),
                       output_hidden_states=True).hidden_states[-1]
        kept = hidden[:, template_end(ids, self.tokenizer):].float().cpu()
        return [[kept, {CAPTION_LENGTH: int(kept.shape[1])}]]
