"""Issue #16 end to end, over HTTP: a node calling sys.exit() or running out of memory fails its own prompt,
and a node ignoring an interrupt is abandoned after the grace period; the queue goes on in both cases."""
import asyncio
import concurrent.futures

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.prompt_worker import PromptWorker
from app.runtime import Runtime
from engine.cache import OutputCache
from engine.executor import Executor
from server.app import ServerConfig, create_app
from tests.engine.faulty_nodes import make_faulty_registry, stubborn_node, through
from tests.server.conftest import wait_for_history

GRACE_S = 0.3


@pytest.fixture
def stubborn():
    node = stubborn_node()
    yield node
    node.release.set()


@pytest.fixture
async def client(settings, stubborn):
    registry = make_faulty_registry(stubborn)
    runtime_future: concurrent.futures.Future = concurrent.futures.Future()
    runtime_future.set_result(Runtime(settings, registry, Executor(registry, OutputCache(16))))

    def worker_with_short_grace(store, sink, encode_preview, future):
        return PromptWorker(store, lambda: future.result().executor, sink, encode_preview, interrupt_grace=GRACE_S)

    app = create_app(settings, ServerConfig(), runtime_future, worker_with_short_grace)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()


async def queue_prompt(client, prompt):
    response = await client.post("/prompt", json={"prompt": prompt})
    assert response.status == 200, await response.text()
    return (await response.json())["prompt_id"]


@pytest.mark.parametrize("class_type, inputs, exception_type", [
    ("Exit", {"code": 3}, "SystemExit"),
    ("OutOfMemory", {"way": "torch.empty"}, "RuntimeError"),
])
async def test_a_node_that_exits_or_runs_out_of_memory_fails_only_its_prompt(
        client, class_type, inputs, exception_type):
    faulty = await queue_prompt(client, through(class_type, **inputs))
    following = await queue_prompt(client, through("Slow", 5, steps=1, delay=0.0))
    entry = await wait_for_history(client, faulty)
    name, error = entry["status"]["messages"][-1]
    assert name == "execution_error"
    assert (error["node_id"], error["exception_type"]) == ("2", exception_type)
    assert (await wait_for_history(client, following))["status"]["status_str"] == "success"
    queue = await (await client.get("/queue")).json()
    assert queue == {"queue_running": [], "queue_pending": []}


async def test_a_node_ignoring_an_interrupt_is_abandoned_and_the_queue_goes_on(client, stubborn):
    stuck = await queue_prompt(client, through("Stubborn", 4))
    following = await queue_prompt(client, through("Slow", 5, steps=1, delay=0.0))
    assert await asyncio.get_running_loop().run_in_executor(None, stubborn.started.wait, 10)
    await client.post("/interrupt", json={"prompt_id": stuck})
    entry = await wait_for_history(client, stuck)
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert (await wait_for_history(client, following))["status"]["status_str"] == "success"
    assert not stubborn.returned.is_set()  # the abandoned node is still blocked in the background
