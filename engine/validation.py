"""Validating an API-format prompt against the registry before anything runs.

Collects every problem (not only the first) in the shape ComfyUI clients expect:
`{"error": {type, message, details, extra_info}, "node_errors": {id: {class_type, errors, dependent_outputs}}}`.
Outputs that fail are reported while the valid ones may still run. Also coerces widget values to their
declared types, so the executor receives clean inputs, and works out the facts nodes declare about their
outputs (`OUTPUT_FACTS`) for the `VALIDATE_INPUTS` that ask for them. Knows nothing of diffusion or HTTP: what a
fact means is between the node that states it and the node that reads it.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping, NamedTuple

import networkx as nx

from engine import input_spec
from engine.input_spec import InputSpec, is_link
from engine.registry import NodeRegistry

logger = logging.getLogger(__name__)

Facts = Mapping[str, Any]
"""What is known about one output before anything runs (e.g. {"family": "flux"}); the engine never reads it."""


@dataclass
class ValidationResult:
    prompt: dict[str, dict[str, Any]]  # the prompt with widget values coerced
    outputs: list[str]  # output nodes that passed and will run
    error: dict[str, Any] | None = None
    node_errors: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_response(self) -> dict[str, Any]:
        return {"error": self.error, "node_errors": self.node_errors}


def _error(kind: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


class _PromptValidator:
    def __init__(self, prompt: dict[str, Any], registry: NodeRegistry) -> None:
        self.registry = registry
        self.prompt: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, list[dict[str, Any]]] = {}
        self.valid: dict[str, bool] = {}
        self.specs: dict[str, dict[str, InputSpec]] = {}  # of each node validated so far
        self.output_facts: dict[str, tuple[Facts | None, ...]] = {}
        for node_id, node in prompt.items():
            self.prompt[str(node_id)] = {**node, "inputs": dict(node.get("inputs") or {})}

    def add(self, node_id: str, error: dict[str, Any]) -> None:
        self.errors.setdefault(node_id, []).append(error)

    def node_class(self, node_id: str) -> type | None:
        class_type = self.prompt[node_id].get("class_type")
        return self.registry.get(class_type) if isinstance(class_type, str) else None

    # ---- structure -------------------------------------------------------------------------------------
    def check_structure(self) -> list[dict[str, Any]]:
        """Problems that make the whole prompt unusable: malformed nodes and unknown classes."""
        problems = []
        for node_id, node in self.prompt.items():
            class_type = node.get("class_type")
            if not isinstance(class_type, str) or not class_type:
                problems.append(_error("invalid_prompt", f"Node {node_id} has no class_type",
                                       "every node needs a 'class_type' string", node_id=node_id))
            elif class_type not in self.registry:
                problems.append(_error(
                    "missing_node_type",
                    f"Node '{class_type}' not found. The custom node may not be installed.",
                    f"Node ID '#{node_id}'", node_id=node_id, class_type=class_type,
                    node_title=(node.get("_meta") or {}).get("title", class_type)))
        return problems

    def cycle_nodes(self) -> set[str]:
        graph = nx.DiGraph()
        graph.add_nodes_from(self.prompt)
        for node_id, node in self.prompt.items():
            for value in node["inputs"].values():
                if is_link(value) and str(value[0]) in self.prompt:
                    graph.add_edge(str(value[0]), node_id)
        in_cycles: set[str] = set()
        for component in nx.strongly_connected_components(graph):
            if len(component) > 1 or any(graph.has_edge(n, n) for n in component):
                in_cycles |= component
        return in_cycles

    # ---- one node --------------------------------------------------------------------------------------
    def validate_node(self, node_id: str) -> bool:
        """Validate a node and, first, everything it links to; memoised. Iterative to allow deep chains."""
        order = list(nx.dfs_postorder_nodes(self._upstream_graph(node_id), node_id))
        for current in order:
            if current not in self.valid:
                try:
                    self.valid[current] = self._validate_own(current)
                except Exception as exc:  # a node's INPUT_TYPES (or similar) raised: its error, not ours
                    self.add(current, _error("exception_during_validation", "Exception when validating node",
                                             f"{type(exc).__name__}: {exc}"))
                    self.valid[current] = False
        return self.valid[node_id]

    def _upstream_graph(self, node_id: str) -> nx.DiGraph:
        graph = nx.DiGraph()
        graph.add_node(node_id)
        stack = [node_id]
        while stack:
            current = stack.pop()
            for value in self.prompt[current]["inputs"].values():
                if is_link(value) and str(value[0]) in self.prompt and str(value[0]) not in self.valid:
                    upstream = str(value[0])
                    if upstream not in graph:
                        stack.append(upstream)
                    graph.add_edge(current, upstream)
        return graph

    def _validate_own(self, node_id: str) -> bool:
        cls = self.node_class(node_id)
        if cls is None:
            return False
        node = self.prompt[node_id]
        specs = self.specs[node_id] = input_spec.input_specs(cls, node["inputs"])
        custom = _custom_validation_signature(cls)
        ok = True
        received_types: dict[str, str] = {}
        for spec in specs.values():
            if spec.section == "hidden":
                continue
            if spec.name not in node["inputs"]:
                if spec.is_required:
                    self.add(node_id, _error("required_input_missing", "Required input is missing",
                                             spec.name, input_name=spec.name))
                    ok = False
                continue
            value = node["inputs"][spec.name]
            if is_link(value):
                linked_ok, received = self._check_link(node_id, spec, value, skip_type=custom.wants_input_types)
                ok = ok and linked_ok
                if received is not None:
                    received_types[spec.name] = received
            elif spec.name not in custom.checked_inputs:
                ok = self._check_constant(node_id, spec, value) and ok
        if ok and hasattr(cls, "VALIDATE_INPUTS"):
            ok = self._run_custom_validation(node_id, cls, received_types, custom)
        return ok

    def _check_link(self, node_id: str, spec: InputSpec, link: list[Any],
                    skip_type: bool) -> tuple[bool, str | None]:
        source_id, index = str(link[0]), int(link[1])
        if source_id not in self.prompt:
            self.add(node_id, _error("bad_linked_input", "Bad linked input, linked node does not exist",
                                     f"{spec.name}: node {source_id}", input_name=spec.name,
                                     input_config=list(_raw_spec(spec)), received_value=link))
            return False, None
        source_cls = self.node_class(source_id)
        if source_cls is None:
            return False, None
        outputs = input_spec.return_types(source_cls)
        if not 0 <= index < len(outputs):
            self.add(node_id, _error("bad_linked_input", "Bad linked input, output index out of range",
                                     f"{spec.name}: node {source_id} has {len(outputs)} outputs, link asks for "
                                     f"output {index}", input_name=spec.name, received_value=link))
            return False, None
        received = outputs[index]
        if not skip_type and not input_spec.types_compatible(received, spec.type):
            self.add(node_id, _error(
                "return_type_mismatch", "Return type mismatch between linked nodes",
                f"{spec.name}, received_type({received}) mismatch input_type({spec.type})",
                input_name=spec.name, input_config=list(_raw_spec(spec)), received_type=received,
                linked_node=link))
            return False, received
        upstream_ok = self.valid.get(source_id)
        if upstream_ok is None:
            upstream_ok = self.validate_node(source_id)
        return upstream_ok, received

    def _check_constant(self, node_id: str, spec: InputSpec, value: Any) -> bool:
        value = input_spec.constant_value(value)
        try:
            coerced = coerce_widget_value(spec, value)
        except (TypeError, ValueError) as exc:
            self.add(node_id, _error("invalid_input_type",
                                     f"Failed to convert an input value to a {spec.type} value",
                                     f"{spec.name}, {value!r}, {exc}", input_name=spec.name,
                                     input_config=list(_raw_spec(spec)), received_value=value))
            return False
        self.prompt[node_id]["inputs"][spec.name] = {"__value__": coerced} if is_link(coerced) else coerced
        problem = _range_or_choice_problem(spec, coerced)
        if problem is not None:
            self.add(node_id, problem)
            return False
        return True

    def _run_custom_validation(self, node_id: str, cls: type, received_types: dict[str, str],
                               custom: _CustomValidation) -> bool:
        validate = cls.VALIDATE_INPUTS
        parameters = inspect.signature(validate).parameters
        accepts_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        # A linked input has no value before the run: ComfyUI passes it as None. This engine's own validators (those
        # asking for `input_facts` or adding to the engine's checks) get constants only, and `input_facts` for links.
        constants_only = custom.wants_input_facts or getattr(cls, "ENGINE_CHECKS_ALL_INPUTS", False)
        arguments = {name: None if is_link(value) else value for name, value in self.prompt[node_id]["inputs"].items()
                     if (accepts_all or name in parameters) and not (constants_only and is_link(value))}
        named_inputs = [name for name, value in self.prompt[node_id]["inputs"].items()
                        if name in arguments and not is_link(value)]
        if custom.wants_input_types:
            arguments["input_types"] = received_types
        if custom.wants_input_facts:
            arguments["input_facts"] = self.input_facts(node_id)
            named_inputs += list(arguments["input_facts"])
        try:
            outcome = validate(**arguments)
            if inspect.iscoroutine(outcome):  # an async VALIDATE_INPUTS, as ComfyUI allows; validation has no loop
                outcome = asyncio.run(outcome)
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        if outcome is True:
            return True
        self.add(node_id, _error("custom_validation_failed", "Custom validation failed for node",
                                 f"{outcome}", input_name=_first_named_input(str(outcome), named_inputs)))
        return False

    # ---- facts -----------------------------------------------------------------------------------------
    def input_facts(self, node_id: str) -> dict[str, Facts]:
        """{linked input: facts of the output it is linked to}, for the links whose facts are known."""
        known = {}
        for name, (source_id, index) in self._linked_inputs(node_id).items():
            facts = self.facts_of(source_id)[index]
            if facts is not None:
                known[name] = facts
        return known

    def facts_of(self, node_id: str) -> tuple[Facts | None, ...]:
        """The facts of each output of a node, None where unknown; memoised, and computed upstream first
        without recursion, as deep chains need. Only asked of nodes that passed validation: a node passes only
        when every node it links to did."""
        if node_id not in self.output_facts:
            for current in nx.dfs_postorder_nodes(self._facts_upstream_graph(node_id), node_id):
                self.output_facts[current] = self._own_output_facts(current)
        return self.output_facts[node_id]

    def _facts_upstream_graph(self, node_id: str) -> nx.DiGraph:
        """`node_id` and the nodes upstream whose facts it needs and are not known yet."""
        graph = nx.DiGraph()
        graph.add_node(node_id)
        stack = [node_id]
        while stack:
            current = stack.pop()
            for source_id, _ in self._linked_inputs(current).values():
                if source_id not in self.output_facts:
                    if source_id not in graph:
                        stack.append(source_id)
                    graph.add_edge(current, source_id)
        return graph

    def _linked_inputs(self, node_id: str) -> dict[str, tuple[str, int]]:
        """{declared input: (source node, output index)} for the node's linked inputs."""
        node_inputs = self.prompt[node_id]["inputs"]
        return {spec.name: (str(node_inputs[spec.name][0]), int(node_inputs[spec.name][1]))
                for spec in self.specs[node_id].values()
                if spec.section != "hidden" and is_link(node_inputs.get(spec.name))}

    def _own_output_facts(self, node_id: str) -> tuple[Facts | None, ...]:
        """A node's output facts from its inputs' (already known): its `OUTPUT_FACTS`, else pass-through by type.
        Unknown when `OUTPUT_FACTS` raises or answers out of contract: facts help validation, never fail it."""
        cls = self.node_class(node_id)
        specs = self.specs[node_id]
        output_types = input_spec.return_types(cls)
        known_inputs = self.input_facts(node_id)
        if not hasattr(cls, "OUTPUT_FACTS"):
            return _passed_through_facts(specs, known_inputs, output_types)
        constants = {name: input_spec.constant_value(value) for name, value in self.prompt[node_id]["inputs"].items()
                     if not is_link(value) and name in specs and specs[name].section != "hidden"}
        try:
            declared = tuple(cls.OUTPUT_FACTS(known_inputs, **constants))
            if len(declared) != len(output_types):
                raise ValueError(f"returned {len(declared)} entries for {len(output_types)} outputs")
            if not all(facts is None or isinstance(facts, Mapping) for facts in declared):
                raise TypeError("each entry must be a mapping of facts or None")
        except Exception:
            logger.debug("OUTPUT_FACTS of node %s (%s) failed; its facts are unknown",
                         node_id, self.prompt[node_id].get("class_type"), exc_info=True)
            return (None,) * len(output_types)
        return tuple(None if facts is None else MappingProxyType(dict(facts)) for facts in declared)


