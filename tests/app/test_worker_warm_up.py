"""The in-process worker warms the engine up (imports the model libraries) in its own thread before it takes
its first prompt, so that prompt does not pay for it, meanwhile handing the first prompt queued to `read_ahead`
(the server passes `Runtime.read_ahead`, which starts reading its model files), and cleans up after each prompt
once its client has heard of the end (the server passes `Runtime.release_freed_memory`); a warm-up, read-ahead
or clean-up that fails is logged and prompts still run."""
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


def _run_prompts(tmp_path, warm_up, after_prompt=None, count=1, read_ahead=None) -> tuple[PromptStore, list[str]]:
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
                          after_prompt=clean_up if after_prompt is not None else None, read_ahead=read_ahead)
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


def test_a_prompt_queued_while_warming_up_is_read_ahead_before_it_runs(tmp_path):
    queued_prompt = {**_prompt(), "3": {"class_type": "Const", "inputs": {"value": 3}}}
    read_started = threading.Event()
    order: list = []
    store: list[PromptStore] = []

    def warm_up():  # the prompt comes while the libraries import; the read starts before the import ends
        store[0].enqueue("p0", queued_prompt, {}, ["2"], None)
        assert read_started.wait(30)
        order.append("warmed up")

    def read_ahead(prompt):
        order.append(("read ahead", prompt))
        read_started.set()

    store.append(PromptStore(tmp_path / "queue.sqlite3"))
    registry = make_registry()
    executor = Executor(registry, OutputCache(8))
    executor.events.subscribe(lambda name, data: order.append("prompt") if name == "execution_start" else None)
    finished = threading.Event()
    original_finish = store[0].finish
    store[0].finish = lambda *args, **kwargs: (original_finish(*args, **kwargs), finished.set())
    worker = PromptWorker(store[0], lambda: executor, RecordingSink(), lambda preview: None, warm_up=warm_up,
                          read_ahead=read_ahead)
    worker.start()
    assert finished.wait(30)
    worker.stop()
    assert order == [("read ahead", queued_prompt), "warmed up", "prompt"]
    assert store[0].history_item("p0")["p0"]["status"]["status_str"] == "success"
    store[0].close()


def test_only_the_first_prompt_is_read_ahead_and_a_failing_read_ahead_does_not_stop_it(tmp_path, caplog):
    calls = []
    called = threading.Event()

    def broken(prompt):
        calls.append(prompt)
        called.set()
        raise RuntimeError("no disk")

    store, order = _run_prompts(tmp_path, lambda: called.wait(30), after_prompt=lambda: None, count=2,
                                read_ahead=broken)
    assert calls == [_prompt()]
    assert "reading ahead for prompt p1 failed" in caplog.text
    assert all(store.history_item(p)[p]["status"]["status_str"] == "success" for p in ("p1", "p2"))
    store.close()
