"""Diffusers/transformers state dicts of Stable Diffusion 1.x/2.x re-keyed into the original LDM single-file layout.

This is the inverse of diffusers' single-file converters, written independently of them (from the LDM module
structure), so that a checkpoint the tiny-model generator writes really exercises the loader's conversion:
converting it back must give the original weights. `diffusion.saving` writes checkpoints with it (CheckpointSave).
Knows nothing of nodes, files or devices.
"""
from __future__ import annotations

from typing import Mapping

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
OPEN_CLIP_PREFIX = "cond_stage_model.model."

_UNET_TOP_LEVEL = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_UNET_RESNET_PARTS = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "time_emb_proj.": "emb_layers.1.",
    "conv_shortcut.": "skip_connection.",
}
_VAE_ATTENTION_PARTS = {
    "group_norm.": "norm.",
    "to_q.": "q.",
    "to_k.": "k.",
    "to_v.": "v.",
    "to_out.0.": "proj_out.",
}


def _unet_block_prefixes(layers_per_block: int, levels: int, up_attention: list[bool]) -> dict[str, str]:
    """Diffusers module prefixes -> LDM prefixes for a UNet with `levels` resolutions."""
    prefixes: dict[str, str] = {"mid_block.attentions.0.": "middle_block.1."}
    for j in range(2):
        prefixes[f"mid_block.resnets.{j}."] = f"middle_block.{2 * j}."
    stride = layers_per_block + 1
    for level in range(levels):
        for j in range(layers_per_block):
            ldm_index = stride * level + j + 1
            prefixes[f"down_blocks.{level}.resnets.{j}."] = f"input_blocks.{ldm_index}.0."
            prefixes[f"down_blocks.{level}.attentions.{j}."] = f"input_blocks.{ldm_index}.1."
        if level < levels - 1:
            prefixes[f"down_blocks.{level}.downsamplers.0.conv."] = f"input_blocks.{stride * (level + 1)}.0.op."
        for j in range(stride):
            prefixes[f"up_blocks.{level}.resnets.{j}."] = f"output_blocks.{stride * level + j}.0."
            prefixes[f"up_blocks.{level}.attentions.{j}."] = f"output_blocks.{stride * level + j}.1."
        if level < levels - 1:
            upsampler_slot = 2 if up_attention[level] else 1
            prefixes[f"up_blocks.{level}.upsamplers.0."] = (
                f"output_blocks.{stride * level + layers_per_block}.{upsampler_slot}.")
    return prefixes


def _split_prefix(key: str, mapping: Mapping[str, str]) -> tuple[str, str] | None:
    """(mapped prefix, rest of the key) for the first prefix of `mapping` that `key` starts with."""
    for old, new in mapping.items():
        if key.startswith(old):
            return new, key[len(old):]
    return None


def _replace_prefix(key: str, mapping: Mapping[str, str]) -> str | None:
    split = _split_prefix(key, mapping)
    return None if split is None else split[0] + split[1]


def unet_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """A diffusers `UNet2DConditionModel` state dict in LDM keys (`model.diffusion_model.*`)."""
    levels = len(config["block_out_channels"])
    up_attention = [block_type.startswith("CrossAttn") for block_type in config["up_block_types"]]
    blocks = _unet_block_prefixes(config["layers_per_block"], levels, up_attention)
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        ldm_key = _replace_prefix(key, _UNET_TOP_LEVEL)
        if ldm_key is None:
            split = _split_prefix(key, blocks)
            if split is None:
                raise KeyError(f"UNet key {key!r} has no LDM equivalent")
            block, rest = split
            if ".resnets." in key:
                rest = _replace_prefix(rest, _UNET_RESNET_PARTS) or rest
            ldm_key = block + rest
        converted[UNET_PREFIX + ldm_key] = tensor
    return converted


