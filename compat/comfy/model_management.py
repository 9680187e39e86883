"""`comfy.model_management` for plugins: devices, dtypes, memory, loading and interrupts, answered from our engine
(the node environment's device and dtype, `diffusion.memory`, the model manager of `diffusion.manager`).

Module values ComfyUI keeps as globals (`vram_state`, `cpu_state`, `total_vram`, `total_ram`) are computed when
read, from the environment of the node that reads them.
"""
from __future__ import annotations

import enum
import gc
from typing import Any, Iterable

import torch

from diffusion import memory
from engine.interrupt import ExecutionInterrupted
from engine.progress import current_node_context
from nodes.environment import current_environment

InterruptProcessingException = ExecutionInterrupted
OOM_EXCEPTION = torch.cuda.OutOfMemoryError
directml_enabled = False  # no DirectML backend here
MiB = 1024 * 1024


class VRAMState(enum.Enum):
    DISABLED = 0  # no VRAM: the CPU computes
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5  # memory shared by CPU and GPU (Apple silicon)


class CPUState(enum.Enum):
    GPU = 0
    CPU = 1
    MPS = 2


def get_torch_device() -> torch.device:
    return current_environment().device


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    """Where models go when they leave the compute device: our manager offloads to RAM."""
    return torch.device("cpu")


def text_encoder_device() -> torch.device:
    return get_torch_device()


def vae_device() -> torch.device:
    return get_torch_device()


text_encoder_offload_device = vae_offload_device = unet_offload_device


def unet_dtype(*args: Any, **kwargs: Any) -> torch.dtype:
    return current_environment().dtype


def text_encoder_dtype(device: torch.device | None = None) -> torch.dtype:
    models = current_environment().models
    return models.encoder_dtype or models.dtype


def vae_dtype(device: torch.device | None = None, allowed_dtypes: Iterable[torch.dtype] = ()) -> torch.dtype:
    return current_environment().models.dtype


def unet_manual_cast(weight_dtype: torch.dtype | None, inference_device: torch.device | None = None,
                     supported_dtypes: Iterable[torch.dtype] = ()) -> torch.dtype | None:
    """The dtype weights stored as `weight_dtype` are computed in, or None when they compute as stored."""
    compute = current_environment().dtype
    return None if weight_dtype in (None, compute) else compute


def should_use_fp16(device: torch.device | None = None, *args: Any, **kwargs: Any) -> bool:
    return current_environment().dtype == torch.float16


def should_use_bf16(device: torch.device | None = None, *args: Any, **kwargs: Any) -> bool:
    return current_environment().dtype == torch.bfloat16


def supports_fp8_compute(device: torch.device | None = None) -> bool:
    device = torch.device(device) if device is not None else get_torch_device()
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def _device(device: Any) -> torch.device:
    return torch.device(device) if device is not None else get_torch_device()


def is_device_type(device: Any, kind: str) -> bool:
    return hasattr(device, "type") and device.type == kind


def is_device_cpu(device: Any) -> bool:
    return is_device_type(device, "cpu")


def is_device_cuda(device: Any) -> bool:
    return is_device_type(device, "cuda")


def is_device_mps(device: Any) -> bool:
    return is_device_type(device, "mps")


def cpu_mode() -> bool:
    return get_torch_device().type == "cpu"


def mps_mode() -> bool:
    return get_torch_device().type == "mps"


def is_nvidia() -> bool:
    return get_torch_device().type == "cuda" and torch.version.cuda is not None


def is_intel_xpu() -> bool:
    return get_torch_device().type == "xpu"


def xformers_enabled() -> bool:
    return False  # attention runs through torch's scaled_dot_product_attention, never xformers


def pytorch_attention_enabled() -> bool:
    return True


def get_autocast_device(device: Any) -> str:
    return device.type if hasattr(device, "type") else "cuda"


def device_supports_non_blocking(device: Any) -> bool:
    return is_device_cuda(device)


def get_torch_device_name(device: Any) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    return str(device.type)


