"""The prompt queue and history, persisted in SQLite (WAL) so that nothing is lost across a crash.

A prompt is one row in `queue` while pending or running and moves to `history` in the same transaction
that records its outcome. At start, a prompt found `running` (the process died under it) goes back to the
front of the queue once; if it was already retried, it is recorded in history as failed instead (an
`execution_error` saying so), so a prompt that crashes the process cannot crash it at every start. The count
is the `attempts` column: every take of a prompt adds one, so it covers a worker lost in a running process
(`retry_once`) and the process lost alike.
Knows nothing of HTTP or of the engine: rows are plain JSON-able data. The server's routes, the queue
worker and the cluster's dispatcher all work on one store.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    prompt_id TEXT PRIMARY KEY,
    number REAL NOT NULL,
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    outputs TEXT NOT NULL,
    client_id TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_order ON queue (state, number);
CREATE TABLE IF NOT EXISTS history (
    prompt_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    entry TEXT NOT NULL,
    completed REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS history_order ON history (seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class QueueItem:
    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    client_id: str | None

    def as_list(self) -> list[Any]:
        """The ComfyUI queue-item shape: [number, prompt_id, prompt, extra_data, outputs_to_execute]."""
        number = int(self.number) if float(self.number).is_integer() else self.number
        return [number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


class PromptStore:
    """Thread-safe; one connection guarded by a lock (SQLite writes are serialised anyway)."""

    def __init__(self, path: Path, max_history: int = 10000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_history = max_history
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self.recovered_failed: list[str] = []  # recorded as failed at this start: the process died under them twice
        self._recover()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- queue -----------------------------------------------------------------------------------------
    def next_number(self) -> int:
        with self._lock, self._transaction():
            row = self._db.execute("SELECT value FROM counters WHERE name = 'number'").fetchone()
            number = (row[0] if row else 0) + 1
            self._db.execute("INSERT OR REPLACE INTO counters (name, value) VALUES ('number', ?)", (number,))
            return number

    def enqueue(self, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any], outputs: list[str],
                client_id: str | None, front: bool = False, number: float | None = None) -> QueueItem:
        with self._lock:
            if number is None:
                number = self.next_number()
                if front:
                    number = self._front_number()
            item = QueueItem(number, prompt_id, prompt, extra_data, outputs, client_id)
            with self._transaction():
                self._db.execute(
                    "INSERT INTO queue (prompt_id, number, prompt, extra_data, outputs, client_id, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (prompt_id, number, json.dumps(prompt), json.dumps(extra_data), json.dumps(outputs),
                     client_id, time.time()))
            self._changed.notify_all()
            return item

    def has_prompt(self, prompt_id: str) -> bool:
        with self._lock:
            return bool(self._db.execute("SELECT 1 FROM queue WHERE prompt_id = ? UNION ALL "
                                         "SELECT 1 FROM history WHERE prompt_id = ?",
                                         (prompt_id, prompt_id)).fetchone())

    def _front_number(self) -> float:
        row = self._db.execute("SELECT MIN(number) FROM queue WHERE state = 'pending'").fetchone()
        return min(row[0], 0) - 1 if row[0] is not None else -1

    def take_next(self, timeout: float | None = None) -> QueueItem | None:
        """Mark the first pending prompt running and return it; wait up to `timeout` for one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                row = self._db.execute(
                    "SELECT number, prompt_id, prompt, extra_data, outputs, client_id FROM queue "
                    "WHERE state = 'pending' ORDER BY number LIMIT 1").fetchone()
                if row is not None:
                    with self._transaction():
                        self._db.execute("UPDATE queue SET state = 'running', attempts = attempts + 1 "
                                         "WHERE prompt_id = ?", (row[1],))
                    return _item(row)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def wake(self) -> None:
        with self._lock:
            self._changed.notify_all()

    def take(self, prompt_id: str) -> QueueItem | None:
        """Mark this pending prompt running and return it; None if it is not pending (any more). For a
        dispatcher with several workers, which picks prompts out of queue order to keep models warm."""
        with self._lock:
            row = self._db.execute("SELECT number, prompt_id, prompt, extra_data, outputs, client_id FROM queue "
                                   "WHERE prompt_id = ? AND state = 'pending'", (prompt_id,)).fetchone()
            if row is None:
                return None
            with self._transaction():
                self._db.execute("UPDATE queue SET state = 'running', attempts = attempts + 1 WHERE prompt_id = ?",
                                 (prompt_id,))
            return _item(row)

    def wait_for_pending(self, timeout: float) -> bool:
        """Return once a prompt is pending, `wake()` is called or `timeout` passes; takes nothing.
        False means the wait timed out."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM queue WHERE state = 'pending' LIMIT 1").fetchone() is None:
                return self._changed.wait(timeout)
            return True

    def retry_once(self, item: QueueItem, failure: tuple[str, dict[str, Any]]) -> bool:
        """A running prompt whose run was lost (the process or worker died under it): back to the front of the
        queue the first time (True); after a second loss it is recorded in history as failed, with `failure`
        as its message, instead of being retried forever (False)."""
        with self._lock:
            row = self._db.execute("SELECT attempts FROM queue WHERE prompt_id = ? AND state = 'running'",
                                   (item.prompt_id,)).fetchone()
            if row is None:
                return False
            if row[0] <= 1:
                with self._transaction():
                    self._db.execute("UPDATE queue SET state = 'pending', number = ? WHERE prompt_id = ?",
                                     (self._front_number(), item.prompt_id))
                self._changed.notify_all()
                return True
            self.finish(item, {}, {"status_str": "error", "completed": False, "messages": [failure]})
            return False

    def running(self) -> list[QueueItem]:
        return self._items("running")

    def pending(self, limit: int | None = None) -> list[QueueItem]:
        return self._items("pending", limit)

    def remaining(self) -> int:
        """Prompts not finished yet, the running one included (ComfyUI's queue_remaining)."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]

    def _items(self, state: str, limit: int | None = None) -> list[QueueItem]:
        with self._lock:
            rows = self._db.execute("SELECT number, prompt_id, prompt, extra_data, outputs, client_id FROM queue "
                                    "WHERE state = ? ORDER BY number LIMIT ?",
                                    (state, -1 if limit is None else limit)).fetchall()
        return [_item(row) for row in rows]

    def delete_pending(self, prompt_ids: list[str]) -> int:
        with self._lock, self._transaction():
            deleted = 0
            for prompt_id in prompt_ids:
                deleted += self._db.execute("DELETE FROM queue WHERE prompt_id = ? AND state = 'pending'",
                                            (prompt_id,)).rowcount
            return deleted

    def clear_pending(self) -> int:
        with self._lock, self._transaction():
            return self._db.execute("DELETE FROM queue WHERE state = 'pending'").rowcount

    # ---- history ---------------------------------------------------------------------------------------
    def finish(self, item: QueueItem, outputs: dict[str, Any], status: dict[str, Any],
               meta: dict[str, Any] | None = None) -> None:
        """Move a running prompt to history in one transaction."""
        entry = {"prompt": item.as_list(), "outputs": outputs, "status": status, "meta": meta or {}}
        with self._lock, self._transaction():
            self._db.execute("DELETE FROM queue WHERE prompt_id = ?", (item.prompt_id,))
            self._insert_history(item.prompt_id, entry)

    def _insert_history(self, prompt_id: str, entry: dict[str, Any]) -> None:
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM history").fetchone()
        self._db.execute("INSERT OR REPLACE INTO history (prompt_id, seq, entry, completed) VALUES (?, ?, ?, ?)",
                         (prompt_id, row[0] + 1, json.dumps(entry), time.time()))
        if self.max_history > 0:
            self._db.execute("DELETE FROM history WHERE seq <= (SELECT MAX(seq) FROM history) - ?",
                             (self.max_history,))

    def history(self, max_items: int | None = None, offset: int = -1) -> dict[str, Any]:
        """Oldest first, as ComfyUI: a negative offset means "the newest `max_items`", else skip `offset`
        oldest entries and take up to `max_items` after them."""
        with self._lock:
            if offset < 0:
                limit = -1 if max_items is None else max_items
                rows = self._db.execute("SELECT prompt_id, entry FROM history ORDER BY seq DESC LIMIT ?",
                                        (limit,)).fetchall()[::-1]
            else:
                rows = self._db.execute("SELECT prompt_id, entry FROM history ORDER BY seq LIMIT ? OFFSET ?",
                                        (-1 if max_items is None else max_items, offset)).fetchall()
        return {prompt_id: json.loads(entry) for prompt_id, entry in rows}

    def history_item(self, prompt_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT entry FROM history WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return {prompt_id: json.loads(row[0])} if row else {}

    def delete_history(self, prompt_ids: list[str]) -> None:
        with self._lock, self._transaction():
            for prompt_id in prompt_ids:
                self._db.execute("DELETE FROM history WHERE prompt_id = ?", (prompt_id,))

    def clear_history(self) -> None:
        with self._lock, self._transaction():
            self._db.execute("DELETE FROM history")

    # ---- internals -------------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Prompts left `running` by a crash: re-queue at the front once, else record them as failed."""
        with self._lock:
            rows = self._db.execute("SELECT number, prompt_id, prompt, extra_data, outputs, client_id "
                                    "FROM queue WHERE state = 'running' ORDER BY number").fetchall()
            for row in rows:
                item = _item(row)
                if not self.retry_once(item, _lost_twice(item)):
                    self.recovered_failed.append(item.prompt_id)

    def _transaction(self):
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.outermost = False

    def __enter__(self) -> None:
        self.outermost = not self.db.in_transaction
        if self.outermost:
            self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.outermost:
            return
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _lost_twice(item: QueueItem) -> tuple[str, dict[str, Any]]:
    """The history message of a prompt the process died under on its first run and again on its retry."""
    return ("execution_error", {
        "prompt_id": item.prompt_id, "node_id": None, "node_type": None, "executed": [],
        "exception_type": "ProcessLost",
        "exception_message": "the server stopped while this prompt ran, on its first run and again on its retry "
                             "after the restart (a node may crash the process, for example by exhausting its "
                             "memory); it is not run again",
        "traceback": [], "current_inputs": {}, "current_outputs": [], "timestamp": int(time.time() * 1000)})


def _item(row: tuple) -> QueueItem:
    number, prompt_id, prompt, extra_data, outputs, client_id = row
    return QueueItem(number, prompt_id, json.loads(prompt), json.loads(extra_data), json.loads(outputs), client_id)
