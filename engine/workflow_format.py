"""Converting ComfyUI editor workflows (LiteGraph JSON, "version": 0.4) into the executable API format.

The editor saves what the canvas shows: `nodes` with positional `widgets_values`, `links` between slots,
groups, notes, reroutes and subgraph definitions. The executor wants the API format, one entry per node
that runs: `{"<id>": {"class_type", "inputs": {name: constant | ["<id>", output_index]}, "_meta": {"title"}}}`.
This module is the one place that translates the first into the second, following what ComfyUI's own
front end does when it queues a prompt. It knows nothing of diffusion; it reads node classes only through
`engine.input_spec`, to learn the names and order of their widgets.

The rules:

* Widgets. `widgets_values` lists the values of a node's widget inputs in declaration order (required,
  then optional; inputs marked `forceInput` have no widget). The editor stores extra values that are not
  inputs: the "control after generate" mode after a seed-like widget (and, for a combo with that control,
  a filter string too), and in older files the value of the "upload" button that nodes with an
  `image_upload`-style option get after their required widgets. The layout that fits the stored values is
  chosen, so files from old and new editors both map correctly. A widget with no stored value gets its
  declared default (or a combo's first choice), as the editor would show it. `widgets_values` may also be
  a name -> value dict. List values are wrapped as `{"__value__": [...]}` so they cannot be read as links.
  Node types the registry does not know keep only what their links give them.
* Links, as `[id, origin_id, origin_slot, target_id, target_slot, type]` or as objects with those names,
  are followed from each input's `link` id and become `["<origin id>", origin_slot]`.
* Editor-only nodes (types the registry does not define): `Reroute` passes its input through;
  `PrimitiveNode` gives its value as a constant to every input it feeds; KJNodes' `GetNode` reads the input
  of the `SetNode` with the same name; notes, labels and group switches are dropped.
* Muted nodes (mode 2) are left out, and so is any input linked to them, widget value included.
* Bypassed nodes (mode 4) are left out; an input linked to one is fed from the bypassed node's input that
  matches the wanted type (the same slot index first, then an exact type, then any compatible type),
  through chains of bypassed nodes. With no match the input is left unlinked.
* Subgraphs (`definitions.subgraphs`): a node whose type is a subgraph id is expanded into the
  subgraph's nodes, with ids "<instance id>:<inner id>" (nested: "1:2:3"). Links from the subgraph's input
  node (id -10) continue outside through the instance's inputs; links into its output node (id -20) are
  what the instance's outputs give. An instance input that is not connected but feeds widgets inside gives
  them the value stored in the instance's own `widgets_values`.

Everything that cannot be made sense of raises `WorkflowFormatError` naming the editor node.
Validation of the result (types, missing inputs, unknown classes) is not done here.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Union

from engine.input_spec import InputSpec, input_specs, types_compatible
from engine.registry import NodeRegistry

MODE_MUTED = 2
MODE_BYPASSED = 4

SUBGRAPH_INPUT_NODE = "-10"  # links into the subgraph output node (-20) are read from its outputs' linkIds

PASS_THROUGH_NODES = frozenset({"Reroute", "Reroute (rgthree)", "SetNode"})
CONSTANT_NODES = frozenset({"PrimitiveNode"})
NAMED_GETTER_NODES = {"GetNode": "SetNode"}
ANNOTATION_NODES = frozenset({
    "Note", "MarkdownNote", "Label (rgthree)", "Bookmark (rgthree)",
    "Fast Groups Muter (rgthree)", "Fast Groups Bypasser (rgthree)", "Fast Muter (rgthree)",
    "Fast Bypasser (rgthree)",
})
VIRTUAL_NODES = PASS_THROUGH_NODES | CONSTANT_NODES | frozenset(NAMED_GETTER_NODES) | ANNOTATION_NODES
LEGACY_GROUP_NODE_PREFIXES = ("workflow>", "workflow/")

CONTROL_MODES = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap"})
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
EDITOR_KEYS = ("nodes", "links", "groups", "definitions", "last_node_id", "last_link_id", "version")


class WorkflowFormatError(ValueError):
    """The editor workflow is malformed; the message names the editor node and what is wrong."""


# ---------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------

def is_editor_format(workflow: dict) -> bool:
    """Whether `workflow` looks like an editor (LiteGraph) file rather than an API-format prompt."""
    if not isinstance(workflow, dict):
        return False
    return any(key in workflow and not _is_api_node(workflow[key]) for key in EDITOR_KEYS)


def editor_to_api(workflow: dict, registry: NodeRegistry) -> dict:
    """Convert an editor workflow into the API format (see the module docstring for the rules)."""
    if not isinstance(workflow, dict):
        raise WorkflowFormatError(f"a workflow must be a JSON object, got {type(workflow).__name__}")
    if "nodes" not in workflow:
        raise WorkflowFormatError("the editor workflow has no 'nodes' list")
    subgraphs = _parse_subgraph_definitions(workflow)
    root = _Scope(_parse_nodes(workflow["nodes"], ""), _parse_links(workflow.get("links"), ""))
    converter = _Converter(registry, subgraphs)
    converter.emit_scope(root)
    return converter.finish()


def to_api_format(workflow: dict, registry: NodeRegistry) -> dict:
    """Accept either format: editor files are converted, API prompts are returned as a deep copy."""
    if not isinstance(workflow, dict):
        raise WorkflowFormatError(f"a workflow must be a JSON object, got {type(workflow).__name__}")
    if is_editor_format(workflow):
        return editor_to_api(workflow, registry)
    return copy.deepcopy(workflow)


def _is_api_node(value: Any) -> bool:
    return isinstance(value, dict) and "class_type" in value


# ---------------------------------------------------------------------------------------------------------
# The parsed editor graph
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Input:
    name: str  # the API input name: the widget's name for a widget socket
    type: Any
    link: str | None
    is_widget: bool


@dataclass(frozen=True)
class _Node:
    id: str
    type: str
    mode: int
    title: str | None
    inputs: tuple[_Input, ...]
    output_types: tuple[Any, ...]
    widgets_values: Any

    def input_index(self, name: str) -> int | None:
        return next((i for i, slot in enumerate(self.inputs) if slot.name == name), None)

    def input_with_link(self, link_id: str) -> _Input | None:
        return next((slot for slot in self.inputs if slot.link == link_id), None)


@dataclass(frozen=True)
class _Link:
    id: str
    origin: str
    origin_slot: int
    target: str


@dataclass(frozen=True)
class _Subgraph:
    id: str
    name: str
    nodes: dict[str, _Node]
    links: dict[str, _Link]
    inputs: tuple[dict, ...]
    outputs: tuple[dict, ...]


@dataclass(frozen=True)
class _Scope:
    """One graph level: the root, or the inside of one subgraph instance."""
    nodes: dict[str, _Node]
    links: dict[str, _Link]
    path: tuple[str, ...] = ()  # ids of the instances that enclose this level
    parent: _Scope | None = None
    instance: _Node | None = None  # the node in `parent` this level expands
    subgraph: _Subgraph | None = None

    def exec_id(self, node_id: str) -> str:
        return ":".join(self.path + (node_id,))

    def enclosing_subgraph_ids(self) -> set[str]:
        scope: _Scope | None = self
        ids = set()
        while scope is not None and scope.subgraph is not None:
            ids.add(scope.subgraph.id)
            scope = scope.parent
        return ids


# `where` prefixes parse errors: "" for the root graph, "subgraph 'Name' (id): " inside a definition.

def _parse_nodes(raw_nodes: Any, where: str) -> dict[str, _Node]:
    if not isinstance(raw_nodes, list):
        raise WorkflowFormatError(f"{where}'nodes' must be a list, got {type(raw_nodes).__name__}")
    nodes: dict[str, _Node] = {}
    for position, raw in enumerate(raw_nodes):
        node = _parse_node(raw, position, where)
        if node.id in nodes:
            raise WorkflowFormatError(f"{where}node id {node.id} is used twice")
        nodes[node.id] = node
    return nodes


def _parse_node(raw: Any, position: int, where: str) -> _Node:
    if not isinstance(raw, dict):
        raise WorkflowFormatError(f"{where}nodes[{position}] is not an object")
    if raw.get("id") is None:
        raise WorkflowFormatError(f"{where}nodes[{position}] has no 'id'")
    node_type = raw.get("type")
    if not isinstance(node_type, str) or not node_type:
        raise WorkflowFormatError(f"{where}node {raw['id']} has no 'type'")
    where = f"{where}node {raw['id']} ({node_type}): "
    inputs = raw.get("inputs") or []
    outputs = raw.get("outputs") or []
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise WorkflowFormatError(f"{where}'inputs' and 'outputs' must be lists")
    return _Node(
        id=str(raw["id"]),
        type=node_type,
        mode=_parse_mode(raw.get("mode"), where),
        title=raw.get("title"),
        inputs=tuple(_parse_input(slot, where) for slot in inputs),
        output_types=tuple(slot.get("type") if isinstance(slot, dict) else None for slot in outputs),
        widgets_values=raw.get("widgets_values"),
    )


def _parse_mode(raw: Any, where: str) -> int:
    if raw is None:
        return 0
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise WorkflowFormatError(f"{where}'mode' must be a number, got {raw!r}")
    return raw


def _parse_input(raw: Any, where: str) -> _Input:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise WorkflowFormatError(f"{where}input {raw!r} has no name")
    widget = raw.get("widget")
    widget_name = widget.get("name") if isinstance(widget, dict) else None
    link = raw.get("link")
    return _Input(
        name=widget_name or raw["name"],
        type=raw.get("type"),
        link=None if link is None else str(link),
        is_widget=widget_name is not None,
    )


def _parse_links(raw_links: Any, where: str) -> dict[str, _Link]:
    if raw_links is None:
        return {}
    if not isinstance(raw_links, list):
        raise WorkflowFormatError(f"{where}'links' must be a list, got {type(raw_links).__name__}")
    links = {}
    for position, raw in enumerate(raw_links):
        if raw is None:  # LiteGraph leaves holes where links were deleted
            continue
        link = _parse_link(raw, f"{where}links[{position}]")
        links[link.id] = link
    return links


def _parse_link(raw: Any, where: str) -> _Link:
    if isinstance(raw, list) and len(raw) >= 5:
        link_id, origin, origin_slot, target = raw[:4]
    elif isinstance(raw, dict):
        link_id, origin, origin_slot, target = (raw.get(key)
                                                for key in ("id", "origin_id", "origin_slot", "target_id"))
    else:
        raise WorkflowFormatError(f"{where} must be [id, from_node, from_slot, to_node, to_slot, type] "
                                  f"or an object, got {raw!r}")
    if link_id is None or origin is None or target is None or not _is_slot_index(origin_slot):
        raise WorkflowFormatError(f"{where} is incomplete: {raw!r}")
    return _Link(str(link_id), str(origin), origin_slot, str(target))


def _is_slot_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_subgraph_definitions(workflow: dict) -> dict[str, _Subgraph]:
    """All subgraph definitions, including those nested inside other definitions, by id."""
    subgraphs: dict[str, _Subgraph] = {}
    pending = list(_definition_list(workflow, ""))
    while pending:
        raw = pending.pop(0)
        if not isinstance(raw, dict) or not raw.get("id"):
            raise WorkflowFormatError(f"a subgraph definition has no 'id': {str(raw)[:80]}")
        where = f"subgraph '{raw.get('name', '')}' ({raw['id']}): "
        subgraphs[str(raw["id"])] = _Subgraph(
            id=str(raw["id"]),
            name=str(raw.get("name", "")),
            nodes=_parse_nodes(raw.get("nodes", []), where),
            links=_parse_links(raw.get("links"), where),
            inputs=_io_slots(raw.get("inputs"), where),
            outputs=_io_slots(raw.get("outputs"), where),
        )
        pending.extend(_definition_list(raw, where))
    return subgraphs


def _definition_list(container: dict, where: str) -> list:
    definitions = container.get("definitions") or {}
    if not isinstance(definitions, dict) or not isinstance(definitions.get("subgraphs", []), list):
        raise WorkflowFormatError(f"{where}'definitions.subgraphs' must be a list")
    return definitions.get("subgraphs", [])


def _io_slots(raw: Any, where: str) -> tuple[dict, ...]:
    slots = raw or []
    if not isinstance(slots, list) or not all(isinstance(slot, dict) for slot in slots):
        raise WorkflowFormatError(f"{where}subgraph 'inputs' and 'outputs' must be lists of objects")
    return tuple(slots)


# ---------------------------------------------------------------------------------------------------------
# Following links to where a value really comes from
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Output:
    """A real node's output: becomes a link in the API format."""
    node_id: str
    slot: int


