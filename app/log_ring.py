"""The server's recent log lines for ComfyUI's frontend (its terminal panel: /internal/logs, /internal/logs/raw and
"logs" websocket messages to subscribed clients): a logging handler keeping the last `capacity` records as
ComfyUI's entries ({"t": ISO time, "m": the line}) and handing each new entry to the subscribers' sender. Knows
nothing of HTTP; the server installs one on the root logger while it runs.
"""
from __future__ import annotations

import collections
import logging
import shutil
import threading
from datetime import datetime
from typing import Any, Callable

DEFAULT_CAPACITY = 300  # ComfyUI's

# Delivers new entries to one subscribed client: (client id, {"entries": [...], "size": {...}})
Sender = Callable[[str, dict[str, Any]], None]


def terminal_size() -> dict[str, int]:
    """The server's terminal size, as ComfyUI reports it with the logs (80x24 when there is no terminal)."""
    size = shutil.get_terminal_size((80, 24))
    return {"cols": size.columns, "rows": size.lines}


class LogRing(logging.Handler):
    """The last `capacity` log records as ComfyUI's log entries, and the clients subscribed to new ones."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, sender: Sender | None = None) -> None:
        super().__init__(level=logging.INFO)
        self.setFormatter(logging.Formatter("%(message)s"))
        self._entries: collections.deque[dict[str, str]] = collections.deque(maxlen=capacity)
        self._subscribers: set[str] = set()
        self._lock = threading.Lock()
        self._sending = threading.local()  # a record logged while sending one is kept but not sent again
        self.sender = sender

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = {"t": datetime.fromtimestamp(record.created).isoformat(), "m": self.format(record) + "\n"}
        except Exception:  # a record that cannot be formatted is not the terminal's business  # noqa: BLE001
            return
        with self._lock:
            self._entries.append(entry)
            subscribers = list(self._subscribers)
        if not subscribers or self.sender is None or getattr(self._sending, "active", False):
            return
        self._sending.active = True
        try:
            for client_id in subscribers:
                self.sender(client_id, {"entries": [entry], "size": terminal_size()})
        finally:
            self._sending.active = False

    def entries(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self._entries)

    def subscribe(self, client_id: str, enabled: bool) -> None:
        with self._lock:
            if enabled:
                self._subscribers.add(client_id)
            else:
                self._subscribers.discard(client_id)
