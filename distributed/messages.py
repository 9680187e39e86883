"""What a worker streams back to the head while it runs a prompt, in the order things happened.

Plain picklable data, because Ray carries it between processes and machines. Files travel as bytes with
the message that names them (see `distributed.outputs`). Knows nothing of Ray, HTTP or the queue.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distributed.outputs import ShippedFile
from engine.executor import ExecutionResult


@dataclass(frozen=True)
class Event:
    """An engine event (`engine.events`) or a plugin's own message, for client `sid` (None: every client)."""

    name: str
    data: dict[str, Any]
    sid: str | None
    files: tuple[ShippedFile, ...] = ()


@dataclass(frozen=True)
class Preview:
    """A binary websocket frame, already encoded on the worker (so no latents cross the network)."""

    payload: bytes
    sid: str | None


@dataclass(frozen=True)
class Finished:
    """The last message of a run: the executor's result and the files written since the last event."""

    result: ExecutionResult
    files: tuple[ShippedFile, ...]


Message = Event | Preview | Finished