def get_free_memory(device: Any = None, torch_free_too: bool = False) -> int | tuple[int, int]:
    """Bytes free on `device` (CUDA's free memory, or available RAM); with `torch_free_too`, also the bytes torch's
    allocator holds free (CUDA reserved minus allocated; on the CPU the same as the first)."""
    device = _device(device)
    free = memory.free_memory_bytes(device)
    if not torch_free_too:
        return free
    if device.type == "cuda":
        return free, int(torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    return free, free


def get_total_memory(device: Any = None, torch_total_too: bool = False) -> int | tuple[int, int]:
    device = _device(device)
    if device.type == "cuda":
        total = int(torch.cuda.get_device_properties(device).total_memory)
        return (total, int(torch.cuda.memory_reserved(device))) if torch_total_too else total
    total = memory.physical_ram_bytes()
    return (total, total) if torch_total_too else total


def free_memory(memory_required: int, device: Any = None, keep_loaded: Iterable[Any] = ()) -> None:
    """Offload least recently used models until `memory_required` more bytes fit the device's budget; models in
    `keep_loaded` stay."""
    environment = current_environment()
    with environment.models.using(*keep_loaded):
        environment.models.make_room(int(memory_required), _device(device))


def load_models_gpu(models: Iterable[Any], memory_required: int = 0, *args: Any, **kwargs: Any) -> None:
    """Bring MODEL/CLIP/VAE values (or modules) onto the compute device through the model manager, making room for
    `memory_required` more bytes."""
    environment = current_environment()
    models = list(models)
    with environment.models.using(*models):
        if memory_required:
            environment.models.make_room(int(memory_required))


def load_model_gpu(model: Any) -> None:
    load_models_gpu([model])


def unload_all_models() -> None:
    current_environment().models.clear()


def cleanup_models(*args: Any, **kwargs: Any) -> None:
    """Release memory nothing refers to any more (our manager keeps no dead entries to drop)."""
    soft_empty_cache()


def module_size(module: Any) -> int:
    return memory.size_in_bytes(module)


def dtype_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def cast_to(weight: torch.Tensor, dtype: torch.dtype | None = None, device: Any = None,
            non_blocking: bool = False, copy: bool = False, *args: Any, **kwargs: Any) -> torch.Tensor:
    return weight.to(device=device, dtype=dtype, non_blocking=non_blocking, copy=copy)


def cast_to_device(tensor: torch.Tensor, device: Any, dtype: torch.dtype | None, copy: bool = False) -> torch.Tensor:
    return tensor.to(device=device, dtype=dtype, copy=copy)


def __getattr__(name: str) -> Any:
    """ComfyUI's module-level state, computed from the current environment when read."""
    if name == "vram_state":
        kind = get_torch_device().type
        return {"cpu": VRAMState.DISABLED, "mps": VRAMState.SHARED}.get(kind, VRAMState.NORMAL_VRAM)
    if name == "cpu_state":
        kind = get_torch_device().type
        return {"cpu": CPUState.CPU, "mps": CPUState.MPS}.get(kind, CPUState.GPU)
    if name == "total_vram":
        return get_total_memory(get_torch_device()) / MiB
    if name == "total_ram":
        return memory.physical_ram_bytes() / MiB
    raise AttributeError(f"module 'comfy.model_management' has no attribute '{name}'")


def _interrupt_flag():
    context = current_node_context()
    if context is not None:
        return context.interrupt
    from server import PromptServer

    server = PromptServer.instance
    return server.interrupt_flag() if server is not None else None


def interrupt_processing(value: bool = True) -> None:
    flag = _interrupt_flag()
    if flag is None:
        return
    flag.request() if value else flag.clear()


interrupt_current_processing = interrupt_processing


def processing_interrupted() -> bool:
    flag = _interrupt_flag()
    return bool(flag and flag.is_set())


def throw_exception_if_processing_interrupted() -> None:
    if processing_interrupted():
        raise InterruptProcessingException("Execution was interrupted")


def soft_empty_cache(force: bool = False) -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
