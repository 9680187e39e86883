"""Browser tests of the editor: Debian's Chromium driven by Playwright, against a real server on 127.0.0.1.

The server is `python main.py` in a subprocess with the built-in nodes and the tiny random-weight demo
models, started once for the session in a temporary base folder. Each test gets a fresh browser context (so a
fresh localStorage: the editor opens on the default workflow) and leaves a screenshot in tests/web/artifacts/.

The browser tests skip, saying why, when Playwright or the Chromium binary is missing; CI installs both.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = Path(os.environ.get("NODEFLOW_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SERVER_START_TIMEOUT = 90.0


def _browser_skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install playwright==1.65.2)"
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set NODEFLOW_CHROMIUM)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _browser_skip_reason()
    if reason is None:
        return
    for item in items:
        if "page" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.skip(reason=reason))


@dataclass
class EditorServer:
    url: str
    base: Path
    log: Path

    @property
    def input_dir(self) -> Path:
        return self.base / "input"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    def get_json(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.load(response)

    def post_json(self, path: str, body: dict):
        request = urllib.request.Request(self.url + path, json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url + "/object_info", timeout=30) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(f"the server did not start within {SERVER_START_TIMEOUT}s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def running_main(base: Path, *arguments: str) -> Iterator[str]:
    """`main.py` on a free port of 127.0.0.1 with its folders in `base` (an empty models folder gets the demo
    models on first start, as a new user's does) and `arguments`; its URL once it answers. Stopped on exit."""
    port = _free_port()
    log = base / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    folders = [arg for kind in ("models", "input", "output", "temp", "user")
               for arg in (f"--{kind}-dir", str(base / kind))]
    command = [sys.executable, str(PROJECT_DIR / "main.py"), "--port", str(port), "--cpu", "--threads", "1", *folders,
               *arguments]
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, cwd=PROJECT_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def editor_server(tmp_path_factory) -> EditorServer:
    """`main.py` serving the editor. Stopped at the end of the session."""
    if _browser_skip_reason():
        pytest.skip(_browser_skip_reason())
    base = tmp_path_factory.mktemp("editor-server")
    with running_main(base) as url:
        yield EditorServer(url, base, base / "server.log")


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module. Not for the session: while Playwright's sync API is active it holds an
    event loop on the main thread, which the asyncio tests of other folders must not run beside."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, editor_server, request):
    """A fresh browser tab on the editor, ready; its screenshot is kept under tests/web/artifacts/."""
    context = browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
    context.set_default_timeout(15000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(editor_server.url + "/")
    tab.wait_for_selector("body[data-ready=true]")
    tab.page_errors = errors
    yield tab
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(autouse=True)
def _idle_queue(request):
    """Browser tests share one server: make sure nothing is left running or pending between them."""
    yield
    if "editor_server" not in request.fixturenames:
        return
    server = request.getfixturevalue("editor_server")
    server.post_json("/queue", {"clear": True})
    server.post_json("/interrupt", {})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        queue = server.get_json("/queue")
        if not queue["queue_running"] and not queue["queue_pending"]:
            return
        time.sleep(0.1)
