"""Model merging nodes with ComfyUI's contracts (comfy_extras/nodes_model_merging.py): ModelMergeSimple,
ModelMergeBlocks, ModelMergeSubtract and ModelMergeAdd; and the model-specific merges of the families we run
(comfy_extras/nodes_model_merging_model_specific.py): ModelMergeSD1, ModelMergeSD2, ModelMergeSDXL,
ModelMergeSD3_2B, ModelMergeSD35_Large and ModelMergeFlux1, one ratio per prefix of ComfyUI's weight names.

Thin classes over `diffusion.merging`, which holds the maths, ComfyUI's block naming on our diffusers networks and
how a merged network shares model1's untouched weights. The input MODELs are never changed. Knows nothing of HTTP
or the executor.
"""
from __future__ import annotations

import re
from typing import Any

from diffusion import merging
from diffusion.components import DiffusionModel

CATEGORY = "advanced/model_merging"
RATIO = {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}
MULTIPLIER = {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}


def _models(first: str, second: str) -> dict[str, Any]:
    return {
        "model1": ("MODEL", {"tooltip": f"The model the result is built on: {first}"}),
        "model2": ("MODEL", {"tooltip": f"The model merged into it: {second}"}),
    }


class ModelMergeSimple:
    DESCRIPTION = ("Blends two models of one family weight by weight: model1 * ratio + model2 * (1 - ratio). LoRAs "
                   "on either are merged in; a weight model2 lacks or has in another shape stays model1's.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The merged model.",)
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            **_models("its share is ratio.", "its share is 1 - ratio."),
            "ratio": ("FLOAT", {**RATIO, "tooltip": "model1's share of each weight: 1 keeps model1, 0 gives model2."}),
        }}

    def merge(self, model1: DiffusionModel, model2: DiffusionModel, ratio: float) -> tuple[DiffusionModel]:
        return (merging.merge_simple(model1, model2, ratio),)


class ModelMergeBlocks:
    DESCRIPTION = ("Blends two models with one ratio per UNet block, named as ComfyUI's original UNet layout: input "
                   "(diffusers' conv_in and down blocks), middle (mid block), out (up blocks and the output "
                   "layers). Weights outside them (time embeddings, and every weight of a transformer family) "
                   "take the input ratio.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The merged model.",)
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            **_models("its share of each block is that block's ratio.", "its share is 1 - the block's ratio."),
            "input": ("FLOAT", {**RATIO, "tooltip": "model1's share in the input (down) blocks and the weights "
                                                    "outside the three blocks."}),
            "middle": ("FLOAT", {**RATIO, "tooltip": "model1's share in the middle block."}),
            "out": ("FLOAT", {**RATIO, "tooltip": "model1's share in the output (up) blocks and final layers."}),
        }}

    def merge(self, model1: DiffusionModel, model2: DiffusionModel, input: float, middle: float,
              out: float) -> tuple[DiffusionModel]:
        return (merging.merge_blocks(model1, model2, {"input": input, "middle": middle, "out": out}),)


class ModelMergeSubtract:
    DESCRIPTION = ("The difference of two models, (model1 - model2) * multiplier: add it to a third model with "
                   "ModelMergeAdd (\"add difference\" merges), or extract it as a LoRA with LoraSave.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The difference model (its weights are differences; it makes no images on its own).",)
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            **_models("the minuend.", "subtracted from model1."),
            "multiplier": ("FLOAT", {**MULTIPLIER, "tooltip": "Scales the difference."}),
        }}

    def merge(self, model1: DiffusionModel, model2: DiffusionModel, multiplier: float) -> tuple[DiffusionModel]:
        return (merging.merge_subtract(model1, model2, multiplier),)


class ModelMergeAdd:
    DESCRIPTION = "The sum of two models weight by weight, model1 + model2 (model2 usually a ModelMergeSubtract)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The summed model.",)
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": _models("the base.", "added to it (a difference model).")}

    def merge(self, model1: DiffusionModel, model2: DiffusionModel) -> tuple[DiffusionModel]:
        return (merging.merge_add(model1, model2),)


