"""ComfyUI's official frontend served by our server (`--front-end comfyui`, #20), in real Chromium: it boots
without a failed request, its own API client reads and writes our user data, settings, model library and
templates, a shipped workflow runs from its Run button with progress and previews and the saved image on the Save
node, the job is listed, and a node pack's JavaScript extension runs."""
from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, _browser_skip_reason, running_main

PACKS = Path(__file__).parent / "packs"
# Settings a first start of the frontend would ask about (its tour and templates browser cover the canvas)
FIRST_RUN_DONE = {"Comfy.TutorialCompleted": True, "Comfy.InstalledVersion": "1.58.1"}


def _frontend_skip_reason() -> str | None:
    import importlib.util

    if importlib.util.find_spec("comfyui_frontend_package") is None:
        return "comfyui-frontend-package is not installed (pip install -r requirements-frontend.txt)"
    return _browser_skip_reason()


@pytest.fixture(scope="module")
def frontend_server(tmp_path_factory):
    """`main.py --front-end comfyui` with the demo models and the extension pack; its URL."""
    reason = _frontend_skip_reason()
    if reason:
        pytest.skip(reason)
    with running_main(tmp_path_factory.mktemp("comfy-frontend"), "--front-end", "comfyui", "--custom-nodes-dir",
                      str(PACKS)) as url:
        request = urllib.request.Request(url + "/api/settings", json.dumps(FIRST_RUN_DONE).encode(),
                                         {"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).close()
        yield url


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Tab:
    """A tab on the frontend that records the same-origin requests that failed and the page's errors."""

    def __init__(self, chromium, url: str) -> None:
        self.context = chromium.new_context(viewport={"width": 1366, "height": 768})
        self.context.set_default_timeout(30000)
        self.page = self.context.new_page()
        self.url, self.failed, self.errors = url, [], []
        self.page.on("response", self._response)
        self.page.on("requestfailed", self._request_failed)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _response(self, response) -> None:
        if response.url.startswith(self.url) and response.status >= 400:
            self.failed.append(f"{response.status} {response.request.method} {response.url}")

    def _request_failed(self, request) -> None:
        # the page cancelling its own request (it reloads itself once its first settings are stored) is not a
        # failure of the server
        if request.url.startswith(self.url) and request.failure != "net::ERR_ABORTED":
            self.failed.append(f"{request.failure} {request.method} {request.url}")

    def open(self) -> "Tab":
        self.page.goto(self.url + "/")
        self.page.wait_for_function("() => window.app && window.app.graph && window.app.api", timeout=60000)
        return self

    def api(self, script: str, *args):
        """Run `script` (an async function body with `app` and `api` in scope) in the page."""
        return self.page.evaluate(f"async (args) => {{ const app = window.app; const api = app.api; {script} }}",
                                  list(args))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(chromium, frontend_server):
    opened = Tab(chromium, frontend_server).open()
    yield opened
    opened.close()
    assert not opened.errors, f"uncaught errors in the page: {opened.errors}"


def test_the_frontend_boots_without_a_failed_request(tab):
    tab.page.wait_for_selector("canvas", state="attached")
    tab.page.wait_for_timeout(3000)  # the requests the app makes once it shows
    assert tab.failed == []
    assert tab.page.title().endswith("ComfyUI")
    assert tab.api("return (await api.getSystemStats()).system.required_frontend_version;") == "1.58.1"


def test_a_node_packs_extension_runs(tab):
    tab.page.wait_for_function("() => window.__packExtension", timeout=30000)
    ran = tab.page.evaluate("() => window.__packExtension")
    assert ran == {"ran": True, "nodes": "graph", "os": os.name}


def test_workflows_are_saved_listed_renamed_and_deleted_through_the_frontends_client(tab):
    listed = tab.api("""
        const workflow = JSON.stringify({nodes: [], links: [], version: 0.4});
        await api.storeUserData("workflows/first.json", workflow, {overwrite: true, stringify: false});
        const before = await api.listUserDataFullInfo("workflows");
        await api.moveUserData("workflows/first.json", "workflows/renamed.json");
        const moved = await api.listUserDataFullInfo("workflows");
        const text = await (await api.getUserData("workflows/renamed.json")).text();
        await api.deleteUserData("workflows/renamed.json");
        const after = await api.listUserDataFullInfo("workflows");
        return {before: before.map((f) => f.path), moved: moved.map((f) => f.path), text, after};
    """)
    assert listed == {"before": ["first.json"], "moved": ["renamed.json"],
                      "text": '{"nodes":[],"links":[],"version":0.4}', "after": []}


def _saved_workflows(url: str) -> list[str]:
    with urllib.request.urlopen(url + "/api/userdata?dir=workflows&recurse=true") as response:
        return sorted(json.load(response))


def _wait_for_listing(page, url: str, condition: str) -> None:
    """Wait until the server's list of saved workflows (`files`) meets a JavaScript `condition`."""
    page.wait_for_function(f"(url) => fetch(url).then((r) => r.json()).then((files) => {condition})",
                           arg=url + "/api/userdata?dir=workflows&recurse=true")


def test_the_workflows_panel_saves_lists_opens_renames_and_deletes(tab, frontend_server):
    page = tab.page
    # save: the frontend's Save command asks for a name and writes workflows/<name>.json
    page.locator("#graph-canvas").click(position={"x": 600, "y": 400}, force=True)
    page.keyboard.press("Control+s")
    page.get_by_role("dialog").locator("input").first.fill("saved_from_ui")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.title.includes('saved_from_ui')")
    _wait_for_listing(page, frontend_server, "files.includes('saved_from_ui.json')")

    # list: workflows saved elsewhere appear in the panel (after a refresh: they came after it loaded)
    for name in ("panel_flow", "open_me"):
        tab.api("await api.storeUserData(`workflows/${args[0]}.json`, JSON.stringify(args[1]), "
                "{overwrite: true, stringify: false});", name, {"nodes": [], "links": [], "version": 0.4})
    page.locator('[data-testid="workflows-tab-button"]').click()
    page.locator('[data-testid="workflows-refresh-button"]').click()
    panel = page.locator(".workflows-sidebar-tab")

    # open one from the panel
    panel.get_by_text("open_me", exact=True).first.click()
    page.wait_for_function("() => document.title.includes('open_me')")

    # rename another from the panel's menu
    panel.get_by_text("panel_flow", exact=True).first.click(button="right")
    page.get_by_role("menuitem", name="Rename").click()
    page.keyboard.press("Control+a")
    page.keyboard.type("renamed_flow")
    page.keyboard.press("Enter")
    panel.get_by_text("renamed_flow", exact=True).first.wait_for(state="visible")
    assert "renamed_flow.json" in _saved_workflows(frontend_server)
    assert "panel_flow.json" not in _saved_workflows(frontend_server)

    # delete from the panel's menu, confirmed
    panel.get_by_text("renamed_flow", exact=True).first.click(button="right")
    page.get_by_role("menuitem", name="Delete").click()
    page.locator("[role=dialog] button, [role=alertdialog] button", has_text="Delete").last.click()  # confirmed
    _wait_for_listing(page, frontend_server, "!files.includes('renamed_flow.json')")
    for leftover in ("saved_from_ui", "open_me"):
        tab.api("await api.deleteUserData(`workflows/${args[0]}.json`);", leftover)


def test_settings_persist_across_a_reload(tab):
    tab.api("await app.ui.settings.setSettingValueAsync('Comfy.Graph.ZoomSpeed', 1.3);")
    tab.page.reload()
    tab.page.wait_for_function("() => window.app && window.app.ui && window.app.ui.settings", timeout=60000)
    tab.page.wait_for_function("() => window.app.ui.settings.getSettingValue('Comfy.Graph.ZoomSpeed') === 1.3")


def test_the_model_library_and_templates_browser_show_ours(tab):
    page = tab.page
    page.locator('[data-testid="model-library-tab-button"]').click()
    library = page.locator(".side-bar-panel, [class*=model-lib]").first
    for folder in ("checkpoints", "loras", "vae", "upscale_models"):
        expect(library.get_by_text(folder, exact=True).first).to_be_visible()
    page.get_by_role("button", name="Templates").first.click()
    browser = page.get_by_role("dialog").filter(has_text="Templates")
    expect(browser.get_by_text("nodeflow", exact=True).first).to_be_visible()
    search = browser.get_by_placeholder("Search")
    for name in ("txt2img", "flux_txt2img", "sdxl_txt2img"):  # the browser renders the first cards only: search
        search.fill(name)
        expect(browser.get_by_text(name, exact=True).first).to_be_visible()


def test_the_model_library_and_templates_list_ours(tab):
    found = tab.api("""
        const folders = await api.getModelFolders();
        const checkpoints = await api.getModels("checkpoints");
        const templates = await api.getWorkflowTemplates();
        const card = await api.fetchApi("/workflow_templates/nodeflow/txt2img.jpg");
        return {folders: folders.map((f) => f.name), checkpoints: checkpoints.map((m) => m.name),
                templates: templates.nodeflow, card: [card.status, card.headers.get("content-type")]};
    """)
    assert "checkpoints" in found["folders"] and "loras" in found["folders"]
    assert "tiny-sd1.safetensors" in found["checkpoints"]
    assert "txt2img" in found["templates"] and found["card"] == [200, "image/jpeg"]


def test_a_workflow_runs_from_the_run_button(tab, frontend_server):
    with urllib.request.urlopen(frontend_server + "/api/workflow_templates/nodeflow/txt2img.json") as response:
        workflow = json.load(response)
    workflow["5"]["inputs"].update(width=64, height=64)
    workflow["3"]["inputs"]["steps"] = 2
    tab.api("""
        window.__seen = {progress: 0, previews: 0};
        api.addEventListener("progress", () => window.__seen.progress++);
        api.addEventListener("b_preview", () => window.__seen.previews++);
        await app.loadApiJson(args[0], "txt2img");
    """, workflow)
    tab.page.locator('[data-testid="queue-button"]').first.click()
    # the Save node's output, which the frontend shows on the node
    tab.page.wait_for_function("() => (window.app.nodeOutputs?.['9']?.images?.length ?? 0) > 0", timeout=120000)
    seen = tab.page.evaluate("() => window.__seen")
    assert seen["progress"] >= 2 and seen["previews"] >= 1
    image = tab.page.evaluate("() => window.app.nodeOutputs['9'].images[0]")
    assert image["type"] == "output" and image["filename"].startswith("txt2img_")
    shown = tab.api("const r = await fetch(api.apiURL(`/view?filename=${args[0]}&type=output&subfolder=`));"
                    "return [r.status, r.headers.get('content-type')];", image["filename"])
    assert shown == [200, "image/png"]
    jobs = json.load(urllib.request.urlopen(frontend_server + "/api/jobs?status=completed"))["jobs"]
    assert jobs and jobs[0]["preview_output"]["nodeId"] == "9" and jobs[0]["preview_output"]["type"] == "output"
    # the assets panel shows the job's image (from /api/jobs)
    tab.page.locator('[data-testid="assets-tab-button"]').click()
    tab.page.locator(f'img[src*="{image["filename"]}"]').first.wait_for(state="attached")
    assert tab.failed == []
