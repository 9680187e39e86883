"""Hypothesis-driven fuzz of POST /prompt against a live server: never a 5xx, always a JSON answer."""
import asyncio
import json
import threading
import urllib.error
import urllib.request

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from server.app import ServerConfig, create_app
from tests.server.conftest import make_settings, ready_runtime
from tests.server.test_persistence import free_port

CLASS_TYPES = ["Const", "Add", "Text", "Output", "Switch", "Range", "Sum", "Gate", "Positive", "Nope", ""]
INPUT_NAMES = ["value", "a", "b", "text", "mode", "count", "values", "condition", "on_true", "open", "message"]

json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
node_ids = st.sampled_from(["1", "2", "3", "4", "x"])
input_values = (json_values | st.tuples(node_ids, st.integers(-2, 3)).map(list)
                | st.tuples(st.integers(0, 5), st.integers(0, 2)).map(list))
nodes = st.fixed_dictionaries({"class_type": st.sampled_from(CLASS_TYPES) | json_scalars,
                               "inputs": st.dictionaries(st.sampled_from(INPUT_NAMES), input_values, max_size=4)})
prompts = st.dictionaries(node_ids, nodes | json_values, max_size=5)
bodies = st.fixed_dictionaries({"prompt": prompts | json_values}, optional={
    "client_id": json_values, "extra_data": json_values, "front": json_values, "number": json_values,
    "prompt_id": json_values, "partial_execution_targets": json_values})


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    settings = make_settings(base)
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(settings, ServerConfig(), ready_runtime(settings)))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def post(port, raw: bytes) -> tuple[int, object]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/prompt", data=raw, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@hypothesis_settings(max_examples=150, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=bodies)
def test_post_prompt_never_fails_with_a_server_error(live_server, body):
    status, answer = post(live_server, json.dumps(body).encode())
    assert status in (200, 400), (status, answer, body)
    assert isinstance(answer, dict)
    if status == 200:
        assert {"prompt_id", "number", "node_errors"} <= set(answer)
    else:
        assert "error" in answer


@hypothesis_settings(max_examples=40, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=64))
def test_arbitrary_bytes_are_a_client_error(live_server, raw):
    status, answer = post(live_server, raw)
    assert status in (200, 400), (status, answer, raw)
