"""Cluster mode end to end: `main.py --workers 2` (a local Ray runtime, two CPU workers, the tiny models).

One real server process serves the whole module, because starting Ray and two engines costs tens of
seconds on a small machine; the tests that break workers run last. Outputs are compared pixel for pixel with
single-process runs of the same prompts in this process.
"""
from __future__ import annotations

import asyncio
import getpass
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from PIL import Image

from tests.server.test_persistence import free_port

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="ray is not installed (pip install ray==2.60.0): cluster mode is untested")

PROJECT = Path(__file__).resolve().parents[2]
MODEL_A = "tiny-sd1.safetensors"
MODEL_B = "tiny-sd1-copy.safetensors"
WORKER_TIMEOUT = 6
START_TIMEOUT = 180

PROBE_PLUGIN = '''
import os

from aiohttp import web
from comfy.utils import ProgressBar
from PIL import Image
from server import PromptServer


@PromptServer.instance.routes.get("/ray_probe/hello")
async def hello(request):
    return web.json_response({"pid": os.getpid()})


class RayProbe:
    CATEGORY = "test"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hello"})}}

    def run(self, text):
        server = PromptServer.instance
        server.send_sync("ray_probe.hello", {"pid": os.getpid(), "text": text}, server.client_id)
        ProgressBar(1).update_absolute(1, 1, Image.new("RGB", (8, 8), "red"))
        return {"ui": {"pid": [os.getpid()]}}


NODE_CLASS_MAPPINGS = {"RayProbe": RayProbe}
'''


def txt2img(seed: int, steps: int = 4, model: str = MODEL_A) -> dict[str, Any]:
    prompt = json.loads((PROJECT / "workflows" / "txt2img.json").read_text())
    prompt["4"]["inputs"]["ckpt_name"] = model
    prompt["5"]["inputs"].update(width=64, height=64)
    prompt["3"]["inputs"].update(seed=seed, steps=steps)
    prompt["9"]["inputs"]["filename_prefix"] = "ray"
    return prompt


def probe(text: str) -> dict[str, Any]:
    return {"1": {"class_type": "RayProbe", "inputs": {"text": text}}}


class Server:
    def __init__(self, base: Path, port: int, process: subprocess.Popen, log: Path) -> None:
        self.base, self.url, self.process, self.log = base, f"http://127.0.0.1:{port}", process, log

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    from diffusion.families.sd.demo import make_demo_models

    base = tmp_path_factory.mktemp("cluster")
    demo = make_demo_models(base / "models")
    shutil.copy(demo.checkpoint, demo.checkpoint.with_name(MODEL_B))
    plugins = base / "plugins"
    plugins.mkdir()
    (plugins / "ray_probe.py").write_text(textwrap.dedent(PROBE_PLUGIN))
    port = free_port()
    log = base / "server.log"
    command = [sys.executable, "main.py", "--workers", "2", "--cpu", "--threads", "1", "--port", str(port),
               "--worker-timeout", str(WORKER_TIMEOUT), "--custom-nodes-dir", str(plugins)]
    for name in ("models", "input", "output", "temp", "user"):
        command += [f"--{name}-dir", str(base / name)]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=PROJECT, stdout=output, stderr=subprocess.STDOUT,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    started = Server(base, port, process, log)
    try:
        wait_until(lambda: len(ready_workers(started)) == 2, START_TIMEOUT, started)
        yield started
    finally:
        process.send_signal(signal.SIGINT)  # a clean stop also stops the Ray runtime it started
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def get(server: Server, path: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(server.url + path, timeout=10) as response:
        return json.loads(response.read())


def workers(server: Server) -> list[dict[str, Any]]:
    return get(server, "/system_stats")["workers"]


def ready_workers(server: Server) -> list[dict[str, Any]]:
    try:
        return [worker for worker in workers(server) if worker["state"] == "ready"]
    except OSError:
        assert server.process.poll() is None, f"the server exited:\n{server.log_tail()}"
        return []


def wait_until(predicate, timeout: float, server: Server):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"condition not reached in {timeout} s; server log:\n{server.log_tail()}")


