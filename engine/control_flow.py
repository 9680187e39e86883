"""Values and helpers node authors use for control flow: execution blockers and expansion graphs.

Same names and behaviour as ComfyUI's `comfy_execution.graph.ExecutionBlocker` and
`comfy_execution.graph_utils.GraphBuilder`, so plugins that build loops and switches port directly.
"""
from __future__ import annotations

import itertools
from typing import Any


class ExecutionBlocker:
    """Returned in place of an output to stop every node downstream of it.

    With `message=None` the block is silent; with a message, the first node that receives it reports an
    execution error with that message and the rest of the prompt goes on.
    """

    def __init__(self, message: str | None) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"


class GraphNode:
    """One node of an expansion graph under construction."""

    def __init__(self, node_id: str, class_type: str, inputs: dict[str, Any]) -> None:
        self.id = node_id
        self.class_type = class_type
        self.inputs = dict(inputs)

    def out(self, index: int) -> list[Any]:
        """A link to this node's output `index`, usable as another node's input or as an expansion result."""
        return [self.id, index]

    def set_input(self, name: str, value: Any) -> None:
        if value is None:
            self.inputs.pop(name, None)
        else:
            self.inputs[name] = value

    def get_id(self) -> str:
        return self.id


class GraphBuilder:
    """Builds the `{"expand": ...}` graph a node returns; ids are prefixed so repeated expansions never clash.

    Pass the expanding node's `UNIQUE_ID` hidden input as `prefix`, so each expansion (and each loop
    iteration, which is itself an expanded node) gets ids of its own; without one, a process-wide counter
    makes the prefix unique.
    """

    _counter = itertools.count()

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = f"{prefix}." if prefix is not None else self.alloc_prefix()
        self.nodes: dict[str, GraphNode] = {}
        self._ids = itertools.count()

    @classmethod
    def alloc_prefix(cls) -> str:
        return f"expansion{next(cls._counter)}."

    def node(self, class_type: str, id: str | None = None, **inputs: Any) -> GraphNode:  # noqa: A002 (ComfyUI's name)
        full_id = self.prefix + (str(id) if id is not None else str(next(self._ids)))
        if full_id in self.nodes:
            return self.nodes[full_id]
        created = GraphNode(full_id, class_type, inputs)
        self.nodes[full_id] = created
        return created

    def lookup_node(self, id: str) -> GraphNode | None:  # noqa: A002
        return self.nodes.get(self.prefix + str(id))

    def remove_node(self, id: str) -> None:  # noqa: A002
        self.nodes.pop(self.prefix + str(id), None)

    def finalize(self) -> dict[str, dict[str, Any]]:
        return {node.id: {"class_type": node.class_type, "inputs": dict(node.inputs)} for node in self.nodes.values()}