def _passed_through_facts(specs: dict[str, InputSpec], known_inputs: dict[str, Facts],
                          output_types: tuple[str, ...]) -> tuple[Facts | None, ...]:
    """Without OUTPUT_FACTS, an output keeps the facts of the one linked input of its own type that has any
    (a MODEL -> MODEL patch keeps the model's); with none or several, they are unknown."""
    passed = []
    for output_type in output_types:
        candidates = [facts for name, facts in known_inputs.items() if specs[name].type == output_type]
        passed.append(candidates[0] if len(candidates) == 1 else None)
    return tuple(passed)


def _first_named_input(message: str, input_names: Iterable[str]) -> str | None:
    return next((name for name in input_names if name in message), None)


class _CustomValidation(NamedTuple):
    """What a node's VALIDATE_INPUTS declares, as in ComfyUI: the inputs it checks itself (the engine skips
    its own checks for them; all of them when it takes **kwargs, as ComfyUI's nodes expect, unless it also asks
    for this engine's `input_facts` or the class sets `ENGINE_CHECKS_ALL_INPUTS`: then its `**widgets` only add
    to the engine's checks), whether it asks for `input_types` (then linked types are its job too) and whether it
    asks for `input_facts`."""

    checked_inputs: frozenset[str]
    wants_input_types: bool
    wants_input_facts: bool


