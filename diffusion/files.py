"""Reading model files, offline: safetensors files tensor by tensor, diffusers folders' JSON, and the helpers every
family's loader shares (counting numbered blocks from key names, building modules without random weights, loading
a file's tensors strictly).

Pickled `.ckpt`/`.pt` files are refused: they can run arbitrary code when loaded. ComfyUI's fp8 files with scales
(`*_fp8_scaled.safetensors`) are read as the full-precision weights they stand for (`dequantized`), or kept in fp8
for layers that dequantize them as they run (`keep_fp8`). Knows nothing of model families, nodes or the node
environment.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Mapping

import torch

from diffusion import quantized
from diffusion.memory import allocator_aligned

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
MODEL_INDEX = "model_index.json"


def _refuse_unreadable(path: Path, input_name: str) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(
            f"{input_name}: {path.name} is a pickled PyTorch file, which can run arbitrary code when loaded; "
            "only .safetensors files are loaded (convert it to safetensors first)")
    if not path.is_file():
        raise ValueError(f"{input_name}: file {path} not found")


def read_safetensors(path: Path, input_name: str, dtype: torch.dtype | None = None,
                     keep: Callable[[str], bool] | None = None, keep_fp8: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file (those whose names `keep` accepts, when given: the rest are never read),
    each in memory of its own (floating-point ones in `dtype` when given: converted one at a time as read, so an
    fp32 file loaded in bf16 never holds the whole file in fp32); a ValueError naming the input for pickles,
    missing, truncated or corrupt files. With `keep_fp8`, fp8 tensors stay fp8, as `quantized.Fp8Weight`s with
    their scale when the file gives one per tensor (for `quantized.load_quantized`).

    Each tensor is read straight from the file into a fresh allocation, several at a time (`_read_tensors`),
    rather than memory-mapped: a model built from a mapping keeps the file's pages resident beside its own copies
    (2x the file at peak), and dies with SIGBUS if the file is rewritten while loaded. So peak memory stays near
    one file size plus the tensors in flight, and every tensor sits where the CPU allocator puts it (see
    `memory.is_allocator_aligned`)."""
    path = Path(path)
    _refuse_unreadable(path, input_name)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", backend="pread") as file:  # checks the header against the file
            keys = [key for key in file.keys() if keep is None or keep(key)]
        state = _read_tensors(path, keys, lambda tensor: _in_dtype(tensor, dtype, keep_fp8))
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"{input_name}: {path.name} is not a readable safetensors file ({error})") from error
    try:
        return dequantized(state, dtype, keep_fp8)
    except ValueError as error:
        raise ValueError(f"{input_name}: {path.name}: {error}") from error


# safetensors' names of the dtypes read straight into tensors; a file's others go through safetensors' reader
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                      "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
# tensors read at once: reading is mostly the kernel's copying and the first touch of fresh pages, which several
# threads share out (a 4.3 GB SD1.5 file: 2.2-3.9 s one by one through safetensors' reader, 1.2-1.4 s two at a
# time straight into fresh tensors, on 2 cores); more threads than this hold more tensors in flight for little gain
MAX_READ_THREADS = 8


def _read_tensors(path: Path, keys: list[str],
                  convert: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """`keys`' tensors from the safetensors file at `path`, each read into an allocation of its own and passed
    through `convert`, as many at a time as torch has threads (at most MAX_READ_THREADS)."""
    from concurrent.futures import ThreadPoolExecutor

    data_start, header = _safetensors_header(path)

    def read(key: str) -> torch.Tensor:
        entry = header[key]
        tensor_dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
        if tensor_dtype is None:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", backend="pread") as file:
                return convert(allocator_aligned(file.get_tensor(key)))
        tensor = torch.empty(entry["shape"], dtype=tensor_dtype)
        begin, end = entry["data_offsets"]
        if end - begin != tensor.nbytes:
            raise ValueError(f"tensor {key} holds {end - begin} bytes, not the {tensor.nbytes} its shape needs")
        buffer = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
        with open(path, "rb", buffering=0) as file:
            file.seek(data_start + begin)
            done = 0
            while done < len(buffer):
                count = file.readinto(buffer[done:])
                if not count:
                    raise ValueError(f"the file ends inside tensor {key}")
                done += count
        return convert(tensor)

    threads = max(1, min(torch.get_num_threads(), MAX_READ_THREADS, len(keys)))
    if threads == 1:
        return {key: read(key) for key in keys}
    with ThreadPoolExecutor(threads, thread_name_prefix="read-safetensors") as pool:
        return dict(zip(keys, pool.map(read, keys)))


def _safetensors_header(path: Path) -> tuple[int, dict[str, Any]]:
    """Where a safetensors file's tensor data begins, and its header: name -> dtype, shape and data offsets."""
    with open(path, "rb") as file:
        length = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(length))
    header.pop("__metadata__", None)
    return 8 + length, header


