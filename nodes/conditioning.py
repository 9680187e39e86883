"""Conditioning nodes: prompt text to CONDITIONING, and choosing the CLIP layer prompts are read from.

Thin ComfyUI-style classes over each family's CLIP value (`diffusion.contracts.TextEncoder`). Knows nothing of HTTP
or the executor.
"""
from __future__ import annotations

from typing import Any

from diffusion.contracts import Conditioning, TextEncoder
from nodes.environment import release_text_encoders


class CLIPTextEncode:
    DESCRIPTION = ("Encodes a prompt with the text encoder. Long prompts are split into 77-token chunks, not cut; "
                   "(word:1.2) raises a word's weight, (word) by 1.1, \\( is a literal parenthesis.")
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The encoded prompt, to guide the sampler.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "The text to encode."}),
            "clip": ("CLIP", {"tooltip": "The text encoder to encode it with."}),
        }}

    def encode(self, clip: TextEncoder, text: str) -> tuple[Conditioning]:
        conditioning = clip.encode_prompt(text)
        release_text_encoders(clip)
        return (conditioning,)


class CLIPSetLastLayer:
    DESCRIPTION = ("Chooses the text-encoder layer prompts are read from: -1 is the last, -2 the one before "
                   "(\"clip skip 2\").")
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "set_last_layer"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "clip": ("CLIP", {"tooltip": "The text encoder."}),
            "stop_at_clip_layer": ("INT", {"default": -1, "min": -24, "max": -1, "step": 1,
                                           "tooltip": "The layer to stop at, counted from the end."}),
        }}

    def set_last_layer(self, clip: TextEncoder, stop_at_clip_layer: int) -> tuple[TextEncoder]:
        return (clip.with_layer(stop_at_clip_layer),)
