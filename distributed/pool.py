"""The head's hold on its Ray workers: starting or joining Ray, one actor per worker slot, heartbeats, and
replacing a worker that died or hung.

A slot is a stable name (`worker-0`, ...) whose actor may be replaced; each actor is one generation of the
slot. The monitor thread polls every actor's heartbeat without blocking on any of them: a worker that does
not answer for `worker_timeout` seconds is hung, and is killed like a dead one. A lost worker is replaced at
once; one that fails while starting (a broken plugin, a GPU that will not initialise) is retried with
growing pauses. Knows nothing of the queue: `lose()` is how a broken prompt stream reports a worker, and
listeners hear when workers become ready or are lost.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from app.settings import PROJECT_DIR, Settings
from distributed.actor import EngineWorker

log = logging.getLogger(__name__)

ACTOR_THREADS = 8  # a running prompt (and the end of the one before), with heartbeats, interrupt, /free meanwhile
MAX_START_PAUSE = 60.0
CLOSE_TIMEOUT = 10.0  # seconds workers get to remove their private folders when the pool stops


@dataclass(frozen=True)
class ClusterOptions:
    workers: int | None = None  # None: one per GPU of the cluster, or one CPU worker where there is none
    address: str | None = None  # None: start a local Ray runtime
    worker_timeout: float = 60.0  # seconds without a heartbeat answer before a worker counts as hung
    heartbeat_interval: float = 1.0


@dataclass
class WorkerSlot:
    name: str
    resources: dict[str, float]
    actor: Any = None
    generation: int = 0
    state: str = "starting"  # "starting" (building its engine), "ready", "lost" (waiting to be re-created)
    info: dict[str, Any] = field(default_factory=dict)  # the last heartbeat answer
    warm: set[str] = field(default_factory=set)  # model keys of prompts it ran (`distributed.dispatch`)
    failures: dict[int, str] = field(default_factory=dict)  # why each lost generation was given up
    restarts: int = 0
    start_failures: int = 0
    heartbeat: Any = None  # the heartbeat call in flight
    last_seen: float = 0.0
    retry_at: float = 0.0

    @property
    def source(self) -> str:
        """This generation's name: what its files and cached outputs are known by."""
        return f"{self.name}#{self.generation}"


