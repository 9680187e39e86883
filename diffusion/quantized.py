"""Weights kept quantized in memory and dequantized by the layer that uses them, on each call: GGUF files' blocks
(diffusers' `GGUFParameter`, the blocks' bytes with their `quant_type`, whose shape counts bytes) and fp8 weights
(`Fp8Weight`: ComfyUI's `*_fp8_e4m3fn` files, and its `*_fp8_scaled` ones with a scale per tensor).

`shape_view` gives every tensor its logical shape (empty, on the meta device), so a family's config-from-shapes code
reads a quantized file as it reads a bf16 one; every family builds its network from the view and loads it with
`load_quantized`: each linear layer whose weight is quantized becomes a `QuantizedLinear` that dequantizes its
weight when called, in the input's precision (a Q4 transformer stays about a quarter, an fp8 one half of its bf16
size in memory). Layout conversions that split or join rows (FLUX's fused q/k/v) work on the quantized tensors too:
GGUF quantizes each row on its own, and an fp8 tensor's pieces keep its scale. Knows nothing of nodes or families."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


class Fp8Weight(torch.nn.Parameter):
    """An fp8 weight standing for its values times `scale` (1 for plain fp8 files), kept as its bytes (uint8, as
    GGUF's blocks are: code that asks a network for its floating-point precision, or converts a network's
    floating-point tensors, leaves it alone) with its fp8 `format`. Operations that give bytes (slicing,
    splitting, joining, moving) keep it an Fp8Weight; those that give floating-point results (`.to(bfloat16)`,
    `.float()`) see the values it stands for, as does joining weights of different formats or scales."""

    def __new__(cls, data: torch.Tensor, format: torch.dtype, scale: float = 1.0) -> "Fp8Weight":
        weight = torch.Tensor._make_subclass(cls, data, False)
        weight.format = format
        weight.scale = float(scale)
        return weight

    def __deepcopy__(self, memo: dict[int, Any]) -> "Fp8Weight":
        if id(self) not in memo:  # nn.Parameter's own would rebuild it without its format and scale
            memo[id(self)] = Fp8Weight(self.as_subclass(torch.Tensor).clone(), self.format, self.scale)
        return memo[id(self)]

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """The values this weight stands for, in `dtype` (fp8 to float32 is exact; the scale is applied there)."""
        raw = self.as_subclass(torch.Tensor)
        if raw.dtype != torch.uint8:  # its data was replaced by converted values
            return raw.to(dtype)
        values = raw.view(self.format)
        return values.to(dtype) if self.scale == 1.0 else (values.float() * self.scale).to(dtype)

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        kinds = {(weight.format, weight.scale) for weight in _fp8_weights(args)}
        if len(kinds) == 1:
            result = super().__torch_function__(func, types, args, kwargs)
            items = result if isinstance(result, (tuple, list)) else (result,)
            if not any(isinstance(item, torch.Tensor) and item.is_floating_point() for item in items):
                format, scale = kinds.pop()
                wrapped = [Fp8Weight(item, format, scale) if isinstance(item, torch.Tensor)
                           and item.dtype == torch.uint8 else item for item in items]
                return type(result)(wrapped) if isinstance(result, (tuple, list)) else wrapped[0]
        with torch._C.DisableTorchFunctionSubclass():  # on the values
            return func(*_dequantized(args), **kwargs)


def _fp8_weights(args: Any) -> list[Fp8Weight]:
    found = []
    for arg in args:
        if isinstance(arg, Fp8Weight):
            found.append(arg)
        elif isinstance(arg, (tuple, list)):
            found.extend(item for item in arg if isinstance(item, Fp8Weight))
    return found


def _dequantized(args: Any) -> Any:
    return type(args)(arg.dequantize(torch.float32) if isinstance(arg, Fp8Weight)
                      else _dequantized(arg) if isinstance(arg, (tuple, list)) else arg for arg in args)


def fp8_weight(tensor: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """An fp8 tensor of a file kept as an `Fp8Weight` (other tensors are returned as they are)."""
    return Fp8Weight(tensor.view(torch.uint8), tensor.dtype, scale) if tensor.dtype in FP8_DTYPES else tensor


def is_quantized(tensor: torch.Tensor) -> bool:
    return isinstance(tensor, Fp8Weight) or getattr(tensor, "quant_type", None) is not None


def dequantize(tensor: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The values a quantized tensor stands for, in `dtype`."""
    if isinstance(tensor, Fp8Weight):
        return tensor.dequantize(dtype)
    from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

    return dequantize_gguf_tensor(tensor).to(dtype)


def network_values(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A network's state dict with its quantized weights as the values they stand for, in the network's
    floating-point precision (that of its other tensors): what merging, saving and weight patches work on."""
    dtype = next((tensor.dtype for tensor in state.values() if tensor.is_floating_point()), torch.float32)
    return {key: dequantize(tensor, dtype) if is_quantized(tensor) else tensor for key, tensor in state.items()}


def logical_shape(tensor: torch.Tensor) -> torch.Size:
    """The shape of the weight a quantized tensor holds (a GGUF tensor's blocks lie along its last dimension)."""
    if isinstance(tensor, Fp8Weight):
        return tensor.shape
    import gguf

    block_size, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(tensor.quant_type)]
    return torch.Size((*tensor.shape[:-1], tensor.shape[-1] // block_bytes * block_size))


def shape_view(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with each quantized tensor replaced by an empty one of its logical shape (meta device, bf16)."""
    return {key: torch.empty(logical_shape(value), dtype=torch.bfloat16, device="meta") if is_quantized(value)
            else value for key, value in state.items()}


class QuantizedLinear(torch.nn.Linear):
    """A linear layer holding a quantized weight (GGUF blocks or fp8), dequantized to the input's dtype for each
    call."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        weight = dequantize(self.weight, inputs.dtype)
        bias = None if self.bias is None else self.bias.to(inputs.dtype)
        return F.linear(inputs, weight, bias)


def load_quantized(model: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """Load `weights` (names as the model's) into `model`, built on the meta device: each quantized weight of a
    linear layer goes into a `QuantizedLinear` replacing it; other quantized tensors (biases, norms, a
    mixture-of-experts gate's weight) are dequantized to float32; everything is assigned as `load_state_dict` does,
    strictly. RuntimeError for missing or unexpected tensors, or a quantized weight of another shape than its
    layer's."""
    rest = dict(weights)
    for key, value in weights.items():
        if not is_quantized(value):
            continue
        module_name, _, attribute = key.rpartition(".")
        try:
            layer = model.get_submodule(module_name)
        except AttributeError as error:
            raise RuntimeError(f"unexpected tensor {key}") from error
        if attribute != "weight" or type(layer) is not torch.nn.Linear:
            rest[key] = dequantize(value)
            continue
        if logical_shape(value) != layer.weight.shape:
            raise RuntimeError(f"{key}: a {tuple(logical_shape(value))} weight for a {tuple(layer.weight.shape)} layer")
        with torch.device("meta"):
            replacement = QuantizedLinear(layer.in_features, layer.out_features, layer.bias is not None)
        replacement.weight = value.requires_grad_(False)  # a GGUFParameter or an Fp8Weight
        parent_name, _, child_name = module_name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child_name, replacement)
        del rest[key]
    missing, unexpected = model.load_state_dict(rest, strict=False, assign=True)
    missing = [key for key in missing if key not in weights]  # not the weights now inside QuantizedLinear
    if missing or unexpected:
        raise RuntimeError(f"missing tensors {missing[:3]}, unexpected tensors {unexpected[:3]}")
    return model