_SPECIAL_PARAMETERS = frozenset({"input_types", "input_facts"})


def _custom_validation_signature(cls: type) -> _CustomValidation:
    validate = getattr(cls, "VALIDATE_INPUTS", None)
    if validate is None:
        return _CustomValidation(frozenset(), False, False)
    signature = inspect.signature(validate).parameters
    parameters = {name for name, parameter in signature.items()
                  if parameter.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
    parameters -= {"self", "cls", "s"}
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values())
    wants_facts = "input_facts" in parameters
    if takes_kwargs and not wants_facts and not getattr(cls, "ENGINE_CHECKS_ALL_INPUTS", False):
        parameters |= set(input_spec.input_specs(cls))
    return _CustomValidation(frozenset(parameters - _SPECIAL_PARAMETERS), "input_types" in parameters,
                             wants_facts)


def _raw_spec(spec: InputSpec) -> tuple[Any, dict[str, Any]]:
    return (list(spec.choices) if spec.choices is not None else spec.type), spec.options


def coerce_widget_value(spec: InputSpec, value: Any) -> Any:
    """Convert a widget constant to its declared type, accepting what JSON clients send (5.0 for 5)."""
    if spec.type == "INT":
        if isinstance(value, bool):
            raise TypeError("a boolean is not an integer")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError("not a whole number")
            return int(value)
        return int(value)
    if spec.type == "FLOAT":
        if isinstance(value, bool):
            raise TypeError("a boolean is not a number")
        result = float(value)
        if math.isnan(result):
            raise ValueError("NaN is not allowed")
        return result
    if spec.type == "STRING":
        if isinstance(value, (dict, list)):
            raise TypeError("expected text")
        return str(value)
    if spec.type == "BOOLEAN":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise TypeError("expected true or false")
    return value