def _vae_prefixes(levels: int) -> dict[str, str]:
    prefixes: dict[str, str] = {
        "encoder.mid_block.attentions.0.": "encoder.mid.attn_1.",
        "decoder.mid_block.attentions.0.": "decoder.mid.attn_1.",
        "encoder.conv_norm_out.": "encoder.norm_out.",
        "decoder.conv_norm_out.": "decoder.norm_out.",
    }
    for side in ("encoder", "decoder"):
        for j in range(2):
            prefixes[f"{side}.mid_block.resnets.{j}."] = f"{side}.mid.block_{j + 1}."
    for level in range(levels):
        prefixes[f"encoder.down_blocks.{level}.resnets."] = f"encoder.down.{level}.block."
        prefixes[f"encoder.down_blocks.{level}.downsamplers.0."] = f"encoder.down.{level}.downsample."
        ldm_level = levels - 1 - level
        prefixes[f"decoder.up_blocks.{level}.resnets."] = f"decoder.up.{ldm_level}.block."
        prefixes[f"decoder.up_blocks.{level}.upsamplers.0."] = f"decoder.up.{ldm_level}.upsample."
    return prefixes


def vae_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping,
               prefix: str = VAE_PREFIX) -> dict[str, torch.Tensor]:
    """A diffusers `AutoencoderKL` state dict in LDM keys (attention projections as 1x1 convolutions)."""
    prefixes = _vae_prefixes(len(config["block_out_channels"]))
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        ldm_key = _replace_prefix(key, prefixes) or key
        if ".attn_1." in ldm_key:
            head, _, tail = ldm_key.partition(".attn_1.")
            ldm_key = f"{head}.attn_1.{_replace_prefix(tail, _VAE_ATTENTION_PARTS) or tail}"
            if tensor.ndim == 2:
                tensor = tensor[:, :, None, None]
        ldm_key = ldm_key.replace("conv_shortcut.", "nin_shortcut.")
        converted[prefix + ldm_key] = tensor
    return converted


def clip_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers `CLIPTextModel` state dict under SD1's `cond_stage_model.transformer.text_model.*`."""
    return {CLIP_PREFIX + key.removeprefix("text_model."): tensor
            for key, tensor in state_dict.items() if not key.endswith("position_ids")}


def open_clip_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers `CLIPTextModel` state dict in SD2's OpenCLIP layout (`cond_stage_model.model.*`).

    q/k/v projections are fused into `in_proj_*` as OpenCLIP's `nn.MultiheadAttention` stores them. SD2 reads
    the penultimate layer of its OpenCLIP model, so a diffusers SD2 text encoder lacks OpenCLIP's last layer; it is
    written here as a copy of the last used one (never read by SD2).
    """
    plain = {key.removeprefix("text_model."): tensor for key, tensor in state_dict.items()
             if not key.endswith("position_ids")}
    converted = {
        OPEN_CLIP_PREFIX + "token_embedding.weight": plain.pop("embeddings.token_embedding.weight"),
        OPEN_CLIP_PREFIX + "positional_embedding": plain.pop("embeddings.position_embedding.weight"),
        OPEN_CLIP_PREFIX + "ln_final.weight": plain.pop("final_layer_norm.weight"),
        OPEN_CLIP_PREFIX + "ln_final.bias": plain.pop("final_layer_norm.bias"),
    }
    layer_parts = {"layer_norm1.": "ln_1.", "layer_norm2.": "ln_2.", "mlp.fc1.": "mlp.c_fc.",
                   "mlp.fc2.": "mlp.c_proj.", "self_attn.out_proj.": "attn.out_proj."}
    layer_count = len({key.split(".")[2] for key in plain if key.startswith("encoder.layers.")})
    for layer in range(layer_count):
        source = f"encoder.layers.{layer}."
        target = f"{OPEN_CLIP_PREFIX}transformer.resblocks.{layer}."
        for kind in ("weight", "bias"):
            converted[f"{target}attn.in_proj_{kind}"] = torch.cat(
                [plain.pop(f"{source}self_attn.{name}_proj.{kind}") for name in ("q", "k", "v")])
        for key in [key for key in plain if key.startswith(source)]:
            rest = key[len(source):]
            converted[target + (_replace_prefix(rest, layer_parts) or rest)] = plain.pop(key)
    if plain:
        raise KeyError(f"text encoder keys with no OpenCLIP equivalent: {sorted(plain)}")
    last = f"{OPEN_CLIP_PREFIX}transformer.resblocks.{layer_count - 1}."
    unused = f"{OPEN_CLIP_PREFIX}transformer.resblocks.{layer_count}."
    converted.update({unused + key[len(last):]: tensor.clone() for key, tensor in list(converted.items())
                      if key.startswith(last)})
    return converted
