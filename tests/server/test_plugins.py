"""Plugins through the server: the example pack end to end, plugin routes, failures, the compat layer."""
import asyncio
import concurrent.futures
import struct
import textwrap

import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer

from app.runtime import PROJECT_DIR, Runtime
from engine.cache import OutputCache
from engine.executor import Executor
from engine.plugin_loader import load_plugins
from nodes.environment import Folders, NodeEnvironment, set_default_environment
from server.app import ServerConfig, create_app
from tests.engine.nodes_for_tests import make_registry
from tests.server.conftest import wait_for_history
from tests.server.test_websocket import collect_until_done

COMPAT_PACK = '''
import time

import torch
import folder_paths
import nodes
from comfy.utils import ProgressBar, common_upscale
from comfy import model_management
from comfy.comfy_types import IO, ComfyNodeABC
from comfy_execution.graph import ExecutionBlocker
from comfy_execution.graph_utils import GraphBuilder, is_link
from server import PromptServer
from aiohttp import web


class Counter(ComfyNodeABC):
    RETURN_TYPES = (IO.INT,)
    FUNCTION = "run"
    CATEGORY = "compat"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": (IO.INT, {"default": 3, "min": 1, "max": nodes.MAX_RESOLUTION})}}

    def run(self, steps):
        bar = ProgressBar(steps)
        for _ in range(steps):
            bar.update(1)
        return (steps,)


class Waiter:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "compat"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    def run(self, value):
        PromptServer.instance.send_sync("compat.waiting", {"value": value}, PromptServer.instance.client_id)
        for _ in range(2000):
            model_management.throw_exception_if_processing_interrupted()
            time.sleep(0.005)
        return (value,)


class Repeat:
    """Adds `amount` to `value` `times` times by expanding into one more Repeat each time (a loop)."""
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "compat"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "amount": ("INT", {"default": 1}), "times": ("INT", {"default": 3})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, value, amount, times, unique_id):
        if times == 0:
            return (value,)
        graph = GraphBuilder(unique_id)
        step = graph.node("CompatAdd", a=value, b=amount)
        following = graph.node("CompatRepeat", value=step.out(0), amount=amount, times=times - 1)
        assert is_link(following.out(0))
        return {"result": (following.out(0),), "expand": graph.finalize()}


class Add:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "compat"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT",), "b": ("INT",)}}

    def run(self, a, b):
        return (a + b,)


class Stop:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "compat"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    def run(self, value):
        return (ExecutionBlocker(None),)


class Files:
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "compat"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"checkpoint": (folder_paths.get_filename_list("checkpoints"),)}}

    def run(self, checkpoint):
        image = torch.ones(1, 3, 8, 8)
        upscaled = common_upscale(image, 8, 4, "bilinear", "center")
        return {"ui": {"files": [checkpoint, folder_paths.get_full_path("checkpoints", checkpoint) is not None,
                                 folder_paths.get_full_path("checkpoints", "../../etc/passwd")],
                       "shape": list(upscaled.shape), "device": [str(model_management.get_torch_device())],
                       "output_dir": [folder_paths.get_output_directory() == folder_paths.output_directory]}}


class Explodes:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "compat"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    def run(self, value):
        raise RuntimeError("plugin node failed mid-queue")


@PromptServer.instance.routes.get("/compat/hello/{name}")
async def hello(request):
    return web.json_response({"hello": request.match_info["name"]})


@PromptServer.instance.routes.post("/compat/notify")
async def notify(request):
    body = await request.json()
    await PromptServer.instance.send("compat.note", body, body.get("sid"))
    return web.json_response({"sent": True})


NODE_CLASS_MAPPINGS = {"CompatCounter": Counter, "CompatWaiter": Waiter, "CompatRepeat": Repeat,
                       "CompatAdd": Add, "CompatStop": Stop, "CompatFiles": Files, "CompatExplodes": Explodes}
'''

STATS_PACK = '''
class ImageStats:
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def run(self, image):
        return {"ui": {"shape": list(image.shape), "mean": [round(float(image.mean()), 4)]}}


NODE_CLASS_MAPPINGS = {"ImageStats": ImageStats}
'''


