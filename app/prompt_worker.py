"""The one worker thread that runs queued prompts in order and records their outcome in history.

It keeps one executor (so the output cache and loaded models stay warm between prompts), forwards the
engine's events to the client that queued each prompt, and goes on with the next prompt whatever a node
did: an exception, `sys.exit()`, `KeyboardInterrupt` or running out of memory (`MemoryError`, torch's
out-of-memory errors) fails that node's prompt only. Knows nothing of HTTP or websockets: it gets an
`EventSink` (the server passes its client hub) and a `PreviewEncoder` (the server passes its preview frame
encoder), and the store. `QueueWorker` is the interface the server needs of whatever runs the queue, this
worker or `distributed`'s Ray workers.

Each prompt runs in a thread of its own ("prompt-run <prompt id>") that this worker's thread watches. A node
stops on an interrupt at its next progress report; one that ignores an interrupt for longer than
`interrupt_grace` seconds is abandoned (`engine.interrupt.Abandonment`): its client gets
`execution_interrupted`, history records the prompt as interrupted, exactly as for an ordinary interrupt, and
the next prompt starts. Python cannot stop a thread, so what is left running is that prompt's thread, inside
the node's function, until the function returns:
- it keeps what it holds: the node's inputs and everything it allocated, in RAM or on the GPU, and the loaded
  models among its inputs stay pinned in the model manager (never evicted to make room), so the next prompts
  have that much less memory; a node computing on the GPU shares the GPU with them (slower, or out of memory);
- nothing of it reaches later prompts: the executor sends none of its events any more (it cannot be taken for
  the next prompt's) and puts none of its outputs into the output cache; only files the node writes itself
  (a saved image) still appear. If the node reports progress again, it is stopped there;
- when the function returns, the thread ends and its memory is freed. A node that never returns keeps it
  until the process ends (the thread is a daemon: it does not keep the server from stopping). Every abandoned
  prompt is logged with the number of abandoned threads still alive (`PromptWorker.abandoned`).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Protocol

from app.prompt_store import PromptStore, QueueItem
from app.settings import DEFAULT_INTERRUPT_GRACE_S
from engine import events
from engine.executor import ExecutionResult, Executor
from engine.interrupt import Abandonment

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.05  # how often the worker looks whether its prompt's run ended or ignores an interrupt

HISTORY_MESSAGES = {events.EXECUTION_START, events.EXECUTION_CACHED, events.EXECUTION_SUCCESS,
                    events.EXECUTION_ERROR, events.EXECUTION_INTERRUPTED}


class EventSink(Protocol):
    def send_from_thread(self, event: str, data: dict[str, Any], sid: str | None = None) -> None: ...

    def send_bytes_from_thread(self, payload: bytes, sid: str | None, node_id: str | None = None,
                               prompt_id: str | None = None) -> None: ...


PreviewEncoder = Callable[[Any], bytes | None]  # a progress preview to the bytes sent to its client, or None


class QueueWorker(Protocol):
    """What the server needs of whatever runs the queue: this in-process worker or the Ray workers."""

    current: QueueItem | None
    current_node: str | None

    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...

    def status(self) -> dict[str, Any]: ...

    def interrupt(self, prompt_id: str | None = None) -> bool: ...


class PromptRun(threading.Thread):
    """One prompt's run on the executor, in a thread of its own; its result, or what the executor let out."""

    def __init__(self, executor: Executor, item: QueueItem) -> None:
        super().__init__(name=f"prompt-run {item.prompt_id}", daemon=True)
        self.executor = executor
        self.item = item
        self.abandonment = Abandonment()
        self.result: ExecutionResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        item = self.item
        try:
            self.result = self.executor.execute(item.prompt, item.prompt_id, item.extra_data, item.outputs,
                                                abandonment=self.abandonment)
        except BaseException as error:  # handed to the worker, which records the prompt as failed
            self.error = error


