"""Reading a node class's declared inputs and outputs (the ComfyUI node-class contract) in one place.

Validation, the editor-format converter, the executor and the catalogue all read specs through here, so
the rules for widgets, link types, `*` and comma-separated unions live once. Knows nothing of diffusion.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
ANY_TYPE = "*"
SECTIONS = ("required", "optional", "hidden")


@dataclass(frozen=True)
class InputSpec:
    name: str
    section: str  # "required", "optional" or "hidden"
    type: str  # "INT", "COMBO" for a list of choices, or a link type such as "MODEL"
    options: dict[str, Any] = field(default_factory=dict)
    choices: tuple[Any, ...] | None = None

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES

    @property
    def is_required(self) -> bool:
        return self.section == "required"

    @property
    def is_lazy(self) -> bool:
        return bool(self.options.get("lazy", False))

    @property
    def has_control_after_generate(self) -> bool:
        """Whether the editor stores an extra "fixed/randomize/..." value after this widget."""
        if "control_after_generate" in self.options:
            return bool(self.options["control_after_generate"])
        return self.type == "INT" and self.name in ("seed", "noise_seed")


def _parse_one(name: str, section: str, raw: Any) -> InputSpec:
    if isinstance(raw, str):
        raw = (raw,)
    if not isinstance(raw, (tuple, list)) or not raw:
        raise TypeError(f"input {name!r}: spec must be a (TYPE, options) tuple, got {raw!r}")
    kind = raw[0]
    options = dict(raw[1]) if len(raw) > 1 and isinstance(raw[1], dict) else {}
    if isinstance(kind, (list, tuple)):
        return InputSpec(name, section, "COMBO", options, tuple(kind))
    if kind == "COMBO":
        return InputSpec(name, section, "COMBO", options, tuple(options.get("options", ())))
    # a str subclass is kept as declared: its own __ne__ may widen what connects to it (`types_compatible`)
    return InputSpec(name, section, kind if isinstance(kind, str) else str(kind), options)


def input_specs(node_class: type, live_inputs: dict[str, Any] | None = None) -> dict[str, InputSpec]:
    """All inputs of a node class, in declaration order (required, optional, hidden).

    A node whose inputs depend on its own values (ComfyUI's dynamic inputs: a combo that brings its own widgets, a
    growing list of sockets) answers `LIVE_INPUT_TYPES(live_inputs)`: its INPUT_TYPES for one prompt node's
    inputs. Given that node's `live_inputs`, those are its specs; without them, the declared ones.
    """
    live_types = getattr(node_class, "LIVE_INPUT_TYPES", None)
    declared = live_types(live_inputs) if live_types is not None and live_inputs is not None else \
        node_class.INPUT_TYPES()
    specs: dict[str, InputSpec] = {}
    for section in SECTIONS:
        section_inputs = declared.get(section) or {}
        for name, raw in section_inputs.items():
            specs.setdefault(name, _parse_one(name, section, raw))
    return specs


def return_types(node_class: type) -> tuple[str, ...]:
    types = getattr(node_class, "RETURN_TYPES", ())
    # a str subclass is kept as declared: its own __ne__ may widen what it connects to (`types_compatible`)
    return tuple("COMBO" if isinstance(t, (list, tuple)) else t if isinstance(t, str) else str(t) for t in types)


def return_names(node_class: type) -> tuple[str, ...]:
    names = getattr(node_class, "RETURN_NAMES", None)
    return tuple(names) if names else return_types(node_class)


def output_is_list(node_class: type) -> tuple[bool, ...]:
    flags = getattr(node_class, "OUTPUT_IS_LIST", None)
    count = len(return_types(node_class))
    if not flags:
        return (False,) * count
    return tuple(bool(f) for f in flags) + (False,) * (count - len(flags))


def is_output_node(node_class: type) -> bool:
    return bool(getattr(node_class, "OUTPUT_NODE", False))


def _type_set(type_name: str) -> set[str]:
    return {part.strip() for part in type_name.split(",") if part.strip()}


def types_compatible(output_type: str, input_type: str) -> bool:
    """Whether an output of `output_type` may feed an input of `input_type`.

    `*` matches anything; "A,B" is a union and matches when the two sides share a member. A type name that is a
    str subclass overriding `__ne__` decides itself first (ComfyUI's rule, which packs' "any type" classes rely on).
    """
    if not output_type != input_type:
        return True
    if output_type == ANY_TYPE or input_type == ANY_TYPE:
        return True
    outputs, inputs = _type_set(output_type), _type_set(input_type)
    if ANY_TYPE in outputs or ANY_TYPE in inputs:
        return True
    return bool(outputs & inputs)


def constant_value(value: Any) -> Any:
    """Unwrap `{"__value__": v}`, the editor's way of sending a list constant that must not read as a link."""
    if isinstance(value, dict) and set(value) == {"__value__"}:
        return value["__value__"]
    return value


def is_link(value: Any) -> bool:
    """Whether an API-format input value is a link `["<node id>", output_index]` rather than a constant."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and isinstance(value[0], (str, int))
        and not isinstance(value[0], bool)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )
