"""Weights stored in a narrower precision than the model computes in: UNETLoader's `weight_dtype` (ComfyUI's
fp8_e4m3fn, fp8_e4m3fn_fast, fp8_e5m2), through diffusers' layerwise casting: the layers' weights are kept in fp8
and cast to the model's precision while each layer runs, which halves a bf16 transformer's memory; diffusers leaves
norms, embeddings and the outermost projections in the model's precision. The result is that of the model with
those weights rounded to fp8. ("fast" asks ComfyUI for fp8 matrix products on GPUs that have them; here it stores
the weights the same way.) Knows nothing of nodes or families."""
from __future__ import annotations

from typing import Any

import torch

WEIGHT_DTYPES: dict[str, torch.dtype | None] = {
    "default": None, "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2}


def with_weights_stored_in(network: Any, storage: torch.dtype, input_name: str) -> Any:
    """`network` (in place) keeping its layers' weights in `storage` and computing in its current precision."""
    if not hasattr(network, "enable_layerwise_casting"):
        raise ValueError(f"{input_name}: weights stored in {storage} need a diffusers model; this network is a "
                         f"{type(network).__name__}")
    network.enable_layerwise_casting(storage_dtype=storage, compute_dtype=network.dtype)
    return network