class PromptWorker:
    def __init__(self, store: PromptStore, executor_ready: Callable[[], Executor], sink: EventSink,
                 encode_preview: Callable[[Any], bytes | None], warm_up: Callable[[], None] | None = None,
                 interrupt_grace: float = DEFAULT_INTERRUPT_GRACE_S,
                 after_prompt: Callable[[], None] | None = None,
                 read_ahead: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.store = store
        self.executor_ready = executor_ready
        self.warm_up = warm_up  # run once by the worker thread before its first prompt (see Runtime.warm_up)
        self.read_ahead = read_ahead  # given the first prompt queued while warm_up runs (Runtime.read_ahead)
        self.after_prompt = after_prompt  # run by the worker thread after each prompt (the server passes
        # Runtime.release_freed_memory)
        self.sink = sink
        self.encode_preview = encode_preview
        self.interrupt_grace = interrupt_grace
        self.current: QueueItem | None = None
        self.current_node: str | None = None
        self.abandoned: list[PromptRun] = []  # runs given up on whose node had not returned when last looked at
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
            self._warm_up()
        while not self._stop.is_set():
            item = self.store.take_next(timeout=0.5)
            if item is None:
                continue
            self.current = item
            self.sink.send_from_thread("status", {"status": self.status()})
            try:
                self._record(item, self._run(executor, item))
            except BaseException:  # the executor itself failed, even with SystemExit: record it, the worker goes on
                log.exception("prompt %s failed outside any node", item.prompt_id)
                self.store.finish(item, {}, {"status_str": "error", "completed": False, "messages": []})
            finally:
                self.current = None
                self.current_node = None
                self._announce_end(item)
            if self.after_prompt is not None:
                try:
                    self.after_prompt()
                except Exception:  # housekeeping: the next prompt runs anyway
                    log.exception("cleaning up after prompt %s failed", item.prompt_id)

    def _warm_up(self) -> None:
        """`warm_up`, while a helper thread hands the first prompt queued meanwhile to `read_ahead`, so that its
        files are read as the libraries import. The helper is done before the first prompt is taken: a read
        ahead is started before its loader can run, or not at all."""
        warmed = threading.Event()
        helper = None
        if self.read_ahead is not None:
            helper = threading.Thread(target=self._read_ahead_of_first_prompt, args=(warmed,),
                                      name="prompt-read-ahead", daemon=True)
            helper.start()
        try:
            self.warm_up()
        except Exception:  # a prompt would meet the same problem and report it on its node
            log.exception("warming up the engine failed")
        finally:
            warmed.set()
            if helper is not None:
                self.store.wake()
                helper.join()

    def _read_ahead_of_first_prompt(self, warmed: threading.Event) -> None:
        while not warmed.is_set() and not self._stop.is_set():
            if not self.store.wait_for_pending(timeout=0.5):
                continue
            pending = self.store.pending(limit=1)
            if pending and not warmed.is_set():
                try:
                    self.read_ahead(pending[0].prompt)
                except Exception:  # only time is at stake: the loaders read for themselves
                    log.exception("reading ahead for prompt %s failed", pending[0].prompt_id)
                return

    def _run(self, executor: Executor, item: QueueItem) -> ExecutionResult:
        """Run `item` and return its result; when its node ignores an interrupt for longer than the grace
        period, abandon the run and return the interrupted result the executor reports for it."""
        run = PromptRun(executor, item)
        run.start()
        ignored_since: float | None = None
        while True:
            run.join(WATCH_INTERVAL_S)
            if not run.is_alive():
                break
            if not executor.interrupt.is_set():  # none asked, or the node cleared it (ComfyUI's API allows that)
                ignored_since = None
                continue
            now = time.monotonic()
            ignored_since = now if ignored_since is None else ignored_since
            if now - ignored_since >= self.interrupt_grace:
                abandoned = run.abandonment.abandon()
                if abandoned is not None:  # else the run ended meanwhile (or has yet to start): keep waiting
                    self._note_abandoned(run, abandoned)
                    return abandoned
        if run.error is not None:
            raise run.error
        assert run.result is not None
        return run.result

    def _note_abandoned(self, run: PromptRun, result: ExecutionResult) -> None:
        self.abandoned = [earlier for earlier in self.abandoned if earlier.is_alive()] + [run]
        error = result.error or {}
        log.error("prompt %s: node %s (%s) ignored the interrupt for %g s, so the prompt was abandoned; its thread "
                  "%r runs on in the background, holding the node's memory, until the node returns "
                  "(%d abandoned thread(s) alive)", run.item.prompt_id, error.get("node_id"), error.get("node_type"),
                  self.interrupt_grace, run.name, len(self.abandoned))

    def _record(self, item: QueueItem, result: ExecutionResult) -> None:
        self.store.finish(item, *history_record(result))

    def _announce_end(self, item: QueueItem) -> None:
        """Tell the client its prompt ended (`executing` with node None), as ComfyUI's worker does: only once
        the prompt is in history, since clients fetch `/history/<prompt id>` as soon as they read it."""
        self.sink.send_from_thread(events.EXECUTING, {"node": None, "prompt_id": item.prompt_id}, item.client_id)
        self.sink.send_from_thread("status", {"status": self.status()})

    def _forward(self, name: str, data: dict[str, Any]) -> None:
        item = self.current
        client_id = item.client_id if item is not None else None
        if name == events.EXECUTING:
            if data.get("node") is None:  # the run's end: announced by `_announce_end` once history has it
                return
            self.current_node = data.get("node")
        preview = None
        if name == events.PROGRESS and "preview" in data:
            data = dict(data)
            preview = data.pop("preview")
        self.sink.send_from_thread(name, data, client_id)
        if preview is not None:
            payload = self.encode_preview(preview)
            if payload is not None:
                self.sink.send_bytes_from_thread(payload, client_id, data.get("node"), data.get("prompt_id"))


def history_record(result: ExecutionResult) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """What history keeps of a run (outputs, ComfyUI's status object, per-node meta), whoever ran it."""
    messages = [[name, data] for name, data in result.messages if name in HISTORY_MESSAGES]
    status = {"status_str": "success" if result.success else "error", "completed": result.success,
              "messages": messages}
    meta = {node_id: {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}
            for node_id in result.outputs}
    return result.outputs, status, meta
