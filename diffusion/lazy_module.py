"""Big text encoders (T5) read from their files only when a prompt is first encoded, and freed again after encoding
when the release policy says so (`OFFLOAD_POLICIES`); the next encode reads them again.

A `LazyModule` is shared by every CLIP value derived from one loaded CLIP (a LoRA applied, another layer chosen),
since those are copies of the same frozen wrapper holding the same handle, so the weights are read once however
many nodes use it. The policy rule (`should_free`) is deliberately simple: "always", "never", or "when-tight":
free when the memory still available on the encoder's device (RAM on the CPU, free VRAM on CUDA) is less than
twice the encoder's own size, i.e. when the diffusion model that runs next would not have that much room beside it.
Knows nothing of nodes, files or the node environment: callers pass the policy in.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

OFFLOAD_POLICIES = ("never", "when-tight", "always")
TIGHT_FACTOR = 2  # "tight": less room left than twice the encoder's size


@dataclass(eq=False)
class LazyModule:
    """A module built by `load()` on first `get()`; `free()` drops it so that the next `get()` loads it again.
    `loads` counts the real loads. A dataclass, so that the model manager's memory accounting
    (`diffusion.memory.modules_of`) sees the module while it is loaded."""

    load: Callable[[], Any]
    name: str
    module: Any = None
    loads: int = 0
    _lock: Any = field(default_factory=threading.Lock, repr=False)

    @property
    def loaded(self) -> bool:
        return self.module is not None

    def get(self) -> Any:
        with self._lock:
            if self.module is None:
                self.module = self.load()
                self.loads += 1
            return self.module

    def free(self) -> None:
        with self._lock:
            self.module = None

    def size_bytes(self) -> int:
        module = self.module
        if module is None:
            return 0
        return sum(tensor.numel() * tensor.element_size() for tensor in [*module.parameters(), *module.buffers()])

    def device(self) -> torch.device | None:
        module = self.module
        return None if module is None else next(module.parameters()).device


def resolve(module: Any) -> Any:
    """The module itself, loading it if it is a `LazyModule`."""
    return module.get() if isinstance(module, LazyModule) else module


def available_bytes(device: torch.device) -> int:
    """Free VRAM on a CUDA device, else available RAM (from /proc/meminfo; very large where unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as meminfo:
            values = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in meminfo}
        return values.get("MemAvailable", values["MemFree"])
    except (OSError, KeyError, ValueError, IndexError):
        return 1 << 62


def should_free(policy: str, module: LazyModule, available: Callable[[torch.device], int] = available_bytes) -> bool:
    if policy not in OFFLOAD_POLICIES:
        raise ValueError(f"text_encoder_offload: {policy!r} is not one of {', '.join(OFFLOAD_POLICIES)}")
    if policy == "never" or not module.loaded:
        return False
    if policy == "always":
        return True
    device = module.device()
    return device is not None and available(device) < TIGHT_FACTOR * module.size_bytes()


def release(modules: list[Any], policy: str, available: Callable[[torch.device], int] = available_bytes) -> list[str]:
    """Free each `LazyModule` of `modules` the policy says to free; the names of those freed."""
    freed = []
    for module in modules:
        if isinstance(module, LazyModule) and should_free(policy, module, available):
            module.free()
            freed.append(module.name)
    if freed:
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return freed
