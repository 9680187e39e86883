"""A LoRA file's tensors made ready for diffusers' readers, in the two places those readers fall short of ComfyUI.

1. Per-layer alphas. ComfyUI applies a low-rank pair as `W + strength * (alpha / rank) * up @ down` with each
   layer's own `.alpha` (scale 1 without one). diffusers passes alphas to peft as one `lora_alpha` plus an
   `alpha_pattern` whose keys, for attention layers (`...attn1.processor.to_q_lora.down.weight`) and text-encoder
   layers (`...self_attn`), match no module: peft ignores them (warning "alpha_pattern keys did not match"), so those
   layers got the most common alpha of the file, not their own. `fold_alphas` multiplies each `up` by its layer's
   `alpha / rank` and drops the alpha, so every reader sees scale 1 and the product is exactly ComfyUI's.
2. Whole differences and the model's own key names. ComfyUI's LoraSave (and ours) writes `.diff` (a whole weight
   difference: a full-rank weight, or a norm's 1-D weight) and `.diff_b` (a bias difference), applied as
   `W + strength * diff`; ComfyUI's keys name layers by the model's own (LDM) names
   (`diffusion_model.input_blocks.1.1.proj_in.lora_up.weight`, `text_encoders.clip_l.transformer.text_model.*`),
   which diffusers' readers do not know (nor, without the UNet's config, kohya-style keys on LDM names,
   `lora_unet_input_blocks_1_1_proj_in`). `split_deferred` takes such tensors out of the file as *deferred* keys,
   `<component>.<layer name as written>.<kind>` (kinds `DEFERRED_KINDS`), which `diffusion.lora` resolves against
   the module's own layer names when the LoRA is applied: kohya names (`down_blocks_1_..._proj_in`), LDM names
   (dotted or kohya-style) and transformers' CLIP names with or without `text_model.`.

Knows nothing of nodes, files or the node environment; layer names are resolved in `diffusion.lora`.
"""
from __future__ import annotations

from typing import Mapping

import torch

DIFF = "diff"  # a whole weight difference
DIFF_BIAS = "diff_b"  # a whole bias difference
LORA_DOWN = "lora_down"  # a low-rank pair under the model's own (LDM) names, alpha folded in
LORA_UP = "lora_up"
DEFERRED_KINDS = (DIFF, DIFF_BIAS, LORA_DOWN, LORA_UP)

# (up, down) suffixes of the low-rank pairs a `.alpha` belongs to: kohya, peft, old diffusers attention processors.
_PAIRS = ((".lora_up.weight", ".lora_down.weight"), (".lora_B.weight", ".lora_A.weight"),
          (".lora.up.weight", ".lora.down.weight"))

# Key prefixes of layers diffusers' SD reader does not resolve -> our component (`diffusion.lora` names).
# Kohya prefixes are here for their whole differences only; their low-rank pairs go to diffusers.
_KOHYA_PREFIXES = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder",
                   "lora_te2_": "text_encoder_2"}
_MODEL_NAME_PREFIXES = {"diffusion_model.": "unet", "text_encoders.clip_l.transformer.": "text_encoder",
                        "text_encoders.clip_h.transformer.": "text_encoder",
                        "text_encoders.clip_g.transformer.": "text_encoder_2"}
_LDM_BLOCKS = ("input_blocks_", "middle_block_", "output_blocks_", "time_embed_", "label_emb_", "out_")
_LOW_RANK_SUFFIXES = {".lora_up.weight": LORA_UP, ".lora_down.weight": LORA_DOWN, ".lora_B.weight": LORA_UP,
                      ".lora_A.weight": LORA_DOWN}


def fold_alphas(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors with each low-rank pair's `alpha / rank` multiplied into its `up` (in float32) and the `.alpha`
    keys of those pairs dropped; an alpha without its pair is kept as it is."""
    folded = dict(state)
    for key in [key for key in state if key.endswith(".alpha")]:
        layer = key.removesuffix(".alpha")
        for up_suffix, down_suffix in _PAIRS:
            up_key, down_key = layer + up_suffix, layer + down_suffix
            if up_key in state and down_key in state:
                rank = state[down_key].shape[0]
                folded[up_key] = state[up_key].float() * (float(state[key]) / rank)
                del folded[key]
                break
    return folded


def _component_and_name(key: str, prefixes: Mapping[str, str]) -> tuple[str, str] | None:
    for prefix, component in prefixes.items():
        if key.startswith(prefix):
            return component, key[len(prefix):]
    return None


def _ldm_kohya_unet(key: str) -> tuple[str, str] | None:
    """A kohya-style UNet key on LDM names (`lora_unet_input_blocks_1_1_proj_in...`), which ComfyUI reads and
    diffusers' SD reader maps only when given the UNet's config."""
    found = _component_and_name(key, {"lora_unet_": "unet"})
    return found if found is not None and found[1].startswith(_LDM_BLOCKS) else None


def _deferred_key(key: str) -> str | None:
    """The deferred key of a tensor diffusers' reader cannot take, or None for one it reads."""
    for suffix in (f".{DIFF}", f".{DIFF_BIAS}"):
        if key.endswith(suffix):
            found = _component_and_name(key, {**_KOHYA_PREFIXES, **_MODEL_NAME_PREFIXES})
            return None if found is None else f"{found[0]}.{found[1].removesuffix(suffix)}{suffix}"
    for suffix, kind in _LOW_RANK_SUFFIXES.items():
        if key.endswith(suffix):
            found = _component_and_name(key, _MODEL_NAME_PREFIXES) or _ldm_kohya_unet(key)
            return None if found is None else f"{found[0]}.{found[1].removesuffix(suffix)}.{kind}"
    return None


def split_deferred(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the tensors for diffusers' reader, the deferred ones under their deferred keys); see the module docstring.
    Alphas must be folded first (`fold_alphas`): a deferred pair carries none."""
    readable: dict[str, torch.Tensor] = {}
    deferred: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        deferred_key = _deferred_key(key)
        if deferred_key is None:
            readable[key] = tensor
        else:
            deferred[deferred_key] = tensor
    return readable, deferred


def deferred_kind(key: str) -> str | None:
    """The kind of a deferred key (`diff`, `diff_b`, `lora_down`, `lora_up`), None for a peft key."""
    kind = key.rpartition(".")[2]
    return kind if kind in DEFERRED_KINDS else None
