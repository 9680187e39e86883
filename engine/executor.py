"""Running a validated API-format prompt: scheduling, list mapping, caching, lazy inputs, expansion, events.

The scheduler is dynamic because the graph is: a lazy input pulls in its upstream only when
`check_lazy_status` asks for it, and a node may expand into a subgraph at run time (how loops are built).
Ready nodes start in topological order of the prompt (networkx), each as an asyncio task, so async nodes that
await overlap with the nodes after them; nodes found in the output cache never run.
Whatever a node raises ends its prompt as that node's error, `SystemExit` and `KeyboardInterrupt` included,
and a caller may abandon a run whose node ignores an interrupt (`engine.interrupt.Abandonment`).
Knows nothing of diffusion or HTTP: it reads nodes through the registry and reports through an `EventBus`;
what must hold around each node call (such as pinning the models a node receives) comes in as a
`NodeCallGuard`, whose purpose the engine does not know.
"""
from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import itertools
import threading
import time
import traceback
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, ContextManager, Iterable, Mapping

import networkx as nx

from engine import events, input_spec
from engine.cache import CacheEntry, OutputCache, SignatureBuilder
from engine.control_flow import DynamicPrompt, ExecutionBlocker
from engine.events import EventBus
from engine.input_spec import is_link
from engine.interrupt import Abandonment, ExecutionInterrupted, InterruptFlag, RunInterrupt
from engine.progress import NodeRunContext, bind_node_context
from engine.registry import NodeRegistry

