"""Text encoder nodes beside the loaders: merging two CLIPs' weights (CLIPMergeSimple, CLIPMergeAdd,
CLIPMergeSubtract), saving a CLIP as ComfyUI's text encoder files (CLIPSave) and T5's tokenizer options
(T5TokenizerOptions); also registers CLIPLoader (in `nodes.loaders` with the other loaders).

Merges follow ComfyUI's key patches: each tensor of clip1 that clip2 has under the same name and shape becomes
`a * clip1 + b * clip2` (position ids and logit scales excepted), computed in float32 and stored in clip1's
precision; the loaded CLIPs stay unchanged (`diffusion.encoders.text_encoder_files`). Knows nothing of HTTP.
"""
from __future__ import annotations

import logging
from typing import Any

from diffusion.contracts import TextEncoder
from diffusion.encoders import text_encoder_files
from diffusion.encoders.t5 import T5Padding
from nodes.environment import current_environment
from nodes.image import SaveJournal, plan_names, split_prefix, write_file
from nodes.loaders import CLIPLoader
from nodes.model_saving import prompt_metadata

MERGING = "advanced/model_merging"
CLIP_SAVE_EXTENSION = ".safetensors"
TOKEN_COUNT = {"default": 0, "min": 0, "max": 10000, "step": 1}

log = logging.getLogger(__name__)


class CLIPMergeSimple:
    DESCRIPTION = ("Blends two text encoders' weights: ratio 1 gives clip1, 0 gives clip2's weights wherever clip2 "
                   "has the same tensor (the encoders only clip1 has stay clip1's).")
    CATEGORY = MERGING
    RETURN_TYPES = ("CLIP",)
    OUTPUT_TOOLTIPS = ("clip1 with weights ratio * clip1 + (1 - ratio) * clip2.",)
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "clip1": ("CLIP", {"tooltip": "The text encoder merged into (its settings and extra encoders are kept)."}),
            "clip2": ("CLIP", {"tooltip": "The text encoder whose weights are blended in."}),
            "ratio": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                "tooltip": "The share of clip1 in every merged weight (1: clip1 unchanged)."}),
        }}

    def merge(self, clip1: TextEncoder, clip2: TextEncoder, ratio: float) -> tuple[TextEncoder]:
        if ratio == 1.0:
            return (clip1,)
        return (text_encoder_files.merge_clips(clip1, clip2, ratio, 1.0 - ratio),)


class CLIPMergeSubtract:
    DESCRIPTION = ("The difference of two text encoders' weights, scaled: multiplier * (clip1 - clip2) wherever "
                   "clip2 has the same tensor; feed it to CLIPMergeAdd to add a fine-tune's change to another "
                   "encoder.")
    CATEGORY = MERGING
    RETURN_TYPES = ("CLIP",)
    OUTPUT_TOOLTIPS = ("A CLIP holding multiplier * (clip1 - clip2) where the two share weights.",)
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "clip1": ("CLIP", {"tooltip": "The text encoder subtracted from."}),
            "clip2": ("CLIP", {"tooltip": "The text encoder subtracted."}),
            "multiplier": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                                     "tooltip": "How much of the difference to keep."}),
        }}

    def merge(self, clip1: TextEncoder, clip2: TextEncoder, multiplier: float) -> tuple[TextEncoder]:
        return (text_encoder_files.merge_clips(clip1, clip2, multiplier, -multiplier),)


class CLIPMergeAdd:
    DESCRIPTION = ("Adds clip2's weights to clip1's wherever clip2 has the same tensor (e.g. a CLIPMergeSubtract "
                   "result).")
    CATEGORY = MERGING
    RETURN_TYPES = ("CLIP",)
    OUTPUT_TOOLTIPS = ("clip1 with weights clip1 + clip2.",)
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "clip1": ("CLIP", {"tooltip": "The text encoder added to."}),
            "clip2": ("CLIP", {"tooltip": "The text encoder (or difference) added."}),
        }}

    def merge(self, clip1: TextEncoder, clip2: TextEncoder) -> tuple[TextEncoder]:
        return (text_encoder_files.merge_clips(clip1, clip2, 1.0, 1.0),)


