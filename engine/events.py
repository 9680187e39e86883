"""Execution events: one name list and a small bus any number of subscribers (CLI, server, tests) listen on.

Names and fields follow ComfyUI's websocket messages so the server can forward them untouched.
Knows nothing of HTTP: a subscriber is any callable taking `(event_name, data)`.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)

EXECUTION_START = "execution_start"
EXECUTION_CACHED = "execution_cached"
EXECUTING = "executing"
PROGRESS = "progress"
EXECUTED = "executed"
EXECUTION_ERROR = "execution_error"
EXECUTION_INTERRUPTED = "execution_interrupted"
EXECUTION_SUCCESS = "execution_success"
PROGRESS_STATE = "progress_state"  # every started node's state (running/finished, value/max) of one prompt

Subscriber = Callable[[str, dict[str, Any]], None]


class EventBus:
    """Fan-out of events; a subscriber that raises is logged and never breaks the execution."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; return a function that removes it again."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def emit(self, event: str, data: dict[str, Any]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event, data)
            except Exception:
                log.exception("event subscriber failed on %s", event)
