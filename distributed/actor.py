"""The engine on a Ray worker: one runtime (registry with plugins, executor with its output cache, model
manager) that runs whole prompts and streams what happens back to the head.

A plain class; `distributed.pool` makes it a threaded Ray actor, so heartbeats, interrupts and /free are
answered while a prompt runs. It writes files only into private folders (`distributed.outputs` ships them)
and keeps no queue or history: the head owns those. Plugins load here exactly as on the head, through
`build_runtime`; what they send with `PromptServer.instance.send_sync` during a prompt reaches the head's
websocket in the same stream. For that, `WorkerPromptServer` subclasses `server.PromptServer`, the public class
plugins import; nothing else of the server is used here. Knows nothing of Ray itself, of HTTP routes or of the
queue.
"""
from __future__ import annotations

import getpass
import logging
import os
import platform
import queue
import shutil
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from aiohttp import web

from app.prompt_worker import PreviewEncoder
from app.runtime import build_runtime
from app.settings import Settings
from distributed.messages import Event, Finished, Message, Preview
from distributed.outputs import OutputCollector
from engine import events
from engine.interrupt import InterruptFlag
from server import PluginApp, PromptServer

log = logging.getLogger(__name__)

_END = object()  # the last thing a run's outbox holds


class WorkerRun:
    """The prompt a worker runs now: where its messages queue up and whom they are for."""

    def __init__(self, prompt_id: str, client_id: str | None, encode_preview: PreviewEncoder) -> None:
        self.prompt_id = prompt_id
        self.client_id = client_id
        self.encode_preview = encode_preview
        self.outbox: queue.Queue[Any] = queue.Queue()
        self.node: str | None = None


