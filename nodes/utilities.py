"""Utility nodes with ComfyUI's names and inputs: primitives (a constant INT, FLOAT, STRING or BOOLEAN to wire
into other nodes), the lazy If/Else switch, the math expression, Preview Any and the Resolution Selector.

ComfyUI declares some of these with its newer schema, which has inputs that grow in the editor ("autogrow"): the
math expression's values arrive as `values.a`, `values.b`, ... in API prompts and editor files. Here each of the
26 possible names is an optional input, so both formats validate and run unchanged. The expression itself is
evaluated by `nodes.expression` (a whitelist over `ast`, never `eval`). Knows nothing of models, HTTP or the
executor.
"""
from __future__ import annotations

import json
import math
import string
import sys
from typing import Any, Mapping

from nodes import expression as expressions

PRIMITIVE = "utils/primitive"
ANY = "*"
VALUE_NAMES = tuple(string.ascii_lowercase)  # the names a math expression's inputs can take
NUMBER_TYPES = "FLOAT,INT,BOOLEAN"


class PrimitiveInt:
    DESCRIPTION = "A whole number to wire into other nodes' INT inputs."
    CATEGORY = PRIMITIVE
    RETURN_TYPES = ("INT",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {"min": -sys.maxsize, "max": sys.maxsize,
                                               "control_after_generate": True, "tooltip": "The number."})}}

    def execute(self, value: int) -> tuple[int]:
        return (value,)


class PrimitiveFloat:
    DESCRIPTION = "A number to wire into other nodes' FLOAT inputs."
    CATEGORY = PRIMITIVE
    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("FLOAT", {"min": -sys.maxsize, "max": sys.maxsize,
                                                 "tooltip": "The number."})}}

    def execute(self, value: float) -> tuple[float]:
        return (value,)


class PrimitiveString:
    DESCRIPTION = "A line of text to wire into other nodes' STRING inputs."
    CATEGORY = PRIMITIVE
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("STRING", {"tooltip": "The text."})}}

    def execute(self, value: str) -> tuple[str]:
        return (value,)


class PrimitiveStringMultiline:
    DESCRIPTION = "Text of several lines to wire into other nodes' STRING inputs."
    CATEGORY = PRIMITIVE
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("STRING", {"multiline": True, "tooltip": "The text."})}}

    def execute(self, value: str) -> tuple[str]:
        return (value,)


class PrimitiveBoolean:
    DESCRIPTION = "True or false, to wire into other nodes' BOOLEAN inputs (a switch, an option)."
    CATEGORY = PRIMITIVE
    RETURN_TYPES = ("BOOLEAN",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("BOOLEAN", {"tooltip": "The value."})}}

    def execute(self, value: bool) -> tuple[bool]:
        return (value,)


class ComfySwitchNode:
    DESCRIPTION = ("Passes on one of two inputs: on_true when switch is on, on_false when it is off. Only the chosen "
                   "branch runs; the other is never computed. An unconnected chosen input gives None.")
    CATEGORY = "utilities/logic"
    EXPERIMENTAL = True
    RETURN_TYPES = (ANY,)
    RETURN_NAMES = ("output",)
    OUTPUT_TOOLTIPS = ("The chosen input's value.",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"switch": ("BOOLEAN", {"tooltip": "On: pass on on_true. Off: pass on on_false."})},
            "optional": {
                "on_false": (ANY, {"lazy": True, "tooltip": "The value passed on when switch is off."}),
                "on_true": (ANY, {"lazy": True, "tooltip": "The value passed on when switch is on."}),
            },
        }

    @classmethod
    def OUTPUT_FACTS(cls, input_facts: Mapping[str, Any], switch: bool | None = None,
                     **constants: Any) -> tuple[Mapping[str, Any] | None]:
        """The chosen input's facts; with a linked switch, the facts both inputs share (else unknown)."""
        if switch is None:
            same = input_facts.get("on_true") == input_facts.get("on_false")
            return (input_facts.get("on_true") if same else None,)
        return (input_facts.get("on_true" if switch else "on_false"),)

    def check_lazy_status(self, switch: bool, **branches: Any) -> list[str]:
        """The chosen branch, if it is connected and not computed yet (unconnected ones are absent)."""
        chosen = "on_true" if switch else "on_false"
        return [chosen] if chosen in branches and branches[chosen] is None else []

    def execute(self, switch: bool, **branches: Any) -> tuple[Any]:
        return (branches.get("on_true" if switch else "on_false"),)


class ComfyMathExpression:
    DESCRIPTION = ("Evaluates a math formula over the connected values a, b, c, ... (`values` is all of them in "
                   "order): + - * / // % **, comparisons, and/or/not, `x if c else y`, and sum, min, max, abs, "
                   "round, pow, sqrt, ceil, floor, log, log2, log10, sin, cos, tan, int, float. The result comes "
                   "out as a FLOAT, an INT (truncated) and a BOOL.")
    CATEGORY = "utilities"
    RETURN_TYPES = ("FLOAT", "INT", "BOOLEAN")
    RETURN_NAMES = ("FLOAT", "INT", "BOOL")
    OUTPUT_TOOLTIPS = ("The result.", "The result truncated toward zero.", "Whether the result is not zero.")
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        values = {f"values.{name}": (NUMBER_TYPES, {"tooltip": f"The value named {name} in the expression."})
                  for name in VALUE_NAMES}
        return {
            "required": {"expression": ("STRING", {"default": "a + b", "multiline": True, "tooltip": (
                "The formula, in Python syntax, over the connected values by name (a, b, ...) and `values`.")})},
            "optional": values,
        }

    def execute(self, expression: str, **inputs: Any) -> tuple[float, int, bool]:
        if not expression.strip():
            raise ValueError("expression: the expression cannot be empty")
        shown = repr(expression if len(expression) <= 80 else expression[:77] + "...")
        values = {name: inputs[f"values.{name}"] for name in VALUE_NAMES
                  if inputs.get(f"values.{name}") is not None}
        try:
            result = expressions.evaluate(expression, {**values, "values": list(values.values())})
        except expressions.ExpressionError as error:
            raise ValueError(f"expression: {shown}: {error}") from None
        if not isinstance(result, (int, float)):
            raise ValueError(f"expression: {shown} must give a number, got {type(result).__name__}: "
                             f"{preview_text(result)[:80]}")
        try:
            as_float = float(result)
        except OverflowError:
            raise ValueError(f"expression: {shown} gives a number too large for a FLOAT") from None
        if not math.isfinite(as_float):
            raise ValueError(f"expression: {shown} gives a non-finite result: {result}")
        return (as_float, int(result), bool(result))


