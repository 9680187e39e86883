"""The CLIP value of Qwen-Image 2.1 (`QwenImage21Clip`): the prompt put in Qwen-Image 2.1's chat template (a
system turn asking to comprehend the prompt, the prompt as the user's turn, the assistant's turn opened), tokenized
with Qwen's tokenizer, and Qwen3-VL's last layer's hidden states before its final norm (what the transformer was
trained on; the model is built without that norm) from the user's turn on: everything before the second
"<|im_start|>" is dropped, as ComfyUI and QwenImage21Pipeline drop the system turn. A prompt that starts with
"<|im_start|>" is taken as a whole template of the user's own.

Reference images (`tokenize(prompt, images=[...])`, as ComfyUI's TextEncodeQwenImage21 calls it) come before the
prompt in the user's turn, "<imageN>" and a vision block each; Qwen3-VL's vision tower reads each image, cut into
patches by transformers' Qwen2-VL image processor set as Qwen3-VL reads images, each "<|image_pad|>" widened to one
token per merged patch. The images' tokens are then dropped from the encoding and their places recorded, for the
reference latents the transformer puts there, unless `keep_vision` (no references: the images condition through
the text encoder alone), as ComfyUI does. Knows nothing of nodes or files."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from diffusion.contracts import Conditioning, LoraPatch
from diffusion.encoders import qwen_tokenizer
from diffusion.encoders.clip_api import ComfyClipApi, Tokens
from diffusion.families.qwenimage.text_encoding import (
    IMAGE_TOKEN,
    TEMPLATE_START,
    image_entries,
    vision_config,
    widened_images,
)
from diffusion.families.qwenimage21.sampling import IMAGE_SLOTS
from diffusion.files import config_beside
from diffusion.lazy_module import resolve
from diffusion.sampling.flow import CAPTION_LENGTH

TOKENS_KEY = "qwen3vl_8b"  # ComfyUI's name for Qwen-Image 2.1's token stream
KEEP_VISION = "keep_vision"  # ComfyUI's tokens key: the images' tokens stay in the encoding
VISION_BLOCK = f"<|vision_start|>{IMAGE_TOKEN}<|vision_end|>"  # what stands for one image in the prompt
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


def image_processor(vision: Any) -> Any:
    """transformers' Qwen2-VL image processor set as Qwen3-VL reads images (ComfyUI's settings: pixels to [-1, 1],
    the vision tower's patch, merge and frame sizes)."""
    from transformers import Qwen2VLImageProcessor

    images = settings()["vision"]
    return Qwen2VLImageProcessor(size={"shortest_edge": images["min_pixels"], "longest_edge": images["max_pixels"]},
                                 patch_size=vision.patch_size, temporal_patch_size=vision.temporal_patch_size,
                                 merge_size=vision.spatial_merge_size, image_mean=images["image_mean"],
                                 image_std=images["image_std"])


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
    TOKENIZE_OPTIONS = ("images", "keep_vision", "prevent_empty_text")

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

    def tokenize_prompt(self, text: str, word_ids: bool = False, images: Sequence[torch.Tensor] = (),
                        keep_vision: bool = False, prevent_empty_text: bool = True) -> dict[str, Any]:
        """{"qwen3vl_8b": [[(token, 1.0), ...]], "keep_vision": ...}: the prompt in its template, with
        "<imageN>" and a vision block before it for each of `images`, whose "<|image_pad|>" tokens are replaced by
        ({"type": "image", "data": image}, 1.0) entries in order (as ComfyUI's tokens hold them). `keep_vision`:
        the images' tokens stay in the encoding (no reference latents take their place)."""
        if word_ids:
            raise RuntimeError("clip.tokenize: return_word_ids is not supported by nodeflow for Qwen-Image 2.1's "
                               "CLIP")
        if prevent_empty_text and not text:
            text = " "  # Qwen has no start token: an empty prompt would leave the user's turn without text
        if text.startswith(TEMPLATE_START):
            templated = text
        else:
            references = " ".join(f"<image{index}>{VISION_BLOCK}" for index in range(1, len(images) + 1))
            templated = settings()["prompt_template"].format(references + text)
        ids = self.tokenizer(templated, truncation=True, max_length=settings()["max_length"]).input_ids
        entries = image_entries(ids, self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), images)
        return {TOKENS_KEY: [entries], KEEP_VISION: bool(keep_vision)}

    def encode_prompt(self, text: str) -> Conditioning:
        return self.encode_tokens(self.tokenize_prompt(text))

    @torch.inference_mode()
    def encode_tokens(self, tokens: Tokens) -> Conditioning:
        """[[Qwen3-VL's last hidden states (unnormed) from the user's turn on [1, tokens, width],
        {"caption_length", "image_slots"}]], float32 CPU. Each image's tokens are left out unless the tokens say
        to keep them, and where they were is recorded ("image_slots": the position in the kept text where each
        image's reference latent goes, as ComfyUI records it)."""
        if set(tokens) - {KEEP_VISION} != {TOKENS_KEY}:
            raise ValueError(f"tokens: Qwen-Image 2.1's CLIP needs {TOKENS_KEY!r} tokens only (got "
                             f"{', '.join(map(repr, tokens))})")
        entries = [entry for chunk in tokens[TOKENS_KEY] for entry in chunk]
        if {entry[1] for entry in entries} - {1.0}:
            raise ValueError("tokens: weights are not applied by Qwen-Image 2.1's text encoding (ComfyUI ignores "
                             "them too); give every token weight 1.0")
        model = resolve(self.model)
        ids, spans, images = self._widened([entry[0] for entry in entries], model)
        hidden = model(input_ids=torch.tensor([ids], device=model.device), **images).last_hidden_state[0]
        keep = torch.ones(len(ids), dtype=torch.bool)
        keep[:template_end(ids, self.tokenizer)] = False
        slots = []
        if not tokens.get(KEEP_VISION, False):
            for start, size in spans:
                keep[start:start + size] = False
                slots.append(int(keep[:start].sum()))
        kept = hidden[keep.to(hidden.device)][None].float().cpu()
        options: dict[str, Any] = {CAPTION_LENGTH: int(kept.shape[1])}
        if slots:
            options[IMAGE_SLOTS] = slots
        return [[kept, options]]

    def _widened(self, entries: list[Any], model: Any) -> tuple[list[int], list[tuple[int, int]], dict[str, Any]]:
        """The token ids with each image entry widened to one image token per merged patch, each image's
        (start, size) span among them, and the images' patches, patch grids and token types for the model (none
        for a prompt without images)."""
        if all(not isinstance(entry, Mapping) for entry in entries):
            return entries, [], {}
        vision = vision_config(model)
        images = widened_images(entries, self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), image_processor(vision),
                                vision.spatial_merge_size, "Qwen-Image 2.1")
        types = torch.zeros(1, len(images.ids), dtype=torch.int32)
        for start, size in images.spans:
            types[0, start:start + size] = 1  # transformers' token type of an image token
        return images.ids, images.spans, {"pixel_values": images.pixel_values.to(model.device, model.visual.dtype),
                                          "image_grid_thw": images.image_grid_thw.to(model.device),
                                          "mm_token_type_ids": types.to(model.device)}
