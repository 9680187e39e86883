"""`python main.py run WORKFLOW.json`: run one workflow without the server, with tqdm progress bars.

Exit codes: 0 done, 1 a node failed, 2 the workflow could not be read or did not validate, 130 interrupted.
Ctrl+C interrupts the run; a node that ignores it for the interrupt grace period (`--interrupt-grace`), or a
second Ctrl+C, abandons the run, and the process exits with 130 all the same, which ends the node's thread.
A node raising `KeyboardInterrupt` or calling `sys.exit()` itself is that node's error (exit code 1).
"""
from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from app.runtime import Runtime
from engine import events
from engine.executor import ExecutionResult
from engine.interrupt import Abandonment
from engine.registry import NodeRegistry
from engine.validation import ValidationResult, validate_prompt
from engine.workflow_format import WorkflowFormatError, is_editor_format, to_api_format

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


class WorkflowLoadError(Exception):
    """The file is missing, not JSON, or not a workflow; the message says which."""


def load_workflow(path: Path, registry: NodeRegistry) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Read a workflow file in either format; return the API-format prompt and the editor workflow if given."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkflowLoadError(f"workflow file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowLoadError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise WorkflowLoadError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WorkflowLoadError(f"{path} does not hold a workflow (expected a JSON object)")
    try:
        editor_workflow = data if is_editor_format(data) else None
        return to_api_format(data, registry), editor_workflow
    except WorkflowFormatError as exc:
        raise WorkflowLoadError(f"{path}: {exc}") from None


def format_validation_errors(validation: ValidationResult) -> str:
    """One readable line per problem: node id, class, input, message and details."""
    lines = []
    if validation.error:
        error = validation.error
        lines.append(f"error: {error['message']}" + (f" ({error['details']})" if error.get("details") else ""))
    for node_id, entry in sorted(validation.node_errors.items()):
        for problem in entry["errors"]:
            input_name = (problem.get("extra_info") or {}).get("input_name")
            where = f"node {node_id} ({entry.get('class_type')})" + (f" input '{input_name}'" if input_name else "")
            details = f": {problem['details']}" if problem.get("details") else ""
            lines.append(f"  {where}: {problem['message']}{details}")
    return "\n".join(lines)


def describe_outputs(result: ExecutionResult, runtime: Runtime) -> list[str]:
    """Where each output node's files went, or its UI values when it produced no files."""
    folders = {"output": runtime.settings.output_dir, "temp": runtime.settings.temp_dir,
               "input": runtime.settings.input_dir}
    lines = []
    for node_id, ui in result.outputs.items():
        for key, items in ui.items():
            for item in items if isinstance(items, list) else [items]:
                if isinstance(item, dict) and "filename" in item:
                    folder = folders.get(item.get("type", "output"), runtime.settings.output_dir)
                    lines.append(f"node {node_id}: {folder / item.get('subfolder', '') / item['filename']}")
                else:
                    lines.append(f"node {node_id}: {key} = {item}")
    return lines


class _ProgressBars:
    """Turns engine events into a node bar and a per-node step bar."""

    def __init__(self, stream: TextIO, total_nodes: int) -> None:
        self.stream = stream
        self.nodes = tqdm(total=total_nodes, desc="nodes", unit="node", file=stream, position=0)
        self.steps: tqdm | None = None
        self.step_node: str | None = None
        self.started: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, name: str, data: dict[str, Any]) -> None:
        with self.lock:
            if name == events.EXECUTION_CACHED:
                self.nodes.total = max(self.nodes.total - len(data["nodes"]), 0)
                self.nodes.refresh()
            elif name == events.EXECUTING and data.get("node") is not None:
                self._close_steps()
                if data["node"] not in self.started:
                    self.started.add(data["node"])
                    self.nodes.total = max(self.nodes.total, len(self.started))
                    self.nodes.set_postfix_str(f"node {data['node']}")
                    self.nodes.update(1)
            elif name == events.PROGRESS:
                if self.steps is None or self.step_node != data["node"]:
                    self._close_steps()
                    self.steps = tqdm(total=data["max"], desc=f"  node {data['node']}", unit="step",
                                      file=self.stream, position=1, leave=False)
                    self.step_node = data["node"]
                self.steps.total = data["max"]
                self.steps.n = data["value"]
                self.steps.refresh()

    def _close_steps(self) -> None:
        if self.steps is not None:
            self.steps.close()
            self.steps = None

    def close(self) -> None:
        with self.lock:
            self._close_steps()
            self.nodes.close()


