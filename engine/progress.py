"""The small API long-running nodes use to report progress and honour interrupts.

The executor binds a `NodeRunContext` for the node it is running (a context variable, so two executors in
one process never see each other's state). Nodes call `report_progress` or use `ProgressBar` (the same
shape as ComfyUI's `comfy.utils.ProgressBar`), which also raises `ExecutionInterrupted` when an interrupt
was requested, so every progress report is an interrupt check.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from engine.interrupt import InterruptFlag, RunInterrupt

ProgressCallback = Callable[[str, int, int, Any], None]


@dataclass
class NodeRunContext:
    node_id: str
    prompt_id: str
    interrupt: InterruptFlag | RunInterrupt
    on_progress: ProgressCallback


_current: contextvars.ContextVar[NodeRunContext | None] = contextvars.ContextVar("node_run_context", default=None)


@contextlib.contextmanager
def bind_node_context(context: NodeRunContext) -> Iterator[NodeRunContext]:
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def current_node_context() -> NodeRunContext | None:
    return _current.get()


def check_interrupted() -> None:
    """Raise `ExecutionInterrupted` if the running prompt was asked to stop; a no-op outside the executor."""
    context = _current.get()
    if context is not None:
        context.interrupt.raise_if_set()


def report_progress(value: int, total: int, preview: Any = None) -> None:
    """Report `value` of `total` steps for the running node (and check for an interrupt first).

    `preview` is an optional payload (for example a PIL image of the current latents) passed through
    to subscribers untouched. Outside the executor this does nothing, so nodes stay callable from scripts.
    """
    context = _current.get()
    if context is None:
        return
    context.interrupt.raise_if_set()
    context.on_progress(context.node_id, int(value), int(total), preview)


class ProgressBar:
    """Step counter for a node, compatible with ComfyUI's `comfy.utils.ProgressBar`."""

    def __init__(self, total: int, node_id: str | None = None) -> None:
        self.total = int(total)
        self.current = 0
        self.node_id = node_id

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = int(total)
        self.current = min(int(value), self.total) if self.total > 0 else int(value)
        report_progress(self.current, self.total, preview)

    def update(self, value: int = 1) -> None:
        self.update_absolute(self.current + int(value), self.total)
