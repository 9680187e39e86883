"""The node registry: class names to node classes, and the catalogue clients read (`/object_info` shape).

Built-in nodes and plugins register through the same `register_mappings` call. The first registration of
a name wins; later ones are recorded as collisions, never silently replace it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from engine import input_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Collision:
    class_type: str
    kept_source: str
    rejected_source: str


@dataclass(frozen=True)
class RegisteredNode:
    node_class: type
    display_name: str
    source: str  # "builtin" or the plugin's name; shown as python_module in the catalogue


class NodeRegistry:
    def __init__(self) -> None:
        self._nodes: dict[str, RegisteredNode] = {}
        self.collisions: list[Collision] = []

    def register(self, class_type: str, node_class: type, display_name: str | None = None,
                 source: str = "builtin") -> bool:
        """Add one node class; return False (and record a collision) if the name is taken."""
        existing = self._nodes.get(class_type)
        if existing is not None:
            collision = Collision(class_type, existing.source, source)
            self.collisions.append(collision)
            log.warning("node %r from %s ignored: already registered by %s", class_type, source, existing.source)
            return False
        self._nodes[class_type] = RegisteredNode(node_class, display_name or class_type, source)
        return True

    def register_mappings(self, class_mappings: Mapping[str, type],
                          display_names: Mapping[str, str] | None = None,
                          source: str = "builtin") -> list[str]:
        """Register a `NODE_CLASS_MAPPINGS` dict; return the names that were refused as collisions."""
        display_names = display_names or {}
        return [name for name, cls in class_mappings.items()
                if not self.register(name, cls, display_names.get(name), source)]

    def get(self, class_type: str) -> type | None:
        entry = self._nodes.get(class_type)
        return entry.node_class if entry else None

    def entry(self, class_type: str) -> RegisteredNode | None:
        return self._nodes.get(class_type)

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def node_info(self, class_type: str) -> dict[str, Any]:
        """One node's catalogue entry in the shape of ComfyUI's `/object_info/{class}`."""
        entry = self._nodes[class_type]
        cls = entry.node_class
        declared = cls.INPUT_TYPES()
        info: dict[str, Any] = {
            "input": {section: dict(declared[section]) for section in input_spec.SECTIONS if declared.get(section)},
            "input_order": {section: list(declared[section]) for section in input_spec.SECTIONS
                            if declared.get(section)},
            "output": [list(t) if isinstance(t, (list, tuple)) else t for t in getattr(cls, "RETURN_TYPES", ())],
            "output_is_list": list(input_spec.output_is_list(cls)),
            "output_name": list(input_spec.return_names(cls)),
            "name": class_type,
            "display_name": entry.display_name,
            "description": getattr(cls, "DESCRIPTION", "") or "",
            "python_module": entry.source,
            "category": getattr(cls, "CATEGORY", "sd"),
            "output_node": input_spec.is_output_node(cls),
        }
        tooltips = getattr(cls, "OUTPUT_TOOLTIPS", None)
        if tooltips:
            info["output_tooltips"] = list(tooltips)
        matchtypes = getattr(cls, "OUTPUT_MATCHTYPES", None)  # which outputs take their type from an input's
        if matchtypes:
            info["output_matchtypes"] = list(matchtypes)
        for flag in ("DEPRECATED", "EXPERIMENTAL"):
            if getattr(cls, flag, False):
                info[flag.lower()] = True
        return info

    def object_info(self) -> dict[str, dict[str, Any]]:
        """The whole catalogue; a node whose INPUT_TYPES raises is logged and left out, not fatal."""
        catalogue: dict[str, dict[str, Any]] = {}
        for class_type in self._nodes:
            try:
                catalogue[class_type] = self.node_info(class_type)
            except Exception:
                log.exception("could not describe node %r", class_type)
        return catalogue
