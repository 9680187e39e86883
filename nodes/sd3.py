"""SD3 / SD3.5 nodes: TripleCLIPLoader, CLIPTextEncodeSD3 and ModelSamplingSD3, with ComfyUI's inputs.

SD3 models load with CheckpointLoaderSimple/DiffusersLoader (the family is detected from the files), start from
EmptySD3LatentImage (16 channels) and sample with KSampler (flow matching; the Turbo models with 4 steps and cfg 1).
Thin classes over `nodes.models.sd3`; knows nothing of HTTP or the executor.
"""
from __future__ import annotations

from typing import Any

from nodes.environment import current_environment, release_text_encoders, resolve_inside
from nodes.models.checkpoint import read_safetensors
from nodes.models.components import DiffusionModel
from nodes.models.sd3 import Sd3Clip, clip_from_files, with_shift
from nodes.models.text_encoding import Conditioning

EMPTY_PADDING = ("none", "empty_prompt")


class TripleCLIPLoader:
    DESCRIPTION = ("Loads SD3's text encoders from three files in models/text_encoders: CLIP-L, CLIP-G and T5-XXL "
                   "(recognised from their tensors, in any order).")
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("text_encoders")
        return {"required": {
            "clip_name1": (names, {"tooltip": "A text encoder file (CLIP-L)."}),
            "clip_name2": (names, {"tooltip": "A text encoder file (CLIP-G)."}),
            "clip_name3": (names, {"tooltip": "A text encoder file (T5-XXL)."}),
        }}

    def load_clip(self, clip_name1: str, clip_name2: str, clip_name3: str) -> tuple[Sd3Clip]:
        environment = current_environment()
        folder = environment.folders.model_dir("text_encoders")
        names = {"clip_name1": clip_name1, "clip_name2": clip_name2, "clip_name3": clip_name3}
        paths = {input_name: resolve_inside(folder, file_name, input_name) for input_name, file_name in names.items()}

        def load() -> Sd3Clip:
            states = {input_name: read_safetensors(path, input_name) for input_name, path in paths.items()}
            return clip_from_files(states, "+".join(names.values()), environment.models.place,
                                   reread=lambda input_name: read_safetensors(paths[input_name], input_name))

        return (environment.models.cached("sd3-clip", paths["clip_name1"], "clip_name1", load),)


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
                "tooltip": "Kept for ComfyUI workflows; an empty text is always encoded as the empty prompt, as "
                           "StableDiffusion3Pipeline does."}),
        }}

    def encode(self, clip: Sd3Clip, clip_l: str, clip_g: str, t5xxl: str,
               empty_padding: str = "none") -> tuple[Conditioning]:
        if not isinstance(clip, Sd3Clip):
            raise ValueError(f"clip: CLIPTextEncodeSD3 needs an SD3 CLIP, got a {type(clip).__name__}")
        conditioning = clip.encode(clip_l, clip_g, t5xxl)
        release_text_encoders(clip)
        return (conditioning,)


class ModelSamplingSD3:
    DESCRIPTION = ("Sets the timestep shift of an SD3 (flow-matching) model: higher values spend more steps at high "
                   "noise (3.0 is SD3's default).")
    CATEGORY = "advanced/model"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": ("MODEL", {"tooltip": "An SD3 model."}),
            "shift": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0, "step": 0.01,
                                "tooltip": "The timestep shift of the flow-matching schedule."}),
        }}

    def patch(self, model: DiffusionModel, shift: float) -> tuple[DiffusionModel]:
        return (with_shift(model, shift),)


NODE_CLASS_MAPPINGS = {
    "TripleCLIPLoader": TripleCLIPLoader,
    "CLIPTextEncodeSD3": CLIPTextEncodeSD3,
    "ModelSamplingSD3": ModelSamplingSD3,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "TripleCLIPLoader": "Triple CLIP Loader",
    "CLIPTextEncodeSD3": "CLIP Text Encode (SD3)",
    "ModelSamplingSD3": "Model Sampling SD3",
}
