"""GGUF files (city96's ComfyUI-GGUF transformers, llama.cpp's format), read as diffusers' GGUF reader reads them:
quantized tensors are diffusers' `GGUFParameter` (the blocks' bytes, with their `quant_type`), whose shape counts
bytes, not the weight's values; `diffusion.quantized` keeps them quantized in the loaded network. Knows nothing of
nodes or families."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch

if TYPE_CHECKING:
    import numpy as np

GGUF_SUFFIX = ".gguf"


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
