"""The CLIP value of Qwen-Image (`QwenImageClip`): the prompt put in Qwen-Image's chat template (a system turn that
asks for a description of the image, the prompt as the user's turn, the assistant's turn opened), tokenized with
Qwen's tokenizer, and Qwen2.5-VL's last hidden states from the user's turn on: the system turn and the
"<|im_start|>user\\n" opening are dropped, as ComfyUI drops them (the 34 tokens QwenImagePipeline drops). A prompt
that starts with "<|im_start|>" is taken as a whole template of the user's own.

Images (Qwen-Image-Edit: `tokenize(prompt, images=[...])`, as ComfyUI's edit nodes call it) go in the edit template
(or the caller's `llama_template`): each "<|image_pad|>" token stands for the next image, which Qwen2.5-VL's image
processor cuts into patches (transformers' Qwen2VLImageProcessor) and its vision tower encodes; the token is
widened to one per merged patch, as Qwen2VLProcessor widens it. Knows nothing of nodes or files."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

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
IMAGE_TOKEN = "<|image_pad|>"
# the template with one image before the prompt (Qwen-Image-Edit's, ComfyUI's and QwenImageEditPipeline's)
EDIT_TEMPLATE = ("<|im_start|>system\nDescribe the key features of the input image (color, shape, size, texture, "
                 "objects, background), then explain how the user's text instruction should alter or modify the "
                 "image. Generate a new image that meets the user's requirements while maintaining consistency with "
                 "the original input where appropriate.<|im_end|>\n<|im_start|>user\n"
                 "<|vision_start|><|image_pad|><|vision_end|>{}<|im_end|>\n<|im_start|>assistant\n")
# Qwen2.5-VL's image processor limits (pixels of the resized image), as Qwen-Image-Edit's processor sets them
MIN_PIXELS, MAX_PIXELS = 56 * 56, 28 * 28 * 16384
TINY_SPECIAL_TOKENS = qwen_tokenizer.TINY_VL_SPECIAL_TOKENS
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


def image_processor(vision: Any) -> Any:
    """transformers' Qwen2.5-VL image processor for a vision tower's config (patch, merge and frame sizes)."""
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
                                 patch_size=vision.patch_size, temporal_patch_size=vision.temporal_patch_size,
                                 merge_size=vision.spatial_merge_size)


def as_pil(image: torch.Tensor) -> Any:
    """One IMAGE [H, W, C] (or [1, H, W, C]) in 0..1 as an 8-bit RGB PIL image, what Qwen2.5-VL's processor reads."""
    from PIL import Image

    pixels = image.reshape(-1, *image.shape[-3:])[0, ..., :3]
    return Image.fromarray((pixels.float().clamp(0, 1) * 255).round().to(torch.uint8).numpy())


def vision_token_ids(tokenizer: Any) -> dict[str, int]:
    """The ids of the image and vision-block tokens under transformers' Qwen-VL config names (the video token is
    the image token: video is not read), from the tokenizer (the real or the tiny one)."""
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", IMAGE_TOKEN), ("vision_start_token_id", "<|vision_start|>"),
        ("vision_end_token_id", "<|vision_end|>"))}
    return {**ids, "video_token_id": ids["image_token_id"]}


def image_entries(ids: list[int], image_id: int, images: Sequence[torch.Tensor]) -> list[tuple[Any, ...]]:
    """Token entries (token, 1.0) with the first image tokens replaced by ({"type": "image", "data": image}, 1.0)
    for `images` in order, as ComfyUI's tokens hold them; ValueError when the prompt has fewer image tokens."""
    entries: list[tuple[Any, ...]] = []
    pending = list(images)
    for token in ids:
        if token == image_id and pending:
            entries.append(({"type": "image", "data": pending.pop(0)}, 1.0))
        else:
            entries.append((token, 1.0))
    if pending:
        raise ValueError(f"images: {len(images)} images for a prompt with {len(images) - len(pending)} image "
                         f"tokens ({IMAGE_TOKEN}); put one in the prompt or template for each image")
    return entries