def finished(server: Server, prompt_id: str, timeout: float = 60) -> dict[str, Any]:
    return wait_until(lambda: get(server, f"/history/{prompt_id}").get(prompt_id), timeout, server)


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory):
    """Runs a prompt in this process with the same models and settings; returns the saved image's pixels."""
    from app.runtime import build_runtime
    from app.settings import Settings
    from nodes.environment import use_environment

    base = tmp_path_factory.mktemp("single-process")
    settings = Settings(server.base / "models", base / "input", base / "output", base / "temp", base / "user",
                        cache_size=16, cpu=True, threads=1, disable_custom_nodes=True, demo_models=False)
    runtime = build_runtime(settings)

    def run(prompt: dict[str, Any]) -> np.ndarray:
        with use_environment(runtime.environment):
            result = runtime.executor.execute(prompt, f"reference-{time.monotonic_ns()}")
        assert result.success, result.error
        image = result.outputs["9"]["images"][0]
        return pixels(settings.output_dir / image["subfolder"] / image["filename"])

    return run


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def output_pixels(server: Server, entry: dict[str, Any]) -> np.ndarray:
    image = entry["outputs"]["9"]["images"][0]
    return pixels(server.base / "output" / image["subfolder"] / image["filename"])


async def post(session: aiohttp.ClientSession, server: Server, prompt: dict[str, Any], **body) -> str:
    async with session.post(f"{server.url}/prompt", json={"prompt": prompt, **body}) as response:
        answer = await response.json()
        assert response.status == 200, answer
        return answer["prompt_id"]


async def collect(socket, prompt_ids: set[str], timeout: float = 90) -> list[tuple[str, Any]]:
    """(type, data) messages and ("binary", bytes) frames until every prompt in `prompt_ids` ended."""
    received, open_ids = [], set(prompt_ids)
    async with asyncio.timeout(timeout):
        while open_ids:
            message = await socket.receive()
            if message.type == aiohttp.WSMsgType.BINARY:
                received.append(("binary", message.data))
                continue
            body = message.json()
            received.append((body["type"], body["data"]))
            if body["type"] == "executing" and body["data"]["node"] is None:
                open_ids.discard(body["data"].get("prompt_id"))
    return received


async def wait_for(socket, kind: str, prompt_ids: set[str], timeout: float = 60) -> None:
    """Read the socket until a `kind` message came for each prompt (so it runs on a worker now)."""
    waiting = set(prompt_ids)
    async with asyncio.timeout(timeout):
        while waiting:
            message = await socket.receive()
            if message.type == aiohttp.WSMsgType.TEXT and message.json()["type"] == kind:
                waiting.discard(message.json()["data"]["prompt_id"])


def worker_running(server: Server, prompt_id: str) -> dict[str, Any]:
    return wait_until(lambda: next((w for w in ready_workers(server) if w.get("running") == prompt_id), None),
                      30, server)