@dataclass(frozen=True)
class _Constant:
    """A value given by an editor-only node or a promoted subgraph widget."""
    value: Any


_Source = Union[_Output, _Constant, None]  # None: nothing feeds the input


@dataclass
class _Converter:
    registry: NodeRegistry
    subgraphs: dict[str, _Subgraph]
    output: dict[str, dict] = field(default_factory=dict)

    # -- emitting nodes ---------------------------------------------------------------------------------

    def emit_scope(self, scope: _Scope) -> None:
        for node in scope.nodes.values():
            if node.mode in (MODE_MUTED, MODE_BYPASSED):
                continue
            if node.type in self.subgraphs:
                self.emit_scope(self._inner_scope(scope, node))
            elif not self._is_virtual(node):
                self._emit_node(scope, node)

    def _emit_node(self, scope: _Scope, node: _Node) -> None:
        node_id = scope.exec_id(node.id)
        if node.type.startswith(LEGACY_GROUP_NODE_PREFIXES) and node.type not in self.registry:
            raise WorkflowFormatError(f"node {node_id} ({node.type}) is a legacy group node, which is not "
                                      f"supported: convert it to a subgraph in the editor")
        inputs = {name: _api_value(value) for name, value in self._widget_values(node).items()}
        for index, slot in enumerate(node.inputs):
            source = self._resolve_input(scope, node, index, None, set())
            if isinstance(source, _Output):
                inputs[slot.name] = [source.node_id, source.slot]
            elif isinstance(source, _Constant):
                inputs[slot.name] = _api_value(source.value)
        self.output[node_id] = {"class_type": node.type, "inputs": inputs, "_meta": {"title": self._title(node)}}

    def finish(self) -> dict[str, dict]:
        """Drop inputs linked to nodes that were not emitted (muted ones), as the editor does."""
        for entry in self.output.values():
            dangling = [name for name, value in entry["inputs"].items()
                        if isinstance(value, list) and value[0] not in self.output]
            for name in dangling:
                del entry["inputs"][name]
        return self.output

    def _title(self, node: _Node) -> str:
        if node.title:
            return node.title
        entry = self.registry.entry(node.type)
        return entry.display_name if entry else node.type

    def _is_virtual(self, node: _Node) -> bool:
        return node.type in VIRTUAL_NODES and node.type not in self.registry

    def _widget_values(self, node: _Node) -> dict[str, Any]:
        node_class = self.registry.get(node.type)
        if node_class is None:
            return {}
        return _map_widget_values(_widget_specs(node_class), node.widgets_values)

    # -- resolving inputs and outputs -------------------------------------------------------------------

    def _resolve_input(self, scope: _Scope, node: _Node, index: int, wanted_type: Any,
                       visited: set) -> _Source:
        _visit(visited, scope, node, "input", index)
        if index >= len(node.inputs) or node.inputs[index].link is None:
            return None
        slot = node.inputs[index]
        wanted_type = slot.type if wanted_type is None else wanted_type
        link = scope.links.get(slot.link)
        if link is None:
            raise WorkflowFormatError(f"node {scope.exec_id(node.id)} ({node.type}): input '{slot.name}' "
                                      f"uses link {slot.link}, which is not in the links")
        if link.origin == SUBGRAPH_INPUT_NODE:
            return self._resolve_subgraph_input(scope, link.origin_slot, wanted_type, visited)
        origin = scope.nodes.get(link.origin)
        if origin is None:
            raise WorkflowFormatError(f"node {scope.exec_id(node.id)} ({node.type}): input '{slot.name}' is "
                                      f"linked (link {link.id}) from node {link.origin}, which does not exist")
        return self._resolve_output(scope, origin, link.origin_slot, wanted_type, visited)

    def _resolve_output(self, scope: _Scope, node: _Node, slot: int, wanted_type: Any,
                        visited: set) -> _Source:
        _visit(visited, scope, node, "output", slot)
        if node.mode == MODE_BYPASSED:
            index = _bypass_input_index(node, slot, wanted_type)
            return None if index is None else self._resolve_input(scope, node, index, None, visited)
        if node.type in self.subgraphs and node.mode != MODE_MUTED:
            return self._resolve_subgraph_output(scope, node, slot, wanted_type, visited)
        if not self._is_virtual(node):
            return _Output(scope.exec_id(node.id), slot)
        if node.type in PASS_THROUGH_NODES:
            return self._resolve_input(scope, node, slot, wanted_type, visited)
        if node.type in CONSTANT_NODES:
            value = _first_value(node.widgets_values)
            return None if value is None else _Constant(value)
        if node.type in NAMED_GETTER_NODES:
            setter = _find_setter(scope, node, NAMED_GETTER_NODES[node.type])
            return self._resolve_input(scope, setter, slot, wanted_type, visited)
        return None  # notes and other annotations feed nothing

    # -- subgraphs ----------------------------------------------------------------------------------------

    def _inner_scope(self, scope: _Scope, instance: _Node) -> _Scope:
        subgraph = self.subgraphs[instance.type]
        if subgraph.id in scope.enclosing_subgraph_ids():
            raise WorkflowFormatError(f"node {scope.exec_id(instance.id)}: subgraph '{subgraph.name}' "
                                      f"({subgraph.id}) contains itself")
        return _Scope(subgraph.nodes, subgraph.links, scope.path + (instance.id,), scope, instance, subgraph)

    def _resolve_subgraph_output(self, scope: _Scope, instance: _Node, slot: int, wanted_type: Any,
                                 visited: set) -> _Source:
        inner = self._inner_scope(scope, instance)
        if slot >= len(inner.subgraph.outputs):
            raise WorkflowFormatError(f"node {scope.exec_id(instance.id)}: subgraph '{inner.subgraph.name}' "
                                      f"has no output {slot}")
        link_ids = inner.subgraph.outputs[slot].get("linkIds") or []
        if not link_ids:
            return None
        link = inner.links.get(str(link_ids[0]))
        if link is None:
            raise WorkflowFormatError(f"subgraph '{inner.subgraph.name}': output {slot} uses link "
                                      f"{link_ids[0]}, which is not in its links")
        if link.origin == SUBGRAPH_INPUT_NODE:
            return self._resolve_subgraph_input(inner, link.origin_slot, wanted_type, visited)
        origin = inner.nodes.get(link.origin)
        if origin is None:
            raise WorkflowFormatError(f"subgraph '{inner.subgraph.name}': output {slot} is linked from node "
                                      f"{link.origin}, which does not exist")
        return self._resolve_output(inner, origin, link.origin_slot, wanted_type, visited)

    def _resolve_subgraph_input(self, scope: _Scope, slot: int, wanted_type: Any, visited: set) -> _Source:
        """What feeds input `slot` of the subgraph instance that `scope` expands."""
        if scope.instance is None or scope.parent is None:
            raise WorkflowFormatError(f"a link comes from the subgraph input node ({SUBGRAPH_INPUT_NODE}) "
                                      f"outside any subgraph")
        subgraph, instance = scope.subgraph, scope.instance
        if slot >= len(subgraph.inputs):
            raise WorkflowFormatError(f"subgraph '{subgraph.name}' has no input {slot}")
        name = subgraph.inputs[slot].get("name")
        index = instance.input_index(name) if name is not None else None
        index = slot if index is None else index
        if index < len(instance.inputs) and instance.inputs[index].link is not None:
            return self._resolve_input(scope.parent, instance, index, wanted_type, visited)
        return self._promoted_value(subgraph, instance, slot)

    def _promoted_value(self, subgraph: _Subgraph, instance: _Node, slot: int) -> _Source:
        """The value an unconnected instance input gives to the widgets it feeds inside, if stored."""
        promoted = self._promoted_widgets(subgraph)
        values = instance.widgets_values
        if slot not in promoted:
            return None
        if isinstance(values, dict):
            name = subgraph.inputs[slot].get("name")
            return _Constant(values[name]) if name in values else None
        if not isinstance(values, list):
            return None
        with_controls = len(values) > len(promoted)  # older editors also stored the control value of seeds
        position = sum(1 + int(with_controls and spec is not None and spec.has_control_after_generate)
                       for index, spec in promoted.items() if index < slot)
        return _Constant(values[position]) if position < len(values) else None

    def _promoted_widgets(self, subgraph: _Subgraph) -> dict[int, InputSpec | None]:
        """The subgraph inputs that feed a widget inside, by slot, with that widget's spec if it is known."""
        promoted: dict[int, InputSpec | None] = {}
        for slot, subgraph_input in enumerate(subgraph.inputs):
            target = _widget_target(subgraph, subgraph_input)
            if target is not None:
                node, widget_name = target
                node_class = self.registry.get(node.type)
                promoted[slot] = input_specs(node_class).get(widget_name) if node_class else None
        return promoted


