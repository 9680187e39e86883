"""The one worker thread that runs queued prompts in order and records their outcome in history.

It keeps one executor (so the output cache and loaded models stay warm between prompts), forwards the
engine's events to the client that queued each prompt, and goes on with the next prompt whatever a node
did. Knows nothing of HTTP or websockets: it gets an `EventSink` (the server passes its client hub) and a
`PreviewEncoder` (the server passes its preview frame encoder), and the store. `QueueWorker` is the
interface the server needs of whatever runs the queue, this worker or `distributed`'s Ray workers.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Protocol

from app.prompt_store import PromptStore, QueueItem
from engine import events
from engine.executor import ExecutionResult, Executor

log = logging.getLogger(__name__)

HISTORY_MESSAGES = {events.EXECUTION_START, events.EXECUTION_CACHED, events.EXECUTION_SUCCESS,
                    events.EXECUTION_ERROR, events.EXECUTION_INTERRUPTED}


class EventSink(Protocol):
    def send_from_thread(self, event: str, data: dict[str, Any], sid: str | None = None) -> None: ...

    def send_bytes_from_thread(self, payload: bytes, sid: str | None) -> None: ...


PreviewEncoder = Callable[[Any], bytes | None]  # a progress preview to the bytes sent to its client, or None


class QueueWorker(Protocol):
    """What the server needs of whatever runs the queue: this in-process worker or the Ray workers."""

    current: QueueItem | None
    current_node: str | None

    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...

    def status(self) -> dict[str, Any]: ...

    def interrupt(self, prompt_id: str | None = None) -> bool: ...


class PromptWorker:
    def __init__(self, store: PromptStore, executor_ready: Callable[[], Executor], sink: EventSink,
                 encode_preview: Callable[[Any], bytes | None], warm_up: Callable[[], None] | None = None) -> None:
        self.store = store
        self.executor_ready = executor_ready
        self.warm_up = warm_up  # run once by the worker thread before its first prompt (see Runtime.warm_up)
        self.sink = sink
        self.encode_preview = encode_preview
        self.current: QueueItem | None = None
        self.current_node: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="prompt-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.store.wake()
        self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.store.remaining()}}

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Stop the running prompt (only if it is `prompt_id`, when given); True if one was asked to stop."""
        running = self.current
        if running is None or (prompt_id is not None and prompt_id != running.prompt_id):
            return False
        self.executor_ready().interrupt.request()
        return True

    def _loop(self) -> None:
        executor = self.executor_ready()
        executor.events.subscribe(self._forward)
        if self.warm_up is not None:
            try:
                self.warm_up()
            except Exception:  # a prompt would meet the same problem and report it on its node
                log.exception("warming up the engine failed")
        while not self._stop.is_set():
            item = self.store.take_next(timeout=0.5)
            if item is None:
                continue
            self.current = item
            self.sink.send_from_thread("status", {"status": self.status()})
            try:
                result = executor.execute(item.prompt, item.prompt_id, item.extra_data, item.outputs)
                self._record(item, result)
            except Exception:  # the executor itself failed: record it, never let the worker die
                log.exception("prompt %s failed outside any node", item.prompt_id)
                self.store.finish(item, {}, {"status_str": "error", "completed": False, "messages": []})
            finally:
                self.current = None
                self.current_node = None
                self.sink.send_from_thread("status", {"status": self.status()})

    def _record(self, item: QueueItem, result: ExecutionResult) -> None:
        self.store.finish(item, *history_record(result))

    def _forward(self, name: str, data: dict[str, Any]) -> None:
        item = self.current
        client_id = item.client_id if item is not None else None
        if name == events.EXECUTING:
            self.current_node = data.get("node")
        preview = None
        if name == events.PROGRESS and "preview" in data:
            data = dict(data)
            preview = data.pop("preview")
        self.sink.send_from_thread(name, data, client_id)
        if preview is not None:
            payload = self.encode_preview(preview)
            if payload is not None:
                self.sink.send_bytes_from_thread(payload, client_id)


def history_record(result: ExecutionResult) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """What history keeps of a run (outputs, ComfyUI's status object, per-node meta), whoever ran it."""
    messages = [[name, data] for name, data in result.messages if name in HISTORY_MESSAGES]
    status = {"status_str": "success" if result.success else "error", "completed": result.success,
              "messages": messages}
    meta = {node_id: {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}
            for node_id in result.outputs}
    return result.outputs, status, meta
