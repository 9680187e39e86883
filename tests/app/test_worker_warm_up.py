"""The in-process worker warms the engine up (imports the model libraries) in its own thread before it takes
its first prompt, so that prompt does not pay for it, and cleans up after each prompt once its client has heard
of the end (the server passes `Runtime.release_freed_memory`); a warm-up or clean-up that fails is logged and
prompts still run."""
import threading

from app.prompt_store import PromptStore
from app.prompt_worker import PromptWorker
from engine.cache import OutputCache
from engine.executor import Executor
from tests.engine.nodes_for_tests import make_registry


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[str] = []

    def send_from_thread(self, event, data, sid=None) -> None:
        self.events.append(event)

    def send_bytes_from_thread(self, payload, sid, node_id=None, prompt_id=None) -> None:
        pass


def _prompt():
    return {"1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}


def _run_prompts(tmp_path, warm_up, after_prompt=None, count=1) -> tuple[PromptStore, list[str]]:
    registry = make_registry()
    executor = Executor(registry, OutputCache(8))
    order: list[str] = []
    executor.events.subscribe(lambda name, data: order.append("prompt") if name == "execution_start" else None)
    store = PromptStore(tmp_path / "queue.sqlite3")
    finished = threading.Event()
    original_finish = store.finish

    def finish(*args, **kwargs):
        original_finish(*args, **kwargs)
        finished.set()

    store.finish = finish
    cleaned = threading.Semaphore(0)

    def clean_up():
        order.append("clean-up")
        cleaned.release()
        after_prompt()

    worker = PromptWorker(store, lambda: executor, RecordingSink(), lambda preview: None,
                          warm_up=lambda: (order.append("warm-up"), warm_up()),
                          after_prompt=clean_up if after_prompt is not None else None)
    for index in range(count):
        store.enqueue(f"p{index + 1}", _prompt(), {}, ["2"], None)
    worker.start()
    for _ in range(count):
        assert (cleaned.acquire(timeout=30) if after_prompt is not None else finished.wait(30))
    worker.stop()
    return store, order


def test_the_worker_warms_up_before_its_first_prompt(tmp_path):
    store, order = _run_prompts(tmp_path, lambda: None)
    assert order == ["warm-up", "prompt"]
    assert store.history_item("p1")["p1"]["status"]["status_str"] == "success"
    store.close()


def test_a_failing_warm_up_is_logged_and_prompts_still_run(tmp_path, caplog):
    def broken():
        raise ImportError("no such library")

    store, order = _run_prompts(tmp_path, broken)
    assert order == ["warm-up", "prompt"]
    assert store.history_item("p1")["p1"]["status"]["status_str"] == "success"
    assert "warming up the engine failed" in caplog.text
    store.close()


def test_the_worker_cleans_up_after_each_prompt(tmp_path):
    store, order = _run_prompts(tmp_path, lambda: None, after_prompt=lambda: None, count=2)
    assert order == ["warm-up", "prompt", "clean-up", "prompt", "clean-up"]
    assert all(store.history_item(p)[p]["status"]["status_str"] == "success" for p in ("p1", "p2"))
    store.close()


def test_a_failing_clean_up_is_logged_and_prompts_still_run(tmp_path, caplog):
    def broken():
        raise OSError("no heap")

    store, order = _run_prompts(tmp_path, lambda: None, after_prompt=broken, count=2)
    assert order == ["warm-up", "prompt", "clean-up", "prompt", "clean-up"]
    assert store.history_item("p2")["p2"]["status"]["status_str"] == "success"
    assert "cleaning up after prompt p1 failed" in caplog.text
    store.close()
