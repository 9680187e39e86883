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

The model-specific merges (ModelMergeSD1, ModelMergeSDXL, ModelMergeSD3_2B, ModelMergeFlux1, ...) take one ratio
per prefix of ComfyUI's key names (`time_embed.`, `input_blocks.4.`, `joint_blocks.3.`, `double_blocks.0.`), and
ComfyUI gives each weight the ratio of the longest of those prefixes its key starts with, else the first prefix's
(`prefix_ratio`). Our networks are diffusers modules, so each weight is first given its ComfyUI name
(`comfy_names`): SD1/SD2/SDXL UNet keys are converted as our LDM checkpoint writer converts them
(`diffusion.families.ldm_export`; `input_blocks.0` is `conv_in`, `input_blocks.1-11` the down blocks' resnets,
attentions and downsamplers in order, `middle_block.0/1/2` the mid block's resnet, attention, resnet,
`output_blocks.*` the up blocks', `out.` `conv_norm_out` and `conv_out`, `time_embed.` `time_embedding`,
`label_emb.` SDXL's `add_embedding`); SD3's and FLUX's transformers by the module prefixes in `SD3_NAMES` and
`FLUX_NAMES` (block indices carry over: diffusers' `transformer_blocks.3.` is SD3's `joint_blocks.3.` and FLUX's
`double_blocks.3.`, `single_transformer_blocks.3.` FLUX's `single_blocks.3.`). Only the prefix decides a ratio,
so the rest of a transformer key keeps its diffusers name.

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

from diffusion import quantized
from diffusion.components import DiffusionModel
from diffusion.contracts import LoraPatch
from diffusion.families import ldm_export
from diffusion.lora import lora_applied

BLOCK_NAMES = ("input", "middle", "out")
# diffusers UNet key prefixes -> the ComfyUI (LDM) block they belong to
UNET_BLOCKS = (("conv_in.", "input"), ("down_blocks.", "input"), ("mid_block.", "middle"), ("up_blocks.", "out"),
               ("conv_norm_out.", "out"), ("conv_out.", "out"))

# a weight's key -> (a, b): the merged weight is w1 * a + w2 * b
Combine = Callable[[str], tuple[float, float]]

# ComfyUI's names of a transformer's weights by diffusers module prefix (the first that a key starts with)
SD3_NAMES = (
    ("pos_embed.proj.", "x_embedder.proj."), ("pos_embed.pos_embed", "pos_embed"),
    ("time_text_embed.timestep_embedder.linear_1.", "t_embedder.mlp.0."),
    ("time_text_embed.timestep_embedder.linear_2.", "t_embedder.mlp.2."),
    ("time_text_embed.text_embedder.linear_1.", "y_embedder.mlp.0."),
    ("time_text_embed.text_embedder.linear_2.", "y_embedder.mlp.2."),
    ("context_embedder.", "context_embedder."), ("transformer_blocks.", "joint_blocks."),
    ("norm_out.linear.", "final_layer.adaLN_modulation.1."), ("proj_out.", "final_layer.linear."),
)
FLUX_NAMES = (
    ("x_embedder.", "img_in."),
    ("time_text_embed.timestep_embedder.linear_1.", "time_in.in_layer."),
    ("time_text_embed.timestep_embedder.linear_2.", "time_in.out_layer."),
    ("time_text_embed.guidance_embedder.linear_1.", "guidance_in.in_layer."),
    ("time_text_embed.guidance_embedder.linear_2.", "guidance_in.out_layer."),
    ("time_text_embed.text_embedder.linear_1.", "vector_in.in_layer."),
    ("time_text_embed.text_embedder.linear_2.", "vector_in.out_layer."),
    ("context_embedder.", "txt_in."), ("transformer_blocks.", "double_blocks."),
    ("single_transformer_blocks.", "single_blocks."),
    ("norm_out.linear.", "final_layer.adaLN_modulation.1."), ("proj_out.", "final_layer.linear."),
)
# SDXL's added (size and pooled text) embedding, and an unCLIP-conditioned SD2 UNet's class embedding
UNET_LABEL_EMBEDDINGS = ("add_embedding.", "class_embedding.")
UNET_FAMILIES = ("sd", "sdxl")
TRANSFORMER_NAMES = {"sd3": SD3_NAMES, "flux": FLUX_NAMES}


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
    delta, and the whole differences some LoRA files hold), keyed as the module without LoRAs; the module's own
    tensors (not copies) where no LoRA touches them. The module is unchanged afterwards."""
    parameters = module.state_dict(keep_vars=True)  # the objects, which hold the differences inside the block
    if not patches:
        return quantized.network_values({key: tensor.detach() for key, tensor in parameters.items()})
    from peft.tuners.lora import LoraLayer

    merged: dict[str, torch.Tensor] = {}
    with torch.no_grad(), lora_applied(module, component, patches):
        plain = quantized.network_values({key: tensor.detach() for key, tensor in parameters.items()})
        for name, layer in module.named_modules():
            if not isinstance(layer, LoraLayer):
                continue
            base = plain[f"{name}.weight"]  # the base layer's weight (its values, if quantized)
            weight = base.float()
            for adapter in layer.active_adapters:
                if adapter in layer.lora_A:
                    weight = weight + layer.get_delta_weight(adapter).float()
            merged[f"{name}.weight"] = weight.to(base.dtype)
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


def _renamed(key: str, names: Sequence[tuple[str, str]]) -> str:
    for prefix, comfy_prefix in names:
        if key.startswith(prefix):
            return comfy_prefix + key[len(prefix):]
    return key


def comfy_names(model: DiffusionModel, input_name: str = "model1") -> dict[str, str]:
    """Each weight of the model's network (diffusers key) -> its name in ComfyUI's diffusion model, without the
    `diffusion_model.` prefix (see the module docstring); a ValueError naming `input_name` for a family whose
    network ComfyUI names otherwise or not at all."""
    keys = list(model.network.state_dict())
    if model.family in TRANSFORMER_NAMES:
        return {key: _renamed(key, TRANSFORMER_NAMES[model.family]) for key in keys}
    if model.family not in UNET_FAMILIES:
        raise ValueError(f"{input_name}: a {model.family} model's weights have no ComfyUI block names (the "
                         f"model-specific merges know {', '.join(UNET_FAMILIES + tuple(TRANSFORMER_NAMES))})")
    config, names = model.network.config, {}
    for key in keys:
        if key.startswith(UNET_LABEL_EMBEDDINGS):
            names[key] = "label_emb." + key.split(".", 1)[1]
            continue
        try:
            (ldm_key,) = ldm_export.unet_to_ldm({key: torch.empty(0)}, config)
        except KeyError:
            names[key] = key
            continue
        names[key] = ldm_key.removeprefix(ldm_export.UNET_PREFIX)
    return names


def prefix_ratio(name: str, ratios: Mapping[str, float]) -> float:
    """ComfyUI's ratio for a weight it names `name`: that of the longest prefix in `ratios` the name starts with,
    else the first prefix's."""
    matches = [prefix for prefix in ratios if name.startswith(prefix)]
    return ratios[max(matches, key=len)] if matches else next(iter(ratios.values()))


def merge_by_prefix(model1: DiffusionModel, model2: DiffusionModel, ratios: Mapping[str, float]) -> DiffusionModel:
    """The model-specific merges: as merge_simple with each weight's ratio from `ratios`, keyed by prefixes of
    ComfyUI's names in the order of the node's inputs (`prefix_ratio` of `comfy_names`)."""
    names = comfy_names(model1)
    if all(value == 1.0 for value in ratios.values()):
        _check_mergeable(model1, model2)
        return model1

    def weights(key: str) -> tuple[float, float]:
        ratio = prefix_ratio(names.get(key, key), ratios)
        return ratio, 1.0 - ratio

    return merged_model(model1, model2, weights)