SERVER_API_PACK = '''
import os

from PIL import Image

import execution
from server import BinaryEventTypes, PromptServer, web

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "server_api_static")


def shout(body):
    for node in body.get("prompt", {}).values():
        if node.get("class_type") == "ServerApiEcho":
            node["inputs"]["text"] = node["inputs"]["text"].upper()
    return body


def faulty(body):
    raise RuntimeError("a faulty on-prompt handler")


PromptServer.instance.add_on_prompt_handler(faulty)
PromptServer.instance.add_on_prompt_handler(shout)


async def queue_state(request):
    queue = PromptServer.instance.prompt_queue
    running, pending = queue.get_current_queue()
    return web.json_response({"running": len(running), "pending": len(pending),
                              "remaining": queue.get_tasks_remaining()})


async def validate(request):
    body = await request.json()
    valid, error, outputs, node_errors = await execution.validate_prompt("check", body["prompt"], None)
    return web.json_response({"valid": valid, "error": error, "outputs": outputs, "node_errors": node_errors})


PromptServer.instance.app.add_routes([web.get("/server-api/queue", queue_state),
                                      web.post("/server-api/validate", validate)])
PromptServer.instance.app.router.add_static("/server-api/static", STATIC)


class Echo:
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": ""})}}

    def run(self, text):
        server = PromptServer.instance
        server.send_sync(BinaryEventTypes.PREVIEW_IMAGE, ("PNG", Image.new("RGB", (64, 32), (255, 0, 0)), 16),
                         server.client_id)
        return {"ui": {"text": [text]}}


NODE_CLASS_MAPPINGS = {"ServerApiEcho": Echo}
'''


@pytest.fixture
async def plugin_client(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "compat_pack.py").write_text(textwrap.dedent(COMPAT_PACK))
    (plugins / "stats_pack.py").write_text(STATS_PACK)
    (plugins / "broken_pack.py").write_text("raise ImportError('this pack is broken')\n")
    (plugins / "needs_module.py").write_text("import comfy.not_a_module_here\n")
    (plugins / "needs_name.py").write_text("from comfy.utils import not_a_name_here\n")
    (plugins / "server_api_pack.py").write_text(SERVER_API_PACK)
    (plugins / "server_api_static").mkdir()
    (plugins / "server_api_static" / "hello.txt").write_text("hello from a plugin")
    folders = Folders.under(tmp_path)
    folders.create()
    (folders.models_dir / "checkpoints" / "model.safetensors").write_bytes(b"x")
    set_default_environment(NodeEnvironment(folders, torch.device("cpu"), torch.float32))
    from app.settings import Settings
    settings = Settings(folders.models_dir, folders.input_dir, folders.output_dir, folders.temp_dir,
                        folders.user_dir, cache_size=16, cpu=True, threads=1)
    future: concurrent.futures.Future = concurrent.futures.Future()
    app = create_app(settings, ServerConfig(), future)
    registry = make_registry()
    records = load_plugins([PROJECT_DIR / "custom_nodes", plugins], registry)
    future.set_result(Runtime(settings, registry, Executor(registry, OutputCache(16)), None, records))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()


async def run_prompt(client, prompt, client_id="tester"):
    response = await client.post("/prompt", json={"prompt": prompt, "client_id": client_id})
    body = await response.json()
    assert response.status == 200, body
    return await wait_for_history(client, body["prompt_id"]), body["prompt_id"]


async def test_custom_nodes_route_reports_every_plugin(plugin_client):
    records = {r["name"]: r for r in await (await plugin_client.get("/custom_nodes")).json()}
    assert records["example_pack"]["status"] == "loaded"
    assert "ExampleImageBlur" in records["example_pack"]["nodes"]
    assert records["broken_pack"]["status"] == "failed"
    assert "this pack is broken" in records["broken_pack"]["error"]
    assert records["needs_module"]["status"] == "failed"
    assert records["needs_module"]["missing"] == "comfy.not_a_module_here"
    assert records["needs_name"]["missing"] == "comfy.utils.not_a_name_here"
    assert records["broken_pack"]["missing"] is None and records["example_pack"]["missing"] is None
    info = await (await plugin_client.get("/object_info/ExampleImageBrightness")).json()
    assert info["ExampleImageBrightness"]["python_module"] == "example_pack"
    assert info["ExampleImageBrightness"]["display_name"] == "Brightness (example)"


