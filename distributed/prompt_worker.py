"""The head's queue worker in cluster mode: `PromptWorker`'s interface, with prompts run by Ray workers.

A dispatcher thread hands pending prompts to idle workers (`distributed.dispatch` decides which); one thread
per running prompt reads the worker's stream and does what the in-process worker does with the executor's
events: forward them to the client that queued the prompt, write its files (`distributed.outputs`) and
record the outcome in history. When a worker dies or hangs under a prompt, the prompt goes back to the
front of the queue once, and is recorded as failed with the reason the second time. Knows nothing of HTTP
or diffusion.
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any, Callable

from app.prompt_store import PromptStore, QueueItem
from app.prompt_worker import EventSink, PreviewEncoder, history_record
from distributed.dispatch import Candidate, PlacementError, WorkerView, allowed_workers, assign, model_keys
from distributed.messages import Finished, Message, Preview
from distributed.outputs import OutputPlacer
from distributed.pool import WorkerPool, WorkerSlot, error_summary
from engine import events
from engine.registry import NodeRegistry

log = logging.getLogger(__name__)

LOOKAHEAD = 64  # pending prompts considered per dispatch round
IDLE_WAIT = 0.5


class _Run:
    """One prompt on one worker generation, from dispatch until its stream ends."""

    def __init__(self, item: QueueItem, slot: WorkerSlot, target: Callable[["_Run"], None]) -> None:
        self.item = item
        self.slot = slot
        self.actor = slot.actor
        self.generation = slot.generation
        self.source = slot.source
        self.node: str | None = None
        self.node_since = 0.0
        self.recorded = False  # its outcome is in history
        self.thread = threading.Thread(target=target, args=(self,), name=f"ray-run-{slot.name}", daemon=True)


class RayPromptWorker:
    """Runs the store's queue on a `WorkerPool`; what `create_app` gets in cluster mode."""

    def __init__(self, store: PromptStore, sink: EventSink, encode_preview: PreviewEncoder, pool: WorkerPool,
                 runtime_future: concurrent.futures.Future, placer: OutputPlacer) -> None:
        self.store = store
        self.sink = sink
        self.encode_preview = encode_preview
        self.pool = pool
        self.runtime_future = runtime_future
        self.placer = placer
        self._runs: dict[str, _Run] = {}  # by worker name
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._dispatch_loop, name="ray-dispatcher", daemon=True)
        pool.listen(self._changed.set, placer.forget)

    @property
    def current(self) -> QueueItem | None:
        """The running prompt that started a node last: the interface has room for one running prompt."""
        latest = self._latest()
        return latest.item if latest is not None else None

    @property
    def current_node(self) -> str | None:
        latest = self._latest()
        return latest.node if latest is not None else None

    def _latest(self) -> _Run | None:
        with self._lock:
            return max(self._runs.values(), key=lambda run: run.node_since, default=None)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop dispatching, give running prompts `timeout` seconds, then stop the workers. Prompts still
        running stay marked running, so the next start re-queues them, as after a crash."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._changed.set()
        self.store.wake()
        self._thread.join(timeout)
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.thread.join(max(0.0, deadline - time.monotonic()))
        self.pool.stop()

    def status(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.store.remaining()}}

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Stop the running prompt `prompt_id` on whichever worker runs it; without an id, every running one."""
        with self._lock:
            targets = [run for run in self._runs.values() if prompt_id is None or run.item.prompt_id == prompt_id]
        for run in targets:
            self.pool.interrupt(run.slot, run.item.prompt_id)
        return bool(targets)

    # ---- dispatching -----------------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        registry = self._registry()
        while registry is not None and not self._stopping.is_set():
            self._changed.clear()
            with self._lock:
                busy = set(self._runs)
            slots = {slot.name: slot for slot in self.pool.ready_slots()}
            if not set(slots) - busy:
                self._changed.wait(IDLE_WAIT)
                continue
            pending = self.store.pending(LOOKAHEAD)
            if not pending:
                self.store.wait_for_pending(IDLE_WAIT)
            elif not self._dispatch(pending, slots, busy, registry):
                self._changed.wait(IDLE_WAIT)  # every pending prompt is placed on busy workers

    def _registry(self) -> NodeRegistry | None:
        """The head's registry (to find loader nodes), once the runtime is built; None if it never will be."""
        while not self._stopping.is_set():
            done, _ = concurrent.futures.wait([self.runtime_future], timeout=IDLE_WAIT)
            if done:
                if self.runtime_future.exception() is not None:
                    return None  # the server answers 503 with the reason; nothing can run
                return self.runtime_future.result().registry
        return None

    def _dispatch(self, pending: list[QueueItem], slots: dict[str, WorkerSlot], busy: set[str],
                  registry: NodeRegistry) -> bool:
        candidates = []
        names = self.pool.names()
        for item in pending:
            try:
                allowed = allowed_workers(item.extra_data, names)
            except PlacementError as error:
                self._reject(item, str(error))
                continue
            candidates.append(Candidate(item.prompt_id, model_keys(item.prompt, registry), allowed))
        workers = [WorkerView(name, name not in busy, frozenset(slot.warm)) for name, slot in slots.items()]
        keys = {candidate.prompt_id: candidate.model_keys for candidate in candidates}
        started = False
        for prompt_id, name in assign(candidates, workers):
            item = self.store.take(prompt_id)
            if item is None:  # deleted from the queue meanwhile
                continue
            self.pool.note_models(slots[name], keys[prompt_id])
            run = _Run(item, slots[name], self._run)
            with self._lock:
                self._runs[name] = run
            run.thread.start()
            started = True
        return started

    def _reject(self, item: QueueItem, reason: str) -> None:
        """A prompt that can never run here: recorded as failed at once."""
        taken = self.store.take(item.prompt_id)
        if taken is not None:
            failure = _failure(taken, None, reason, "PlacementError")
            self.store.finish(taken, {}, {"status_str": "error", "completed": False, "messages": [failure]})
            self._notify_failed(taken, failure)

    # ---- running ---------------------------------------------------------------------------------------
    def _run(self, run: _Run) -> None:
        import ray

        item = run.item
        self.sink.send_from_thread("status", {"status": self.status()})
        try:
            stream = run.actor.run_prompt.remote(item.prompt, item.prompt_id, item.extra_data, item.outputs,
                                                 item.client_id, self.encode_preview)
            for reference in stream:
                self._handle(run, ray.get(reference))
            if not run.recorded:
                raise RuntimeError("the worker's stream ended without a result")
        except ray.exceptions.RayActorError as error:
            self._worker_lost(run, error)
        except Exception:
            if not self._stopping.is_set() and not run.recorded:
                log.exception("prompt %s failed outside any node on %s", item.prompt_id, run.slot.name)
                self.store.finish(item, {}, {"status_str": "error", "completed": False, "messages": []})
        finally:
            self._release(run)

    def _release(self, run: _Run) -> None:
        """The worker is free for the next prompt (once per run: at its result, or when its stream broke)."""
        with self._lock:
            if self._runs.get(run.slot.name) is not run:
                return
            del self._runs[run.slot.name]
        if not self._stopping.is_set():
            self.sink.send_from_thread("status", {"status": self.status()})
        self._changed.set()

    def _handle(self, run: _Run, message: Message) -> None:
        if isinstance(message, Preview):
            self.sink.send_bytes_from_thread(message.payload, message.sid)
            return
        self.placer.place(run.source, message.files)
        if isinstance(message, Finished):
            result = message.result
            result.outputs = {node: self.placer.rename(run.source, ui) for node, ui in result.outputs.items()}
            self.store.finish(run.item, *history_record(result))
            run.recorded = True
            # the run's end, as ComfyUI announces it: only now that history has it (clients fetch it at once)
            self.sink.send_from_thread(events.EXECUTING, {"node": None, "prompt_id": run.item.prompt_id},
                                       run.item.client_id)
            self._release(run)
            return
        data = message.data
        if message.name == events.EXECUTING:
            if data.get("node") is None:  # sent above, once the result is recorded
                return
            run.node = data.get("node")
            run.node_since = time.monotonic()
        elif message.name == events.EXECUTED:
            data = {**data, "output": self.placer.rename(run.source, data.get("output") or {})}
        self.sink.send_from_thread(message.name, data, message.sid)

    def _worker_lost(self, run: _Run, error: BaseException) -> None:
        if self._stopping.is_set():  # the pool is stopping its workers: the prompt stays for the next start
            return
        reason = self.pool.lose(run.slot, run.generation, f"{run.slot.name} died: {error_summary(error)}")
        if run.recorded:
            return
        failure = _failure(run.item, run.node, reason, "WorkerLost")
        if self.store.retry_once(run.item, failure):
            log.warning("%s while running prompt %s: it goes back to the front of the queue", reason,
                        run.item.prompt_id)
        else:
            log.error("%s while running prompt %s, its second try: recorded as failed", reason, run.item.prompt_id)
            self._notify_failed(run.item, failure)

    def _notify_failed(self, item: QueueItem, failure: tuple[str, dict[str, Any]]) -> None:
        """Tell the client, which would otherwise wait for this prompt's end forever."""
        self.sink.send_from_thread(events.EXECUTION_ERROR, failure[1], item.client_id)
        self.sink.send_from_thread(events.EXECUTING, {"node": None, "prompt_id": item.prompt_id}, item.client_id)


def _failure(item: QueueItem, node: str | None, reason: str, kind: str) -> tuple[str, dict[str, Any]]:
    """An `execution_error` message for a prompt that failed outside its nodes."""
    node_type = item.prompt.get(node, {}).get("class_type") if node is not None else None
    return (events.EXECUTION_ERROR, {"prompt_id": item.prompt_id, "node_id": node, "node_type": node_type,
                                     "executed": [], "exception_message": reason, "exception_type": kind,
                                     "traceback": [], "current_inputs": {}, "current_outputs": [],
                                     "timestamp": int(time.time() * 1000)})
