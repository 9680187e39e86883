"""Test-only nodes that misbehave the ways issue #16 is about: they exit, raise KeyboardInterrupt, run out of
memory, or ignore an interrupt. No diffusion; torch is imported only by the out-of-memory cases that need it."""
from __future__ import annotations

import sys
import threading

from engine.progress import report_progress
from engine.registry import NodeRegistry
from tests.engine.nodes_for_tests import make_registry

OUT_OF_MEMORY_WAYS = ("MemoryError", "torch.empty", "torch.OutOfMemoryError")


class Exit:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "code": ("INT", {"default": 3})}}

    def run(self, value, code):
        sys.exit(code)


class AsyncExit(Exit):
    async def run(self, value, code):
        sys.exit(code)


class RaiseKeyboardInterrupt:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    def run(self, value):
        raise KeyboardInterrupt


class OutOfMemory:
    """Runs out of memory without using any: `torch.empty` asks for 4 EiB, more than any address space."""

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "way": (list(OUT_OF_MEMORY_WAYS),)}}

    def run(self, value, way):
        if way == "MemoryError":
            raise MemoryError("no memory left for this test")
        import torch

        if way == "torch.empty":
            torch.empty(2 ** 62, dtype=torch.uint8)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 EiB")


def stubborn_node(reports_when_released: bool = True) -> type:
    """A new node class that ignores interrupts until its `release` event is set (a model call that never
    reports progress), then reports progress once, where an interrupt or its run's abandonment stops it, or
    (without `reports_when_released`) returns at once. Each class has events of its own, so tests share none."""

    class Stubborn:
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"
        CATEGORY = "test"
        started = threading.Event()
        release = threading.Event()
        stopped_at_report = threading.Event()
        returned = threading.Event()

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT",)}}

        def run(self, value):
            Stubborn.started.set()
            Stubborn.release.wait(30)
            if reports_when_released:
                try:
                    report_progress(1, 1)
                except BaseException:
                    Stubborn.stopped_at_report.set()
                    raise
            Stubborn.returned.set()
            return (value,)

    return Stubborn


def make_faulty_registry(stubborn: type | None = None) -> NodeRegistry:
    """The usual test nodes, these ones, and `stubborn` (a `stubborn_node()` class) as "Stubborn"."""
    registry = make_registry()
    mappings = {cls.__name__: cls for cls in (Exit, AsyncExit, RaiseKeyboardInterrupt, OutOfMemory)}
    if stubborn is not None:
        mappings["Stubborn"] = stubborn
    registry.register_mappings(mappings, {}, source="tests")
    return registry


def through(class_type: str, value: int = 1, **inputs) -> dict[str, dict]:
    """Const(value) -> `class_type` -> Output."""
    return {"1": {"class_type": "Const", "inputs": {"value": value}},
            "2": {"class_type": class_type, "inputs": {"value": ["1", 0], **inputs}},
            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
