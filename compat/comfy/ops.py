"""`comfy.ops` for plugins: the torch layers packs build their own small networks from (IPAdapter projections,
ControlNet-like adapters). `disable_weight_init.X` skips the random initialisation (the weights are loaded next);
`manual_cast.X` also casts its weight and bias to the input's dtype and device on each call, so weights stored in
one precision compute in another. Attention is torch's SDPA (`scaled_dot_product_attention`)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

scaled_dot_product_attention = F.scaled_dot_product_attention


def cast_to_input(weight: torch.Tensor, input: torch.Tensor, non_blocking: bool = False,
                  copy: bool = True) -> torch.Tensor:
    return weight.to(device=input.device, dtype=input.dtype, non_blocking=non_blocking, copy=copy)


def cast_bias_weight(module: torch.nn.Module, input: torch.Tensor | None = None, dtype: torch.dtype | None = None,
                     device: torch.device | None = None,
                     bias_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The module's weight and bias in `dtype` on `device` (by default the input's)."""
    if input is not None:
        dtype = dtype or input.dtype
        device = device or input.device
        bias_dtype = bias_dtype or dtype
    weight = module.weight.to(device=device, dtype=dtype)
    bias = module.bias.to(device=device, dtype=bias_dtype) if getattr(module, "bias", None) is not None else None
    return weight, bias


class CastWeightBiasOp:
    """Marks ComfyUI's op layers; `comfy_cast_weights` switches the per-call cast on."""

    comfy_cast_weights = False

    def reset_parameters(self) -> None:
        """No random initialisation: the weights are loaded from a file next."""


def _cast_forward(layer: type[torch.nn.Module], compute: Any):
    def forward(self, input: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not self.comfy_cast_weights:
            return layer.forward(self, input, *args, **kwargs)
        weight, bias = cast_bias_weight(self, input)
        return compute(self, input, weight, bias)
    return forward


_COMPUTE = {
    torch.nn.Linear: lambda self, x, w, b: F.linear(x, w, b),
    torch.nn.Conv1d: lambda self, x, w, b: self._conv_forward(x, w, b),
    torch.nn.Conv2d: lambda self, x, w, b: self._conv_forward(x, w, b),
    torch.nn.Conv3d: lambda self, x, w, b: self._conv_forward(x, w, b),
    torch.nn.GroupNorm: lambda self, x, w, b: F.group_norm(x, self.num_groups, w, b, self.eps),
    torch.nn.LayerNorm: lambda self, x, w, b: F.layer_norm(x, self.normalized_shape, w, b, self.eps),
    torch.nn.Embedding: lambda self, x, w, b: F.embedding(x, w, self.padding_idx, self.max_norm, self.norm_type,
                                                          self.scale_grad_by_freq, self.sparse),
}


def _ops(cast: bool) -> dict[str, type]:
    """One op class per layer of `_COMPUTE`, by the torch layer's name."""
    return {layer.__name__: type(layer.__name__, (CastWeightBiasOp, layer),
                                 {"comfy_cast_weights": cast, "forward": _cast_forward(layer, compute)})
            for layer, compute in _COMPUTE.items()}


class disable_weight_init:  # noqa: N801 - ComfyUI's name
    """Layers that skip random initialisation: Linear, Conv1d/2d/3d, GroupNorm, LayerNorm, Embedding."""

    @classmethod
    def conv_nd(cls, dims: int, *args: Any, **kwargs: Any) -> torch.nn.Module:
        layers = {1: cls.Conv1d, 2: cls.Conv2d, 3: cls.Conv3d}
        if dims not in layers:
            raise ValueError(f"comfy.ops conv_nd: unsupported dimensions {dims}")
        return layers[dims](*args, **kwargs)


class manual_cast(disable_weight_init):  # noqa: N801 - ComfyUI's name
    """The same layers, computing in the input's dtype and device."""


for _namespace, _cast in ((disable_weight_init, False), (manual_cast, True)):
    for _name, _layer in _ops(_cast).items():
        setattr(_namespace, _name, _layer)


def pick_operations(weight_dtype: torch.dtype | None, compute_dtype: torch.dtype | None,
                    *args: Any, **kwargs: Any) -> type:
    """`manual_cast` when weights are stored in another dtype than they compute in, else `disable_weight_init`."""
    return disable_weight_init if compute_dtype is None or weight_dtype == compute_dtype else manual_cast


__all__ = ["disable_weight_init", "manual_cast", "pick_operations", "cast_bias_weight", "cast_to_input",
           "CastWeightBiasOp", "scaled_dot_product_attention"]
