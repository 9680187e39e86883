"""Stopping a run: a thread-safe interrupt request, and abandoning a run whose node ignores it.

Knows nothing of HTTP or diffusion: the server, the CLI (Ctrl+C) and tests all hold the same `InterruptFlag`.
An interrupt is a request a node honours at its next progress report; a node that never reports cannot be
stopped, because a Python thread cannot be stopped from outside. What the caller can do then is abandon the
run (`Abandonment`): its thread goes on, cut off from the world.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator


class ExecutionInterrupted(Exception):
    """Raised inside the executor (or a long node, at its next progress report) to stop the run."""


class InterruptFlag:
    """Set from any thread; checked by the executor between nodes and by nodes when they report progress."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def request(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def raise_if_set(self) -> None:
        if self._event.is_set():
            raise ExecutionInterrupted("Execution was interrupted")


class Abandonment:
    """How the caller of one run (one `Abandonment` per run) gives up on it for good, when a node ignores an
    interrupt.

    The executor makes every effect a run has on the world (its events, its output cache entries) inside
    `unless_abandoned`, so once `abandon()` has returned none happens any more, and the run's `RunInterrupt`
    stays set whatever later runs do to the executor's flag: a node that reports progress again stops there.
    The thread itself goes on until the node returns.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()  # reentrant: abandon() emits the run's last events through the gate
        self._give_up: Callable[[], Any] | None = None
        self._abandoned = False

    def started(self, give_up: Callable[[], Any]) -> None:
        """The executor: the run is under way; `give_up()` reports it as interrupted and returns its result."""
        with self._lock:
            self._give_up = give_up

    def ended(self) -> None:
        """The executor: the run has made its last effect; abandoning it now changes nothing."""
        with self._lock:
            self._give_up = None

    def abandon(self) -> Any:
        """Cut the run off and return its result as the executor reports it (interrupted, with the events it
        sent so far and the interruption it sends now); None when the run is not under way (not started yet,
        or ended: its own result stands)."""
        with self._lock:
            if self._give_up is None:
                return None
            result = self._give_up()
            self._abandoned = True
            self._give_up = None
            return result

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    @contextlib.contextmanager
    def unless_abandoned(self) -> Iterator[bool]:
        """Yield whether the run is still live, and keep it so (abandon() waits) until the block ends."""
        with self._lock:
            yield not self._abandoned


class RunInterrupt:
    """One run's interrupt as its nodes see it: the executor's shared flag, or the run's abandonment, which
    no later run can clear. It has `InterruptFlag`'s methods, so nodes and the ComfyUI compatibility layer
    cannot tell the two apart; an abandoned run's node can neither clear nor request the next run's interrupt."""

    def __init__(self, shared: InterruptFlag, abandonment: Abandonment) -> None:
        self.shared = shared
        self.abandonment = abandonment

    def request(self) -> None:
        if not self.abandonment.abandoned:
            self.shared.request()

    def clear(self) -> None:
        if not self.abandonment.abandoned:
            self.shared.clear()

    def is_set(self) -> bool:
        return self.abandonment.abandoned or self.shared.is_set()

    def raise_if_set(self) -> None:
        if self.is_set():
            raise ExecutionInterrupted("Execution was interrupted")