@dataclass(frozen=True)
class WidenedImages:
    """Token ids with each image entry widened to one image token per merged patch: the ids, each image's
    (start, size) span among them, and the images' patches and patch grids (transformers' Qwen2-VL image
    processor's `pixel_values` and `image_grid_thw`)."""

    ids: list[int]
    spans: list[tuple[int, int]]
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor


def widened_images(entries: list[Any], image_id: int, processor: Any, merge_size: int,
                   family_title: str) -> WidenedImages:
    """`entries` (token ids and image entries, as tokenized) with every image read by `processor`."""
    ids: list[int] = []
    spans, patches, grids = [], [], []
    for entry in entries:
        if not isinstance(entry, Mapping):
            ids.append(entry)
            continue
        if entry.get("type") != "image":
            raise ValueError(f"tokens: an embedding of type {entry.get('type')!r} is not supported by "
                             f"{family_title}'s CLIP (images only)")
        processed = processor(images=[as_pil(entry["data"])], return_tensors="pt")
        patches.append(processed["pixel_values"])
        grids.append(processed["image_grid_thw"])
        size = int(processed["image_grid_thw"].prod()) // merge_size ** 2
        spans.append((len(ids), size))
        ids.extend([image_id] * size)
    return WidenedImages(ids, spans, torch.cat(patches), torch.cat(grids))


def vision_config(model: Any) -> Any | None:
    """The vision tower's config of a Qwen2.5-VL model (None: a language model alone)."""
    config = getattr(model, "config", None)
    return getattr(config, "vision_config", None)


@dataclass(frozen=True, eq=False)
class QwenImageClip(ComfyClipApi):
    """CLIP for Qwen-Image: a Qwen2.5-VL language model and its tokenizer. Answers ComfyUI's CLIP methods (tokens
    {"qwen25_7b"})."""

    tokenizer: Any
    model: Any
    name: str
    loras: tuple[LoraPatch, ...] = ()
    family = "qwenimage"
    TOKENIZE_OPTIONS = ("images", "llama_template")

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

    def tokenize_prompt(self, text: str, word_ids: bool = False, images: Sequence[torch.Tensor] = (),
                        llama_template: str | None = None) -> dict[str, list[list[tuple[Any, ...]]]]:
        """{"qwen25_7b": [[(token, 1.0), ...]]}: the prompt in its template, the first image tokens replaced by
        ({"type": "image", "data": image}, 1.0) entries for `images` in order (as ComfyUI's tokens hold them)."""
        if word_ids:
            raise RuntimeError("clip.tokenize: return_word_ids is not supported by nodeflow for Qwen-Image's CLIP")
        if text.startswith(TEMPLATE_START):
            templated = text
        else:
            templated = (llama_template or (EDIT_TEMPLATE if images else settings()["prompt_template"])).format(text)
        ids = self.tokenizer(templated, truncation=True, max_length=settings()["max_length"]).input_ids
        return {TOKENS_KEY: [image_entries(ids, self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), images)]}

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
        model = resolve(self.model)
        ids, images = self._widened([entry[0] for chunk in tokens[TOKENS_KEY] for entry in chunk], model)
        hidden = model(input_ids=torch.tensor([ids], device=model.device), output_hidden_states=True,
                       **images).hidden_states[-1]
        kept = hidden[:, template_end(ids, self.tokenizer):].float().cpu()
        return [[kept, {CAPTION_LENGTH: int(kept.shape[1])}]]

    def _widened(self, entries: list[Any], model: Any) -> tuple[list[int], dict[str, torch.Tensor]]:
        """The token ids with each image entry widened to one image token per merged patch, and the images'
        patches and patch grids for the model (none for a prompt without images)."""
        if all(not isinstance(entry, Mapping) for entry in entries):
            return entries, {}
        vision = vision_config(model)
        if vision is None:
            raise ValueError(f"clip: {self.name} holds Qwen2.5-VL's language model without its vision tower, "
                             "which encoding images needs; use the full Qwen2.5-VL file")
        images = widened_images(entries, self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), image_processor(vision),
                                vision.spatial_merge_size, "Qwen-Image")
        visual = model.visual if hasattr(model, "visual") else model.model.visual
        return images.ids, {"pixel_values": images.pixel_values.to(model.device, visual.dtype),
                            "image_grid_thw": images.image_grid_thw.to(model.device)}
