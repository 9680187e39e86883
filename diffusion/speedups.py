"""Optional speed-ups of the denoising network that a user switches on per model: `torch.compile`, channels-last
memory format and attention slicing (diffusers' `set_attention_slice`, which trades speed for peak memory).

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


@dataclass(frozen=True)
class Speedups:
    """What to switch on for a model's network: a `torch.compile` backend ("off" for none), channels-last
    memory format, and attention slicing ("off", "auto": half the heads at a time, "max": one at a time)."""

    compile_backend: str = "off"
    channels_last: bool = False
    attention_slicing: str = "off"

    def __post_init__(self) -> None:
        if self.compile_backend not in COMPILE_BACKENDS:
            raise ValueError(f"compile backend {self.compile_backend!r} is not one of {', '.join(COMPILE_BACKENDS)}")
        if self.attention_slicing not in ATTENTION_SLICING:
            raise ValueError(f"attention slicing {self.attention_slicing!r} is not one of "
                             f"{', '.join(ATTENTION_SLICING)}")

    @property
    def any(self) -> bool:
        return self.compile_backend != "off" or self.channels_last or self.attention_slicing != "off"


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
        # A fresh torch.compile wrapper is cheap: torch keeps the compiled code with the network's `forward` and
        # reuses it while its guards hold (same network, input shapes, dtypes), recompiling when they change.
        yield network if speedups.compile_backend == "off" else torch.compile(network, backend=speedups.compile_backend)
    finally:
        if speedups.channels_last:
            network.to(memory_format=torch.contiguous_format)
        if processors is not None:
            network.set_attn_processor(processors)
