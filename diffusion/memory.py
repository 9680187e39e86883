"""Memory accounting for the model manager: how many bytes a loaded model holds, which modules it is made of,
the budget per device, and parsing the `--max-ram` / `--reserve-vram` values.

A loaded value is whatever a loader returns (a MODEL/CLIP/VAE triple, one wrapper, a LoRA state dict); it is
walked through tuples, lists, mappings and dataclass fields down to torch modules and tensors. Knows nothing of
files, nodes or the executor.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch

from diffusion import heap

DEFAULT_RAM_FRACTION = 0.75
DEFAULT_RESERVE_VRAM_GB = 1.0
_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "M": 1000**2, "MB": 1000**2, "G": 1000**3, "GB": 1000**3,
          "T": 1000**4, "TB": 1000**4, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}
_MAX_DEPTH = 6


CPU_ALLOCATOR_ALIGNMENT = 64  # bytes; torch's CPU allocator aligns every allocation to this


def is_allocator_aligned(tensor: torch.Tensor) -> bool:
    """Whether a tensor sits where a fresh allocation of its own would: alone in its storage, at an address the
    CPU allocator would give. CPU kernels round differently (at the 1e-7 level) for differently aligned
    operands, so weights read from a file must sit like this for results not to depend on how it was read."""
    storage = tensor.untyped_storage()
    return (tensor.storage_offset() == 0 and storage.nbytes() == tensor.nbytes
            and (tensor.device.type != "cpu" or tensor.data_ptr() % CPU_ALLOCATOR_ALIGNMENT == 0))


def allocator_aligned(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor`, or a copy of it in an allocation of its own when it is not `is_allocator_aligned`."""
    return tensor if is_allocator_aligned(tensor) else tensor.clone(memory_format=torch.contiguous_format)


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes the manager may keep loaded per device type ("cpu", "cuda", "mps"); a missing type is unlimited."""

    limits: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def limit(self, device: torch.device) -> int | None:
        return self.limits.get(torch.device(device).type)

    @classmethod
    def for_device(cls, device: torch.device, max_ram: str | None = None,
                   reserve_vram_gb: float = DEFAULT_RESERVE_VRAM_GB) -> "MemoryBudget":
        """RAM: `max_ram` ("8GB", "512MiB", or a fraction of physical RAM such as "0.5"), by default 75% of
        physical RAM. VRAM (CUDA): the device's total memory less `reserve_vram_gb`. MPS shares RAM."""
        total_ram = physical_ram_bytes()
        limits = {"cpu": parse_memory_size(max_ram, total_ram) if max_ram else int(total_ram * DEFAULT_RAM_FRACTION)}
        device = torch.device(device)
        if device.type == "cuda":
            total_vram = torch.cuda.get_device_properties(device).total_memory
            limits["cuda"] = max(0, total_vram - int(reserve_vram_gb * 1000**3))
        elif device.type == "mps":
            limits["mps"] = limits["cpu"]
        return cls(limits)


def parse_memory_size(text: str, total_bytes: int) -> int:
    """Bytes for "8GB", "1.5 GiB", "512MB", "2000000" (bytes) or a fraction of `total_bytes` ("0.5")."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(f"{text!r} is not a memory size (e.g. 8GB, 512MiB, or a fraction of RAM such as 0.5)")
    number, unit = float(match.group(1)), match.group(2).upper()
    if not unit and 0 < number <= 1:
        return int(total_bytes * number)
    if number <= 0:
        raise ValueError(f"{text!r}: a memory size must be more than 0")
    return int(number * _UNITS[unit])


def physical_ram_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 8 * 1000**3


def free_memory_bytes(device: torch.device) -> int:
    """Bytes free for new tensors on `device`: CUDA's free memory (`torch.cuda.mem_get_info`), otherwise (CPU,
    MPS, which shares RAM) the RAM the OS reports available (MemAvailable), or half of physical RAM if unknown,
    plus the freed blocks this process keeps in its heap for reuse (`diffusion.heap`)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return _available_ram_bytes() + heap.reusable_free_bytes()


def _available_ram_bytes() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return physical_ram_bytes() // 2


def modules_of(value: Any) -> list[torch.nn.Module]:
    """The torch modules a loaded value is made of (each once)."""
    seen: dict[int, torch.nn.Module] = {}
    for item in _walk(value, 0):
        if isinstance(item, torch.nn.Module):
            seen.setdefault(id(item), item)
    return list(seen.values())


def size_in_bytes(value: Any) -> int:
    """Bytes of every distinct tensor storage a loaded value holds (modules' parameters and buffers, loose tensors)."""
    storages: dict[tuple[str, int], int] = {}
    for item in _walk(value, 0):
        tensors = [*item.parameters(), *item.buffers()] if isinstance(item, torch.nn.Module) else [item]
        for tensor in tensors:
            storage = tensor.untyped_storage()
            storages[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def device_of(value: Any) -> torch.device | None:
    """Where a loaded value's first tensor lives (a LoRA state dict stays on the CPU whatever the device)."""
    for item in _walk(value, 0):
        tensor = next(iter([*item.parameters(), *item.buffers()]), None) if isinstance(item, torch.nn.Module) else item
        if tensor is not None:
            return tensor.device
    return None


def _walk(value: Any, depth: int) -> Iterator[Any]:
    """Modules and tensors inside a value: through tuples, lists, mappings and dataclass fields."""
    if depth > _MAX_DEPTH or value is None or isinstance(value, (str, bytes, int, float, bool)):
        return
    if isinstance(value, (torch.nn.Module, torch.Tensor)):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _walk(item, depth + 1)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _walk(item, depth + 1)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from _walk(getattr(value, field.name, None), depth + 1)


def move_modules(value: Any, device: torch.device) -> None:
    """Move every module of a loaded value to `device` in place (objects already handed out follow)."""
    for module in modules_of(value):
        module.to(device)
