"""Cluster mode's wiring: the Ray workers behind `create_app`'s queue worker and behind the runtime's
answers about memory and devices (/free reaches every worker; /system_stats lists them).

`serve.py` uses it when `--workers` or `--ray-address` is given; tests and benchmarks use it directly.
"""
from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass, fields
from typing import Any

from app.prompt_store import PromptStore
from app.prompt_worker import EventSink, PreviewEncoder
from app.runtime import Runtime
from app.settings import Settings
from distributed.outputs import OutputPlacer
from distributed.pool import ClusterOptions, WorkerPool
from distributed.prompt_worker import RayPromptWorker


@dataclass
class ClusterRuntime(Runtime):
    """The head's runtime (registry for validation, model lists) plus the workers that run the prompts."""

    pool: WorkerPool = None  # type: ignore[assignment]  # always given; dataclass fields after defaults need one

    def free_memory(self, unload_models: bool, free_memory: bool) -> None:
        super().free_memory(unload_models, free_memory)
        self.pool.free(unload_models, free_memory)

    def system_stats(self) -> dict[str, Any]:
        return {**super().system_stats(), "workers": self.pool.describe()}


class Cluster:
    def __init__(self, settings: Settings, options: ClusterOptions) -> None:
        self.settings = settings
        self.pool = WorkerPool(settings, options)

    def queue_worker(self, store: PromptStore, sink: EventSink, encode_preview: PreviewEncoder,
                     runtime_future: concurrent.futures.Future) -> RayPromptWorker:
        """`create_app`'s worker factory. The head writes the files workers ship into its own folders."""
        placer = OutputPlacer({"output": self.settings.output_dir, "temp": self.settings.temp_dir})
        return RayPromptWorker(store, sink, encode_preview, self.pool, runtime_future, placer)

    def start(self, runtime: Runtime) -> ClusterRuntime:
        """Start (or join) Ray and the workers, after the head's runtime is built: the demo models it may
        write are then in place before local workers look for them."""
        self.pool.start()
        return ClusterRuntime(**{field.name: getattr(runtime, field.name) for field in fields(runtime)},
                              pool=self.pool)
