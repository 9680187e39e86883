"""GGUF files (city96's ComfyUI-GGUF transformers, llama.cpp's format), read as diffusers' GGUF reader reads them:
quantized tensors are diffusers' `GGUFParameter` (the blocks' bytes, with their `quant_type`), whose shape counts
bytes, not the weight's values.

`shape_view` gives every tensor its logical shape (empty, on the meta device), so a family's config-from-shapes code
reads a GGUF file as it reads a safetensors one; every family builds its network from the view and loads it with
`load_quantized`: each linear layer whose weight is quantized becomes a `QuantizedLinear` that dequantizes its
weight when called (a Q4 transformer stays about a quarter of its bf16 size in memory). Layout conversions that
split or join rows (FLUX's fused q/k/v) work on the quantized bytes too: GGUF quantizes each row on its own. Knows
nothing of nodes or families."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    import numpy as np

GGUF_SUFFIX = ".gguf"


def is_quantized(tensor: torch.Tensor) -> bool:
    return getattr(tensor, "quant_type", None) is not None


def read_gguf(path: Path, input_name: str) -> dict[str, torch.Tensor]:
    """The tensors of a .gguf file: quantized ones (and bf16 ones) as diffusers' GGUFParameter with their
    `quant_type`, float32 and float16 ones as plain tensors, as diffusers' GGUF reader gives them; a ValueError
    naming the input for an unreadable file or an unsupported quantization. The tensors are read with `pread` into
    memory of their own, not copied out of a memory map, whose pages would stay resident beside the copies."""
    import gguf
    import numpy as np
    from diffusers.quantizers.gguf.utils import SUPPORTED_GGUF_QUANT_TYPES, GGUFParameter

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{input_name}: file {path} not found")
    plain = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
    state: dict[str, torch.Tensor] = {}
    try:
        reader = gguf.GGUFReader(str(path))  # the header; the tensor data stays unread in its map
        with open(path, "rb", buffering=0) as file:
            for tensor in reader.tensors:
                if tensor.tensor_type not in plain and tensor.tensor_type not in SUPPORTED_GGUF_QUANT_TYPES:
                    raise ValueError(f"{tensor.name} is quantized as {tensor.tensor_type.name}, which diffusers' "
                                     "GGUF dequantizers do not read")
                buffer = torch.empty(tensor.n_bytes, dtype=torch.uint8)
                _read_into(file.fileno(), buffer.numpy(), tensor.data_offset, tensor.name)
                dtype = torch.from_numpy(np.empty(0, dtype=tensor.data.dtype)).dtype
                weights = buffer.view(dtype).reshape(tensor.data.shape)
                state[tensor.name] = weights if tensor.tensor_type in plain else GGUFParameter(
                    weights, quant_type=tensor.tensor_type)
    except (ValueError, OSError, KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: {path.name} is not a readable GGUF file ({error})") from error
    return state


def _read_into(descriptor: int, target: "np.ndarray", offset: int, name: str) -> None:
    """Fill `target` with the file's bytes from `offset` (a read returns at most about 2 GB, so it loops)."""
    view = memoryview(target).cast("B")
    done = 0
    while done < len(view):
        count = os.preadv(descriptor, [view[done:]], offset + done)
        if count == 0:
            raise ValueError(f"{name} runs past the end of the file")
        done += count


def gguf_keys(path: Path, input_name: str) -> list[str]:
    """The tensor names of a .gguf file, from its header (the tensor data is mapped, not read)."""
    import gguf

    try:
        return [tensor.name for tensor in gguf.GGUFReader(str(path)).tensors]
    except (ValueError, OSError, KeyError) as error:
        raise ValueError(f"{input_name}: {Path(path).name} is not a readable GGUF file ({error})") from error


def logical_shape(tensor: torch.Tensor) -> torch.Size:
    """The shape of the weight a quantized tensor holds (blocks along its last dimension)."""
    import gguf

    block_size, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(tensor.quant_type)]
    return torch.Size((*tensor.shape[:-1], tensor.shape[-1] // block_bytes * block_size))


def shape_view(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with each quantized tensor replaced by an empty one of its logical shape (meta device, bf16)."""
    return {key: torch.empty(logical_shape(value), dtype=torch.bfloat16, device="meta") if is_quantized(value)
            else value for key, value in state.items()}


def write_gguf(state: Mapping[str, torch.Tensor], path: Path, architecture: str) -> None:
    """`state` as a GGUF file the way ComfyUI-GGUF's conversions write them: 2-D weights whose rows divide into
    32-value blocks Q8_0-quantized, the other tensors float32 (the benchmarks' and tests' files; the engine itself
    only reads GGUF)."""
    import gguf
    from gguf.quants import quantize

    writer = gguf.GGUFWriter(str(path), architecture)
    for key, value in state.items():
        array = value.detach().float().numpy()
        if array.ndim == 2 and array.shape[1] % 32 == 0:
            blocks = quantize(array, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(key, blocks, raw_shape=blocks.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(key, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


class QuantizedLinear(torch.nn.Linear):
    """A linear layer holding a GGUF-quantized weight, dequantized to the input's dtype for each call."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

        weight = dequantize_gguf_tensor(self.weight).to(inputs.dtype)
        bias = None if self.bias is None else self.bias.to(inputs.dtype)
        return F.linear(inputs, weight, bias)


def load_quantized(model: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """Load `weights` (names as the model's) into `model`, built on the meta device: each quantized weight of a
    linear layer goes into a `QuantizedLinear` replacing it; other quantized tensors (a mixture-of-experts gate's
    weight) are dequantized; everything is assigned as `load_state_dict` does, strictly. RuntimeError for missing
    or unexpected tensors, or a quantized weight of another shape than its layer's."""
    from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

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
            rest[key] = dequantize_gguf_tensor(value)
            continue
        if logical_shape(value) != layer.weight.shape:
            raise RuntimeError(f"{key}: a {tuple(logical_shape(value))} weight for a {tuple(layer.weight.shape)} layer")
        with torch.device("meta"):
            replacement = QuantizedLinear(layer.in_features, layer.out_features, layer.bias is not None)
        replacement.weight = value.requires_grad_(False)  # a GGUFParameter: the bytes and their quant_type
        parent_name, _, child_name = module_name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child_name, replacement)
        del rest[key]
    missing, unexpected = model.load_state_dict(rest, strict=False, assign=True)
    missing = [key for key in missing if key not in weights]  # not the weights now inside QuantizedLinear
    if missing or unexpected:
        raise RuntimeError(f"missing tensors {missing[:3]}, unexpected tensors {unexpected[:3]}")
    return model
