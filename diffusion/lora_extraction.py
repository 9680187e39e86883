"""A LoRA extracted from a difference model (ModelMergeSubtract's output), as ComfyUI's LoraSave computes it.

Each weight difference of two or more dimensions (linear and convolution weights) is factored by a truncated SVD:
`up = U[:, :rank] * S[:rank]`, `down = Vh[:rank]`, both clamped to +-(the 0.99 quantile of their joined values),
ComfyUI's outlier clamp: even a full-rank LoRA is the difference only up to the clamped values (~10% relative error
on dense differences). A convolution's `down` keeps its kernel, its `up` is 1x1. `full_diff` stores the differences
whole (`.diff`), and `bias_diff` adds the bias and 1-D weight (norm) differences (`.diff_b` / `.diff`). Tensors are
fp16, as ComfyUI's. A text encoder's LoRA covers its transformer layers (`text_model.encoder.*`, as kohya's), not
its embeddings.

Keys follow kohya's layout on diffusers module names (`lora_unet_down_blocks_1_attentions_0_proj_in.lora_up.weight`),
what kohya's trainer writes for SD and SDXL (text encoders as `lora_te_text_model_encoder_*`, whatever names the
installed transformers gives CLIP's layers), read by our LoraLoader and by ComfyUI, `.diff`/`.diff_b` keys included;
without `.alpha` keys, as ComfyUI writes none: both readers then scale every layer by 1. Knows nothing of nodes or
files.
"""
from __future__ import annotations

from typing import Any

import torch

from diffusion.merging import effective_state_dict

CLAMP_QUANTILE = 0.99
LORA_TYPES = ("standard", "full_diff")


def low_rank(difference: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(up, down) with up @ down ~ difference (a [out, in] or [out, in, kh, kw] weight) at `rank`, clamped."""
    out_dim, in_dim = difference.shape[:2]
    rank = min(rank, in_dim, out_dim)
    kernel = difference.shape[2:]
    matrix = difference.float().reshape(out_dim, -1)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    up = u[:, :rank] @ torch.diag(s[:rank])
    down = vh[:rank, :]
    limit = torch.quantile(torch.cat([up.flatten(), down.flatten()]), CLAMP_QUANTILE)
    up, down = up.clamp(-limit, limit), down.clamp(-limit, limit)
    if kernel:
        up = up.reshape(out_dim, rank, 1, 1)
        down = down.reshape(rank, in_dim, *kernel)
    return up, down


def _extract(state: dict[str, torch.Tensor], prefix: str, rank: int, lora_type: str,
             bias_diff: bool) -> dict[str, torch.Tensor]:
    output: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if not tensor.is_floating_point() or key.endswith("position_ids"):
            continue
        module, _, kind = key.rpartition(".")
        name = prefix + module.replace(".", "_")
        if kind == "weight" and lora_type == "full_diff":
            output[f"{name}.diff"] = tensor.half().cpu()
        elif kind == "weight" and tensor.ndim >= 2:
            up, down = low_rank(tensor, rank)
            output[f"{name}.lora_up.weight"] = up.half().cpu().contiguous()
            output[f"{name}.lora_down.weight"] = down.half().cpu().contiguous()
        elif kind == "weight" and bias_diff:
            output[f"{name}.diff"] = tensor.half().cpu()
        elif kind == "bias" and bias_diff:
            output[f"{name}.diff_b"] = tensor.half().cpu()
    return output


def _text_encoder_prefix(component: str, encoders: int) -> str:
    """kohya's prefix of a text encoder: `lora_te_` for a model's only one, `lora_te1_`/`lora_te2_` for SDXL's."""
    if encoders == 1:
        return "lora_te_"
    return "lora_te2_" if component.endswith("_2") else "lora_te1_"


def extract_lora(model_diff: Any, text_encoder_diff: Any, rank: int, lora_type: str,
                 bias_diff: bool) -> dict[str, torch.Tensor]:
    """The LoRA tensors of a difference MODEL's UNet and/or a difference CLIP's text encoders (either may be
    None); see the module docstring. LoRAs they carry are merged in first."""
    if lora_type not in LORA_TYPES:
        raise ValueError(f"lora_type: {lora_type!r} is not one of {', '.join(LORA_TYPES)}")
    output: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        if model_diff is not None:
            if model_diff.lora_component != "unet":
                raise ValueError(f"model_diff: LoRAs are extracted from UNet models (SD1/SD2/SDXL), not "
                                 f"{model_diff.sampling.family_title} models")
            state = effective_state_dict(model_diff.network, "unet", model_diff.loras)
            output.update(_extract(state, "lora_unet_", rank, lora_type, bias_diff))
        if text_encoder_diff is not None:
            modules = text_encoder_diff.lora_modules()
            for component, module in modules:
                state = effective_state_dict(module, component, text_encoder_diff.loras)
                state = {"text_model." + key.removeprefix("text_model."): tensor for key, tensor in state.items()
                         if key.removeprefix("text_model.").startswith("encoder.")}  # transformers 5 drops text_model.
                output.update(_extract(state, _text_encoder_prefix(component, len(modules)), rank, lora_type,
                                       bias_diff))
    return output