def preview_text(value: Any) -> str:
    """How Preview Any shows a value: text as it is, numbers and booleans with str(), the rest as JSON if it can
    be, else str()."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return str(value)
    if value is None:
        return "None"
    try:
        return json.dumps(value)
    except Exception:  # anything json cannot write (tensors, models): fall back to str()
        pass
    try:
        return str(value)
    except Exception:
        return "source exists, but could not be serialized."


class PreviewAny:
    DESCRIPTION = "Shows any value as text on the node: text as it is, numbers as numbers, the rest as JSON."
    CATEGORY = "utils"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "main"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"source": (ANY, {"tooltip": "The value to show."})}}

    def main(self, source: Any = None) -> dict[str, Any]:
        return {"ui": {"text": [preview_text(source)]}}


# ResolutionSelector's aspect ratios, as ComfyUI names them: (width parts, height parts)
ASPECT_RATIOS = {"1:1 (Square)": (1, 1), "3:2 (Photo)": (3, 2), "4:3 (Standard)": (4, 3),
                 "16:9 (Widescreen)": (16, 9), "21:9 (Ultrawide)": (21, 9), "2:3 (Portrait Photo)": (2, 3),
                 "3:4 (Portrait Standard)": (3, 4), "9:16 (Portrait Widescreen)": (9, 16)}
MEGAPIXEL = 1024 * 1024  # the pixels ComfyUI counts as one megapixel


def selected_resolution(aspect_ratio: str, megapixels: float, multiple: int, minimum: int) -> tuple[int, int]:
    """(width, height) of about `megapixels` at `aspect_ratio`, each side rounded to `multiple`; when a side
    comes out under `minimum`, the smallest size at exactly the ratio whose sides are both multiples of
    `multiple` and at least `minimum` (ComfyUI's ResolutionSelector)."""
    across, down = ASPECT_RATIOS[aspect_ratio]
    unit = math.sqrt(megapixels * MEGAPIXEL / (across * down))  # pixels per ratio part
    width, height = (round(parts * unit / multiple) * multiple for parts in (across, down))
    if width >= minimum and height >= minimum:
        return width, height
    # sides `parts * scale` are multiples of `multiple` exactly when `scale` is a multiple of both steps
    steps = [multiple // math.gcd(parts, multiple) for parts in (across, down)]
    step = math.lcm(*steps)
    scale = math.ceil(math.ceil(max(minimum / across, minimum / down)) / step) * step
    return across * scale, down * scale


class ResolutionSelector:
    DESCRIPTION = ("Works out an image size from an aspect ratio and a number of megapixels, each side a multiple of "
                   "8 (or of `multiple`): for an empty latent's width and height without doing the arithmetic.")
    CATEGORY = "utilities"
    RETURN_TYPES = ("INT", "INT")
    RETURN_NAMES = ("width", "height")
    OUTPUT_TOOLTIPS = ("The width in pixels.", "The height in pixels.")
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "aspect_ratio": (list(ASPECT_RATIOS), {"default": "1:1 (Square)",
                                                   "tooltip": "The width-to-height ratio."}),
            "megapixels": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 16.0, "step": 0.1,
                                     "tooltip": "The image's pixels in megapixels (1.0: 1024x1024 for a square)."}),
            "multiple": ("INT", {"default": 8, "min": 8, "max": 128, "step": 4, "advanced": True,
                                 "tooltip": "Each side is rounded to a multiple of this."}),
            "minimum": ("INT", {"default": 256, "min": 32, "max": 4096, "step": 32, "advanced": True,
                                "tooltip": "The smallest side allowed: a smaller result grows, keeping the ratio."}),
        }}

    def execute(self, aspect_ratio: str, megapixels: float, multiple: int = 8, minimum: int = 256
                ) -> tuple[int, int]:
        return selected_resolution(aspect_ratio, megapixels, multiple, minimum)


NODE_CLASS_MAPPINGS: dict[str, type] = {node.__name__: node for node in (
    PrimitiveInt, PrimitiveFloat, PrimitiveString, PrimitiveStringMultiline, PrimitiveBoolean,
    ComfySwitchNode, ComfyMathExpression, PreviewAny, ResolutionSelector,
)}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "PrimitiveInt": "Int",
    "PrimitiveFloat": "Float",
    "PrimitiveString": "String",
    "PrimitiveStringMultiline": "String (Multiline)",
    "PrimitiveBoolean": "Boolean",
    "ComfySwitchNode": "If/Else Switch",
    "ComfyMathExpression": "Math Expression",
    "PreviewAny": "Preview Any",
    "ResolutionSelector": "Resolution Selector",
}