def test_without_cluster_flags_the_server_does_not_import_ray(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from main import build_parser
        from serve import _cluster
        from app.settings import settings_from_args
        from server.app import ServerConfig, create_app, in_process_worker
        import concurrent.futures
        args = build_parser().parse_args(["--user-dir", {str(tmp_path)!r}])
        assert _cluster(settings_from_args(args), args) is None
        app = create_app(settings_from_args(args), ServerConfig(), concurrent.futures.Future(), in_process_worker)
        print("ray" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


async def test_prompts_from_several_clients_match_single_process_runs(server, reference):
    seeds = {"client-0": [11, 12], "client-1": [21, 22], "client-2": [31, 32]}
    async with aiohttp.ClientSession() as session:
        sockets = {client: await session.ws_connect(f"{server.url}/ws?clientId={client}") for client in seeds}
        for socket in sockets.values():
            await socket.receive_json()  # the status greeting
        queued = {client: {await post(session, server, txt2img(seed), client_id=client): seed for seed in values}
                  for client, values in seeds.items()}
        received = {client: await collect(sockets[client], set(queued[client])) for client in seeds}
        for socket in sockets.values():
            await socket.close()
    for client, prompts in queued.items():
        events = received[client]
        assert {data.get("prompt_id") for kind, data in events if kind not in ("status", "binary")} == set(prompts)
        for prompt_id, seed in prompts.items():
            entry = finished(server, prompt_id)
            assert entry["status"]["status_str"] == "success", entry["status"]
            executed = [data for kind, data in events if kind == "executed" and data["prompt_id"] == prompt_id]
            assert [data["output"] for data in executed] == [entry["outputs"]["9"]]
            expected = await asyncio.to_thread(reference, txt2img(seed))
            assert np.array_equal(output_pixels(server, entry), expected), f"seed {seed} differs"
    names = sorted(path.name for path in (server.base / "output").glob("ray_*.png"))
    assert names == [f"ray_{number:05}_.png" for number in range(1, 7)]


async def test_affinity_keeps_each_model_on_one_worker(server):
    def loads() -> dict[tuple[str, str], int]:
        return {(worker["name"], model): count for worker in ready_workers(server)
                for model, count in worker["model_loads"].items()}

    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/free", json={"unload_models": True}) as response:
            assert response.status == 200
        completed = sum(worker["completed"] for worker in ready_workers(server))
        before = loads()
        seed = 100
        for order in ([MODEL_A, MODEL_B], [MODEL_B, MODEL_A], [MODEL_B, MODEL_A]):
            batch = []
            for model in order:
                seed += 1
                batch.append(await post(session, server, txt2img(seed, model=model)))
            for prompt_id in batch:
                assert (await asyncio.to_thread(finished, server, prompt_id))["status"]["status_str"] == "success"
    assert sum(worker["completed"] for worker in ready_workers(server)) == completed + 6
    grown = {key: count - before.get(key, 0) for key, count in loads().items() if count > before.get(key, 0)}
    by_model = {}
    for (worker, model), count in grown.items():
        by_model.setdefault(model.rsplit("/", 1)[-1], []).append((worker, count))
    assert set(by_model) == {MODEL_A, MODEL_B}
    for model, placements in by_model.items():
        assert len(placements) == 1 and placements[0][1] == 1, f"{model} was loaded {placements}"
    assert len({placements[0][0] for placements in by_model.values()}) == 2, "both models went to one worker"
    held = {worker["name"]: [model.rsplit("/", 1)[-1] for model in worker["loaded_models"]]
            for worker in ready_workers(server)}
    assert sorted(held.values()) == sorted([[MODEL_A], [MODEL_B]]), f"models held: {held}"
    assert all(worker["devices"][0]["type"] == "cpu" and worker["ram_total"] > 0 for worker in ready_workers(server))


async def test_plugins_run_on_every_worker_and_placement_hints_pin_prompts(server):
    pids = {worker["name"]: worker["pid"] for worker in ready_workers(server)}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/ray_probe/hello") as response:
            assert response.status == 200  # the plugin's route, served by the head
        socket = await session.ws_connect(f"{server.url}/ws?clientId=prober")
        await socket.receive_json()
        queued = {await post(session, server, probe(f"on {name}"), client_id="prober",
                             extra_data={"placement": {"workers": [name]}}): name for name in pids}
        events = await collect(socket, set(queued))
        rejected = await post(session, server, probe("nowhere"), extra_data={"placement": {"workers": ["worker-9"]}})
        await socket.close()
    messages = [data for kind, data in events if kind == "ray_probe.hello"]
    assert sum(kind == "binary" for kind, _ in events) == 2, "a preview frame per prompt, encoded on its worker"
    assert sorted((message["text"], message["pid"]) for message in messages) == sorted(
        (f"on {name}", pid) for name, pid in pids.items())
    for prompt_id, name in queued.items():
        assert finished(server, prompt_id)["outputs"]["1"] == {"pid": [pids[name]]}
    failure = finished(server, rejected)["status"]
    assert failure["status_str"] == "error" and "worker-9" in failure["messages"][0][1]["exception_message"]


async def test_interrupt_reaches_the_worker_running_the_prompt(server):
    async with aiohttp.ClientSession() as session:
        socket = await session.ws_connect(f"{server.url}/ws?clientId=stopper")
        await socket.receive_json()
        first = await post(session, server, txt2img(500, steps=2000), client_id="stopper")
        second = await post(session, server, txt2img(501, steps=2000), client_id="stopper")
        await wait_for(socket, "progress", {first, second})
        assert {worker_running(server, first)["name"], worker_running(server, second)["name"]} == {
            "worker-0", "worker-1"}
        for prompt_id, other in ((second, first), (first, None)):
            async with session.post(f"{server.url}/interrupt", json={"prompt_id": prompt_id}) as response:
                assert response.status == 200
            entry = await asyncio.to_thread(finished, server, prompt_id, 30)
            assert entry["status"]["messages"][-1][0] == "execution_interrupted"
            if other is not None:
                assert not get(server, f"/history/{other}"), "interrupting one prompt stopped the other"
        await socket.close()


async def test_a_killed_worker_loses_its_prompt_to_another_worker_that_completes_it(server, reference):
    prompt = txt2img(700, steps=150)
    async with aiohttp.ClientSession() as session:
        socket = await session.ws_connect(f"{server.url}/ws?clientId=victim")
        await socket.receive_json()
        prompt_id = await post(session, server, prompt, client_id="victim")
        await wait_for(socket, "progress", {prompt_id})
        await socket.close()
    killed = worker_running(server, prompt_id)
    survivor = next(worker for worker in ready_workers(server) if worker["name"] != killed["name"])
    os.kill(killed["pid"], signal.SIGKILL)
    entry = await asyncio.to_thread(finished, server, prompt_id, 90)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert np.array_equal(output_pixels(server, entry), await asyncio.to_thread(reference, prompt))
    wait_until(lambda: next(w for w in workers(server) if w["name"] == survivor["name"]).get("completed", 0)
               == survivor["completed"] + 1, 10, server)
    back = wait_until(lambda: next((w for w in ready_workers(server) if w["name"] == killed["name"]), None),
                      START_TIMEOUT, server)
    assert back["restarts"] == killed["restarts"] + 1 and back["pid"] != killed["pid"]
    assert "died" in back["last_failure"]
    private = Path(tempfile.gettempdir()) / f"nodeflow-workers-{getpass.getuser()}"
    assert (private / f"{back['name']}-pid{back['pid']}").is_dir()
    assert not (private / f"{killed['name']}-pid{killed['pid']}").exists(), "the lost worker's folder leaked"


async def test_a_hung_worker_is_replaced_and_a_prompt_lost_twice_fails_with_the_reason(server):
    async with aiohttp.ClientSession() as session:
        socket = await session.ws_connect(f"{server.url}/ws?clientId=unlucky")
        await socket.receive_json()
        prompt_id = await post(session, server, txt2img(800, steps=5000), client_id="unlucky")
        await wait_for(socket, "progress", {prompt_id})
        hung = worker_running(server, prompt_id)
        os.kill(hung["pid"], signal.SIGSTOP)  # alive but silent: only the heartbeat can tell
        await wait_for(socket, "execution_start", {prompt_id}, timeout=WORKER_TIMEOUT + 60)  # its second try
        await wait_for(socket, "progress", {prompt_id})
        second = worker_running(server, prompt_id)
        assert second["name"] != hung["name"]
        os.kill(second["pid"], signal.SIGKILL)
        events = await collect(socket, {prompt_id}, timeout=60)
        await socket.close()
    entry = await asyncio.to_thread(finished, server, prompt_id, 30)
    assert entry["status"]["status_str"] == "error"
    kind, data = entry["status"]["messages"][-1]
    assert kind == "execution_error" and data["exception_type"] == "WorkerLost"
    assert data["exception_message"].startswith(f"{second['name']} died")
    assert [data["exception_message"] for kind, data in events if kind == "execution_error"] == [
        data["exception_message"]]
    for name, reason in ((hung["name"], "stopped answering heartbeats"), (second["name"], "died")):
        back = wait_until(lambda: next((w for w in ready_workers(server) if w["name"] == name), None),
                          START_TIMEOUT, server)
        assert reason in back["last_failure"]
