"""Merging denoising networks as ComfyUI's model-merging nodes do, and the weights a MODEL computes with.

ComfyUI merges by patching model1's weights with model2's: each weight becomes `w1 * a + w2 * b`, computed in
float32 and stored back in model1's precision (ModelMergeSimple: a = ratio, b = 1 - ratio; ModelMergeAdd: 1, 1;
ModelMergeSubtract: a = multiplier, b = -multiplier; ModelMergeBlocks: the ratio of the block the weight belongs
to). A weight model2 lacks, or has in another shape (an inpainting UNet's 9-channel `conv_in` merged with a
4-channel one), stays model1's, unscaled, as ComfyUI skips it.

Blocks are named as ComfyUI names them in the original (LDM) UNet layout, which for our diffusers UNets means:
`input` = `input_blocks.*` = diffusers' `conv_in` and `down_blocks.*`; `middle` = `middle_block.*` = `mid_block.*`;
`out` = `output_blocks.*` and `out.*` = `up_blocks.*`, `conv_norm_out` and `conv_out`. Every other weight (time
and label embeddings, and every weight of a transformer family's network, whose ComfyUI names start with none
of the block names) takes the first block's ratio, `input`, as ComfyUI's default.

A merged MODEL owns a new network module built around the merged tensors; the weights the merge leaves as they
are (a ratio of 1) are shared with model1's network, not copied, and neither input is changed. LoRAs the inputs
carry are merged in first (ComfyUI patches a LoRA'd model's weights before merging): `effective_state_dict`.
Knows nothing of nodes, files or the node environment.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Mapping, Sequence

import torch

from diffusion.components import DiffusionModel
from diffusion.contracts import LoraPatch
from diffusion.lora import lora_applied

BLOCK_NAMES = ("input", "middle", "out")
# diffusers UNet key prefixes -> the ComfyUI (LDM) block they belong to
UNET_BLOCKS = (("conv_in.", "input"), ("down_blocks.", "input"), ("mid_block.", "middle"), ("up_blocks.", "out"),
               ("conv_norm_out.", "out"), ("conv_out.", "out"))

# a weight's key -> (a, b): the merged weight is w1 * a + w2 * b
Combine = Callable[[str], tuple[float, float]]


def block_of(key: str) -> str | None:
    """The ComfyUI block ("input", "middle", "out") of a diffusers UNet weight; None for the others."""
    for prefix, block in UNET_BLOCKS:
        if key.startswith(prefix):
            return block
    return None


def block_ratio(key: str, ratios: Mapping[str, float]) -> float:
    """The ratio ModelMergeBlocks gives a weight: its block's, else the first block's (ComfyUI's default)."""
    block = block_of(key)
    return ratios[block] if block in ratios else next(iter(ratios.values()))


def effective_state_dict(module: torch.nn.Module, component: str,
                         patches: Sequence[LoraPatch]) -> dict[str, torch.Tensor]:
    """The module's state dict with the LoRA patches merged into the weights (base + each adapter's scaled
    delta), keyed as the module without LoRAs; the module's own tensors (not copies) where no LoRA touches them.
    The module is unchanged afterwards."""
    plain = module.state_dict()
    if not patches:
        return dict(plain)
    from peft.tuners.lora import LoraLayer

    merged: dict[str, torch.Tensor] = {}
    with torch.no_grad(), lora_applied(module, component, patches):
        for name, layer in module.named_modules():
            if not isinstance(layer, LoraLayer):
                continue
            base = layer.get_base_layer()
            weight = base.weight.detach().float()
            for adapter in layer.active_adapters:
                if adapter in layer.lora_A:
                    weight = weight + layer.get_delta_weight(adapter).float()
            merged[f"{name}.weight"] = weight.to(base.weight.dtype)
    return {key: merged.get(key, tensor) for key, tensor in plain.items()}


def network_with(network: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """A new module of `network`'s architecture computing with the tensors of `state` (its keys). Tensors are
    taken as they are, not copied: a tensor of `network` itself is shared (in a parameter object of the new
    module's own, so moving `network` to another device leaves the new module whole)."""
    memo: dict[int, Any] = {}
    tensors = {**dict(network.named_parameters(remove_duplicate=False)),
               **dict(network.named_buffers(remove_duplicate=False))}
    for key, original in tensors.items():
        replacement = state.get(key, original).detach()
        if isinstance(original, torch.nn.Parameter):
            memo[id(original)] = torch.nn.Parameter(replacement, requires_grad=original.requires_grad)
        else:
            memo[id(original)] = replacement
    return copy.deepcopy(network, memo)


def _check_mergeable(model1: DiffusionModel, model2: DiffusionModel) -> None:
    if model1.family != model2.family:
        raise ValueError(f"model2: a {model2.family} model cannot be merged into a {model1.family} model (model1)")


def merged_model(model1: DiffusionModel, model2: DiffusionModel, weights: Combine) -> DiffusionModel:
    """model1 with every weight replaced by `w1 * a + w2 * b`, (a, b) = weights(key); see the module docstring.
    The result carries no LoRAs (the inputs' are merged in) and model1's other settings."""
    _check_mergeable(model1, model2)
    state1 = effective_state_dict(model1.network, model1.lora_component, model1.loras)
    state2 = effective_state_dict(model2.network, model2.lora_component, model2.loras)
    shared = [key for key, tensor in state1.items()
              if key in state2 and state2[key].shape == tensor.shape and tensor.is_floating_point()]
    if not shared:
        raise ValueError("model2: its network has no weights in common with model1's")
    merged: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for key in shared:
            a, b = weights(key)
            w1 = state1[key]
            if a == 1.0 and b == 0.0:
                merged[key] = w1
                continue
            w2 = state2[key].to(w1.device, torch.float32)
            merged[key] = (w1.float() * a + w2 * b).to(w1.dtype)
    network = network_with(model1.network, {**state1, **merged})
    return dataclasses.replace(model1, network=network, loras=(), name=f"{model1.name} + {model2.name}")


def merge_simple(model1: DiffusionModel, model2: DiffusionModel, ratio: float) -> DiffusionModel:
    """ModelMergeSimple: model1 * ratio + model2 * (1 - ratio); ratio 1 is model1 itself."""
    if ratio == 1.0:
        _check_mergeable(model1, model2)
        return model1
    return merged_model(model1, model2, lambda key: (ratio, 1.0 - ratio))


def merge_blocks(model1: DiffusionModel, model2: DiffusionModel, ratios: Mapping[str, float]) -> DiffusionModel:
    """ModelMergeBlocks: as merge_simple with each block's own ratio (`ratios` keyed by BLOCK_NAMES)."""
    if all(value == 1.0 for value in ratios.values()):
        _check_mergeable(model1, model2)
        return model1

    def weights(key: str) -> tuple[float, float]:
        ratio = block_ratio(key, ratios)
        return ratio, 1.0 - ratio

    return merged_model(model1, model2, weights)


def merge_add(model1: DiffusionModel, model2: DiffusionModel) -> DiffusionModel:
    """ModelMergeAdd: model1 + model2."""
    return merged_model(model1, model2, lambda key: (1.0, 1.0))


def merge_subtract(model1: DiffusionModel, model2: DiffusionModel, multiplier: float) -> DiffusionModel:
    """ModelMergeSubtract: (model1 - model2) * multiplier (a "difference" model, for LoraSave or ModelMergeAdd)."""
    return merged_model(model1, model2, lambda key: (multiplier, -multiplier))