class WorkerPool:
    def __init__(self, settings: Settings, options: ClusterOptions) -> None:
        self.settings = settings
        self.options = options
        self.slots: list[WorkerSlot] = []
        self._worker_settings = settings
        self._actor_class: Any = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._on_change: list[Callable[[], None]] = []
        self._on_lost: list[Callable[[str], None]] = []
        self._connected = threading.Event()
        self._start_error: BaseException | None = None
        self._monitor = threading.Thread(target=self._watch, name="ray-worker-monitor", daemon=True)

    def listen(self, on_change: Callable[[], None], on_lost: Callable[[str], None]) -> None:
        """`on_change()` when a worker becomes ready or is lost; `on_lost(source)` when a generation is lost."""
        self._on_change.append(on_change)
        self._on_lost.append(on_lost)

    def start(self) -> None:
        """Start (or join) Ray and create the workers; they become ready in the background. This happens on
        the monitor thread, which lives as long as the pool: on Linux, the Ray processes a local start spawns
        are killed when the thread that spawned them ends (their parent-death signal is per thread)."""
        self._monitor.start()
        self._connected.wait()
        if self._start_error is not None:
            raise self._start_error

    def names(self) -> list[str]:
        return [slot.name for slot in self.slots]

    def ready_slots(self) -> list[WorkerSlot]:
        with self._lock:
            return [slot for slot in self.slots if slot.state == "ready"]

    def lose(self, slot: WorkerSlot, generation: int, reason: str) -> str:
        """Give up generation `generation` of the slot, unless that already happened, and return why it was
        lost: the first reason wins, so a hang found by the monitor is reported as a hang."""
        with self._lock:
            if slot.generation == generation and slot.state != "lost" and not self._stop.is_set():
                self._lose(slot, reason)
            lost = slot.failures.get(generation, reason)
        self._notify()
        return lost

    def note_models(self, slot: WorkerSlot, keys: frozenset[str]) -> None:
        """The slot's actor is about to run a prompt with these model keys: it counts as warm for them."""
        with self._lock:
            slot.warm |= keys

    def interrupt(self, slot: WorkerSlot, prompt_id: str) -> None:
        slot.actor.interrupt.remote(prompt_id)

    def free(self, unload_models: bool, free_memory: bool, timeout: float = 60.0) -> None:
        """/free on every ready worker; with `unload_models` they hold no models afterwards."""
        import ray

        slots = self.ready_slots()
        calls = [slot.actor.free_memory.remote(unload_models, free_memory) for slot in slots]
        if unload_models:
            with self._lock:
                for slot in slots:
                    slot.warm.clear()
        for slot, call in zip(slots, calls):
            try:
                ray.get(call, timeout=timeout)
            except ray.exceptions.RayError as error:
                log.warning("/free did not reach %s: %s", slot.name, error_summary(error))

    def describe(self, timeout: float = 2.0) -> list[dict[str, Any]]:
        """What /system_stats lists per worker: state and restarts, then a heartbeat answer asked for now (the
        monitor's last one from a worker that does not answer within `timeout`)."""
        import ray

        calls = {slot.name: slot.actor.heartbeat.remote() for slot in self.ready_slots()}
        done, _ = ray.wait(list(calls.values()), num_returns=len(calls), timeout=timeout) if calls else ([], [])
        fresh = {}
        for name, call in calls.items():
            if call in done:
                try:
                    fresh[name] = ray.get(call)
                except ray.exceptions.RayError:
                    continue  # the monitor finds out and replaces it
        with self._lock:
            return [{"name": slot.name, "state": slot.state, "restarts": slot.restarts,
                     "last_failure": slot.failures.get(max(slot.failures, default=0)),
                     **fresh.get(slot.name, slot.info)} for slot in self.slots]

    def stop(self) -> None:
        """Stop the workers and Ray (on the monitor thread, which owns the connection)."""
        self._stop.set()
        if self._monitor.is_alive():
            self._monitor.join(CLOSE_TIMEOUT + 10)

    # ---- internals -------------------------------------------------------------------------------------
    def _connect(self) -> None:
        import ray

        runtime_env = {"env_vars": {"PYTHONPATH": str(PROJECT_DIR)}}  # workers import this project
        if self.options.address is None:
            ray.init(num_cpus=max(os.cpu_count() or 1, self.options.workers or 1), include_dashboard=False,
                     runtime_env=runtime_env)
        else:
            ray.init(address=self.options.address, runtime_env=runtime_env)
        gpus = 0 if self.settings.cpu else int(ray.cluster_resources().get("GPU", 0))
        count = self.options.workers or gpus or 1
        if gpus and count > gpus:
            ray.shutdown()
            raise ValueError(f"{count} workers need {count} GPUs (one each), but the Ray cluster has {gpus}; "
                             f"ask for fewer workers, or --cpu for CPU workers")
        if not gpus and self.options.address is None and self.settings.threads is None:
            # local CPU workers share this machine: split its cores instead of oversubscribing them
            self._worker_settings = replace(self.settings, threads=max(1, (os.cpu_count() or 1) // count))
        self._actor_class = ray.remote(EngineWorker)
        resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        with self._lock:
            self.slots = [WorkerSlot(f"worker-{index}", dict(resources)) for index in range(count)]
            for slot in self.slots:
                self._create(slot)
        log.info("Ray: %d %s workers starting", count, "GPU" if gpus else "CPU")

    def _disconnect(self) -> None:
        import ray

        with self._lock:
            actors = [slot.actor for slot in self.slots if slot.state != "lost"]
        if actors:
            _, unfinished = ray.wait([actor.close.remote() for actor in actors], num_returns=len(actors),
                                     timeout=CLOSE_TIMEOUT)
            if unfinished:
                log.warning("%d workers did not clean up their private folders in time", len(unfinished))
        for actor in actors:
            ray.kill(actor)
        ray.shutdown()

    def _create(self, slot: WorkerSlot) -> None:
        slot.generation += 1
        slot.state = "starting"
        slot.info = {}
        slot.warm = set()
        slot.actor = self._actor_class.options(max_concurrency=ACTOR_THREADS, **slot.resources).remote(
            self._worker_settings, slot.name)
        slot.heartbeat = slot.actor.heartbeat.remote()  # answered once the worker's engine is built
        slot.last_seen = time.monotonic()

    def _lose(self, slot: WorkerSlot, reason: str) -> None:
        import ray

        failed_start = slot.state == "starting"
        log.warning("%s; %s", reason, "starting a new one" if not failed_start else "trying again")
        slot.failures[slot.generation] = reason
        ray.kill(slot.actor, no_restart=True)
        slot.restarts += 1
        slot.state = "lost"
        slot.info = {}
        source = slot.source
        if failed_start:
            slot.start_failures += 1
            slot.retry_at = time.monotonic() + min(MAX_START_PAUSE, 2.0 ** slot.start_failures)
        else:
            self._create(slot)
        for listener in self._on_lost:
            listener(source)

    def _watch(self) -> None:
        try:
            self._connect()
        except BaseException as error:  # start() raises it in the caller's thread
            self._start_error = error
            return
        finally:
            self._connected.set()
        while not self._stop.wait(self.options.heartbeat_interval):
            changed = False
            with self._lock:
                for slot in self.slots:
                    changed |= self._check(slot)
            if changed:
                self._notify()
        self._disconnect()

    def _check(self, slot: WorkerSlot) -> bool:
        """Look at one slot's heartbeat without waiting; True when the slot became ready or was lost."""
        import ray

        now = time.monotonic()
        if slot.state == "lost":
            if now >= slot.retry_at:
                self._create(slot)
            return False
        done, _ = ray.wait([slot.heartbeat], timeout=0)
        if not done:
            if slot.state == "ready" and now - slot.last_seen > self.options.worker_timeout:
                self._lose(slot, f"{slot.name} stopped answering heartbeats for {self.options.worker_timeout:g} s")
                return True
            return False
        try:
            slot.info = ray.get(slot.heartbeat)
        except ray.exceptions.RayError as error:
            starting = slot.state == "starting"
            if starting:
                log.error("%s failed to start:\n%s", slot.name, error)
            self._lose(slot, f"{slot.name} {'failed to start' if starting else 'died'}: {error_summary(error)}")
            return True
        slot.last_seen = now
        slot.heartbeat = slot.actor.heartbeat.remote()
        if slot.state == "starting":
            slot.state = "ready"
            slot.start_failures = 0
            log.info("%s ready (pid %s on %s)", slot.name, slot.info.get("pid"), slot.info.get("host"))
            return True
        return False

    def _notify(self) -> None:
        for listener in self._on_change:
            listener()


def error_summary(error: BaseException) -> str:
    """The first line of a Ray error: the rest is a long report that belongs in the log."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__
