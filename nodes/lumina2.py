"""Lumina 2's text node with ComfyUI's name and inputs: CLIPTextEncodeLumina2 puts one of Lumina 2's two system
prompts before the user's prompt, as Lumina2Pipeline and ComfyUI do. Knows nothing of HTTP or the executor."""
from __future__ import annotations

from typing import Any

from diffusion.contracts import Conditioning, TextEncoder
from nodes.environment import release_text_encoders

SYSTEM_PROMPTS = {
    "superior": "You are an assistant designed to generate superior images with the superior degree of image-text "
                "alignment based on textual prompts or user prompts.",
    "alignment": "You are an assistant designed to generate high-quality images with the highest degree of "
                 "image-text alignment based on textual prompts.",
}


class CLIPTextEncodeLumina2:
    DESCRIPTION = ("Encodes a system prompt and a user prompt into a conditioning for Lumina 2 (the system prompt "
                   "first, then \"<Prompt Start>\" and the user prompt, as Lumina 2 was trained).")
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The encoded prompt.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "system_prompt": (list(SYSTEM_PROMPTS), {"tooltip": "Lumina 2's two system prompts: " + " / ".join(
                f"{name}: {text}" for name, text in SYSTEM_PROMPTS.items())}),
            "user_prompt": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "The text to encode."}),
            "clip": ("CLIP", {"tooltip": "The text encoder (CLIPLoader type lumina2)."}),
        }}

    def encode(self, clip: TextEncoder, user_prompt: str, system_prompt: str) -> tuple[Conditioning]:
        if system_prompt not in SYSTEM_PROMPTS:
            raise ValueError(f"system_prompt: {system_prompt!r} is not one of {', '.join(SYSTEM_PROMPTS)}")
        conditioning = clip.encode_prompt(f"{SYSTEM_PROMPTS[system_prompt]} <Prompt Start> {user_prompt}")
        release_text_encoders(clip)
        return (conditioning,)


NODE_CLASS_MAPPINGS = {"CLIPTextEncodeLumina2": CLIPTextEncodeLumina2}
NODE_DISPLAY_NAME_MAPPINGS = {"CLIPTextEncodeLumina2": "CLIP Text Encode for Lumina2"}
