"""Issue #16 through the queue worker: a node that exits, raises KeyboardInterrupt or runs out of memory fails
its own prompt and the next prompt runs; a node that ignores an interrupt past the grace period is abandoned
(recorded as interrupted, its late events and outputs reach no one) and the queue goes on meanwhile."""
import time

import pytest

from app.prompt_store import PromptStore
from app.prompt_worker import PromptWorker
from engine.cache import OutputCache
from engine.executor import Executor
from tests.engine.faulty_nodes import make_faulty_registry, stubborn_node, through

GRACE_S = 0.3


class RecordingSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict, str | None]] = []

    def send_from_thread(self, event, data, sid=None) -> None:
        self.sent.append((event, data, sid))

    def send_bytes_from_thread(self, payload, sid, node_id=None, prompt_id=None) -> None:
        pass

    def for_prompt(self, prompt_id):
        return [(event, sid) for event, data, sid in self.sent if data.get("prompt_id") == prompt_id]


class Queue:
    """A store, an executor and a worker over them, as the server wires them."""

    def __init__(self, tmp_path, stubborn=None) -> None:
        self.executor = Executor(make_faulty_registry(stubborn), OutputCache(16))
        self.store = PromptStore(tmp_path / "queue.sqlite3")
        self.sink = RecordingSink()
        self.worker = PromptWorker(self.store, lambda: self.executor, self.sink, lambda preview: None,
                                   interrupt_grace=GRACE_S)

    def add(self, prompt_id, prompt, client_id=None):
        self.store.enqueue(prompt_id, prompt, {}, ["3"], client_id)

    def outcome(self, prompt_id, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not self.store.history_item(prompt_id):
            assert time.monotonic() < deadline, f"{prompt_id} never finished"
            time.sleep(0.02)
        return self.store.history_item(prompt_id)[prompt_id]

    def close(self):
        self.worker.stop()
        self.store.close()


@pytest.fixture
def queue(tmp_path):
    queue = Queue(tmp_path)
    yield queue
    queue.close()


@pytest.mark.parametrize("class_type, inputs, exception_type", [
    ("Exit", {"code": 3}, "SystemExit"),
    ("RaiseKeyboardInterrupt", {}, "KeyboardInterrupt"),
    ("OutOfMemory", {"way": "MemoryError"}, "MemoryError"),
    ("OutOfMemory", {"way": "torch.empty"}, "RuntimeError"),  # what torch's CPU allocator raises
    ("OutOfMemory", {"way": "torch.OutOfMemoryError"}, "torch.OutOfMemoryError"),  # what CUDA raises
])
def test_a_node_that_exits_or_runs_out_of_memory_fails_its_prompt_and_the_queue_goes_on(
        queue, class_type, inputs, exception_type):
    queue.add("faulty", through(class_type, **inputs), client_id="a")
    queue.add("next", through("Slow", 5, steps=1, delay=0.0), client_id="b")
    queue.worker.start()
    faulty = queue.outcome("faulty")
    assert faulty["status"]["status_str"] == "error" and not faulty["status"]["completed"]
    name, error = faulty["status"]["messages"][-1]
    assert name == "execution_error"
    assert (error["node_id"], error["node_type"], error["exception_type"]) == ("2", class_type, exception_type)
    assert ("execution_error", "a") in queue.sink.for_prompt("faulty")
    assert queue.outcome("next")["status"]["status_str"] == "success"
    assert queue.store.running() == [] and queue.store.pending() == []


def test_the_real_allocation_failure_says_so(queue):
    queue.add("huge", through("OutOfMemory", way="torch.empty"))
    queue.worker.start()
    error = queue.outcome("huge")["status"]["messages"][-1][1]
    assert "can't allocate memory" in error["exception_message"]


def test_a_node_ignoring_an_interrupt_is_abandoned_and_the_next_prompt_runs(tmp_path, calls):
    stubborn = stubborn_node()
    queue = Queue(tmp_path, stubborn)
    try:
        queue.add("stuck", through("Stubborn", 4), client_id="a")
        queue.add("next", through("Slow", 5, steps=1, delay=0.0), client_id="b")
        queue.worker.start()
        assert stubborn.started.wait(10)
        asked = time.monotonic()
        assert queue.worker.interrupt("stuck")
        stuck = queue.outcome("stuck")
        assert time.monotonic() - asked >= GRACE_S
        assert stuck["status"]["status_str"] == "error" and not stuck["status"]["completed"]
        name, data = stuck["status"]["messages"][-1]
        assert name == "execution_interrupted" and (data["node_id"], data["node_type"]) == ("2", "Stubborn")
        assert queue.sink.for_prompt("stuck")[-2:] == [("execution_interrupted", "a"), ("executing", "a")]
        assert queue.outcome("next")["status"]["status_str"] == "success"  # while the node still blocks

        [abandoned] = queue.worker.abandoned
        assert abandoned.name == "prompt-run stuck" and abandoned.is_alive()
        sent_when_abandoned = len(queue.sink.sent)
        stubborn.release.set()
        abandoned.join(10)
        assert not abandoned.is_alive() and stubborn.stopped_at_report.is_set()
        assert queue.sink.sent[sent_when_abandoned:] == []  # its late end was sent to no one
        assert all(sid == "b" for _, sid in queue.sink.for_prompt("next"))

        calls.clear()
        stubborn.started.clear()
        queue.add("again", through("Stubborn", 4))
        assert queue.outcome("again")["status"]["status_str"] == "success"
        assert calls == ["Output:4"]  # the abandoned node's output never entered the cache
    finally:
        stubborn.release.set()
        queue.close()


def test_a_node_that_honours_the_interrupt_is_not_abandoned(queue):
    from tests.engine.nodes_for_tests import Slow

    Slow.started.clear()
    queue.add("slow", through("Slow", steps=2000, delay=0.005))
    queue.worker.start()
    assert Slow.started.wait(10)
    queue.worker.interrupt()
    assert queue.outcome("slow")["status"]["messages"][-1][0] == "execution_interrupted"
    assert queue.worker.abandoned == []


def test_a_prompt_that_exited_is_finished_not_left_running_for_the_next_start(tmp_path, queue):
    queue.add("exits", through("Exit", code=3))
    queue.worker.start()
    queue.outcome("exits")
    queue.worker.stop()
    reopened = PromptStore(tmp_path / "queue.sqlite3")
    assert reopened.running() == [] and reopened.pending() == [] and reopened.recovered_failed == []
    reopened.close()


def test_the_worker_thread_survives_what_the_executor_lets_out(queue, monkeypatch):
    def broken(*args, **kwargs):
        raise SystemExit("the executor itself")

    monkeypatch.setattr(queue.executor, "execute", broken)
    queue.add("broken", through("Slow", steps=1, delay=0.0))
    queue.worker.start()
    assert queue.outcome("broken")["status"]["status_str"] == "error"
    monkeypatch.undo()
    queue.add("fine", through("Slow", steps=1, delay=0.0))
    assert queue.outcome("fine")["status"]["status_str"] == "success"