def _widget_target(subgraph: _Subgraph, subgraph_input: dict) -> tuple[_Node, str] | None:
    """The first inner node and widget name that a subgraph input is linked to, if any."""
    for link_id in subgraph_input.get("linkIds") or []:
        link = subgraph.links.get(str(link_id))
        node = subgraph.nodes.get(link.target) if link else None
        target_input = node.input_with_link(link.id) if node else None
        if target_input is not None and target_input.is_widget:
            return node, target_input.name
    return None


def _visit(visited: set, scope: _Scope, node: _Node, side: str, slot: int) -> None:
    key = (scope.path, node.id, side, slot)
    if key in visited:
        raise WorkflowFormatError(f"node {scope.exec_id(node.id)} ({node.type}): links loop back through "
                                  f"its {side} {slot} (a cycle of reroutes or bypassed nodes)")
    visited.add(key)


def _find_setter(scope: _Scope, getter: _Node, setter_type: str) -> _Node:
    name = _first_value(getter.widgets_values)
    for node in scope.nodes.values():
        if node.type == setter_type and name not in (None, "") and _first_value(node.widgets_values) == name:
            return node
    raise WorkflowFormatError(f"node {scope.exec_id(getter.id)} ({getter.type}): no {setter_type} named "
                              f"{name!r} in the same graph")


