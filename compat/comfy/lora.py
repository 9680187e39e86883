"""`comfy.lora` for plugins: ComfyUI's key maps and LoRA reader, giving the weight patches a MODEL's or CLIP's
`add_patches` applies (`diffusion.patcher_api`: applied while sampling or encoding, as LoraLoader's LoRAs are).

Model keys are ComfyUI's: a UNet's "diffusion_model.<LDM name>.weight", a CLIP's "clip_l.transformer.<name>.weight",
so packs that filter keys by block names find ComfyUI's names. A patch value is a `LoRAAdapter` (its `weights` are
ComfyUI's (up, down, alpha, mid, dora_scale, reshape); packs may change the alpha) or ("diff", (difference,)).
Read: kohya, diffusers/peft and ComfyUI low-rank pairs with their alphas, `.diff` and `.diff_b`. Not read (logged
as not loaded, as ComfyUI logs keys it does not know): LoHa, LoKr, GLoRA, LoCon mid weights, DoRA scales. Key maps
of SD3 and FLUX models are not provided (an error says so): their networks are diffusers' with other layer names.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from diffusion.lora import ldm_layer_names

logger = logging.getLogger(__name__)

__all__ = ["LoRAAdapter", "load_lora", "model_lora_keys_clip", "model_lora_keys_unet"]

# (up, down) suffixes of the low-rank pair formats read: kohya, diffusers' old attention processors, peft,
# diffusers' lora_linear_layer, ComfyUI's own
_PAIR_SUFFIXES = ((".lora_up.weight", ".lora_down.weight"), ("_lora.up.weight", "_lora.down.weight"),
                  (".lora_B.weight", ".lora_A.weight"), (".lora.up.weight", ".lora.down.weight"),
                  (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight"))


class LoRAAdapter:
    """A layer's low-rank pair as ComfyUI's LoRA adapter: `weights` = (up, down, alpha or None, mid, dora_scale,
    reshape) and the LoRA file keys it came from (`loaded_keys`)."""

    name = "lora"

    def __init__(self, loaded_keys: set[str], weights: tuple[Any, ...]) -> None:
        self.loaded_keys = loaded_keys
        self.weights = weights


def model_lora_keys_unet(model: Any, key_map: dict[str, str] | None = None) -> dict[str, str]:
    """{LoRA key prefix: model key} for `model` (a MODEL's `.model`) with a UNet: for every layer, ComfyUI's
    names (the model key without ".weight", kohya's `lora_unet_<LDM name>`) and diffusers' (kohya's
    `lora_unet_<diffusers name>`, `lycoris_...`, `<name>` and `unet.<name>` with attention processors' names)."""
    key_map = {} if key_map is None else key_map
    network = model.diffusion_model
    ldm_by_layer = {name: ldm for ldm, name in ldm_layer_names(network).items()}
    if not ldm_by_layer:
        raise ValueError(f"comfy.lora.model_lora_keys_unet: ComfyUI's model keys of a {type(network).__name__} "
                         "(SD3, FLUX) are not supported by nodeflow; use LoraLoader")
    for key in network.state_dict():
        layer, _, parameter = key.rpartition(".")
        ldm = ldm_by_layer.get(layer)
        if ldm is None:
            continue
        model_key = f"diffusion_model.{ldm}.{parameter}"
        if parameter != "weight":
            key_map[model_key] = model_key
            continue
        key_map[f"lora_unet_{ldm.replace('.', '_')}"] = model_key
        key_map[f"diffusion_model.{ldm}"] = model_key
        key_map[f"lora_unet_{layer.replace('.', '_')}"] = model_key
        key_map[f"lycoris_{layer.replace('.', '_')}"] = model_key
        # diffusers' old attention-processor names: "attn1.processor.to_q", "attn1.processor.to_out"
        processor_name = layer.replace(".to_", ".processor.to_")
        processor_name = processor_name.removesuffix(".0") if layer.endswith(".to_out.0") else processor_name
        for prefix in ("", "unet."):
            key_map[prefix + processor_name] = model_key
    return key_map


def model_lora_keys_clip(model: Any, key_map: dict[str, str] | None = None) -> dict[str, str]:
    """{LoRA key prefix: model key} for `model` (a CLIP's `.cond_stage_model`): kohya's `lora_te_` (one CLIP),
    `lora_te1_`/`lora_te2_` (CLIP-L and CLIP-G beside each other), diffusers' `text_encoder.`/`text_encoder_2.`
    and ComfyUI's `text_encoders.` names of the encoder layers' weights."""
    key_map = {} if key_map is None else key_map
    keys = [key for key in model.state_dict() if ".transformer.text_model.encoder.layers." in key
            and key.endswith(".weight")]
    parts = {key.split(".", 1)[0] for key in keys}
    kohya = {"clip_l": "lora_te1_" if "clip_g" in parts else "lora_te_", "clip_h": "lora_te_", "clip_g": "lora_te2_"}
    diffusers = {"clip_l": "text_encoder.", "clip_h": "text_encoder.", "clip_g": "text_encoder_2."}
    for key in keys:
        part, name = key.split(".transformer.", 1)
        if part not in kohya:
            continue
        layer = name.removesuffix(".weight")
        key_map[kohya[part] + layer.replace(".", "_")] = key
        key_map[diffusers[part] + layer] = key
        key_map[f"text_encoders.{part}.transformer.{layer}"] = key
    return key_map


def load_lora(lora: Mapping[str, torch.Tensor], to_load: Mapping[str, str],
              log_missing: bool = True) -> dict[str, Any]:
    """ComfyUI's load_lora: the LoRA file's layers found under the key map's prefixes, as {model key: patch}; keys
    of the file no prefix claimed are logged ("lora key not loaded")."""
    patches: dict[str, Any] = {}
    used: set[str] = set()
    for prefix, model_key in to_load.items():
        alpha_key = f"{prefix}.alpha"
        alpha = lora[alpha_key].item() if alpha_key in lora else None
        for up_suffix, down_suffix in _PAIR_SUFFIXES:
            up_key, down_key = prefix + up_suffix, prefix + down_suffix
            if up_key in lora and down_key in lora:
                loaded = {up_key, down_key} | ({alpha_key} if alpha is not None else set())
                patches[model_key] = LoRAAdapter(loaded, (lora[up_key], lora[down_key], alpha, None, None, None))
                used |= loaded
                break
        for suffix, target in ((".diff", model_key), (".diff_b", model_key.removesuffix(".weight") + ".bias")):
            if prefix + suffix in lora:
                patches[target] = ("diff", (lora[prefix + suffix],))
                used.add(prefix + suffix)
    if log_missing:
        for key in lora:
            if key not in used:
                logger.warning("lora key not loaded: %s", key)
    return patches
