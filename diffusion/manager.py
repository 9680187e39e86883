"""Caches and budgets loaded models: a file is loaded once (by the loader a caller passes in) and the same
MODEL/CLIP/VAE objects are handed out however many nodes ask for them.

Entries are keyed by the file's resolved path, size and modification time, so a replaced file is read again.
Loaders place their modules on the manager's device and dtype (`place`). Knows nothing of model families, file
layouts, nodes or folders: callers pass resolved paths, the input name to use in error messages, and the
function that loads the file (`diffusion.loading` holds those of the loader nodes).

It is also the one place that knows every loaded model, its device and size, and keeps each device within a
`MemoryBudget`. Models stay loaded between prompts. Before a load (sized by the file) and after it (sized by its
tensors), the least recently used models are evicted until the device fits: offloaded to the CPU from a GPU
(moved in place, so handed-out objects follow and are moved back when asked for again), unloaded from the CPU
(the manager drops its reference). A model being loaded or pinned with `using()` is never evicted, and eviction
only happens under the manager's lock, between uses. Objects already handed out survive an unload (they keep
their own reference); memory is only returned once nothing holds them, which is why eviction listeners exist:
the runtime registers one that drops the engine's cached node outputs holding the evicted modules, so the next
prompt asks the manager again (a reload, or an onload back to the GPU) instead of reusing a stale copy.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from diffusion.memory import MemoryBudget, allocator_aligned, device_of, modules_of, move_modules, size_in_bytes

EvictionListener = Callable[[Any], None]

log = logging.getLogger(__name__)


def _file_key(kind: str, path: Path) -> tuple[Any, ...]:
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return kind, str(resolved), stat.st_size, stat.st_mtime_ns


@dataclass(eq=False)
class LoadedModel:
    """One entry of the manager: what a loader returned, where it lives and how big it is."""

    kind: str
    path: str
    value: Any
    size_bytes: int
    device: torch.device
    last_used: int
    pins: int = 0


class ModelManager:
    """The loaded models of one device/dtype within a `MemoryBudget` (unlimited without one). `loads` counts real
    loads per (kind, path); `offloads` and `unloads` count evictions per (kind, path). Text and image encoders
    (transformers models) take the precision of `encoder_dtype` when given, else of `dtype` like the rest (see
    `place`)."""

    def __init__(self, device: torch.device, dtype: torch.dtype, budget: MemoryBudget | None = None,
                 encoder_dtype: torch.dtype | None = None) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.encoder_dtype = encoder_dtype
        self.budget = budget or MemoryBudget()
        self._entries: dict[tuple[Any, ...], LoadedModel] = {}
        self._lock = threading.RLock()
        self._clock = itertools.count(1)
        self._listeners: list[EvictionListener] = []
        self.loads: dict[tuple[str, str], int] = {}
        self.offloads: dict[tuple[str, str], int] = {}
        self.unloads: dict[tuple[str, str], int] = {}

    def _home_device(self, value: Any) -> torch.device:
        """The manager's device, unless the value's tensors live elsewhere (a LoRA state dict on the CPU); "cuda"
        and "cuda:0" count as one device."""
        found = device_of(value)
        return self.device if found is None or found.type == self.device.type else torch.device(found.type)

    def _make_room(self, device: torch.device, needed: int, keep: tuple[Any, ...] | None = None) -> None:
        """Evict least recently used, unpinned models from `device` until `needed` more bytes fit its budget."""
        limit = self.budget.limit(device)
        if limit is None:
            return
        self._refresh_sizes()
        while self._used_bytes(device) + needed > limit:
            candidates = [(entry.last_used, key) for key, entry in self._entries.items()
                          if entry.device == device and entry.pins == 0 and key != keep]
            if not candidates:
                log.warning("models on %s need %d bytes, over the %d-byte budget: nothing left to evict",
                            device, self._used_bytes(device) + needed, limit)
                return
            self._evict(min(candidates)[1])

    def make_room(self, needed: int, device: torch.device | None = None) -> None:
        """Offload or unload least recently used, unpinned models until `needed` more bytes fit the budget of
        `device` (the manager's by default)."""
        with self._lock:
            self._make_room(torch.device(device) if device is not None else self.device, needed)

    def _evict(self, key: tuple[Any, ...]) -> None:
        entry = self._entries[key]
        count_key = (entry.kind, entry.path)
        if entry.device.type == "cpu":
            del self._entries[key]
            self.unloads[count_key] = self.unloads.get(count_key, 0) + 1
        else:
            cpu = torch.device("cpu")
            self._make_room(cpu, entry.size_bytes, keep=key)
            move_modules(entry.value, cpu)
            entry.device = cpu
            self.offloads[count_key] = self.offloads.get(count_key, 0) + 1
        self._notify(entry.value)

    def _notify(self, value: Any) -> None:
        for listener in list(self._listeners):
            try:
                listener(value)
            except Exception:  # a listener's failure must not leave the manager half-evicted
                log.exception("model eviction listener failed")

    def _used_bytes(self, device: torch.device) -> int:
        return sum(entry.size_bytes for entry in self._entries.values() if entry.device == device)

    def _refresh_sizes(self) -> None:
        """Sizes as they are now: a value can grow after loading (a lazily built T5 inside a CLIP) or shrink (the
        T5 freed after encoding), and the budget must see it."""
        for entry in list(self._entries.values()):
            entry.size_bytes = size_in_bytes(entry.value)

    def add_eviction_listener(self, listener: EvictionListener) -> None:
        """Call `listener(value)` whenever a loaded value is offloaded or unloaded (`modules_of` tells its modules)."""
        self._listeners.append(listener)

    @contextlib.contextmanager
    def using(self, *values: Any) -> Iterator[None]:
        """Pin the loaded models that share modules with `values` for the block, moved back to the device first if
        they were offloaded: they are not evicted while a node runs with them (a load inside the node, such as a
        lazily loaded text encoder, evicts others instead)."""
        wanted = {id(module) for value in values for module in modules_of(value)}
        if not wanted:  # most node calls hold no model: nothing to look up
            yield
            return
        with self._lock:
            pinned = [(key, entry) for key, entry in self._entries.items()
                      if any(id(module) in wanted for module in modules_of(entry.value))]
            for key, entry in pinned:
                entry.pins += 1
                entry.last_used = next(self._clock)
                if entry.device != self.device and modules_of(entry.value):
                    self._make_room(self.device, entry.size_bytes, keep=key)
                    move_modules(entry.value, self.device)
                    entry.device = self.device
        try:
            yield
        finally:
            with self._lock:
                for _, entry in pinned:
                    entry.pins -= 1

    def clear(self) -> None:
        """Unload every model not pinned by a running node (`/free`)."""
        with self._lock:
            for key in [key for key, entry in self._entries.items() if entry.pins == 0]:
                entry = self._entries.pop(key)
                count_key = (entry.kind, entry.path)
                self.unloads[count_key] = self.unloads.get(count_key, 0) + 1
                self._notify(entry.value)

    def loaded(self) -> list[tuple[str, str]]:
        """(kind, resolved path) of every model held now, for status reports. Without the lock, which a load
        holds for as long as it reads the file: a status report must not wait for that (copying the keys
        is atomic under the GIL)."""
        return [(key[0], key[1]) for key in list(self._entries)]

    def report(self) -> dict[str, Any]:
        """Loaded models (most recently used first) with device and size, and bytes used and allowed per device,
        for /system_stats. Lock-free like `loaded()`."""
        self._refresh_sizes()
        entries = sorted(list(self._entries.values()), key=lambda entry: -entry.last_used)
        devices = sorted({str(entry.device) for entry in entries} | {str(self.device)})
        return {
            "models": [{"kind": entry.kind, "path": entry.path, "device": str(entry.device),
                        "size_bytes": entry.size_bytes} for entry in entries],
            "devices": {name: {"used_bytes": sum(entry.size_bytes for entry in entries if str(entry.device) == name),
                               "budget_bytes": self.budget.limit(torch.device(name))} for name in devices},
        }

    def cached(self, kind: str, path: Path, input_name: str, load: Callable[[], Any]) -> Any:
        """What `load()` returns for this file (or diffusers folder: its `model_index.json`), loaded once per file
        version and kept within the budget; moved back to the device if it was offloaded."""
        if not Path(path).exists():
            raise ValueError(f"{input_name}: {path} not found")
        key = _file_key(kind, path)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._make_room(self.device, _file_bytes(Path(path)), keep=key)
                value = load()
                entry = LoadedModel(kind, key[1], value, size_in_bytes(value), self._home_device(value), 0)
                self._entries[key] = entry
                count_key = (kind, key[1])
                self.loads[count_key] = self.loads.get(count_key, 0) + 1
            elif entry.device != self.device and modules_of(entry.value):
                self._make_room(self.device, entry.size_bytes, keep=key)
                move_modules(entry.value, self.device)
                entry.device = self.device
            entry.last_used = next(self._clock)
            self._make_room(entry.device, 0, keep=key)
            return entry.value

    def keeps_fp8_weights(self, parameters: int) -> bool:
        """Whether a model file's fp8 weights stay fp8 in memory, each layer casting its weight as it runs (the
        same image, half of bf16's memory, a cast per layer and step), rather than being converted to this
        manager's precision as they load. ComfyUI's rule: always on GPUs that compute in fp8 (compute capability
        8.9 and up, where the cast is cheap), elsewhere when the converted model, `parameters` values, would not
        fit the device's model budget."""
        if self.device.type == "cuda" and torch.cuda.get_device_capability(self.device) >= (8, 9):
            return True
        limit = self.budget.limit(self.device)
        return limit is not None and parameters * self.dtype.itemsize > limit

    def place(self, module: Any) -> Any:
        """`module` on this manager's device and dtype, every tensor that shares its storage or sits at an odd
        address given an allocation of its own (see `memory.is_allocator_aligned`): results then do not depend on how
        a file was read. Tensors already placed are left alone, so loading never holds a second copy of a model.

        An encoder with an `encoder_dtype` runs in it, except a half-precision one on the CPU beside fp32 models:
        its weights are rounded to that precision and computed in fp32, which is what ComfyUI does there
        (`--fp16-text-enc --fp32` then gives ComfyUI's CPU results; the memory is that of fp32). Quantized weights
        (`quantized.QuantizedLinear`'s) are bytes, not floating point: they stay quantized."""
        precision = compute = self.dtype
        if self.encoder_dtype is not None and _is_encoder(module):
            precision = compute = self.encoder_dtype
            if self.device.type == "cpu" and self.dtype == torch.float32:
                compute = torch.float32
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.is_floating_point():
                    data = tensor.data.to(device=self.device, dtype=precision).to(compute)
                else:
                    data = tensor.data.to(device=self.device)
                tensor.data = allocator_aligned(data)
        return module


def _file_bytes(path: Path) -> int:
    """The size of a model file, or of the folder a diffusers `model_index.json` sits in: the estimate used to
    make room before loading (the loaded size replaces it)."""
    if path.name == "model_index.json":
        return sum(file.stat().st_size for file in path.parent.rglob("*") if file.is_file())
    return path.stat().st_size


def _is_encoder(module: Any) -> bool:
    """Whether a module is a text or image encoder: the project builds every one with transformers."""
    from transformers import PreTrainedModel

    return isinstance(module, PreTrainedModel)
