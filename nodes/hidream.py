"""HiDream nodes: CLIPTextEncodeHiDream, with ComfyUI's inputs.

HiDream-I1 models load with UNETLoader (the transformer), QuadrupleCLIPLoader (`nodes.loaders`: CLIP-L, CLIP-G,
T5-XXL, Llama 3.1) and VAELoader (FLUX's VAE), start from EmptySD3LatentImage (16 channels) and sample with KSampler
after ModelSamplingSD3 (shift 3.0 for Full and Fast, 6.0 for Dev, as ComfyUI's templates set it). Thin classes over
`diffusion.families.hidream`; knows nothing of HTTP or the executor.
"""
from __future__ import annotations

from typing import Any

from diffusion.contracts import Conditioning
from diffusion.families.hidream.text_encoding import HiDreamClip
from nodes.environment import release_text_encoders
from nodes.model_facts import requires_family


class CLIPTextEncodeHiDream:
    DESCRIPTION = "Encodes a prompt for HiDream with one text for each of its four text encoders."
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        text = {"multiline": True, "dynamicPrompts": True}
        return {"required": {
            "clip": ("CLIP", {"tooltip": "HiDream's text encoders (QuadrupleCLIPLoader)."}),
            "clip_l": ("STRING", {**text, "tooltip": "The prompt for CLIP-L (its pooled output)."}),
            "clip_g": ("STRING", {**text, "tooltip": "The prompt for CLIP-G (its pooled output)."}),
            "t5xxl": ("STRING", {**text, "tooltip": "The prompt for T5-XXL (its first 128 tokens)."}),
            "llama": ("STRING", {**text, "tooltip": "The prompt for Llama 3.1."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, input_facts: dict[str, Any], **widgets: Any) -> bool | str:
        return requires_family(input_facts, "clip", "hidream", "CLIPTextEncodeHiDream")

    def encode(self, clip: HiDreamClip, clip_l: str, clip_g: str, t5xxl: str, llama: str) -> tuple[Conditioning]:
        if not isinstance(clip, HiDreamClip):
            raise ValueError(f"clip: CLIPTextEncodeHiDream needs a HiDream CLIP (QuadrupleCLIPLoader), got a "
                             f"{type(clip).__name__}")
        conditioning = clip.encode_tokens(clip.tokenize_texts(clip_l, clip_g, t5xxl, llama))
        release_text_encoders(clip)
        return (conditioning,)


NODE_CLASS_MAPPINGS = {"CLIPTextEncodeHiDream": CLIPTextEncodeHiDream}
NODE_DISPLAY_NAME_MAPPINGS = {"CLIPTextEncodeHiDream": "CLIP Text Encode (HiDream)"}