ASYNC_POLL_S = 0.05  # how often the scheduler looks at the interrupt flag while only async nodes are running
HIDDEN_VALUES = ("PROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "DYNPROMPT")

NodeCallGuard = Callable[[Mapping[str, Any]], ContextManager[Any]]
"""Given the keyword inputs of one call of a node's FUNCTION (read-only), a context manager the call runs in."""


@dataclass
class ExecutionResult:
    prompt_id: str
    status: str  # "success", "error" or "interrupted"
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # ui output per output node
    executed: list[str] = field(default_factory=list)  # nodes that ran this time
    cached: list[str] = field(default_factory=list)  # nodes served from the cache
    error: dict[str, Any] | None = None  # the execution_error / execution_interrupted data
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return self.status == "success"


class NodeExecutionError(Exception):
    """A node raised: carries the node so the error event can name it."""

    def __init__(self, node_id: str, class_type: str, cause: BaseException, inputs: dict[str, Any]) -> None:
        super().__init__(f"{class_type} (node {node_id}): {type(cause).__name__}: {cause}")
        self.node_id = node_id
        self.class_type = class_type
        self.cause = cause
        self.inputs = inputs


class _Run:
    """The state of one prompt's execution; discarded when it ends."""

    def __init__(self, prompt: dict[str, dict[str, Any]], prompt_id: str, extra_data: dict[str, Any],
                 shared_interrupt: InterruptFlag, abandonment: Abandonment) -> None:
        self.original_prompt = prompt
        self.prompt: dict[str, dict[str, Any]] = {k: v for k, v in prompt.items()}  # grows with expansions
        self.prompt_id = prompt_id
        self.extra_data = extra_data
        self.values: dict[str, tuple[list[Any], ...]] = {}
        self.ui: dict[str, dict[str, Any]] = {}
        self.display_node: dict[str, str] = {}
        self.parent: dict[str, str] = {}  # expanded node -> the node whose expansion made it
        self.node_states: dict[str, dict[str, Any]] = {}  # started nodes' progress, as ComfyUI's progress_state
        self.dynamic_prompt = DynamicPrompt(self.original_prompt, self.prompt, self.parent, self.display_node)
        self.rank: dict[str, int] = {}
        self.waiting_on: dict[str, set[str]] = {}
        self.dependents: dict[str, set[str]] = {}
        self.ready: list[tuple[int, int, str]] = []
        self.sequence = itertools.count()
        self.pending_expansions: dict[str, list[tuple[Any, ...]]] = {}
        self.requested_lazy: dict[str, set[str]] = {}
        self.executed: list[str] = []
        self.cached: list[str] = []
        self.blocked_reported: set[str] = set()
        self.current_node: str | None = None
        self.abandonment = abandonment
        self.interrupt = RunInterrupt(shared_interrupt, abandonment)


class Executor:
    """Runs prompts against a registry, sharing one output cache across runs.

    `node_call_guard`, if given, is entered around every call of a node's FUNCTION (once per list slice, spanning
    the await of an async FUNCTION) with exactly the inputs that call receives; what it raises is that node's error.
    """

    def __init__(self, registry: NodeRegistry, cache: OutputCache | None = None,
                 event_bus: EventBus | None = None, interrupt: InterruptFlag | None = None,
                 node_call_guard: NodeCallGuard | None = None) -> None:
        self.registry = registry
        self.cache = cache if cache is not None else OutputCache()
        self.events = event_bus if event_bus is not None else EventBus()
        self.interrupt = interrupt if interrupt is not None else InterruptFlag()
        self.node_call_guard = node_call_guard

    # ---- public ----------------------------------------------------------------------------------------
    def execute(self, prompt: dict[str, dict[str, Any]], prompt_id: str, extra_data: dict[str, Any] | None = None,
                execute_outputs: Iterable[str] | None = None,
                abandonment: Abandonment | None = None) -> ExecutionResult:
        """Run `prompt` (already validated) to its output nodes, or to `execute_outputs` only.

        With `abandonment`, another thread may give up on the run while a node ignores an interrupt:
        `abandonment.abandon()` then sends the run's `execution_interrupted` and returns its result, and this
        call, whenever the node returns, ends without another event and without touching the output cache."""
        return asyncio.run(self.execute_async(prompt, prompt_id, extra_data, execute_outputs, abandonment))

    async def execute_async(self, prompt: dict[str, dict[str, Any]], prompt_id: str,
                            extra_data: dict[str, Any] | None = None,
                            execute_outputs: Iterable[str] | None = None,
                            abandonment: Abandonment | None = None) -> ExecutionResult:
        abandonment = abandonment if abandonment is not None else Abandonment()
        self.interrupt.clear()
        run = _Run({str(k): v for k, v in prompt.items()}, prompt_id, extra_data or {}, self.interrupt, abandonment)
        result = ExecutionResult(prompt_id, "success")
        emit = self._emitter(result, abandonment)
        targets = [str(t) for t in execute_outputs] if execute_outputs is not None else self._output_nodes(run)
        emit(events.EXECUTION_START, {"prompt_id": prompt_id, "timestamp": _now_ms()})
        abandonment.started(lambda: self._give_up(run, result, emit))
        try:
            await self._run_to_outcome(run, result, targets, emit)
        finally:
            abandonment.ended()
        if result.error is not None:
            emit(events.EXECUTION_INTERRUPTED if result.status == "interrupted" else events.EXECUTION_ERROR,
                 result.error)
        result.executed = list(run.executed)
        result.cached = list(run.cached)
        result.outputs = _ui_by_original_node(run)
        if result.status == "success":
            emit(events.EXECUTION_SUCCESS, {"prompt_id": prompt_id, "timestamp": _now_ms()})
        emit(events.EXECUTING, {"node": None, "prompt_id": prompt_id})
        return result

    async def _run_to_outcome(self, run: _Run, result: ExecutionResult, targets: list[str], emit) -> None:
        """Run the nodes until the prompt succeeds, fails or is interrupted; set `result`'s status and error."""
        prompt_id = run.prompt_id
        signatures = self._signatures(run)
        try:
            self._rank_nodes(run)
            # ComfyUI lists every node of the prompt whose output is cached, needed or not: clients count a node
            # as done when it is listed or runs, and a lazy input may yet need it
            run.cached.extend(node_id for node_id in run.prompt if signatures.signature(node_id) in self.cache)
            for target in targets:
                self._require(run, target, signatures)
            emit(events.EXECUTION_CACHED, {"nodes": list(run.cached), "prompt_id": prompt_id,
                                          "timestamp": _now_ms()})
            for node_id in list(run.cached):
                if node_id in run.ui:
                    self._emit_executed(run, emit, node_id)
            await self._run_ready_nodes(run, signatures, emit)
            unresolved = [node_id for node_id, waits in run.waiting_on.items() if waits]
            if unresolved:
                raise RuntimeError(f"nodes {sorted(unresolved)} could never run: dependency cycle")
        except ExecutionInterrupted:
            result.status = "interrupted"
            result.error = _interrupted_data(run)
        except NodeExecutionError as failure:
            result.status = "error"
            result.error = self._error_data(run, failure)
        except BaseException as failure:  # scheduler-level problems (cycles made by expansions, bad expansions)
            if not _fails_only_the_prompt(failure):
                raise
            result.status = "error"
            result.error = {"prompt_id": prompt_id, "node_id": None, "node_type": None,
                            "executed": list(run.executed), "exception_message": str(failure),
                            "exception_type": type(failure).__name__,
                            "traceback": traceback.format_exception(failure), "current_inputs": {},
                            "current_outputs": []}
        with run.abandonment.unless_abandoned() as live:
            if live:
                self.cache.prompt_finished(signatures.known())

    async def _run_ready_nodes(self, run: _Run, signatures: SignatureBuilder, emit) -> None:
        """Run ready nodes in rank order until none is ready or running. Each node runs as a task: a synchronous
        node finishes within its first step, while an async FUNCTION awaiting something (a sleep, an API call)
        lets the nodes after it start, so independent async nodes overlap as in ComfyUI. The first failure
        cancels the nodes still running."""
        running: set[asyncio.Task] = set()
        try:
            while run.ready or running:
                run.interrupt.raise_if_set()
                if run.ready:
                    _, _, node_id = heapq.heappop(run.ready)
                    running.add(asyncio.create_task(self._run_node(run, node_id, signatures, emit)))
                    await asyncio.sleep(0)  # the task's first step: all of a synchronous node
                    finished = {task for task in running if task.done()}
                else:  # only async nodes left running: wait for one, looking at the interrupt now and then
                    finished, _ = await asyncio.wait(running, timeout=ASYNC_POLL_S,
                                                     return_when=asyncio.FIRST_COMPLETED)
                running -= finished
                for task in finished:
                    task.result()  # a node's failure ends the run here
        finally:
            for task in running:
                task.cancel()

    def _give_up(self, run: _Run, result: ExecutionResult, emit) -> ExecutionResult:
        """An abandoned run's end, reported from the abandoning thread as an interrupt at the node it is stuck
        in; a result of its own, since the run's thread may still write to `result` when the node returns."""
        error = _interrupted_data(run)
        emit(events.EXECUTION_INTERRUPTED, error)
        emit(events.EXECUTING, {"node": None, "prompt_id": run.prompt_id})
        return ExecutionResult(run.prompt_id, "interrupted", _ui_by_original_node(run), list(run.executed),
                               list(run.cached), error, list(result.messages))

    # ---- events ----------------------------------------------------------------------------------------
    def _emitter(self, result: ExecutionResult, abandonment: Abandonment):
        def emit(name: str, data: dict[str, Any]) -> None:
            with abandonment.unless_abandoned() as live:
                if not live:  # an abandoned run's late events would reach whoever runs the next prompt
                    return
                if name not in (events.PROGRESS, events.PROGRESS_STATE):  # many per prompt, for live views only
                    result.messages.append((name, data))
                self.events.emit(name, data)
        return emit

    def _emit_executed(self, run: _Run, emit, node_id: str) -> None:
        emit(events.EXECUTED, {"node": node_id, "display_node": run.display_node.get(node_id, node_id),
                               "output": run.ui[node_id], "prompt_id": run.prompt_id})

    def _error_data(self, run: _Run, failure: NodeExecutionError) -> dict[str, Any]:
        return {
            "prompt_id": run.prompt_id, "node_id": failure.node_id, "node_type": failure.class_type,
            "executed": list(run.executed), "exception_message": _exception_message(failure.cause),
            "exception_type": f"{type(failure.cause).__module__}.{type(failure.cause).__name__}".removeprefix(
                "builtins."),
            "traceback": traceback.format_exception(failure.cause),
            "current_inputs": {name: [_describe(v) for v in values] for name, values in failure.inputs.items()},
            "current_outputs": list(run.values),
        }

    # ---- planning --------------------------------------------------------------------------------------
    def _output_nodes(self, run: _Run) -> list[str]:
        return [node_id for node_id, node in run.prompt.items()
                if (cls := self.registry.get(node["class_type"])) is not None and input_spec.is_output_node(cls)]

    def _signatures(self, run: _Run) -> SignatureBuilder:
        def is_changed(node_id: str, cls: type) -> Any:
            node_inputs = run.prompt[node_id].get("inputs", {})
            arguments = self._hidden_and_constants(run, node_id, cls, node_inputs)
            method = cls.IS_CHANGED
            parameters = inspect.signature(method).parameters
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
                arguments = {k: v for k, v in arguments.items() if k in parameters}
            try:
                return method(**arguments)
            except Exception as exc:  # treat like ComfyUI: the node simply re-runs
                return f"is_changed_failed:{exc}:{time.time_ns()}"
        return SignatureBuilder(run.prompt, self.registry.get, is_changed)

    def _hidden_and_constants(self, run: _Run, node_id: str, cls: type, node_inputs: dict[str, Any]) -> dict[str, Any]:
        """IS_CHANGED's arguments: the constants, hidden values, and linked inputs as None (their values do
        not exist yet), as ComfyUI passes them."""
        arguments = {name: None if is_link(value) else value for name, value in node_inputs.items()}
        arguments.update(self._hidden_inputs(run, node_id, cls))
        return arguments

    def _hidden_inputs(self, run: _Run, node_id: str, cls: type) -> dict[str, Any]:
        hidden = (cls.INPUT_TYPES().get("hidden") or {})
        values = {"PROMPT": run.original_prompt, "EXTRA_PNGINFO": run.extra_data.get("extra_pnginfo"),
                  "UNIQUE_ID": node_id, "DYNPROMPT": run.dynamic_prompt}
        result = {}
        for name, kind in hidden.items():
            kind = kind[0] if isinstance(kind, (list, tuple)) else kind
            if kind in values:
                result[name] = values[kind]
        return result

    def _rank_nodes(self, run: _Run) -> None:
        graph = nx.DiGraph()
        graph.add_nodes_from(run.prompt)
        graph.add_edges_from((source, node_id) for node_id, node in run.prompt.items()
                             for source in _link_sources(node) if source in run.prompt)
        order = nx.lexicographical_topological_sort(graph, key=_natural_key)
        run.rank = {node_id: position for position, node_id in enumerate(order)}

    def _require(self, run: _Run, node_id: str, signatures: SignatureBuilder) -> None:
        """Make sure `node_id`'s outputs will be available: from the cache, or by scheduling it (and its inputs)."""
        stack = [node_id]
        while stack:
            current = stack.pop()
            if current in run.values or current in run.waiting_on:
                continue
            if current not in run.prompt:
                raise RuntimeError(f"a link points to node {current}, which does not exist")
            cls = self._node_class(run, current)
            entry = self.cache.get(signatures.signature(current))
            if entry is not None:
                self._use_cached(run, current, entry)
                continue
            specs = input_spec.input_specs(cls, run.prompt[current].get("inputs", {}))
            waits = set()
            for name, value in run.prompt[current].get("inputs", {}).items():
                spec = specs.get(name)
                lazy = spec is not None and spec.is_lazy and name not in run.requested_lazy.get(current, set())
                if is_link(value) and not lazy:
                    source = str(value[0])
                    if source not in run.values:
                        waits.add(source)
                        stack.append(source)
            self._schedule(run, current, waits)

    def _use_cached(self, run: _Run, node_id: str, entry: CacheEntry) -> None:
        run.values[node_id] = entry.outputs
        if entry.ui:
            run.ui[node_id] = entry.ui
        if node_id not in run.cached:  # an expanded node, or one cached since the run started
            run.cached.append(node_id)
        self._resolve(run, node_id)

    def _schedule(self, run: _Run, node_id: str, waits: set[str]) -> None:
        run.waiting_on[node_id] = set(waits)
        for source in waits:
            run.dependents.setdefault(source, set()).add(node_id)
        if not waits:
            self._push_ready(run, node_id)

    def _push_ready(self, run: _Run, node_id: str) -> None:
        rank = run.rank.get(node_id, run.rank.get(run.display_node.get(node_id, ""), len(run.rank)))
        heapq.heappush(run.ready, (rank, next(run.sequence), node_id))

    def _resolve(self, run: _Run, node_id: str) -> None:
        """`node_id` has its outputs: release whatever waited on it."""
        run.waiting_on.pop(node_id, None)
        for dependent in run.dependents.pop(node_id, set()):
            waits = run.waiting_on.get(dependent)
            if waits is not None and node_id in waits:
                waits.discard(node_id)
                if not waits:
                    self._push_ready(run, dependent)

    def _node_class(self, run: _Run, node_id: str) -> type:
        class_type = run.prompt[node_id]["class_type"]
        cls = self.registry.get(class_type)
        if cls is None:
            raise RuntimeError(f"node {node_id}: unknown node type {class_type!r}")
        return cls

    # ---- running one node ------------------------------------------------------------------------------
    async def _run_node(self, run: _Run, node_id: str, signatures: SignatureBuilder, emit) -> None:
        if node_id in run.pending_expansions:
            self._finish_expansion(run, node_id, signatures, emit)
            return
        cls = self._node_class(run, node_id)
        class_type = run.prompt[node_id]["class_type"]
        entry = self.cache.get(signatures.signature(node_id))
        if entry is not None:  # an identical node earlier in this run produced it
            self._use_cached(run, node_id, entry)
            return
        run.current_node = node_id
        emit(events.EXECUTING, {"node": node_id, "display_node": run.display_node.get(node_id, node_id),
                                "prompt_id": run.prompt_id})
        self._report_state(run, emit, node_id, "running", 0.0, 1.0)
        inputs = self._gather_inputs(run, node_id, cls)
        try:
            instance = cls()
            if await self._needs_more_lazy_inputs(run, node_id, cls, instance, inputs, signatures):
                return
            context = NodeRunContext(node_id, run.prompt_id, run.interrupt, self._progress_reporter(run, emit))
            with bind_node_context(context):
                results, ui, expansions = await self._map_over_lists(run, node_id, cls, instance, inputs, emit)
        except ExecutionInterrupted:
            raise
        except BaseException as exc:
            if not _fails_only_the_prompt(exc):
                raise
            raise NodeExecutionError(node_id, class_type, exc, inputs) from exc
        run.executed.append(node_id)
        if ui:
            run.ui[node_id] = ui
            self._emit_executed(run, emit, node_id)
        if expansions:
            try:
                self._start_expansion(run, node_id, results, expansions, signatures)
            except Exception as exc:  # a bad expansion graph (unknown node, a cycle) is the expanding node's error
                raise NodeExecutionError(node_id, class_type, exc, inputs) from exc
            return
        self._store(run, node_id, _merge_outputs(cls, results, run), signatures, emit)

    def _store(self, run: _Run, node_id: str, outputs: tuple[list[Any], ...], signatures: SignatureBuilder,
               emit) -> None:
        run.values[node_id] = outputs
        self._report_state(run, emit, node_id, "finished")
        signature = signatures.signature(node_id)
        with run.abandonment.unless_abandoned() as live:
            if live:  # an abandoned node's late outputs must not serve later prompts from the cache
                self.cache.put(signature, CacheEntry(outputs, run.ui.get(node_id)))
        self._resolve(run, node_id)

    def _progress_reporter(self, run: _Run, emit):
        def on_progress(node_id: str, value: int, total: int, preview: Any) -> None:
            data = {"value": value, "max": total, "prompt_id": run.prompt_id, "node": node_id}
            if preview is not None:
                data["preview"] = preview
            emit(events.PROGRESS, data)
            self._report_state(run, emit, node_id, "running", value, total)
        return on_progress

    def _report_state(self, run: _Run, emit, node_id: str, state: str, value: float | None = None,
                      total: float | None = None) -> None:
        """Record `node_id`'s progress and send ComfyUI's `progress_state`: every started node of the prompt
        with its state, value and max, and the ids of the node it shows on, its parent and its prompt node.
        A finished node's value is its max."""
        entry = run.node_states.setdefault(node_id, {"value": 0.0, "max": 1.0})
        if total is not None:
            entry["max"] = total
        entry["value"] = entry["max"] if state == "finished" else value
        entry["state"] = state
        dynamic = run.dynamic_prompt
        nodes = {known: {**progress, "node_id": known, "prompt_id": run.prompt_id,
                         "display_node_id": dynamic.get_display_node_id(known),
                         "parent_node_id": dynamic.get_parent_node_id(known),
                         "real_node_id": dynamic.get_real_node_id(known)}
                 for known, progress in list(run.node_states.items())}
        emit(events.PROGRESS_STATE, {"prompt_id": run.prompt_id, "nodes": nodes})

    def _gather_inputs(self, run: _Run, node_id: str, cls: type) -> dict[str, list[Any]]:
        """Every input as a list (ComfyUI list semantics): linked outputs are lists, constants become [value]."""
        function = getattr(cls, getattr(cls, "FUNCTION"))
        parameters = inspect.signature(function).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        specs = input_spec.input_specs(cls, run.prompt[node_id].get("inputs", {}))
        gathered: dict[str, list[Any]] = {}
        for name, value in run.prompt[node_id].get("inputs", {}).items():
            if name not in specs and not takes_any:
                continue
            if is_link(value) and specs.get(name) is not None and specs[name].options.get("rawLink"):
                gathered[name] = [value]  # ComfyUI's rawLink: the node gets the link itself (loops use its node id)
            elif is_link(value):
                source = str(value[0])
                # a lazy input not (yet) evaluated is passed as None, as ComfyUI does
                gathered[name] = run.values[source][int(value[1])] if source in run.values else [None]
            else:
                gathered[name] = [input_spec.constant_value(value)]
        for name, value in self._hidden_inputs(run, node_id, cls).items():
            gathered[name] = [value]
        return gathered

    async def _needs_more_lazy_inputs(self, run: _Run, node_id: str, cls: type, instance: Any,
                                      inputs: dict[str, list[Any]], signatures: SignatureBuilder) -> bool:
        """Ask `check_lazy_status` which lazy inputs it needs; schedule the missing ones and re-queue the node."""
        node_inputs = run.prompt[node_id].get("inputs", {})
        specs = input_spec.input_specs(cls, node_inputs)
        lazy_links = {name: str(value[0]) for name, value in node_inputs.items()
                      if is_link(value) and (spec := specs.get(name)) is not None and spec.is_lazy}
        unevaluated = {name for name, source in lazy_links.items() if source not in run.values}
        if not unevaluated or not hasattr(instance, "check_lazy_status"):
            return False
        needed: set[str] = set()
        for call_inputs in _slices(inputs, getattr(cls, "INPUT_IS_LIST", False)):
            requested = await _maybe_await(instance.check_lazy_status(**call_inputs))
            needed.update(requested or [])
        missing = needed & unevaluated
        if not missing:
            return False
        run.requested_lazy.setdefault(node_id, set()).update(missing)
        sources = {lazy_links[name] for name in missing}
        run.waiting_on[node_id] = set(sources)
        for source in sources:  # all registered first: requiring one may resolve another (a cache hit upstream)
            run.dependents.setdefault(source, set()).add(node_id)
        for source in sources:
            self._require(run, source, signatures)
        return True

    async def _map_over_lists(self, run: _Run, node_id: str, cls: type, instance: Any,
                              inputs: dict[str, list[Any]], emit):
        function = getattr(instance, getattr(cls, "FUNCTION"))
        results: list[tuple[Any, ...]] = []
        uis: list[dict[str, Any]] = []
        expansions: list[dict[str, Any]] = []
        output_count = len(input_spec.return_types(cls))
        for call_inputs in _slices(inputs, getattr(cls, "INPUT_IS_LIST", False)):
            blocker = next((v for v in _flat_values(call_inputs) if isinstance(v, ExecutionBlocker)), None)
            if blocker is not None:
                if blocker.message is not None and node_id not in run.blocked_reported:
                    run.blocked_reported.add(node_id)
                    emit(events.EXECUTION_ERROR, {
                        "prompt_id": run.prompt_id, "node_id": node_id,
                        "node_type": run.prompt[node_id]["class_type"], "executed": list(run.executed),
                        "exception_message": f"Execution Blocked: {blocker.message}",
                        "exception_type": "ExecutionBlocked", "traceback": [], "current_inputs": {},
                        "current_outputs": []})
                results.append((ExecutionBlocker(None),) * output_count)
                continue
            with self._guarded(call_inputs):
                returned = await _maybe_await(function(**call_inputs))
            values, ui, expand = _split_return(returned, output_count)
            results.append(values)
            if ui:
                uis.append(ui)
            if expand is not None:
                expansions.append(expand)
        return results, _merge_ui(uis), expansions

    def _guarded(self, call_inputs: dict[str, Any]) -> ContextManager[Any]:
        if self.node_call_guard is None:
            return contextlib.nullcontext()
        return self.node_call_guard(MappingProxyType(call_inputs))

    # ---- expansion -------------------------------------------------------------------------------------
    def _start_expansion(self, run: _Run, node_id: str, results: list[tuple[Any, ...]],
                         expansions: list[dict[str, Any]], signatures: SignatureBuilder) -> None:
        display = run.display_node.get(node_id, node_id)
        new_ids: list[str] = []
        for graph in expansions:
            for new_id, new_node in graph.items():
                new_id = str(new_id)
                if new_id in run.prompt:
                    raise RuntimeError(f"node {node_id} expanded into node id {new_id!r}, which already exists")
                run.prompt[new_id] = {"class_type": new_node["class_type"], "inputs": dict(new_node.get("inputs", {}))}
                override = new_node.get("override_display_id")
                run.display_node[new_id] = run.display_node.get(override, override) if override else display
                run.parent[new_id] = node_id
                new_ids.append(new_id)
        for new_id in new_ids:
            if run.prompt[new_id]["class_type"] not in self.registry:
                raise RuntimeError(f"node {node_id} expanded into unknown node type "
                                   f"{run.prompt[new_id]['class_type']!r}")
        sources = {str(value[0]) for values in results for value in values if is_link(value)}
        sources |= {new_id for new_id in new_ids
                    if input_spec.is_output_node(self.registry.get(run.prompt[new_id]["class_type"]))}
        run.pending_expansions[node_id] = results
        waits = {source for source in sources if source not in run.values}
        run.waiting_on[node_id] = waits
        for source in waits:
            run.dependents.setdefault(source, set()).add(node_id)
        for source in sorted(waits, key=_natural_key):
            self._require(run, source, signatures)
        if not waits:
            self._push_ready(run, node_id)

    def _finish_expansion(self, run: _Run, node_id: str, signatures: SignatureBuilder, emit) -> None:
        results = run.pending_expansions.pop(node_id)
        self._store(run, node_id, _merge_outputs(self._node_class(run, node_id), results, run, links=True), signatures,
                    emit)


def _fails_only_the_prompt(error: BaseException) -> bool:
    """Whether `error`, raised while a prompt runs, is that prompt's failure rather than its caller's: any
    Exception, and SystemExit and KeyboardInterrupt too, so that a node calling sys.exit() cannot stop a server.
    Only a KeyboardInterrupt in the main thread goes on up: that is the user's Ctrl+C, which Python delivers
    to no other thread (elsewhere only a node can have raised it)."""
    if isinstance(error, KeyboardInterrupt):
        return threading.current_thread() is not threading.main_thread()
    return isinstance(error, (Exception, SystemExit))


def _exception_message(cause: BaseException) -> str:
    if isinstance(cause, SystemExit):  # its text is only the exit code
        return f"the node called sys.exit({cause.code!r})"
    return str(cause)


def _interrupted_data(run: _Run) -> dict[str, Any]:
    current = run.current_node
    return {"prompt_id": run.prompt_id, "node_id": current,
            "node_type": run.prompt[current]["class_type"] if current else None,
            "executed": list(run.executed), "timestamp": _now_ms()}


def _link_sources(node: dict[str, Any]) -> list[str]:
    return [str(value[0]) for value in node.get("inputs", {}).values() if is_link(value)]


def _slices(inputs: dict[str, list[Any]], input_is_list: bool) -> Iterable[dict[str, Any]]:
    """The calls a node gets: one with whole lists (INPUT_IS_LIST), else one per item of the longest list."""
    if input_is_list:
        yield dict(inputs)
        return
    if not inputs:
        yield {}
        return
    longest = max(len(values) for values in inputs.values())
    if any(len(values) == 0 for values in inputs.values()):
        return
    for index in range(longest):
        yield {name: values[min(index, len(values) - 1)] for name, values in inputs.items()}


def _flat_values(call_inputs: dict[str, Any]) -> Iterable[Any]:
    for value in call_inputs.values():
        if isinstance(value, list):
            yield from value
        else:
            yield value


def _split_return(returned: Any, output_count: int) -> tuple[tuple[Any, ...], dict[str, Any] | None, Any]:
    """Normalise a node's return value into (outputs, ui, expansion graph)."""
    if isinstance(returned, ExecutionBlocker):
        return (returned,) * output_count, None, None
    if returned is None:
        return (None,) * output_count, None, None
    if isinstance(returned, dict):
        ui = returned.get("ui")
        expand = returned.get("expand")
        values = returned.get("result", (None,) * output_count)
        if isinstance(values, ExecutionBlocker):
            values = (values,) * output_count
        values = tuple(values)
    elif isinstance(returned, (tuple, list)):
        values, ui, expand = tuple(returned), None, None
    else:
        raise TypeError(f"a node must return a tuple or a dict, got {type(returned).__name__}")
    if len(values) != output_count:
        raise TypeError(f"node returned {len(values)} outputs, but declares {output_count} in RETURN_TYPES")
    return values, ui, expand


def _merge_outputs(cls: type, results: list[tuple[Any, ...]], run: _Run,
                   links: bool = False) -> tuple[list[Any], ...]:
    """Per output slot, one list over all mapped calls; with `links`, results that are links into an
    expansion graph are replaced by the outputs they point to."""
    is_list = input_spec.output_is_list(cls)
    merged: list[list[Any]] = [[] for _ in range(len(input_spec.return_types(cls)))]
    for values in results:
        for slot, value in enumerate(values):
            if links and is_link(value):
                merged[slot].extend(run.values[str(value[0])][int(value[1])])
            elif is_list[slot] and not isinstance(value, ExecutionBlocker):
                merged[slot].extend(value)
            else:
                merged[slot].append(value)
    return tuple(merged)


def _ui_by_original_node(run: _Run) -> dict[str, dict[str, Any]]:
    """UI outputs keyed by the prompt's own node ids; nodes made by expansion report under their origin."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for node_id, ui in list(run.ui.items()):  # a copy: an abandoned run's thread may still add to it
        owner = node_id if node_id in run.original_prompt else run.display_node.get(node_id, node_id)
        grouped.setdefault(owner, []).append(ui)
    return {owner: _merge_ui(uis) for owner, uis in grouped.items()}


def _merge_ui(uis: list[dict[str, Any]]) -> dict[str, Any]:
    """The UI of a node that ran once per list item: each key's sequences (lists or tuples) joined in call order,
    as ComfyUI joins them; other values are the last call's."""
    if len(uis) == 1:
        return uis[0]
    merged: dict[str, Any] = {}
    for ui in uis:
        for key, value in ui.items():
            if isinstance(value, (list, tuple)):
                merged.setdefault(key, []).extend(value)
            else:
                merged[key] = value
    return merged


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _describe(value: Any) -> Any:
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return f"<{type(value).__name__}>"


def _natural_key(node_id: str) -> str:
    return node_id.zfill(12) if node_id.isdigit() else "~" + node_id


def _now_ms() -> int:
    return int(time.time() * 1000)