async def test_example_pack_end_to_end(plugin_client):
    prompt = {"1": {"class_type": "ExampleSolidColor", "inputs": {"width": 32, "height": 16, "color": "#808080",
                                                                  "batch_size": 2}},
              "2": {"class_type": "ExampleImageBrightness", "inputs": {"image": ["1", 0], "factor": 0.5}},
              "3": {"class_type": "ExampleImageBlur", "inputs": {"image": ["2", 0], "radius": 1.0}},
              "4": {"class_type": "ExampleTextOverlay", "inputs": {"image": ["3", 0], "text": "x", "x": 0, "y": 0,
                                                                   "color": "#000000"}},
              "5": {"class_type": "ImageStats", "inputs": {"image": ["3", 0]}},
              "6": {"class_type": "ImageStats", "inputs": {"image": ["4", 0]}}}
    entry, _ = await run_prompt(plugin_client, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert entry["outputs"]["5"] == {"shape": [2, 16, 32, 3], "mean": [round(64 / 255, 4)]}
    assert entry["outputs"]["6"]["mean"][0] < entry["outputs"]["5"]["mean"][0]
    bad = {"1": {"class_type": "ExampleSolidColor", "inputs": {"width": 8, "height": 8, "color": "#111111",
                                                               "batch_size": 1}},
           "2": {"class_type": "ExampleTextOverlay", "inputs": {"image": ["1", 0], "text": "x", "x": 0, "y": 0,
                                                                "color": "no-such-colour"}},
           "3": {"class_type": "ImageStats", "inputs": {"image": ["2", 0]}}}
    response = await plugin_client.post("/prompt", json={"prompt": bad})
    assert response.status == 400
    assert (await response.json())["node_errors"]["2"]["errors"][0]["type"] == "custom_validation_failed"


async def test_extension_scripts_are_listed_and_served_safely(plugin_client):
    urls = await (await plugin_client.get("/extensions")).json()
    assert "/extensions/example_pack/color_widget.js" in urls
    response = await plugin_client.get("/extensions/example_pack/color_widget.js")
    assert response.status == 200 and response.content_type == "text/javascript"
    assert "registerWidget" in await response.text()
    assert (await plugin_client.get("/extensions/example_pack/..%2F__init__.py")).status in (400, 404)
    assert (await plugin_client.get("/extensions/nope/x.js")).status == 404


async def test_plugin_routes_are_served_behind_our_safety_rules(plugin_client):
    response = await plugin_client.get("/compat/hello/world")
    assert response.status == 200 and await response.json() == {"hello": "world"}
    refused = await plugin_client.get("/compat/hello/world", headers={"Origin": "http://evil.example"})
    assert refused.status == 403
    assert (await plugin_client.get("/compat/nothing-here")).status == 404
    assert (await plugin_client.put("/compat/hello/world")).status == 405


async def test_plugin_route_messages_reach_the_websocket(plugin_client):
    socket = await plugin_client.ws_connect("/ws?clientId=listener")
    await socket.receive_json()
    await plugin_client.post("/compat/notify", json={"sid": "listener", "text": "hi"})
    message = await socket.receive_json(timeout=5)
    assert message == {"type": "compat.note", "data": {"sid": "listener", "text": "hi"}}
    await socket.close()


async def test_compat_progress_bar_expansion_and_blocker(plugin_client):
    socket = await plugin_client.ws_connect("/ws?clientId=compat")
    await socket.receive_json()
    prompt = {"1": {"class_type": "CompatCounter", "inputs": {"steps": 3}},
              "2": {"class_type": "CompatRepeat", "inputs": {"value": ["1", 0], "amount": 2, "times": 3}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}},
              "4": {"class_type": "CompatStop", "inputs": {"value": ["1", 0]}},
              "5": {"class_type": "Output", "inputs": {"value": ["4", 0]}}}
    response = await plugin_client.post("/prompt", json={"prompt": prompt, "client_id": "compat"})
    prompt_id = (await response.json())["prompt_id"]
    received = await collect_until_done(socket, prompt_id)
    progress = [(d["value"], d["max"], d["node"]) for kind, d in received if kind == "progress"]
    assert progress == [(1, 3, "1"), (2, 3, "1"), (3, 3, "1")]
    entry = await wait_for_history(plugin_client, prompt_id)
    assert entry["outputs"]["3"] == {"values": [9]}  # 3 + 2 + 2 + 2 through three expansions
    assert "5" not in entry["outputs"]  # blocked
    assert entry["status"]["status_str"] == "success"
    await socket.close()


