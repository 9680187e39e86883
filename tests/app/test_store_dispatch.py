"""The store calls a dispatcher with several workers needs: take out of order, wait without taking, and
re-queue a prompt whose worker was lost once, failing it the second time."""
import threading

from app.prompt_store import PromptStore


def single(value):
    return {"1": {"class_type": "Const", "inputs": {"value": value}},
            "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}


def test_take_claims_a_pending_prompt_out_of_order_once(tmp_path):
    store = PromptStore(tmp_path / "queue.sqlite3")
    for name in ("a", "b", "c"):
        store.enqueue(name, single(1), {}, ["2"], None)
    assert [item.prompt_id for item in store.pending(limit=2)] == ["a", "b"]
    assert store.take("b").prompt_id == "b"
    assert store.take("b") is None
    assert [item.prompt_id for item in store.running()] == ["b"]
    assert [item.prompt_id for item in store.pending()] == ["a", "c"]
    store.close()


def test_wait_for_pending_returns_when_a_prompt_arrives_and_takes_nothing(tmp_path):
    store = PromptStore(tmp_path / "queue.sqlite3")
    threading.Timer(0.1, lambda: store.enqueue("late", single(1), {}, ["2"], None)).start()
    assert store.wait_for_pending(60.0) is True  # woken by the enqueue, not by the timeout
    assert [item.prompt_id for item in store.pending()] == ["late"]
    store.close()


def test_a_lost_prompt_goes_back_to_the_front_once_then_fails_with_the_reason(tmp_path):
    store = PromptStore(tmp_path / "queue.sqlite3")
    store.enqueue("first", single(1), {}, ["2"], None)
    store.enqueue("lost", single(2), {}, ["2"], None)
    failure = ("execution_error", {"prompt_id": "lost", "exception_message": "worker-1 died"})
    item = store.take("lost")
    assert store.retry_once(item, failure) is True
    assert [queued.prompt_id for queued in store.pending()] == ["lost", "first"]
    item = store.take("lost")
    assert store.retry_once(item, failure) is False
    entry = store.history_item("lost")["lost"]
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"] == [["execution_error", failure[1]]]
    assert [queued.prompt_id for queued in store.pending()] == ["first"]
    store.close()
