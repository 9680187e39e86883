"""A thread-safe interrupt request shared by whoever runs a prompt and whoever wants to stop it.

Knows nothing of HTTP or diffusion: the server, the CLI (Ctrl+C) and tests all hold the same object.
"""
from __future__ import annotations

import threading


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