# ---------------------------------------------------------------- model-specific merges (one ratio per prefix)

MODEL_SPECIFIC = "advanced/model_merging/model_specific"
_UNET_NAMED = {"time_embed.": "time_embedding", "label_emb.": "SDXL's add_embedding", "out.": "conv_norm_out, conv_out",
               "middle_block.0": "mid_block.resnets.0", "middle_block.1": "mid_block.attentions.0",
               "middle_block.2": "mid_block.resnets.1"}


def _unet_modules(prefix: str) -> str:
    """The diffusers UNet modules under a ComfyUI (LDM) prefix, in words (attentions where the level has them)."""
    plain = prefix.rstrip(".")
    if prefix in _UNET_NAMED or plain in _UNET_NAMED:
        return _UNET_NAMED.get(prefix) or _UNET_NAMED[plain]
    kind, _, number = plain.rpartition(".")
    index = int(number)
    if kind == "input_blocks":
        if index == 0:
            return "conv_in"
        level, layer = divmod(index - 1, 3)
        return f"down_blocks.{level}.downsamplers" if layer == 2 else \
            f"down_blocks.{level}.resnets.{layer} and attentions.{layer}"
    level, layer = divmod(index, 3)
    return f"up_blocks.{level}.resnets.{layer} and attentions.{layer}" + (" and upsamplers" if layer == 2 else "")


def _transformer_modules(prefix: str, names: tuple[tuple[str, str], ...]) -> str:
    """The diffusers transformer modules under a ComfyUI prefix (block indices carry over)."""
    block = re.fullmatch(r"(\D+\.)(\d+)\.", prefix)
    if block:
        diffusers_prefix = next(ours for ours, comfy in names if comfy == block.group(1))
        return f"{diffusers_prefix}{block.group(2)}"
    return ", ".join(ours.rstrip(".") for ours, comfy in names if comfy.startswith(prefix.rstrip(".")))


class _ModelMergeByPrefix:
    """ComfyUI's model-specific merges: one ratio per prefix of ComfyUI's weight names (PREFIXES, in its input
    order); each weight takes the ratio of the longest prefix its ComfyUI name starts with, else the first's."""

    CATEGORY = MODEL_SPECIFIC
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The merged model.",)
    FUNCTION = "merge"
    PREFIXES: tuple[str, ...] = ()

    @classmethod
    def modules(cls, prefix: str) -> str:
        return _unet_modules(prefix)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        ratios = {prefix: ("FLOAT", {**RATIO, "tooltip": f"model1's share of the weights ComfyUI names {prefix}* "
                                                         f"(diffusers: {cls.modules(prefix)}); 1 keeps model1's."})
                  for prefix in cls.PREFIXES}
        return {"required": {**_models("its share of each weight is its prefix's ratio.",
                                       "its share is 1 - the ratio."), **ratios}}

    def merge(self, model1: DiffusionModel, model2: DiffusionModel, **ratios: float) -> tuple[DiffusionModel]:
        missing = [prefix for prefix in self.PREFIXES if prefix not in ratios]
        if missing:
            raise ValueError(f"{missing[0]}: ratio missing")
        ordered = {prefix: ratios[prefix] for prefix in self.PREFIXES}
        return (merging.merge_by_prefix(model1, model2, ordered),)


def _numbered(name: str, count: int, dot: str = ".") -> tuple[str, ...]:
    return tuple(f"{name}.{index}{dot}" for index in range(count))


class ModelMergeSD1(_ModelMergeByPrefix):
    DESCRIPTION = ("Merges two SD1.x or SD2.x models with one ratio per block of ComfyUI's original UNet layout: "
                   "input_blocks.0 is diffusers' conv_in, input_blocks.1-11 the down blocks' resnets, attentions "
                   "and downsamplers in order (three per level), middle_block.0/1/2 the mid block's resnet, "
                   "attention, resnet, output_blocks.0-11 the up blocks' (three per level), out. the final norm and "
                   "conv, time_embed. the time embedding. LoRAs on either model are merged in.")
    PREFIXES = ("time_embed.", "label_emb.", *_numbered("input_blocks", 12), *_numbered("middle_block", 3),
                *_numbered("output_blocks", 12), "out.")


