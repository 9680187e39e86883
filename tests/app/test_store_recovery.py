"""After a restart, a prompt the process died under goes back to the front of the queue once; if the process
dies under it again it is recorded as failed, with an error saying why, instead of crashing every start."""
from app.prompt_store import PromptStore


def single(value):
    return {"1": {"class_type": "Const", "inputs": {"value": value}},
            "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}


def restart(tmp_path, store):
    store.close()  # the process "died": the store is opened again by the next start
    return PromptStore(tmp_path / "queue.sqlite3")


def test_a_prompt_running_at_a_crash_is_retried_once_at_the_front_then_failed_with_a_clear_error(tmp_path):
    store = PromptStore(tmp_path / "queue.sqlite3")
    store.enqueue("crashes", single(1), {}, ["2"], "client")
    store.enqueue("behind", single(2), {}, ["2"], None)
    assert store.take_next(timeout=0).prompt_id == "crashes"

    store = restart(tmp_path, store)
    assert [item.prompt_id for item in store.pending()] == ["crashes", "behind"]
    assert store.recovered_failed == [] and store.history() == {}
    assert store.take_next(timeout=0).prompt_id == "crashes"

    store = restart(tmp_path, store)
    assert store.recovered_failed == ["crashes"]
    entry = store.history_item("crashes")["crashes"]
    assert entry["status"]["status_str"] == "error" and not entry["status"]["completed"]
    [(name, error)] = entry["status"]["messages"]
    assert name == "execution_error" and error["exception_type"] == "ProcessLost"
    assert "stopped while this prompt ran" in error["exception_message"]
    assert "not run again" in error["exception_message"]
    assert entry["prompt"][1] == "crashes" and entry["prompt"][2] == single(1)
    assert store.take_next(timeout=0).prompt_id == "behind"  # the queue goes on

    store = restart(tmp_path, store)  # and "behind", running now, gets its own first retry
    assert [item.prompt_id for item in store.pending()] == ["behind"]
    store.close()


def test_a_prompt_whose_worker_was_lost_once_fails_at_its_first_crash(tmp_path):
    """The count is per prompt and covers both: a worker lost in a running process, and the process lost."""
    store = PromptStore(tmp_path / "queue.sqlite3")
    store.enqueue("unlucky", single(1), {}, ["2"], None)
    item = store.take("unlucky")
    assert store.retry_once(item, ("execution_error", {"exception_message": "worker-1 died"})) is True
    store.take("unlucky")
    store = restart(tmp_path, store)
    assert store.recovered_failed == ["unlucky"] and store.pending() == []
    store.close()


def test_a_prompt_requeued_at_a_start_but_never_taken_again_is_not_counted_twice(tmp_path):
    store = PromptStore(tmp_path / "queue.sqlite3")
    store.enqueue("patient", single(1), {}, ["2"], None)
    store.take_next(timeout=0)
    store = restart(tmp_path, store)
    store = restart(tmp_path, store)  # stopped again before it ran
    assert [item.prompt_id for item in store.pending()] == ["patient"] and store.recovered_failed == []
    store.close()
