"""Image prompts: ComfyUI's CLIPVisionLoader and CLIPVisionEncode (an image into CLIP_VISION_OUTPUT), and its style
model nodes, StyleModelLoader and StyleModelApply (FLUX.1 Redux, SD1's T2I-Adapter style model: image tokens
appended to a prompt's).

Thin ComfyUI-style classes over `diffusion.encoders.clip_vision` and `diffusion.encoders.style_model`. The unCLIP
prior's image encoder (UnCLIPPriorLoader's CLIP_VISION) encodes through CLIPVisionEncode too, and its
CLIP_VISION_OUTPUT feeds the unCLIP decoder nodes. Knows nothing of HTTP.
"""
from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from diffusion.contracts import Conditioning
from diffusion.encoders.clip_vision import ClipVisionEncoder, ClipVisionOutput, load_clip_vision
from diffusion.encoders.style_model import StyleModel, load_style_model
from nodes.environment import current_environment


class ImageEncoder(Protocol):
    """CLIP_VISION: what CLIPVisionEncode needs of an image encoder."""

    def encode_image(self, images: torch.Tensor, crop: bool = True) -> ClipVisionOutput: ...


class CLIPVisionLoader:
    DESCRIPTION = ("Loads an image encoder from models/clip_vision (ComfyUI's clip_vision files: CLIP ViT-L/H/bigG "
                   "with projection, SigLIP for FLUX Redux).")
    CATEGORY = "loaders"
    RETURN_TYPES = ("CLIP_VISION",)
    OUTPUT_TOOLTIPS = ("The image encoder, for CLIPVisionEncode.",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("clip_vision")
        return {"required": {"clip_name": (names, {"tooltip": "The image encoder file in models/clip_vision."})}}

    def load_clip(self, clip_name: str) -> tuple[ClipVisionEncoder]:
        environment = current_environment()
        path = environment.folders.model_file("clip_vision", clip_name, "clip_name")
        return (environment.models.cached("clip-vision", path, "clip_name",
                                          lambda: load_clip_vision(path, environment.models.place, "clip_name")),)


class CLIPVisionEncode:
    DESCRIPTION = ("Encodes images with an image encoder: its hidden states and image embedding, for style models, "
                   "unCLIP and image-prompt nodes. Images are resized to the encoder's size.")
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CLIP_VISION_OUTPUT",)
    OUTPUT_TOOLTIPS = ("The encoded images.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "clip_vision": ("CLIP_VISION", {"tooltip": "The image encoder (CLIPVisionLoader, UnCLIPPriorLoader)."}),
            "image": ("IMAGE", {"tooltip": "The images to encode."}),
            "crop": (["center", "none"], {"tooltip": "center: scale the short side to the encoder's size and crop "
                                                     "the middle; none: squeeze the whole image to a square."}),
        }}

    def encode(self, clip_vision: ImageEncoder, image: torch.Tensor, crop: str = "center") -> tuple[ClipVisionOutput]:
        return (clip_vision.encode_image(image, crop=crop == "center"),)


class StyleModelLoader:
    DESCRIPTION = "Loads a style model from models/style_models (FLUX.1 Redux, or SD1's T2I-Adapter style model)."
    CATEGORY = "loaders"
    RETURN_TYPES = ("STYLE_MODEL",)
    OUTPUT_TOOLTIPS = ("The style model, for StyleModelApply.",)
    FUNCTION = "load_style_model"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("style_models")
        return {"required": {"style_model_name": (names, {"tooltip": "The style model file in "
                                                                     "models/style_models."})}}

    def load_style_model(self, style_model_name: str) -> tuple[StyleModel]:
        environment = current_environment()
        path = environment.folders.model_file("style_models", style_model_name, "style_model_name")
        return (environment.models.cached(
            "style-model", path, "style_model_name",
            lambda: load_style_model(path, environment.models.place, "style_model_name")),)


class StyleModelApply:
    DESCRIPTION = ("Appends an image's style tokens (the style model applied to the image encoder's output) to every "
                   "entry of the conditioning, so the sampler follows the image as well as the prompt.")
    CATEGORY = "conditioning/style_model"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The conditioning with the image's tokens appended.",)
    FUNCTION = "apply_stylemodel"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "conditioning": ("CONDITIONING", {"tooltip": "The prompt's conditioning (FLUX for Redux, SD1 for the "
                                                         "T2I-Adapter)."}),
            "style_model": ("STYLE_MODEL", {"tooltip": "The style model (StyleModelLoader)."}),
            "clip_vision_output": ("CLIP_VISION_OUTPUT", {"tooltip": "The encoded image (CLIPVisionEncode; SigLIP "
                                                                     "for Redux, CLIP ViT-L for the T2I-Adapter)."}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.001,
                                   "tooltip": "How strongly the image steers the result."}),
            "strength_type": (["multiply", "attn_bias"], {
                "tooltip": "multiply: scale the image tokens; attn_bias: bias attention to them (not supported "
                           "here unless strength is 1)."}),
        }}

    def apply_stylemodel(self, conditioning: Conditioning, style_model: StyleModel,
                         clip_vision_output: ClipVisionOutput, strength: float,
                         strength_type: str) -> tuple[Conditioning]:
        if strength_type == "attn_bias" and not math.isclose(strength, 1.0):
            raise ValueError("strength_type: 'attn_bias' needs attention masks, which the samplers here do not take; "
                             "use 'multiply'")
        if any("attention_mask" in entry[1] for entry in conditioning):
            raise ValueError("conditioning: it carries an attention mask, which the samplers here do not take")
        tokens = style_model.tokens(clip_vision_output.last_hidden_state)
        tokens = tokens.flatten(start_dim=0, end_dim=1).unsqueeze(0)
        if strength_type == "multiply":
            tokens = tokens * strength
        out = []
        for embeddings, options in ((entry[0], entry[1]) for entry in conditioning):
            if embeddings.shape[-1] != tokens.shape[-1]:
                raise ValueError(f"conditioning: its embeddings are {embeddings.shape[-1]} wide but {style_model.name} "
                                 f"gives {tokens.shape[-1]}-wide tokens; encode the prompt for the model family "
                                 "the style model belongs to")
            out.append([torch.cat([embeddings, tokens.to(embeddings).expand(embeddings.shape[0], -1, -1)], dim=1),
                        dict(options)])
        return (out,)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "CLIPVisionLoader": CLIPVisionLoader,
    "CLIPVisionEncode": CLIPVisionEncode,
    "StyleModelLoader": StyleModelLoader,
    "StyleModelApply": StyleModelApply,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "CLIPVisionLoader": "Load CLIP Vision",
    "CLIPVisionEncode": "CLIP Vision Encode",
    "StyleModelLoader": "Load Style Model",
    "StyleModelApply": "Apply Style Model",
}