class CLIPSave:
    DESCRIPTION = ("Saves a CLIP's text encoders into the output folder as ComfyUI does: one .safetensors file per "
                   "encoder (<prefix>_clip_l_00001_.safetensors, _clip_g_, _t5xxl_), in the layout CLIPLoader "
                   "reads, with LoRAs and merges baked in and the prompt in the metadata.")
    CATEGORY = MERGING
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "The text encoder(s) to save."}),
                "filename_prefix": ("STRING", {"default": "clip/ComfyUI",
                                               "tooltip": "File name prefix inside the output folder; may start "
                                                          "with subfolders (a/b/name)."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(self, clip: TextEncoder, filename_prefix: str = "clip/ComfyUI", prompt: Any = None,
             extra_pnginfo: Any = None) -> dict[str, Any]:
        from safetensors.torch import save_file

        folders = current_environment().folders
        files = text_encoder_files.comfy_files(clip)
        metadata = {"format": "pt", **prompt_metadata(prompt, extra_pnginfo)}
        # a node's save journal holds one file name list: a crashed re-run reuses names only for a single file
        journal = SaveJournal.for_current_node(folders.user_dir) if len(files) == 1 else None
        saved = []
        for part, tensors in files.items():
            directory, subfolder, base = split_prefix(folders.output_dir, f"{filename_prefix}_{part}")
            directory.mkdir(parents=True, exist_ok=True)
            (name,), replace = plan_names(directory, base, 1, CLIP_SAVE_EXTENSION, journal)
            # safetensors writes by path: into the hidden file `write_file` opened, which it then syncs and links
            # into place (no second copy of the tensors in memory, which would double T5-XXL's 9 GB)
            written = write_file(directory, name, base, replace,
                                 lambda handle, tensors=tensors: save_file(tensors, handle.name, metadata))
            saved.append({"filename": written, "subfolder": subfolder, "type": "output"})
        return {"ui": {"text_encoders": saved}}


class T5TokenizerOptions:
    DESCRIPTION = ("Sets how the CLIP's T5 encoder (SD3, FLUX) pads prompts, as ComfyUI's T5 tokenizer does: the "
                   "prompt's tokens and the end token, never cut, then min_padding pad tokens, then pad tokens up to "
                   "min_length. Without it SD3's T5 gets 256 tokens and FLUX's 512, as diffusers' pipelines give "
                   "them. A CLIP without T5 is returned as it is.")
    CATEGORY = "_for_testing/conditioning"
    RETURN_TYPES = ("CLIP",)
    OUTPUT_TOOLTIPS = ("The same text encoders, tokenizing T5 prompts with these options.",)
    FUNCTION = "set_options"
    EXPERIMENTAL = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "clip": ("CLIP", {"tooltip": "The text encoders whose T5 to set (the input stays unchanged)."}),
            "min_padding": ("INT", {**TOKEN_COUNT, "tooltip": "Pad tokens always added after the end token."}),
            "min_length": ("INT", {**TOKEN_COUNT, "tooltip": "The fewest tokens T5 gets; shorter prompts are padded "
                                                             "to it (0: no padding beyond min_padding)."}),
        }}

    def set_options(self, clip: TextEncoder, min_padding: int, min_length: int) -> tuple[TextEncoder]:
        with_t5_padding = getattr(clip, "with_t5_padding", None)
        if with_t5_padding is None:  # ComfyUI sets the options on any CLIP; those without T5 never read them
            log.info("T5TokenizerOptions: %s has no T5 encoder; the options change nothing", clip.name)
            return (clip,)
        return (with_t5_padding(T5Padding(min_padding, min_length)),)


NODE_CLASS_MAPPINGS = {
    "CLIPLoader": CLIPLoader,
    "CLIPMergeSimple": CLIPMergeSimple,
    "CLIPMergeSubtract": CLIPMergeSubtract,
    "CLIPMergeAdd": CLIPMergeAdd,
    "CLIPSave": CLIPSave,
    "T5TokenizerOptions": T5TokenizerOptions,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "CLIPLoader": "Load CLIP",
    "CLIPMergeSimple": "CLIPMergeSimple",
    "CLIPMergeSubtract": "CLIPMergeSubtract",
    "CLIPMergeAdd": "CLIPMergeAdd",
    "CLIPSave": "CLIPSave",
    "T5TokenizerOptions": "T5TokenizerOptions",
}
