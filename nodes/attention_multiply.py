"""ComfyUI's attention-multiply nodes (comfy_extras/nodes_attention_multiply.py) with its contracts:
UNetSelfAttentionMultiply, UNetCrossAttentionMultiply and CLIPAttentionMultiply scale the query, key, value and
output projections of every self-attention, cross-attention or CLIP text-encoder attention by a factor.

Thin classes over `diffusion.attention_scaling`, which says which weights each node scales on our diffusers UNets
and transformers CLIPs; the input MODEL or CLIP is never changed. UNetTemporalAttentionMultiply is left out: it
scales the temporal layers of video UNets (SVD), a family this engine does not run. Knows nothing of HTTP or the
executor.
"""
from __future__ import annotations

from typing import Any

from diffusion.attention_scaling import scaled_clip_attention, scaled_unet_attention
from diffusion.components import DiffusionModel

CATEGORY = "_for_testing/attention_experiments"
FACTOR = {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}
PROJECTION_WORDS = {"q": "query", "k": "key", "v": "value", "out": "output"}


def _factors(where: str) -> dict[str, tuple[str, dict]]:
    return {name: ("FLOAT", {**FACTOR, "tooltip": f"Multiplies the {words} projection's weights and bias of every "
                                                  f"{where} (1: unchanged)."})
            for name, words in PROJECTION_WORDS.items()}


class _UNetAttentionMultiply:
    CATEGORY = CATEGORY
    EXPERIMENTAL = True
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with the scaled attention.",)
    FUNCTION = "patch"
    ATTENTION = ""
    WHERE = ""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL", {"tooltip": "The model to patch (a UNet model: SD1.x, SD2.x, "
                                                            "SDXL)."}),
                             **_factors(cls.WHERE)}}

    def patch(self, model: DiffusionModel, q: float, k: float, v: float, out: float) -> tuple[DiffusionModel]:
        return (scaled_unet_attention(model, self.ATTENTION, {"q": q, "k": k, "v": v, "out": out}),)


class UNetSelfAttentionMultiply(_UNetAttentionMultiply):
    DESCRIPTION = ("Scales the query, key, value and output projections of the UNet's self-attention layers "
                   "(attn1). SD3 and FLUX name their attention otherwise, so they are left as they are, as in "
                   "ComfyUI.")
    ATTENTION = "attn1"
    WHERE = "UNet self-attention (attn1)"


class UNetCrossAttentionMultiply(_UNetAttentionMultiply):
    DESCRIPTION = ("Scales the query, key, value and output projections of the UNet's cross-attention layers "
                   "(attn2, attending to the prompt). SD3 and FLUX name their attention otherwise, so they are left "
                   "as they are, as in ComfyUI.")
    ATTENTION = "attn2"
    WHERE = "UNet cross-attention (attn2)"


class CLIPAttentionMultiply:
    DESCRIPTION = ("Scales the query, key, value and output projections of the self-attention layers of the CLIP "
                   "text encoders (every CLIP of the value: SDXL's two, SD3's two; a T5 is left as it is).")
    CATEGORY = CATEGORY
    EXPERIMENTAL = True
    RETURN_TYPES = ("CLIP",)
    OUTPUT_TOOLTIPS = ("The text encoder with the scaled attention.",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"clip": ("CLIP", {"tooltip": "The text encoder to patch."}),
                             **_factors("CLIP text-encoder self-attention layer")}}

    def patch(self, clip: Any, q: float, k: float, v: float, out: float) -> tuple[Any]:
        return (scaled_clip_attention(clip, {"q": q, "k": k, "v": v, "out": out}),)


NODE_CLASS_MAPPINGS: dict[str, type] = {node.__name__: node for node in (
    UNetSelfAttentionMultiply, UNetCrossAttentionMultiply, CLIPAttentionMultiply,
)}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {name: name for name in NODE_CLASS_MAPPINGS}
