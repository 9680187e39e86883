"""Model files read in the background before their loader asks for them.

A server's first prompt waits for the model libraries to import (diffusers and transformers: 3-5 s of one busy
core, `diffusion.preload`), and only then reads its checkpoint (a few GB copied from the page cache or the disk,
work the kernel and the reading threads do without Python's lock). Started while the import runs, the read
overlaps it; the loader then takes what was read instead of reading again. What is read is exactly what the
loader would read (the caller's key names the file's identity and every setting the read depends on), so taking
it changes nothing but the time. Reading ahead is best effort: a read that failed leaves nothing to take, and the
loader reads the file itself and reports the problem on its input. What nobody takes is dropped with `clear()`
(after each prompt), so an unused read holds its memory no longer than the prompt that asked for it.
Knows nothing of files, models or nodes: callers pass the key and the read.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import Any, Callable, Hashable

log = logging.getLogger(__name__)


class ReadAhead:
    """Reads started with `start`, each in a thread of its own, until `take` hands one out or `clear` drops them."""

    def __init__(self) -> None:
        self._reads: dict[Hashable, Future] = {}
        self._lock = threading.Lock()

    def start(self, key: Hashable, read: Callable[[], Any]) -> None:
        """Run `read()` in the background for whoever takes `key` (nothing new if a read of `key` is held)."""
        with self._lock:
            if key in self._reads:
                return
            future: Future = Future()
            self._reads[key] = future

        def run() -> None:
            try:
                future.set_result(read())
            except BaseException as error:  # kept for `take`, which lets the loader read (and report) it itself
                future.set_exception(error)

        threading.Thread(target=run, name="read-ahead", daemon=True).start()

    def take(self, key: Hashable) -> Any | None:
        """What the read of `key` gave, once it has finished (it is then no longer held); None when no read of
        `key` was started, or it failed."""
        with self._lock:
            future = self._reads.pop(key, None)
        if future is None:
            return None
        try:
            return future.result()
        except Exception as error:
            log.info("reading ahead failed (%s); the loader reads the file itself", error)
            return None

    def clear(self) -> None:
        """Drop every read nobody took (one still running is dropped when it finishes)."""
        with self._lock:
            self._reads.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._reads)
