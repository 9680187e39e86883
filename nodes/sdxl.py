"""SDXL conditioning nodes: CLIPTextEncodeSDXL (two prompts, size and crop) and CLIPTextEncodeSDXLRefiner
(aesthetic score), with ComfyUI's inputs and CONDITIONING options.

SDXL checkpoints load with CheckpointLoaderSimple/DiffusersLoader (the family is detected from the files) and
sample with KSampler/KSamplerAdvanced; the base -> refiner hand-off is two KSamplerAdvanced nodes splitting one
schedule. Thin classes over `diffusion.families.sdxl`; knows nothing of HTTP or the executor.
"""
from __future__ import annotations

from typing import Any

from diffusion.contracts import Conditioning
from diffusion.families.sdxl.text_encoding import SdxlClip, require_sdxl_clip
from nodes.model_facts import requires_family

MAX_RESOLUTION = 16384


def _size(default: int, tooltip: str) -> tuple[str, dict[str, Any]]:
    return ("INT", {"default": default, "min": 0, "max": MAX_RESOLUTION, "tooltip": tooltip})


def _text(tooltip: str) -> tuple[str, dict[str, Any]]:
    return ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": tooltip})


class CLIPTextEncodeSDXL:
    DESCRIPTION = ("Encodes prompts for SDXL: text_g for OpenCLIP-G, text_l for CLIP-L, plus the size and crop the "
                   "UNet is told the image had (original size, top-left crop, target size).")
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The encoded prompt with its pooled embedding and size conditioning.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "clip": ("CLIP", {"tooltip": "An SDXL text encoder (CLIP-L and OpenCLIP-G)."}),
            "width": _size(1024, "The original image width the model is told."),
            "height": _size(1024, "The original image height the model is told."),
            "crop_w": _size(0, "The left edge of the crop the model is told (0: not cropped)."),
            "crop_h": _size(0, "The top edge of the crop the model is told (0: not cropped)."),
            "target_width": _size(1024, "The target image width the model is told."),
            "target_height": _size(1024, "The target image height the model is told."),
            "text_g": _text("The prompt for OpenCLIP-G."),
            "text_l": _text("The prompt for CLIP-L."),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, input_facts: dict[str, Any], **widgets: Any) -> bool | str:
        return requires_family(input_facts, "clip", "sdxl", "CLIPTextEncodeSDXL")

    def encode(self, clip: SdxlClip, width: int, height: int, crop_w: int, crop_h: int, target_width: int,
               target_height: int, text_g: str, text_l: str) -> tuple[Conditioning]:
        options = {"width": width, "height": height, "crop_w": crop_w, "crop_h": crop_h,
                   "target_width": target_width, "target_height": target_height}
        return (require_sdxl_clip(clip).encode(text_g, text_l, options),)


class CLIPTextEncodeSDXLRefiner:
    DESCRIPTION = ("Encodes a prompt for the SDXL refiner (OpenCLIP-G only) with the aesthetic score and image size "
                   "it is conditioned on (about 6 for positive, 2.5 for negative prompts).")
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "ascore": ("FLOAT", {"default": 6.0, "min": 0.0, "max": 1000.0, "step": 0.01,
                                 "tooltip": "The aesthetic score the refiner is conditioned on."}),
            "width": _size(1024, "The image width the refiner is told."),
            "height": _size(1024, "The image height the refiner is told."),
            "text": _text("The prompt."),
            "clip": ("CLIP", {"tooltip": "The SDXL refiner's text encoder (or an SDXL base's: its OpenCLIP-G)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, input_facts: dict[str, Any], **widgets: Any) -> bool | str:
        return requires_family(input_facts, "clip", "sdxl", "CLIPTextEncodeSDXLRefiner")

    def encode(self, clip: SdxlClip, ascore: float, width: int, height: int, text: str) -> tuple[Conditioning]:
        options = {"aesthetic_score": ascore, "width": width, "height": height}
        return (require_sdxl_clip(clip).g_only().encode(text, text, options),)


NODE_CLASS_MAPPINGS = {
    "CLIPTextEncodeSDXL": CLIPTextEncodeSDXL,
    "CLIPTextEncodeSDXLRefiner": CLIPTextEncodeSDXLRefiner,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CLIPTextEncodeSDXL": "CLIP Text Encode (SDXL)",
    "CLIPTextEncodeSDXLRefiner": "CLIP Text Encode (SDXL Refiner)",
}