def _first_value(values: Any) -> Any:
    if isinstance(values, list):
        return values[0] if values else None
    if isinstance(values, dict):
        return next(iter(values.values()), None)
    return None


def _api_value(value: Any) -> Any:
    """List constants are boxed so that the API format cannot mistake them for links."""
    return {"__value__": value} if isinstance(value, list) else value


def _types_match(slot_type: Any, other: Any) -> bool:
    if slot_type in (None, "", "*") or other in (None, "", "*"):
        return True
    return types_compatible(str(slot_type), str(other))


def _bypass_input_index(node: _Node, slot: int, wanted_type: Any) -> int | None:
    """Which input of a bypassed node stands in for its output `slot` when the consumer wants `wanted_type`."""
    if not node.inputs:
        return None
    if wanted_type in (None, "", "*"):
        return slot if slot < len(node.inputs) else 0
    output_type = node.output_types[slot] if slot < len(node.output_types) else wanted_type
    if slot < len(node.inputs) and _types_match(node.inputs[slot].type, output_type) \
            and _types_match(node.inputs[slot].type, wanted_type):
        return slot
    exact = [i for i, item in enumerate(node.inputs) if item.type == wanted_type]
    if exact:
        return exact[0]
    compatible = [i for i, item in enumerate(node.inputs)
                  if _types_match(item.type, output_type) and _types_match(item.type, wanted_type)]
    return compatible[0] if compatible else None


