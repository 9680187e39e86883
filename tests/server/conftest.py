import asyncio
import concurrent.futures

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.runtime import Runtime
from app.settings import Settings
from engine.cache import OutputCache
from engine.executor import Executor
from server.app import ServerConfig, create_app
from tests.engine.conftest import calls  # noqa: F401  (the execution log fixture)
from tests.engine.nodes_for_tests import make_registry


def make_settings(tmp_path) -> Settings:
    settings = Settings(tmp_path / "models", tmp_path / "input", tmp_path / "output", tmp_path / "temp",
                        tmp_path / "user", cache_size=16, cpu=True, threads=1)
    for folder in (settings.input_dir, settings.output_dir, settings.temp_dir, settings.user_dir):
        folder.mkdir(parents=True, exist_ok=True)
    return settings


def ready_runtime(settings: Settings, runtime: Runtime | None = None) -> concurrent.futures.Future:
    """A finished runtime future: `runtime`, or one with the test nodes."""
    if runtime is None:
        registry = make_registry()
        runtime = Runtime(settings, registry, Executor(registry, OutputCache(16)))
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(runtime)
    return future


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@pytest.fixture
async def make_client(settings):
    """Start test servers (real sockets on 127.0.0.1) with the test nodes; config overrides as keywords."""
    clients = []

    async def start(*plugins, **config) -> TestClient:
        """A server; `plugins`: PluginRecords its runtime lists (as loaded node packs)."""
        runtime = ready_runtime(settings).result()
        runtime.plugins.extend(plugins)
        app = create_app(settings, ServerConfig(**config), ready_runtime(settings, runtime))
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for started in clients:
        await started.close()


@pytest.fixture
async def client(make_client):
    return await make_client()


async def wait_for_history(client, prompt_id, timeout=10.0):
    for _ in range(int(timeout / 0.02)):
        response = await client.get(f"/history/{prompt_id}")
        body = await response.json()
        if prompt_id in body:
            return body[prompt_id]
        await asyncio.sleep(0.02)
    raise AssertionError(f"prompt {prompt_id} did not finish")