def _range_or_choice_problem(spec: InputSpec, value: Any) -> dict[str, Any] | None:
    if spec.type in ("INT", "FLOAT"):
        minimum, maximum = spec.options.get("min"), spec.options.get("max")
        if minimum is not None and value < minimum:
            return _error("value_smaller_than_min", f"Value {value} smaller than min of {minimum}",
                          f"{spec.name}", input_name=spec.name, input_config=list(_raw_spec(spec)),
                          received_value=value)
        if maximum is not None and value > maximum:
            return _error("value_bigger_than_max", f"Value {value} bigger than max of {maximum}",
                          f"{spec.name}", input_name=spec.name, input_config=list(_raw_spec(spec)),
                          received_value=value)
    if spec.type == "INT" and (multiple := spec.options.get("multiple_of")) is not None and value % multiple:
        return _error("value_not_multiple", f"Value {value} is not a multiple of {multiple}",
                      f"{spec.name}", input_name=spec.name, input_config=list(_raw_spec(spec)),
                      received_value=value)
    if spec.type == "COMBO" and spec.choices is not None and value not in spec.choices:
        shown = list(spec.choices)[:20]
        return _error("value_not_in_list", "Value not in list", f"{spec.name}: {value!r} not in {shown}",
                      input_name=spec.name, input_config=list(_raw_spec(spec)), received_value=value)
    return None