class ModelMergeSDXL(_ModelMergeByPrefix):
    DESCRIPTION = ("Merges two SDXL models with one ratio per block of ComfyUI's original UNet layout (prefixes "
                   "without a trailing dot, as ComfyUI's): input_blocks.0 is diffusers' conv_in, input_blocks.1-8 "
                   "the down blocks' resnets, attentions and downsamplers (three per level), middle_block.0/1/2 the "
                   "mid block, output_blocks.0-8 the up blocks, out. the final norm and conv, time_embed. and "
                   "label_emb. the time and added (size, pooled text) embeddings. LoRAs on either model are merged "
                   "in.")
    PREFIXES = ("time_embed.", "label_emb.", *_numbered("input_blocks", 9, ""), *_numbered("middle_block", 3, ""),
                *_numbered("output_blocks", 9, ""), "out.")


class _ModelMergeSD3(_ModelMergeByPrefix):
    @classmethod
    def modules(cls, prefix: str) -> str:
        return _transformer_modules(prefix, merging.SD3_NAMES)


_SD3_EMBEDDERS = ("pos_embed.", "x_embedder.", "context_embedder.", "y_embedder.", "t_embedder.")


class ModelMergeSD3_2B(_ModelMergeSD3):
    DESCRIPTION = ("Merges two SD3 Medium (2B) models with one ratio per part of ComfyUI's MMDiT layout: the "
                   "embedders (x_embedder: diffusers' pos_embed.proj, t_/y_embedder: time_text_embed), each of the "
                   "24 joint_blocks (diffusers' transformer_blocks) and final_layer (norm_out, proj_out).")
    PREFIXES = (*_SD3_EMBEDDERS, *_numbered("joint_blocks", 24), "final_layer.")


class ModelMergeSD35_Large(_ModelMergeSD3):
    DESCRIPTION = ("Merges two SD3.5 Large models with one ratio per part of ComfyUI's MMDiT layout: the "
                   "embedders (x_embedder: diffusers' pos_embed.proj, t_/y_embedder: time_text_embed), each of the "
                   "38 joint_blocks (diffusers' transformer_blocks) and final_layer (norm_out, proj_out).")
    PREFIXES = (*_SD3_EMBEDDERS, *_numbered("joint_blocks", 38), "final_layer.")


class ModelMergeFlux1(_ModelMergeByPrefix):
    DESCRIPTION = ("Merges two FLUX.1 models with one ratio per part of ComfyUI's (BFL) layout: img_in "
                   "(diffusers' x_embedder), time_in / guidance_in / vector_in (time_text_embed), txt_in "
                   "(context_embedder), the 19 double_blocks (transformer_blocks), the 38 single_blocks "
                   "(single_transformer_blocks) and final_layer (norm_out, proj_out).")
    PREFIXES = ("img_in.", "time_in.", "guidance_in", "vector_in.", "txt_in.", *_numbered("double_blocks", 19),
                *_numbered("single_blocks", 38), "final_layer.")

    @classmethod
    def modules(cls, prefix: str) -> str:
        return _transformer_modules(prefix, merging.FLUX_NAMES)


NODE_CLASS_MAPPINGS = {
    "ModelMergeSimple": ModelMergeSimple,
    "ModelMergeBlocks": ModelMergeBlocks,
    "ModelMergeSubtract": ModelMergeSubtract,
    "ModelMergeAdd": ModelMergeAdd,
    "ModelMergeSD1": ModelMergeSD1,
    "ModelMergeSD2": ModelMergeSD1,  # ComfyUI's too: SD2's UNet has SD1's blocks
    "ModelMergeSDXL": ModelMergeSDXL,
    "ModelMergeSD3_2B": ModelMergeSD3_2B,
    "ModelMergeFlux1": ModelMergeFlux1,
    "ModelMergeSD35_Large": ModelMergeSD35_Large,
}

NODE_DISPLAY_NAME_MAPPINGS = {name: name for name in NODE_CLASS_MAPPINGS}