def run_workflow_file(runtime: Runtime, path: Path, stream: TextIO = sys.stderr,
                      output_nodes: list[str] | None = None) -> int:
    try:
        prompt, editor_workflow = load_workflow(path, runtime.registry)
    except WorkflowLoadError as exc:
        print(f"error: {exc}", file=stream)
        return EXIT_INVALID
    validation = validate_prompt(prompt, runtime.registry, partial_execution_targets=output_nodes)
    if not validation.ok:
        print(f"{path}: the workflow is not valid\n{format_validation_errors(validation)}", file=stream)
        return EXIT_INVALID
    if validation.node_errors:
        print(f"warning: some outputs will not run\n{format_validation_errors(validation)}", file=stream)
    extra_data = {"extra_pnginfo": {"workflow": editor_workflow}} if editor_workflow else {}
    bars = _ProgressBars(stream, total_nodes=len(validation.prompt))
    unsubscribe = runtime.executor.events.subscribe(bars)
    try:
        result = _execute(runtime, validation, extra_data)
    finally:
        unsubscribe()
        bars.close()
    if result.status == "interrupted":
        print("interrupted", file=stream)
        return EXIT_INTERRUPTED
    if result.status == "error":
        error = result.error or {}
        print(f"error in node {error.get('node_id')} ({error.get('node_type')}): "
              f"{error.get('exception_type')}: {error.get('exception_message')}", file=stream)
        return EXIT_FAILED
    for line in describe_outputs(result, runtime):
        print(line, file=stream)
    return EXIT_OK


def _execute(runtime: Runtime, validation: ValidationResult, extra_data: dict[str, Any]) -> ExecutionResult:
    """Run the prompt in a thread of its own, so that Ctrl+C (which Python raises in the main thread) lands
    here, in the wait, and not in a node."""
    outcome: dict[str, ExecutionResult] = {}
    abandonment = Abandonment()
    done = threading.Event()

    def execute() -> None:
        try:
            outcome["result"] = runtime.executor.execute(validation.prompt, str(uuid.uuid4()), extra_data,
                                                         validation.outputs, abandonment)
        finally:
            done.set()

    try:
        threading.Thread(target=execute, name="executor", daemon=True).start()
        _wait(done)
    except KeyboardInterrupt:
        abandoned = _interrupt(runtime, done, abandonment)
        if abandoned is not None:
            return abandoned
    return outcome["result"]


def _interrupt(runtime: Runtime, done: threading.Event, abandonment: Abandonment) -> ExecutionResult | None:
    """Ctrl+C: interrupt the run and wait for it to stop; when its node ignores that for the grace period, or on
    a second Ctrl+C, abandon it and return its interrupted result (None when the run stopped by itself).

    Waits on `done`, never on `Thread.join`: a join that Ctrl+C interrupts marks the thread as ended although
    it still runs (CPython 3.11)."""
    runtime.executor.interrupt.request()
    try:
        _wait(done, runtime.settings.interrupt_grace)
    except KeyboardInterrupt:
        pass
    abandoned = abandonment.abandon() if not done.is_set() else None
    if abandoned is None:
        _wait(done)  # it ended, or ends in a moment
    else:
        atexit.register(_exit_at_once_if_running, done)
    return abandoned


def _exit_at_once_if_running(done: threading.Event) -> None:
    """At exit, with an abandoned node still running: end the process now, before the interpreter's shutdown,
    which aborts it (SIGABRT instead of exit code 130) when that thread re-enters Python meanwhile, as a node
    busy in torch does."""
    if not done.is_set():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)


def _wait(done: threading.Event, seconds: float | None = None) -> None:
    """Wait for `done` (up to `seconds`) in short steps: the main thread sees Ctrl+C only when a wait returns."""
    deadline = None if seconds is None else time.monotonic() + seconds
    while not done.wait(0.1):
        if deadline is not None and time.monotonic() >= deadline:
            return