# ---------------------------------------------------------------------------------------------------------
# Positional widget values
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Position:
    """One place in `widgets_values`: a widget's value, or an extra the editor stores beside it."""
    kind: str  # "widget", "control", "filter" or "upload"
    name: str = ""


def _widget_specs(node_class: type) -> list[InputSpec]:
    """The inputs the editor draws as widgets, in the order it stores their values."""
    return [spec for spec in input_specs(node_class).values()
            if spec.section != "hidden" and spec.is_widget and not spec.options.get("forceInput")]


def _map_widget_values(specs: list[InputSpec], stored: Any) -> dict[str, Any]:
    """Name the stored `widgets_values` (a list or a name -> value dict) and add defaults for the rest."""
    if isinstance(stored, dict):
        values = {spec.name: stored[spec.name] for spec in specs if spec.name in stored}
    elif isinstance(stored, list):
        layout = _choose_layout(specs, stored)
        values = {place.name: value for place, value in zip(layout, stored) if place.kind == "widget"}
    else:
        values = {}
    for spec in specs:
        if spec.name not in values and _has_default(spec):
            values[spec.name] = _default(spec)
    return values


def _choose_layout(specs: list[InputSpec], stored: list) -> list[_Position]:
    """The first plausible layout as long as the stored values, else the first plausible one."""
    candidates = [_layout(specs, controls, upload)
                  for controls, upload in ((True, False), (True, True), (False, False), (False, True))]
    plausible = [layout for layout in candidates if _fits(layout, stored)]
    exact = [layout for layout in plausible if len(layout) == len(stored)]
    return (exact or plausible or candidates)[0]


