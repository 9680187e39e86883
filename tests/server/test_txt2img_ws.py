"""The real thing over the wire: the built-in nodes and the tiny demo model, queued through the API and
watched on the websocket (events in order, latent preview frames), with the image served by /view."""
import concurrent.futures
import io
import json
import struct

import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from app.runtime import build_runtime
from app.settings import Settings
from server.app import ServerConfig, create_app
from tests.server.conftest import wait_for_history
from tests.server.test_websocket import collect_until_done

WORKFLOWS = __import__("pathlib").Path(__file__).resolve().parents[2] / "workflows"


def small_txt2img(seed: int) -> dict:
    prompt = json.loads((WORKFLOWS / "txt2img.json").read_text())
    for node in prompt.values():
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=64, height=64)
        if node["class_type"] == "KSampler":
            node["inputs"].update(steps=3, seed=seed)
    return prompt


@pytest.fixture(scope="module")
def runtime_future(tmp_path_factory):
    base = tmp_path_factory.mktemp("real")
    settings = Settings(base / "models", base / "input", base / "output", base / "temp", base / "user",
                        cache_size=32, cpu=True, threads=1, disable_custom_nodes=True)
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(build_runtime(settings))
    return future


@pytest.fixture
async def real_client(runtime_future):
    settings = runtime_future.result().settings
    client = TestClient(TestServer(create_app(settings, ServerConfig(), runtime_future), host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()


async def test_txt2img_over_the_websocket_with_previews(real_client):
    socket = await real_client.ws_connect("/ws?clientId=painter")
    await socket.receive_json()
    response = await real_client.post("/prompt", json={"prompt": small_txt2img(seed=5), "client_id": "painter",
                                                       "extra_data": {"extra_pnginfo": {"workflow": {"v": 1}}}})
    assert response.status == 200, await response.text()
    prompt_id = (await response.json())["prompt_id"]
    received = await collect_until_done(socket, prompt_id, timeout=120)
    kinds = [kind for kind, _ in received if kind not in ("status", "progress", "progress_state", "binary")]
    assert kinds[:2] == ["execution_start", "execution_cached"]
    assert kinds[-3:] == ["executed", "execution_success", "executing"]
    executing = [data["node"] for kind, data in received if kind == "executing"]
    assert executing[-1] is None and executing.index("3") < executing.index("8") < executing.index("9")
    sampler_progress = [d["value"] for kind, d in received if kind == "progress" and d["node"] == "3"]
    assert sampler_progress == [1, 2, 3]
    frames = [data for kind, data in received if kind == "binary"]
    assert len(frames) >= 3
    assert struct.unpack(">II", frames[0][:8]) == (1, 1)
    preview = Image.open(io.BytesIO(frames[0][8:]))
    assert preview.format == "JPEG" and preview.size == (8, 8)  # a latent-resolution preview
    executed = next(data for kind, data in received if kind == "executed")
    [image] = executed["output"]["images"]
    assert image["type"] == "output" and image["filename"].endswith(".png")
    view = await real_client.get("/view", params=image)
    saved = Image.open(io.BytesIO(await view.read()))
    assert saved.size == (64, 64)
    assert json.loads(saved.info["workflow"]) == {"v": 1} and "KSampler" in saved.info["prompt"]
    entry = await wait_for_history(real_client, prompt_id)
    assert entry["outputs"]["9"]["images"] == [image]
    await socket.close()


async def test_seed_change_reruns_only_sampler_decode_and_save(real_client):
    first = await real_client.post("/prompt", json={"prompt": small_txt2img(seed=11)})
    await wait_for_history(real_client, (await first.json())["prompt_id"])
    second = await real_client.post("/prompt", json={"prompt": small_txt2img(seed=12)})
    entry = await wait_for_history(real_client, (await second.json())["prompt_id"])
    cached = set(dict(entry["status"]["messages"])["execution_cached"]["nodes"])
    assert cached == {"4", "5", "6", "7"}


async def test_models_embeddings_system_stats_and_free(real_client):
    assert "checkpoints" in await (await real_client.get("/models")).json()
    assert await (await real_client.get("/models/checkpoints")).json() == ["tiny-sd1.safetensors"]
    assert (await real_client.get("/models/nope")).status == 404
    assert await (await real_client.get("/embeddings")).json() == []
    stats = await (await real_client.get("/system_stats")).json()
    assert stats["devices"][0]["type"] == "cpu" and "pytorch_version" in stats["system"]
    assert (await real_client.post("/free", json={"unload_models": True, "free_memory": True})).status == 200
    info = await (await real_client.get("/object_info/KSampler")).json()
    assert "euler" in info["KSampler"]["input"]["required"]["sampler_name"][0]
