"""Qwen-Image-Edit's text nodes with ComfyUI's names and inputs: TextEncodeQwenImageEdit encodes an instruction with
the image it edits (Qwen2.5-VL sees the image; the VAE's latent of it becomes the conditioning's reference latent),
TextEncodeQwenImageEditPlus with up to three images ("Picture 1: ..." before the instruction; Qwen2.5-VL sees each
at about 384x384 pixels, the reference latents are made at about 1024x1024). TextEncodeQwenImage21 encodes Qwen-Image
2.1's prompt and negative with up to 16 reference images and makes its empty latent; QwenImage21Cache keeps their
keys and values between steps. Knows nothing of HTTP or the executor."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from diffusion.components import DiffusionModel
from diffusion.contracts import Conditioning, TextEncoder, VaeModel
from diffusion.families.qwenimage21.sampling import PrefixCacheSettings, QwenImage21Sampling
from diffusion.sampling.reference_latents import REFERENCES
from nodes.environment import release_text_encoders
from nodes.latent import crop_to_vae_multiple
from nodes.model_facts import requires_family
from nodes.resize import upscale

FAMILY = "qwenimage"
QWEN_IMAGE21 = "qwenimage21"
QWEN_IMAGE21_LATENT_CHANNELS = QwenImage21Sampling.latent_format.latent_channels
QWEN_IMAGE21_DOWNSCALE = QwenImage21Sampling.latent_format.spatial_downscale
DEFAULT_RESOLUTION = 1024  # TextEncodeQwenImage21's latent side when its resolution is 0
QWEN_IMAGE21_MULTIPLE = 32  # reference sides: one Qwen3-VL token (2x2 latent pixels) covers 32x32 pixels
CACHE_DEVICES = ("auto", "gpu", "cpu", "off")  # QwenImage21Cache's choices, as ComfyUI's
CACHE_STORAGE = ("default", "int8", "int4")
REFERENCE_SLOTS = 16  # TextEncodeQwenImage21's reference image inputs ("images.image_1" ...), as ComfyUI's
REFERENCE_AREA = 1024 * 1024  # pixels of the images the references are made from
VISION_AREA = 384 * 384  # pixels of the images Qwen2.5-VL sees in the Plus node
PLUS_TEMPLATE = ("<|im_start|>system\nDescribe the key features of the input image (color, shape, size, texture, "
                 "objects, background), then explain how the user's text instruction should alter or modify the "
                 "image. Generate a new image that meets the user's requirements while maintaining consistency with "
                 "the original input where appropriate.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
                 "<|im_start|>assistant\n")
PICTURE = "Picture {}: <|vision_start|><|image_pad|><|vision_end|>"
PROMPT_INPUT = ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "The edit instruction."})
CLIP_INPUT = ("CLIP", {"tooltip": "Qwen-Image's text encoder (CLIPLoader type qwen_image, with its vision tower)."})
VAE_INPUT = ("VAE", {"tooltip": "Qwen-Image's VAE: makes the reference latents (none: the model does not see the "
                                "images' latents)."})


def scaled_to_area(image: torch.Tensor, area: int, multiple: int = 1) -> torch.Tensor:
    """IMAGE resized (area filter) to about `area` pixels at its aspect ratio, sides rounded to `multiple`."""
    height, width = image.shape[1], image.shape[2]
    scale = math.sqrt(area / (width * height))
    new_width = max(multiple, round(width * scale / multiple) * multiple)
    new_height = max(multiple, round(height * scale / multiple) * multiple)
    return upscale(image.movedim(-1, 1), new_width, new_height, "area", "disabled").movedim(1, -1)


def _encoded(clip: TextEncoder, node: str, prompt: str, images: list[torch.Tensor], references: list[torch.Tensor],
             template: str | None = None) -> Conditioning:
    if getattr(clip, "family", None) != FAMILY:
        raise ValueError(f"clip: {node} needs Qwen-Image's CLIP (CLIPLoader type qwen_image); this one is "
                         f"{getattr(clip, 'family', type(clip).__name__)}'s")
    options = {"images": images} if template is None else {"images": images, "llama_template": template}
    conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(prompt, **options))
    release_text_encoders(clip)
    if references:
        conditioning = [[embeddings, {**entry_options, REFERENCES: [*(entry_options.get(REFERENCES) or []),
                                                                     *references]}]
                        for embeddings, entry_options in conditioning]
    return conditioning


class TextEncodeQwenImageEdit:
    DESCRIPTION = ("Encodes an edit instruction for Qwen-Image-Edit with the image to edit: the image, scaled to "
                   "about one megapixel, is shown to Qwen2.5-VL and (with a VAE) encoded as the reference latent "
                   "the model edits.")
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The encoded instruction, with the image's reference latent when a VAE is given.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        image = ("IMAGE", {"tooltip": "The image to edit (none: the instruction alone)."})
        return {"required": {"clip": CLIP_INPUT, "prompt": PROMPT_INPUT},
                "optional": {"vae": VAE_INPUT, "image": image}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_facts: dict[str, Any], **widgets: Any) -> bool | str:
        return requires_family(input_facts, "clip", FAMILY, "TextEncodeQwenImageEdit")

    def encode(self, clip: TextEncoder, prompt: str, vae: VaeModel | None = None,
               image: torch.Tensor | None = None) -> tuple[Conditioning]:
        images, references = [], []
        if image is not None:
            scaled = scaled_to_area(image[..., :3], REFERENCE_AREA)
            images.append(scaled)
            if vae is not None:
                references.append(vae.encode(crop_to_vae_multiple(vae, scaled)))
        return (_encoded(clip, "TextEncodeQwenImageEdit", prompt, images, references),)


class TextEncodeQwenImageEditPlus:
    DESCRIPTION = ("Encodes an edit instruction for Qwen-Image-Edit 2509 and later with up to three images: each is "
                   "shown to Qwen2.5-VL as \"Picture N\" (at about 384x384 pixels) and, with a VAE, encoded at about "
                   "one megapixel as a reference latent.")
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The encoded instruction, with the images' reference latents when a VAE is given.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        images = {f"image{index}": ("IMAGE", {"tooltip": f"Picture {index} (optional)."}) for index in (1, 2, 3)}
        return {"required": {"clip": CLIP_INPUT, "prompt": PROMPT_INPUT}, "optional": {"vae": VAE_INPUT, **images}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_facts: dict[str, Any], **widgets: Any) -> bool | str:
        return requires_family(input_facts, "clip", FAMILY, "TextEncodeQwenImageEditPlus")

    def encode(self, clip: TextEncoder, prompt: str, vae: VaeModel | None = None, image1: torch.Tensor | None = None,
               image2: torch.Tensor | None = None, image3: torch.Tensor | None = None) -> tuple[Conditioning]:
        images, references, pictures = [], [], ""
        for index, image in enumerate((image1, image2, image3), start=1):
            if image is None:
                continue
            images.append(scaled_to_area(image[..., :3], VISION_AREA))
            if vae is not None:
                references.append(vae.encode(scaled_to_area(image[..., :3], REFERENCE_AREA, multiple=8)))
            pictures += PICTURE.format(index)
        return (_encoded(clip, "TextEncodeQwenImageEditPlus", pictures + prompt, images, references, PLUS_TEMPLATE),)


def reference_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """(height, width) TextEncodeQwenImage21 gives a reference image: about resolution x resolution pixels at its
    aspect ratio, sides multiples of 32 (the image's own size so rounded for 0), as ComfyUI's node and
    QwenImage21Pipeline size them."""
    if resolution:
        aspect = width / height
        width, height = math.sqrt(resolution * resolution * aspect), math.sqrt(resolution * resolution / aspect)
    multiple = QWEN_IMAGE21_MULTIPLE
    return (max(multiple, round(height / multiple) * multiple), max(multiple, round(width / multiple) * multiple))


class TextEncodeQwenImage21:
    DESCRIPTION = ("Encodes a prompt and its negative for Qwen-Image 2.1 with up to 16 reference images (Qwen3-VL "
                   "reads each text in Qwen-Image 2.1's chat template, the images as \"<imageN>\" before it) and makes "
                   "the empty latent to sample: at the first reference's size, or resolution x resolution pixels. "
                   "With a VAE, each reference is also encoded as a reference latent the model edits from.")
    CATEGORY = "model/conditioning/qwen image"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    OUTPUT_TOOLTIPS = ("The encoded prompt, with the references' latents when a VAE is given.",
                       "The encoded negative prompt (an empty one is encoded as a space), with the same references.",
                       "An empty latent at the first reference's size, or resolution x resolution pixels (1024 for "
                       "0) without references: sample at this size, since another shifts the edit.")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        images = {f"images.image_{index}": ("IMAGE", {"tooltip": f"Reference image {index} (optional; taken in "
                                                                 "number order, the first frame of a batch)."})
                  for index in range(1, REFERENCE_SLOTS + 1)}
        return {"required": {
                    "clip": ("CLIP", {"tooltip": "Qwen-Image 2.1's text encoder (CLIPLoader type qwen_image with "
                                                 "its Qwen3-VL file)."}),
                    "prompt": ("STRING", {"multiline": True, "dynamicPrompts": True,
                                          "tooltip": "What the image shows, or how to change the references."}),
                    "negative_prompt": ("STRING", {"multiline": True, "dynamicPrompts": True,
                                                   "tooltip": "What to steer away from (with cfg above 1)."}),
                    "resolution": ("INT", {"default": 1024, "min": 0, "max": 4096, "step": 32,
                                           "tooltip": "Reference images are resized to about resolution x "
                                                      "resolution pixels at their aspect ratio, sides multiples "
                                                      "of 32 (0 keeps each at its own size, so rounded); the empty "
                                                      "latent's side without references (0: 1024)."})},
                "optional": {"vae": ("VAE", {"tooltip": "Qwen-Image 2.1's VAE: makes the references' latents (none: "
                                                        "the images condition through the text encoder alone)."}),
                             **images}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_facts: dict[str, Any], **widgets: Any) -> bool | str:
        return requires_family(input_facts, "clip", QWEN_IMAGE21, "TextEncodeQwenImage21")

    def encode(self, clip: TextEncoder, prompt: str, negative_prompt: str, resolution: int = 1024,
               vae: VaeModel | None = None, **images: torch.Tensor) -> tuple[Conditioning, Conditioning, dict]:
        if getattr(clip, "family", None) != QWEN_IMAGE21:
            raise ValueError(f"clip: TextEncodeQwenImage21 needs Qwen-Image 2.1's CLIP (CLIPLoader type qwen_image "
                             f"with its Qwen3-VL file); this one is {getattr(clip, 'family', type(clip).__name__)}'s")
        connected = sorted((int(name.rsplit("_", 1)[1]), image) for name, image in images.items()
                           if image is not None)
        resized = []
        for _, image in connected:
            height, width = reference_size(image.shape[1], image.shape[2], resolution)
            frame = image[:1]
            if (frame.shape[1], frame.shape[2]) != (height, width):
                frame = upscale(frame.movedim(-1, 1), width, height, "lanczos", "disabled").movedim(1, -1)
            resized.append(frame)
        references = [vae.encode(frame) for frame in resized] if vae is not None else []
        encoded = []
        for text in (prompt, negative_prompt):
            tokens = clip.tokenize(text, images=[frame[..., :3] for frame in resized], keep_vision=not references)
            conditioning = clip.encode_from_tokens_scheduled(tokens)
            if references:
                conditioning = [[embeddings, {**options, REFERENCES: [*(options.get(REFERENCES) or []),
                                                                      *references]}]
                                for embeddings, options in conditioning]
            encoded.append(conditioning)
        release_text_encoders(clip)
        if resized:
            height, width = resized[0].shape[1], resized[0].shape[2]
        else:
            height = width = resolution or DEFAULT_RESOLUTION
        latent = torch.zeros(1, QWEN_IMAGE21_LATENT_CHANNELS, height // QWEN_IMAGE21_DOWNSCALE,
                             width // QWEN_IMAGE21_DOWNSCALE)
        return encoded[0], encoded[1], {"samples": latent}

class QwenImage21Cache:
    DESCRIPTION = ("Keeps the prompt's and the reference images' keys and values between sampling steps for Qwen-Image "
                   "2.1 (they are the same at every step), so each step computes only the image's tokens: faster "
                   "sampling for the memory the keys and values take (about a quarter in int4).")
    CATEGORY = "advanced/model"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model, sampling with the cache.",)
    FUNCTION = "apply"
    EXPERIMENTAL = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": ("MODEL", {"tooltip": "A Qwen-Image 2.1 model."}),
            "device": (list(CACHE_DEVICES), {"default": "auto", "tooltip": "Where the cache is kept: auto and gpu "
                                                                          "where the model computes, cpu in RAM "
                                                                          "(moved back each step), off: no cache."}),
            "dtype": (list(CACHE_STORAGE), {"default": "default", "tooltip": "The cache's precision: default (the "
                                                                            "model's), int8 (half) or int4 "
                                                                            "(a quarter), scaled per token and head."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, input_facts: dict[str, Any], **widgets: Any) -> bool | str:
        return requires_family(input_facts, "model", QWEN_IMAGE21, "QwenImage21Cache")

    def apply(self, model: DiffusionModel, device: str = "auto", dtype: str = "default") -> tuple[DiffusionModel]:
        if model.family != QWEN_IMAGE21:
            raise ValueError(f"model: QwenImage21Cache needs a Qwen-Image 2.1 model; {model.name} is "
                             f"{model.sampling.family_title}'s")
        settings = None if device == "off" else PrefixCacheSettings(dtype, "cpu" if device == "cpu" else "auto")
        return (dataclasses.replace(model, sampling=QwenImage21Sampling(prefix_cache=settings)),)


NODE_CLASS_MAPPINGS = {"TextEncodeQwenImageEdit": TextEncodeQwenImageEdit,
                       "TextEncodeQwenImageEditPlus": TextEncodeQwenImageEditPlus,
                       "TextEncodeQwenImage21": TextEncodeQwenImage21, "QwenImage21Cache": QwenImage21Cache}
NODE_DISPLAY_NAME_MAPPINGS = {"TextEncodeQwenImageEdit": "TextEncodeQwenImageEdit",
                              "TextEncodeQwenImageEditPlus": "TextEncodeQwenImageEditPlus",
                              "TextEncodeQwenImage21": "Text Encode Qwen Image 2.1",
                              "QwenImage21Cache": "Qwen Image 2.1 Cache"}
