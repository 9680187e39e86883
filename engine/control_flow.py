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
        self.override_display_id: str | None = None

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

    def set_override_display_id(self, display_id: str) -> None:
        """Report this expanded node's progress and UI under `display_id` instead of the expanding node (ComfyUI's
        loops show each iteration's copy of a node on the original node)."""
        self.override_display_id = display_id

    def serialize(self) -> dict[str, Any]:
        """This node's API-format entry; it shares `inputs` (see `GraphBuilder.finalize`)."""
        entry: dict[str, Any] = {"class_type": self.class_type, "inputs": self.inputs}
        if self.override_display_id is not None:
            entry["override_display_id"] = self.override_display_id
        return entry


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
        """The graph in API format. Each entry shares its node's `inputs` dict, as ComfyUI's does: callers (ComfyUI's
        own test client among them) set an input on the node after finalizing and send the finalized graph."""
        return {node.id: node.serialize() for node in self.nodes.values()}


class NodeNotFoundError(KeyError):
    """`DynamicPrompt.get_node` was asked for a node the prompt does not have."""


class DynamicPrompt:
    """The `DYNPROMPT` hidden input: the running prompt as it grows with expansions, with ComfyUI's methods
    (`get_node`, `has_node`, `all_node_ids`, `get_original_prompt`, and for an expanded node its parent, the
    prompt node it comes from and the node it is displayed on). Loop nodes read it to copy their loop body.

    It reads the executor's live tables, so it always shows the run's current graph."""

    def __init__(self, original: dict[str, Any], current: dict[str, Any], parents: dict[str, str],
                 display: dict[str, str]) -> None:
        self._original = original
        self._current = current
        self._parents = parents
        self._display = display

    def get_node(self, node_id: str) -> dict[str, Any]:
        try:
            return self._current[node_id]
        except KeyError:
            raise NodeNotFoundError(f"Node {node_id} not found") from None

    def has_node(self, node_id: str) -> bool:
        return node_id in self._current

    def all_node_ids(self) -> set[str]:
        return set(self._current)

    def get_original_prompt(self) -> dict[str, Any]:
        return self._original

    def get_parent_node_id(self, node_id: str) -> str | None:
        """The node whose expansion created `node_id`; None for the prompt's own nodes."""
        return self._parents.get(node_id)

    def get_real_node_id(self, node_id: str) -> str:
        """The prompt's own node that `node_id` was (through any number of expansions) made from."""
        while node_id in self._parents:
            node_id = self._parents[node_id]
        return node_id

    def get_display_node_id(self, node_id: str) -> str:
        return self._display.get(node_id, node_id)
