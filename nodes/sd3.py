"""SD3 / SD3.5 nodes: CLIPTextEncodeSD3 and ModelSamplingSD3, with ComfyUI's inputs.

SD3 models load with CheckpointLoaderSimple/DiffusersLoader (the family is detected from the files) and their
text encoders with TripleCLIPLoader (`nodes.loaders`), start from EmptySD3LatentImage (16 channels) and sample
with KSampler (flow matching; the Turbo models with 4 steps and cfg 1). Thin classes over
`diffusion.families.sd3`; knows nothing of HTTP or the executor.
"""
from __future__ import annotations

from typing import Any

from diffusion.components import DiffusionModel
from diffusion.contracts import Conditioning
from diffusion.families.sd3.text_encoding import Sd3Clip
from diffusion.sampling.flow import with_shift
from nodes.environment import release_text_encoders
from nodes.model_facts import requires_family

EMPTY_PADDING = ("none", "empty_prompt")


class CLIPTextEncodeSD3:
    DESCRIPTION = ("Encodes prompts for SD3: one text each for CLIP-L, CLIP-G and T5-XXL (T5's is unused when the "
                   "CLIP has no T5).")
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        text = {"multiline": True, "dynamicPrompts": True}
        return {"required": {
            "clip": ("CLIP", {"tooltip": "An SD3 text encoder (the checkpoint's or TripleCLIPLoader's)."}),
            "clip_l": ("STRING", {**text, "tooltip": "The prompt for CLIP-L."}),
            "clip_g": ("STRING", {**text, "tooltip": "The prompt for CLIP-G."}),
            "t5xxl": ("STRING", {**text, "tooltip": "The prompt for T5-XXL."}),
            "empty_padding": (list(EMPTY_PADDING), {
                "tooltip": "none (ComfyUI's default): an empty text gives no tokens (both CLIP texts empty: no "
                           "CLIP part, zero pooled output; empty T5 text: T5's end token alone). empty_prompt: an "
                           "empty text is encoded as the empty prompt, as StableDiffusion3Pipeline does."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, input_facts: dict[str, Any], **widgets: Any) -> bool | str:
        return requires_family(input_facts, "clip", "sd3", "CLIPTextEncodeSD3")

    def encode(self, clip: Sd3Clip, clip_l: str, clip_g: str, t5xxl: str,
               empty_padding: str = "none") -> tuple[Conditioning]:
        if not isinstance(clip, Sd3Clip):
            raise ValueError(f"clip: CLIPTextEncodeSD3 needs an SD3 CLIP, got a {type(clip).__name__}")
        conditioning = clip.encode(clip_l, clip_g, t5xxl, pad_empty=empty_padding == "empty_prompt")
        release_text_encoders(clip)
        return (conditioning,)


class ModelSamplingSD3:
    DESCRIPTION = ("Sets the timestep shift of an SD3 or HiDream (flow-matching) model: higher values spend more "
                   "steps at high noise (3.0 is SD3's default; ComfyUI's HiDream templates use 3.0 for Full and Fast, "
                   "6.0 for Dev).")
    CATEGORY = "advanced/model"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": ("MODEL", {"tooltip": "An SD3 or HiDream model."}),
            "shift": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0, "step": 0.01,
                                "tooltip": "The timestep shift of the flow-matching schedule."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, input_facts: dict[str, Any], **widgets: Any) -> bool | str:
        return requires_family(input_facts, "model", ("sd3", "hidream"), "ModelSamplingSD3")

    def patch(self, model: DiffusionModel, shift: float) -> tuple[DiffusionModel]:
        return (with_shift(model, shift),)


NODE_CLASS_MAPPINGS = {
    "CLIPTextEncodeSD3": CLIPTextEncodeSD3,
    "ModelSamplingSD3": ModelSamplingSD3,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CLIPTextEncodeSD3": "CLIP Text Encode (SD3)",
    "ModelSamplingSD3": "Model Sampling SD3",
}
