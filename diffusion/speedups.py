"""Optional speed-ups of the denoising network that a user switches on per model: `torch.compile`, channels-last
memory format and attention slicing (diffusers' `set_attention_slice`, which trades speed for peak memory), and
the dtype the network computes in (ComfyUI's ModelComputeDtype; `computing_in`).

Each is applied only while a sampler runs and undone afterwards, because the network is shared with the model
cache and with every other MODEL wire that holds it: a prompt that did not ask for a speed-up gets exactly the
network it would have had. torch keeps compiled code with the network, so a model compiles once per image size,
not once per prompt. Each changes results slightly (other kernels, other summation order); `bench/speedups.py`
measures speed and the difference. Knows nothing of nodes or files.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from diffusion.memory import device_of

COMPILE_BACKENDS = ("off", "inductor", "cudagraphs")
ATTENTION_SLICING = ("off", "auto", "max")
COMPUTE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# inputs the networks embed in float32 themselves (a timestep of 999.4 is 999.5 in fp16)
_UNCAST_INPUTS = frozenset({"timestep", "timesteps"})


@dataclass(frozen=True)
class Speedups:
    """What to switch on for a model's network: a `torch.compile` backend ("off" for none), channels-last
    memory format, attention slicing ("off", "auto": half the heads at a time, "max": one at a time), and the
    dtype it computes in ("default": the one it is loaded in, or a `COMPUTE_DTYPES` name)."""

    compile_backend: str = "off"
    channels_last: bool = False
    attention_slicing: str = "off"
    compute_dtype: str = "default"

    def __post_init__(self) -> None:
        if self.compile_backend not in COMPILE_BACKENDS:
            raise ValueError(f"compile backend {self.compile_backend!r} is not one of {', '.join(COMPILE_BACKENDS)}")
        if self.attention_slicing not in ATTENTION_SLICING:
            raise ValueError(f"attention slicing {self.attention_slicing!r} is not one of "
                             f"{', '.join(ATTENTION_SLICING)}")
        if self.compute_dtype != "default" and self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute dtype {self.compute_dtype!r} is not one of default, "
                             f"{', '.join(COMPUTE_DTYPES)}")

    @property
    def any(self) -> bool:
        return (self.compile_backend != "off" or self.channels_last or self.attention_slicing != "off"
                or self.compute_dtype != "default")


NO_SPEEDUPS = Speedups()


def unsupported(network: Any, speedups: Speedups) -> dict[str, str]:
    """Why the network or its device cannot take a speed-up, by `Speedups` field; empty when all can run."""
    problems = {}
    if speedups.attention_slicing != "off" and not hasattr(network, "set_attention_slice"):
        problems["attention_slicing"] = (f"attention slicing works on UNet models (SD1.x, SD2.x, SDXL); this "
                                         f"model's network is a {type(network).__name__}")
    if speedups.compile_backend == "cudagraphs" and getattr(device_of(network), "type", "cpu") != "cuda":
        problems["compile_backend"] = "the cudagraphs backend needs a CUDA device; use inductor"
    return problems


@contextlib.contextmanager
def speedups_applied(network: Any, speedups: Speedups) -> Iterator[Any]:
    """Inside the block, the network to call (compiled, when asked) with the speed-ups in place; afterwards the
    shared network is as it was: its attention processors and the memory format of its weights restored."""
    if not speedups.any:
        yield network
        return
    problems = unsupported(network, speedups)
    if problems:
        raise ValueError("; ".join(problems.values()))
    processors = network.attn_processors if speedups.attention_slicing != "off" else None
    try:
        if processors is not None:
            network.set_attention_slice(speedups.attention_slicing)
        if speedups.channels_last:
            network.to(memory_format=torch.channels_last)
        with contextlib.ExitStack() as stack:
            if speedups.compute_dtype != "default":
                stack.enter_context(computing_in(network, COMPUTE_DTYPES[speedups.compute_dtype]))
            # A fresh torch.compile wrapper is cheap: torch keeps the compiled code with the network's `forward`
            # and reuses it while its guards hold (same network, input shapes, dtypes), recompiling when they change.
            yield (network if speedups.compile_backend == "off"
                   else torch.compile(network, backend=speedups.compile_backend))
    finally:
        if speedups.channels_last:
            network.to(memory_format=torch.contiguous_format)
        if processors is not None:
            network.set_attn_processor(processors)


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """Every floating-point tensor in `value` (nested in tuples, lists and dicts) as `dtype`."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(item, dtype) for item in value)
    if isinstance(value, dict):
        for key in list(value):
            value[key] = _cast(value[key], dtype)
    return value


@contextlib.contextmanager
def computing_in(network: torch.nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Inside the block the network computes in `dtype`, as ComfyUI's compute-dtype override runs a model: its
    floating-point weights and buffers are `dtype` copies (the originals are put back afterwards, untouched, so
    the shared network is bit for bit what it was), its floating-point inputs are cast to `dtype` on the way in
    (except the timestep, which the networks embed in float32) and its outputs back to its own dtype, so callers
    that prepare inputs in the network's dtype work unchanged. Costs a copy of the weights while it lasts."""
    own_dtype = next(network.parameters()).dtype
    if dtype == own_dtype:
        yield
        return
    originals = []

    def inputs_cast(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        kept = {key: value for key, value in kwargs.items() if key in _UNCAST_INPUTS}
        cast = {key: _cast(value, dtype) for key, value in kwargs.items() if key not in _UNCAST_INPUTS}
        return _cast(args, dtype), {**cast, **kept}

    def output_cast(module: Any, args: tuple, output: Any) -> Any:
        return _cast(output, own_dtype)

    handles = []
    try:
        for tensor in [*network.parameters(), *network.buffers()]:
            if tensor.is_floating_point():
                originals.append((tensor, tensor.data))
                tensor.data = tensor.data.to(dtype)
        handles = [network.register_forward_pre_hook(inputs_cast, with_kwargs=True),
                   network.register_forward_hook(output_cast)]
        yield
    finally:
        for handle in handles:
            handle.remove()
        for tensor, data in originals:
            tensor.data = data
