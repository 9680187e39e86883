"""Attention projections scaled as ComfyUI's attention-multiply nodes patch them
(comfy_extras/nodes_attention_multiply.py): every weight and bias whose key ends in one of the given projection
names is multiplied by its factor (computed in float32 and stored in the weight's precision, as ComfyUI patches
weights).

ComfyUI matches keys by their ends, and ours end alike: a diffusers UNet's self-attention is `...attn1.to_q`,
`to_k`, `to_v`, `to_out.0` and its cross-attention `...attn2.*`, as in ComfyUI's LDM UNet. ComfyUI's SD3 and
FLUX networks name their attention otherwise, so it leaves them as they are, and so do we (although diffusers calls
SD3.5 Medium's second attention `attn2`). A transformers CLIP text model's is `...self_attn.q_proj`, `k_proj`,
`v_proj`, `out_proj`, as in ComfyUI; T5's is named otherwise in both.

The result is a new MODEL or CLIP whose network shares every tensor it does not scale with the input's (see
`diffusion.merging.network_with`); the input is unchanged. LoRAs the input carries are merged in first (ComfyUI
patches the LoRA'd weight, the multiply applying after the LoRAs loaded before it). Knows nothing of nodes.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch

from diffusion.components import DiffusionModel
from diffusion.encoders.text_encoder_files import clip_parts, with_clip_parts
from diffusion.lazy_module import LazyModule
from diffusion.merging import TRANSFORMER_NAMES, effective_state_dict, network_with

PROJECTIONS = ("q", "k", "v", "out")
UNET_PROJECTIONS = {"q": "to_q", "k": "to_k", "v": "to_v", "out": "to_out.0"}
CLIP_PROJECTIONS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "out_proj"}


def projection_factors(attention: str, names: Mapping[str, str], factors: Mapping[str, float]) -> dict[str, float]:
    """Key ends (`attn1.to_q.weight`, `attn1.to_q.bias`, ...) -> factor, for the factors other than 1."""
    return {f"{attention}.{names[projection]}.{kind}": factors[projection]
            for projection in PROJECTIONS if factors[projection] != 1.0 for kind in ("weight", "bias")}


def scaled_state(state: Mapping[str, torch.Tensor], factors: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """The tensors of `state` whose keys end in one of `factors`' key ends, multiplied by that factor."""
    scaled = {}
    with torch.no_grad():
        for key, tensor in state.items():
            factor = next((value for end, value in factors.items() if key.endswith(end)), None)
            if factor is not None and tensor.is_floating_point():
                scaled[key] = (tensor.float() * factor).to(tensor.dtype)
    return scaled


def scaled_unet_attention(model: DiffusionModel, attention: str, factors: Mapping[str, float]) -> DiffusionModel:
    """The MODEL with the q, k, v and out projections of every UNet attention named `attention` ("attn1":
    self-attention, "attn2": cross-attention) scaled by `factors` (keyed by PROJECTIONS)."""
    ends = projection_factors(attention, UNET_PROJECTIONS, factors)
    if not ends or model.family in TRANSFORMER_NAMES:  # SD3.5 Medium's diffusers `attn2` is no UNet attention
        return model
    state = effective_state_dict(model.network, model.lora_component, model.loras)
    scaled = scaled_state(state, ends)
    if not scaled and not model.loras:
        return model
    return dataclasses.replace(model, network=network_with(model.network, {**state, **scaled}), loras=())


def scaled_clip_attention(clip: Any, factors: Mapping[str, float]) -> Any:
    """The CLIP with the q, k, v and out projections of every CLIP text encoder's self-attention scaled by
    `factors` (keyed by PROJECTIONS); a T5 encoder is left as it is."""
    ends = projection_factors("self_attn", CLIP_PROJECTIONS, factors)
    if not ends:
        return clip
    parts = dict(clip_parts(clip, "clip"))
    changed = False
    for part, module in parts.items():
        scaled = {} if isinstance(module, LazyModule) else scaled_state(module.state_dict(), ends)
        if scaled:
            parts[part], changed = network_with(module, scaled), True
    return with_clip_parts(clip, parts) if changed or clip.loras else clip