class EngineWorker:
    """One engine on one worker; the head calls these methods through Ray."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.name = name
        self.private_dir = _private_dir(name)
        own = replace(settings, output_dir=self.private_dir / "output", temp_dir=self.private_dir / "temp",
                      user_dir=self.private_dir / "user")
        self.current: WorkerRun | None = None
        self.completed = 0
        self._lock = threading.Lock()
        server = WorkerPromptServer(self)
        PromptServer.instance = server  # before plugins import: they register routes on it
        self.runtime = build_runtime(own)
        server.flag = self.runtime.executor.interrupt
        self.runtime.executor.events.subscribe(self._on_event)
        self.collector = OutputCollector({"output": own.output_dir, "temp": own.temp_dir})

    def run_prompt(self, prompt: dict[str, Any], prompt_id: str, extra_data: dict[str, Any], outputs: list[str],
                   client_id: str | None, encode_preview: PreviewEncoder) -> Iterator[Message]:
        """Run one prompt, yielding its events as they happen and `Finished` last. The executor reports through
        callbacks and a generator can only yield from its own frame, so the prompt runs on a thread."""
        run = WorkerRun(prompt_id, client_id, encode_preview)
        with self._lock:
            if self.current is not None:
                raise RuntimeError(f"{self.name} is already running prompt {self.current.prompt_id}")
            self.current = run
        threading.Thread(target=self._execute, args=(run, prompt, extra_data, outputs), daemon=True,
                         name=f"prompt-{prompt_id}").start()
        while (message := run.outbox.get()) is not _END:
            if isinstance(message, BaseException):
                raise message
            yield message

    def heartbeat(self) -> dict[str, Any]:
        """Liveness and what /system_stats shows of this worker; the first answer also means "ready"."""
        stats = self.runtime.system_stats()
        models = self.runtime.environment.models
        run = self.current
        return {"pid": os.getpid(), "host": platform.node(), "running": run.prompt_id if run else None,
                "completed": self.completed, "devices": stats["devices"], "ram_total": stats["system"]["ram_total"],
                "ram_free": stats["system"]["ram_free"],
                "loaded_models": sorted(self._label(kind, path) for kind, path in models.loaded()),
                "model_loads": {self._label(kind, path): count for (kind, path), count in sorted(models.loads.items())}}

    def interrupt(self, prompt_id: str) -> bool:
        """Stop the running prompt if it is still `prompt_id` (the next one must not be hit by a late call)."""
        run = self.current
        if run is None or run.prompt_id != prompt_id:
            return False
        self.runtime.executor.interrupt.request()
        return True

    def free_memory(self, unload_models: bool, free_memory: bool) -> None:
        self.runtime.free_memory(unload_models, free_memory)

    def close(self) -> None:
        """Remove the private folders (what was in them is on the head already)."""
        shutil.rmtree(self.private_dir, ignore_errors=True)

    def _execute(self, run: WorkerRun, prompt: dict[str, Any], extra_data: dict[str, Any],
                 outputs: list[str]) -> None:
        last: Finished | BaseException
        try:
            result = self.runtime.executor.execute(prompt, run.prompt_id, extra_data, outputs)
            last = Finished(result, self.collector.collect())
            self.completed += 1
        except BaseException as error:  # the executor itself failed: the head records it from the stream
            last = error
        with self._lock:  # free before the head hears of the end, so it may send the next prompt at once
            self.current = None
        run.outbox.put(last)
        run.outbox.put(_END)
        self.runtime.release_freed_memory()

    def _on_event(self, name: str, data: dict[str, Any]) -> None:
        run = self.current
        if run is None:
            return
        if name == events.EXECUTING:
            run.node = data.get("node")
        preview = None
        if name == events.PROGRESS and "preview" in data:
            data = dict(data)
            preview = data.pop("preview")
        files = self.collector.collect() if name == events.EXECUTED else ()
        run.outbox.put(Event(name, data, run.client_id, files))
        if preview is not None:
            payload = run.encode_preview(preview)
            if payload is not None:
                run.outbox.put(Preview(payload, run.client_id))

    def _label(self, kind: str, path: str) -> str:
        models_dir = self.runtime.settings.models_dir.resolve()
        resolved = Path(path)
        shown = resolved.relative_to(models_dir).as_posix() if resolved.is_relative_to(models_dir) else path
        return f"{kind}:{shown}"


def _private_dir(name: str) -> Path:
    """A fresh private folder for this worker process. Folders left by workers on this machine that died
    without `close()` (killed, crashed) are removed first, or every lost worker would leak one."""
    root = Path(tempfile.gettempdir()) / f"nodeflow-workers-{getpass.getuser()}"
    root.mkdir(exist_ok=True)
    for folder in root.glob("*-pid*"):
        pid = folder.name.rsplit("-pid", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    folder = root / f"{name}-pid{os.getpid()}"
    folder.mkdir()
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, and someone else's
        pass
    return True


class WorkerPromptServer(PromptServer):
    """`PromptServer.instance` on a worker. Plugins register routes on it at import as they do on the head
    (the head serves those; here they are never called), and what they send while a prompt runs goes to the
    head with the prompt's events. Sent outside a prompt, there is no stream to carry it: it is dropped."""

    def __init__(self, worker: EngineWorker) -> None:  # no ServerState here: the base class is not initialised
        self._worker = worker
        self.routes = web.RouteTableDef()
        self._app_routes: list[web.AbstractRouteDef] = []
        self.app = PluginApp(self._app_routes.extend)
        self.flag: InterruptFlag | None = None

    @property
    def client_id(self) -> str | None:
        run = self._worker.current
        return run.client_id if run is not None else None

    @property
    def last_node_id(self) -> str | None:
        run = self._worker.current
        return run.node if run is not None else None

    def send_bytes(self, frame: bytes, sid: str | None) -> None:
        run = self._current_run("a binary frame")
        if run is not None:
            run.outbox.put(Preview(frame, sid))

    def send_event(self, event: str, data: Any, sid: str | None) -> None:
        run = self._current_run(event)
        if run is not None:
            run.outbox.put(Event(event, data, sid))

    def _current_run(self, what: str):
        run = self._worker.current
        if run is None:
            log.debug("plugin message %s sent while no prompt runs on %s: dropped", what, self._worker.name)
        return run

    def interrupt_flag(self) -> InterruptFlag | None:
        return self.flag
