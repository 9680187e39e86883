"""Queue and history survive a real `kill -9` of the server process."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


PROJECT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(port, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def start_server(base: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "tests.server.serve_test_nodes", str(base), str(port)],
                               cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            call(port, "GET", "/prompt")
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"server did not start: {process.stdout.read().decode(errors='replace')}")


def wait_until(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def single(value):
    return {"1": {"class_type": "Const", "inputs": {"value": value}},
            "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}


def slow(steps):
    return {"1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "Slow", "inputs": {"value": ["1", 0], "steps": steps, "delay": 0.01}},
            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}


def test_pending_and_running_prompts_survive_kill_9(tmp_path):
    port = free_port()
    server = start_server(tmp_path, port)
    try:
        done = call(port, "POST", "/prompt", {"prompt": single(1), "prompt_id": "done"})["prompt_id"]
        wait_until(lambda: call(port, "GET", f"/history/{done}"))
        call(port, "POST", "/prompt", {"prompt": slow(3000), "prompt_id": "running"})
        wait_until(lambda: call(port, "GET", "/queue")["queue_running"])
        for name in ("pending-a", "pending-b"):
            call(port, "POST", "/prompt", {"prompt": single(len(name)), "prompt_id": name})
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)

        server = start_server(tmp_path, port)
        queue = call(port, "GET", "/queue")
        order = [item[1] for item in queue["queue_running"] + queue["queue_pending"]]
        assert order == ["running", "pending-a", "pending-b"]  # the interrupted prompt went back to the front
        assert call(port, "GET", f"/history/{done}")[done]["status"]["status_str"] == "success"
        call(port, "POST", "/interrupt", {})  # let the long prompt end early
        wait_until(lambda: call(port, "GET", "/history/pending-b"))
        history = call(port, "GET", "/history")
        assert {"done", "running", "pending-a", "pending-b"} <= set(history)
    finally:
        server.kill()
        server.wait(10)


def test_a_prompt_that_dies_twice_is_recorded_not_retried_forever(tmp_path):
    from app.prompt_store import PromptStore

    store = PromptStore(tmp_path / "queue.sqlite3")
    store.enqueue("crashy", single(1), {}, ["2"], None)
    assert store.take_next(timeout=0).prompt_id == "crashy"
    store.close()  # the process "died" while it ran
    store = PromptStore(tmp_path / "queue.sqlite3")
    assert [item.prompt_id for item in store.pending()] == ["crashy"]
    assert store.take_next(timeout=0).prompt_id == "crashy"
    store.close()  # and died again
    store = PromptStore(tmp_path / "queue.sqlite3")
    assert store.pending() == [] and store.recovered_failed == ["crashy"]
    entry = store.history_item("crashy")["crashy"]
    assert entry["status"]["messages"][0][0] == "execution_error"
    store.close()
