"""Model merging nodes with ComfyUI's contracts (comfy_extras/nodes_model_merging.py): ModelMergeSimple,
ModelMergeBlocks, ModelMergeSubtract and ModelMergeAdd.

Thin classes over `diffusion.merging`, which holds the maths, ComfyUI's block naming on our diffusers UNets and
how a merged network shares model1's untouched weights. The input MODELs are never changed. Knows nothing of HTTP
or the executor.
"""
from __future__ import annotations

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


NODE_CLASS_MAPPINGS = {
    "ModelMergeSimple": ModelMergeSimple,
    "ModelMergeBlocks": ModelMergeBlocks,
    "ModelMergeSubtract": ModelMergeSubtract,
    "ModelMergeAdd": ModelMergeAdd,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "ModelMergeSimple": "ModelMergeSimple",
    "ModelMergeBlocks": "ModelMergeBlocks",
    "ModelMergeSubtract": "ModelMergeSubtract",
    "ModelMergeAdd": "ModelMergeAdd",
}
