"""Small test-only nodes that exercise every part of the node contract; no diffusion.

Each call is recorded in `CALLS` (cleared by the `calls` fixture) so tests can count executions.
"""
from __future__ import annotations

import asyncio
import threading
import time

from engine.control_flow import ExecutionBlocker, GraphBuilder
from engine.progress import ProgressBar
from engine.registry import NodeRegistry

CALLS: list[str] = []


class Const:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"
    DESCRIPTION = "An integer constant."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -1000, "max": 1000, "tooltip": "the number"})}}

    def run(self, value):
        CALLS.append(f"Const:{value}")
        return (value,)


class Add:
    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("sum",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"default": 0}), "b": ("INT", {"default": 0})}}

    def run(self, a, b):
        CALLS.append(f"Add:{a}+{b}")
        return (a + b,)


class Text:
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "", "multiline": True}),
                             "mode": (["upper", "lower", "keep"],)},
                "optional": {"enabled": ("BOOLEAN", {"default": True}),
                             "scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.1})}}

    def run(self, text, mode, enabled=True, scale=1.0):
        CALLS.append(f"Text:{text}")
        return ({"upper": text.upper(), "lower": text.lower(), "keep": text}[mode],)


class Output:
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)}}

    def run(self, value):
        CALLS.append(f"Output:{value}")
        return {"ui": {"values": [value]}}


class IntOutput(Output):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}


class Fail:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    def run(self, value):
        CALLS.append("Fail")
        raise ValueError(f"cannot handle {value}")


class Switch:
    RETURN_TYPES = ("*",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"condition": ("BOOLEAN", {"default": True}),
                             "on_true": ("*", {"lazy": True}),
                             "on_false": ("*", {"lazy": True})}}

    def check_lazy_status(self, condition, on_true=None, on_false=None):
        return ["on_true"] if condition else ["on_false"]

    def run(self, condition, on_true=None, on_false=None):
        CALLS.append(f"Switch:{condition}")
        return (on_true if condition else on_false,)


class Range:
    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"count": ("INT", {"default": 3, "min": 0})}}

    def run(self, count):
        CALLS.append(f"Range:{count}")
        return (list(range(count)),)


class Sum:
    RETURN_TYPES = ("INT",)
    INPUT_IS_LIST = True
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("INT",)}}

    def run(self, values):
        CALLS.append(f"Sum:{values}")
        return (sum(values),)


class Slow:
    """Reports progress for each step; `started` lets a test wait until it runs."""

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"
    started = threading.Event()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "steps": ("INT", {"default": 5, "min": 1}),
                             "delay": ("FLOAT", {"default": 0.0, "min": 0.0})}}

    def run(self, value, steps, delay):
        CALLS.append(f"Slow:{value}")
        Slow.started.set()
        bar = ProgressBar(steps)
        for _ in range(steps):
            time.sleep(delay)
            bar.update(1)
        return (value,)


class Previewing:
    """Reports progress with a small PIL image as the preview, like a sampler's latent preview."""

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "steps": ("INT", {"default": 2, "min": 1})}}

    def run(self, value, steps):
        from PIL import Image

        bar = ProgressBar(steps)
        for step in range(steps):
            bar.update_absolute(step + 1, steps, preview=Image.new("RGB", (16, 16), (step * 40 % 256, 0, 0)))
        return (value,)


class AsyncDouble:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    async def run(self, value):
        await asyncio.sleep(0.001)
        CALLS.append(f"AsyncDouble:{value}")
        return (value * 2,)


class Gate:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "open": ("BOOLEAN", {"default": True}),
                             "message": ("STRING", {"default": ""})}}

    def run(self, value, open, message):
        CALLS.append(f"Gate:{open}")
        return (value,) if open else (ExecutionBlocker(message or None),)


class CountDown:
    """Sums n + (n-1) + ... + 1 by expanding into an Add node and another CountDown: a loop."""

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"n": ("INT", {"min": 0}), "total": ("INT", {"default": 0})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, n, total, unique_id):
        CALLS.append(f"CountDown:{n}")
        if n == 0:
            return (total,)
        graph = GraphBuilder(prefix=unique_id)
        added = graph.node("Add", a=total, b=n)
        following = graph.node("CountDown", n=n - 1, total=added.out(0))
        return {"result": (following.out(0),), "expand": graph.finalize()}


class Positive:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "label": ("STRING", {"default": ""})}}

    @classmethod
    def VALIDATE_INPUTS(cls, value):
        return True if value > 0 else f"value must be positive, got {value}"

    def run(self, value, label):
        return (value,)


class Volatile:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    @classmethod
    def IS_CHANGED(cls, value):
        return float("nan")

    def run(self, value):
        CALLS.append("Volatile")
        return (value,)


class Hidden:
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT,FLOAT",)},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"}}

    def run(self, value, prompt, extra_pnginfo, unique_id):
        return {"ui": {"seen": [{"value": value, "unique_id": unique_id, "nodes": sorted(prompt),
                                 "extra": extra_pnginfo}]}}


class Unique:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"
    NOT_IDEMPOTENT = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    def run(self, value):
        CALLS.append("Unique")
        return (value,)


class FloatConst:
    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("FLOAT", {"default": 0.5})}}

    def run(self, value):
        return (value,)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    Const, Add, Text, Output, IntOutput, Fail, Switch, Range, Sum, Slow, Previewing, AsyncDouble, Gate, CountDown,
    Positive, Volatile, Hidden, Unique, FloatConst)}


def make_registry() -> NodeRegistry:
    registry = NodeRegistry()
    registry.register_mappings(NODE_CLASS_MAPPINGS, {"Const": "Integer constant"}, source="tests")
    return registry