def read_weights(path: Path, input_name: str, keeps_fp8_weights: Callable[[int], bool],
                 dtype: torch.dtype | None = None,
                 keep: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """A model file's tensors (`read_safetensors`), its fp8 weights kept fp8 when it holds some and
    `keeps_fp8_weights(its number of values)` says so (`ModelManager.keeps_fp8_weights`), for a network loaded
    with `quantized.load_quantized`."""
    return read_safetensors(path, input_name, dtype, keep, keep_fp8=keeps_fp8(path, input_name, keeps_fp8_weights))


def keeps_fp8(path: Path, input_name: str, keeps_fp8_weights: Callable[[int], bool]) -> bool:
    """Whether `read_weights` keeps the file's fp8 weights fp8: it holds some and `keeps_fp8_weights` says so."""
    fp8, parameters = fp8_parameters(path, input_name)
    return bool(fp8) and keeps_fp8_weights(parameters)


# ComfyUI's two ways of storing fp8 weights with a scale: "scaled_fp8" files (a `scaled_fp8` marker tensor, each
# scaled layer's `scale_weight` and maybe `scale_input`) and quantization-metadata files (each layer's
# `weight_scale`, `comfy_quant` {"format": ...} and maybe `input_scale`); the weight is weight x scale either way
SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
DROPPED_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
FP8_FORMATS = ("float8_e4m3fn", "float8_e5m2")


def dequantized(state: dict[str, torch.Tensor], dtype: torch.dtype | None = None,
                keep_fp8: bool = False) -> dict[str, torch.Tensor]:
    """A file's tensors with ComfyUI's fp8-with-scale weights turned into what they stand for, weight x scale, in
    `dtype` (None: bfloat16, which holds every fp8 value); the markers and input scales (an fp8 matmul's, not the
    weights') dropped. With `keep_fp8`, the fp8 tensors become `quantized.Fp8Weight`s instead, those with one scale
    per tensor holding it (per-row scales are still applied). Files without scales are returned as they are. Other
    quantized formats (NVFP4, int8 blocks) are a ValueError that names them."""
    scales = [key for key in state if key.endswith(SCALE_SUFFIXES)]
    if keep_fp8:
        state = {key: quantized.fp8_weight(value) for key, value in state.items()}
    if not scales and not any(key.endswith(DROPPED_SUFFIXES) or _is_marker(key) for key in state):
        return state
    for key in [key for key in state if key.endswith(".comfy_quant")]:
        settings = json.loads(bytes(state[key].to(torch.uint8).tolist()).decode("utf-8"))
        if settings.get("format") not in FP8_FORMATS:
            raise ValueError(f"layer {key.removesuffix('.comfy_quant')} is quantized as {settings.get('format')!r}, "
                             f"which is not supported (fp8 with a scale is: {', '.join(FP8_FORMATS)})")
    target = dtype or torch.bfloat16
    for key in scales:
        layer = key[:-len(".scale_weight")] if key.endswith(".scale_weight") else key[:-len(".weight_scale")]
        scale = state.pop(key).float()
        weight = state.get(layer + ".weight")
        if weight is None:
            raise ValueError(f"a weight scale {key} without its weight")
        if scale.numel() != 1 and scale.shape[0] != weight.shape[0]:
            raise ValueError(f"{key} holds scales of shape {list(scale.shape)}, which are not one per tensor or "
                             "per output row (block-quantized weights are not supported)")
        if keep_fp8 and scale.numel() == 1 and isinstance(weight, quantized.Fp8Weight):
            state[layer + ".weight"] = quantized.Fp8Weight(weight.as_subclass(torch.Tensor), weight.format,
                                                           scale.item())
            continue
        scale = scale.reshape(-1, *([1] * (weight.ndim - 1))) if scale.numel() != 1 else scale.reshape(())
        state[layer + ".weight"] = allocator_aligned((weight.float() * scale).to(target))
    return {key: value for key, value in state.items() if not key.endswith(DROPPED_SUFFIXES) and not _is_marker(key)}


def _is_marker(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == "scaled_fp8"


def taken(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of `state` under their keys less `prefix`, moved out of `state` (left empty): a loader that
    converts a file's tensors then holds the only references to them, so a fused tensor a converter splits into
    views (q/k/v) is freed as soon as the model manager has given each view its own allocation, not kept until
    the whole model is placed."""
    return {key.removeprefix(prefix): state.pop(key) for key in list(state)}


def safetensors_keys(path: Path, input_name: str) -> list[str]:
    """The tensor names of a .safetensors file, read from its header only (no tensor data): enough to tell which
    family a file belongs to, cheaply, while a prompt is validated."""
    path = Path(path)
    _refuse_unreadable(path, input_name)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            return list(file.keys())
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"{input_name}: {path.name} is not a readable safetensors file ({error})") from error


def safetensors_shapes(path: Path, input_name: str) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape in a .safetensors file, from its header only (no tensor data)."""
    path = Path(path)
    _refuse_unreadable(path, input_name)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            return {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"{input_name}: {path.name} is not a readable safetensors file ({error})") from error


def embedding_rows(shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """The token count of a language model's file (its `embed_tokens` rows), from `safetensors_shapes`."""
    return next((shape[0] for key, shape in shapes.items() if key.endswith("embed_tokens.weight")), None)


def _in_dtype(tensor: torch.Tensor, dtype: torch.dtype | None, keep_fp8: bool = False) -> torch.Tensor:
    if dtype is None or not tensor.is_floating_point() or (keep_fp8 and tensor.dtype in quantized.FP8_DTYPES):
        return tensor
    return tensor.to(dtype)  # no copy if equal


FP8_FILE_DTYPES = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}  # safetensors' names


def fp8_parameters(path: Path, input_name: str) -> tuple[dict[torch.dtype, int], int]:
    """How many of a .safetensors file's values are stored in each fp8 format, and how many it holds in all, from
    its header only (no tensor data)."""
    path = Path(path)
    _refuse_unreadable(path, input_name)
    from safetensors import SafetensorError, safe_open

    fp8: dict[torch.dtype, int] = {}
    total = 0
    try:
        with safe_open(str(path), framework="pt") as file:
            for key in file.keys():
                tensor = file.get_slice(key)
                count = math.prod(tensor.get_shape())
                total += count
                fp8_dtype = FP8_FILE_DTYPES.get(tensor.get_dtype())
                if fp8_dtype is not None:
                    fp8[fp8_dtype] = fp8.get(fp8_dtype, 0) + count
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"{input_name}: {path.name} is not a readable safetensors file ({error})") from error
    return fp8, total


def block_indices(keys: Collection[str], prefix: str) -> list[int]:
    """The numbers N of keys `prefix` + "N." (numbered blocks or layers), sorted, each once."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(match.group(1)) for key in keys if (match := pattern.match(key))})


@contextlib.contextmanager
def empty_weights() -> Iterator[None]:
    """Build modules with their parameters on the meta device: no memory and no random initialisation for
    weights that loading replaces (`load_strict` assigns the file's tensors). Buffers stay real: text encoders
    make position ids that files do not hold."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        yield


def load_strict(module: torch.nn.Module, weights: Mapping[str, torch.Tensor], what: str) -> torch.nn.Module:
    """`module` with every one of its tensors assigned from `weights` (extra weights ignored; quantized ones as
    `quantized.load_quantized` loads them); a ValueError naming `what` when tensors are missing or do not fit."""
    expected = set(module.state_dict())
    missing = sorted(expected - set(weights))
    if missing:
        raise ValueError(f"{what} weights incomplete: {len(missing)} tensors missing, e.g. {missing[:3]}")
    try:
        quantized.load_quantized(module, {key: weights[key] for key in expected})
    except RuntimeError as error:
        raise ValueError(f"{what} weights do not fit the detected architecture: {error}") from error
    return module


# ---------------------------------------------------------------- diffusers folders

def model_index(folder: Path) -> dict[str, Any]:
    """A diffusers folder's `model_index.json`; a ValueError when it is missing or unreadable."""
    path = Path(folder) / MODEL_INDEX
    if not path.is_file():
        raise ValueError(f"{Path(folder).name} is not a diffusers model folder (no {MODEL_INDEX})")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{Path(folder).name}: unreadable {MODEL_INDEX} ({error})") from error


def pipeline_class(folder: Path) -> str:
    """The pipeline class a diffusers folder was saved from (its model_index.json `_class_name`)."""
    return str(model_index(folder).get("_class_name", ""))


def pipeline_components(folder: Path) -> set[str]:
    """The components a diffusers folder holds (model_index.json entries that name a class; absent ones are null)."""
    return {key for key, value in model_index(folder).items() if isinstance(value, list) and value[0] is not None}


def scheduler_config(folder: Path) -> dict[str, Any]:
    """A diffusers folder's `scheduler/scheduler_config.json` without its private `_` keys."""
    config = json.loads((Path(folder) / "scheduler" / "scheduler_config.json").read_text())
    return public_config(config)


def public_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A diffusers config without its private `_` keys (`_class_name`, `_diffusers_version`)."""
    return {key: value for key, value in config.items() if not key.startswith("_")}


@functools.lru_cache(maxsize=None)
def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def config_beside(module_file: str, name: str = "config.json") -> dict[str, Any]:
    """A fresh copy (callers may modify it) of a JSON file shipped beside a module: a family's description, the
    facts its files cannot tell (text-encoder settings, scheduler config, latent statistics)."""
    return copy.deepcopy(_read_json(Path(module_file).parent / name))