def validate_prompt(prompt: Any, registry: NodeRegistry,
                    partial_execution_targets: Iterable[str] | None = None) -> ValidationResult:
    """Validate a whole API-format prompt; `partial_execution_targets` restricts it to chosen output nodes."""
    if not isinstance(prompt, dict) or not all(isinstance(node, dict) and isinstance(node.get("inputs") or {}, dict)
                                               for node in prompt.values()):
        return ValidationResult({}, [], _error("invalid_prompt", "Invalid prompt",
                                               "the prompt must map node ids to {class_type, inputs} objects, each "
                                               "node's inputs an object of input names"))
    validator = _PromptValidator(prompt, registry)
    structural = validator.check_structure()
    for problem in structural:
        node_id = problem["extra_info"]["node_id"]
        validator.add(node_id, problem)

    cycle = validator.cycle_nodes()
    for node_id in sorted(cycle):
        validator.add(node_id, _error("dependency_cycle", "Dependency cycle detected",
                                      f"node {node_id} depends on itself through its inputs"))
        validator.valid[node_id] = False

    known_outputs = [node_id for node_id in validator.prompt
                     if (cls := validator.node_class(node_id)) is not None and input_spec.is_output_node(cls)]
    if partial_execution_targets is not None:
        targets = [str(t) for t in partial_execution_targets]
        unknown = [t for t in targets if t not in validator.prompt]
        if unknown:
            return _finish(validator, [], _error("invalid_prompt", "Unknown partial execution targets",
                                                 f"not in the prompt: {unknown}"))
        known_outputs = [t for t in targets if validator.node_class(t) is not None]

    if not known_outputs:
        first = structural[0] if structural else _error("prompt_no_outputs", "Prompt has no outputs")
        return _finish(validator, [], first)

    good = [node_id for node_id in known_outputs if node_id not in cycle and validator.validate_node(node_id)]
    failed_outputs = [node_id for node_id in known_outputs if node_id not in good]
    if structural:
        return _finish(validator, good, structural[0], failed_outputs)
    if not good:
        failed = ", ".join(sorted(validator.errors, key=_natural_key))
        return _finish(validator, [], _error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                             f"failed nodes: {failed}"), failed_outputs)
    return _finish(validator, good, None, failed_outputs)


def _finish(validator: _PromptValidator, good: list[str], error: dict[str, Any] | None,
            failed_outputs: list[str] = ()) -> ValidationResult:
    dependents: dict[str, list[str]] = {}
    link_graph = nx.DiGraph()
    link_graph.add_nodes_from(validator.prompt)
    for node_id, node in validator.prompt.items():
        for value in node["inputs"].values():
            if is_link(value) and str(value[0]) in validator.prompt:
                link_graph.add_edge(node_id, str(value[0]))
    for output_id in failed_outputs:
        for upstream in nx.descendants(link_graph, output_id) | {output_id}:
            dependents.setdefault(upstream, []).append(output_id)
    node_errors: dict[str, dict[str, Any]] = {}
    for node_id, errors in validator.errors.items():
        node = validator.prompt.get(node_id, {})
        node_errors[node_id] = {"errors": errors, "dependent_outputs": dependents.get(node_id, []),
                                "class_type": node.get("class_type")}
    return ValidationResult(validator.prompt, good, error, node_errors)


def _natural_key(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 62, node_id)