def _layout(specs: list[InputSpec], controls: bool, upload: bool) -> list[_Position]:
    required = [spec for spec in specs if spec.section == "required"]
    optional = [spec for spec in specs if spec.section != "required"]
    layout = [place for spec in required for place in _positions(spec, controls)]
    if upload and any(spec.options.get(option) for spec in required for option in UPLOAD_OPTIONS):
        layout.append(_Position("upload"))  # the editor appends its upload button after the required inputs
    layout.extend(place for spec in optional for place in _positions(spec, controls))
    return layout


def _positions(spec: InputSpec, controls: bool) -> list[_Position]:
    positions = [_Position("widget", spec.name)]
    if controls and spec.has_control_after_generate:
        positions.append(_Position("control"))
        if spec.type == "COMBO":
            positions.append(_Position("filter"))
    return positions


def _fits(layout: list[_Position], stored: list) -> bool:
    for place, value in zip(layout, stored):
        if place.kind == "control" and not (isinstance(value, str) and value in CONTROL_MODES):
            return False
        if place.kind in ("filter", "upload") and not (value is None or isinstance(value, str)):
            return False
    return True


def _has_default(spec: InputSpec) -> bool:
    return "default" in spec.options or bool(spec.type == "COMBO" and spec.choices)


def _default(spec: InputSpec) -> Any:
    if "default" in spec.options:
        return spec.options["default"]
    return spec.choices[0]