async def test_compat_folder_paths_and_device(plugin_client):
    prompt = {"1": {"class_type": "CompatFiles", "inputs": {"checkpoint": "model.safetensors"}}}
    entry, _ = await run_prompt(plugin_client, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"][-1][1].get("exception_message")
    assert entry["outputs"]["1"] == {"files": ["model.safetensors", True, None], "shape": [1, 3, 4, 8],
                                     "device": ["cpu"], "output_dir": [True]}


async def test_compat_interrupt_and_a_raising_plugin_node_do_not_stop_the_queue(plugin_client):
    socket = await plugin_client.ws_connect("/ws?clientId=waiting")
    await socket.receive_json()
    waiting = {"1": {"class_type": "Const", "inputs": {"value": 5}},
               "2": {"class_type": "CompatWaiter", "inputs": {"value": ["1", 0]}},
               "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    exploding = {"1": {"class_type": "Const", "inputs": {"value": 6}},
                 "2": {"class_type": "CompatExplodes", "inputs": {"value": ["1", 0]}},
                 "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    first = (await (await plugin_client.post("/prompt", json={"prompt": waiting, "client_id": "waiting"})).json())
    second = (await (await plugin_client.post("/prompt", json={"prompt": exploding})).json())
    third = (await (await plugin_client.post("/prompt", json={"prompt": {
        "1": {"class_type": "Const", "inputs": {"value": 7}},
        "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}})).json())
    async with asyncio.timeout(10):
        while True:
            message = await socket.receive_json()
            if message["type"] == "compat.waiting":
                assert message["data"] == {"value": 5}
                break
    await plugin_client.post("/interrupt")
    interrupted = await wait_for_history(plugin_client, first["prompt_id"])
    assert interrupted["status"]["messages"][-1][0] == "execution_interrupted"
    failed = await wait_for_history(plugin_client, second["prompt_id"])
    error = dict(failed["status"]["messages"])["execution_error"]
    assert error["node_type"] == "CompatExplodes" and "failed mid-queue" in error["exception_message"]
    assert (await wait_for_history(plugin_client, third["prompt_id"]))["outputs"]["2"] == {"values": [7]}
    await socket.close()


async def test_on_prompt_handlers_rewrite_the_prompt_and_a_faulty_one_is_skipped(plugin_client):
    prompt = {"1": {"class_type": "ServerApiEcho", "inputs": {"text": "quiet"}}}
    history, _ = await run_prompt(plugin_client, prompt)
    assert history["outputs"]["1"]["text"] == ["QUIET"]


async def test_a_plugin_preview_reaches_the_client_in_comfyuis_binary_framing(plugin_client):
    from io import BytesIO

    from PIL import Image

    socket = await plugin_client.ws_connect("/ws?clientId=previewer")
    await run_prompt(plugin_client, {"1": {"class_type": "ServerApiEcho", "inputs": {"text": "x"}}}, "previewer")
    frames = []
    while not frames:
        message = await asyncio.wait_for(socket.receive(), timeout=30)
        if message.type.name == "BINARY":
            frames.append(message.data)
    await socket.close()
    event, image_format = struct.unpack(">II", frames[0][:8])
    assert (event, image_format) == (1, 2)  # PREVIEW_IMAGE, PNG
    image = Image.open(BytesIO(frames[0][8:]))
    assert image.size == (16, 8) and image.getpixel((3, 3)) == (255, 0, 0)  # thumbnailed to max_size 16


async def test_routes_added_through_app_are_served_behind_the_security_checks(plugin_client):
    assert await (await plugin_client.get("/server-api/queue")).json() == {"running": 0, "pending": 0,
                                                                           "remaining": 0}
    static = await plugin_client.get("/server-api/static/hello.txt")
    assert static.status == 200 and await static.text() == "hello from a plugin"
    refused = await plugin_client.get("/server-api/queue", headers={"Origin": "http://evil.example"})
    assert refused.status == 403


async def test_execution_validate_prompt_answers_comfyuis_tuple(plugin_client):
    good = {"1": {"class_type": "ServerApiEcho", "inputs": {"text": "x"}}}
    answer = await (await plugin_client.post("/server-api/validate", json={"prompt": good})).json()
    assert answer == {"valid": True, "error": None, "outputs": ["1"], "node_errors": {}}
    bad = {"1": {"class_type": "ServerApiEcho", "inputs": {}}}
    answer = await (await plugin_client.post("/server-api/validate", json={"prompt": bad})).json()
    assert answer["valid"] is False and answer["outputs"] == []
    assert answer["error"]["type"] == "prompt_outputs_failed_validation"
    assert answer["node_errors"]["1"]["errors"][0]["type"] == "required_input_missing"


async def test_prompt_queue_put_validates_and_queues_like_post_prompt(plugin_client):
    from server import PromptServer

    queue = PromptServer.instance.prompt_queue
    with pytest.raises(ValueError, match="invalid"):
        queue.put((1, "bad-put", {"1": {"class_type": "ServerApiEcho", "inputs": {}}}, {}, ["1"]))
    queue.put((1, "good-put", {"1": {"class_type": "ServerApiEcho", "inputs": {"text": "queued"}}}, {}, ["1"]))
    history = await wait_for_history(plugin_client, "good-put")
    assert history["outputs"]["1"]["text"] == ["queued"]
    assert "good-put" in queue.get_history(prompt_id="good-put")
    assert queue.get_tasks_remaining() == 0 and queue.currently_running == {}
