"""The editor in a real browser against a real server with the built-in nodes and the tiny demo models.

Each test is one thing a person does with the editor (issue 5); screenshots land in tests/web/artifacts/.
"""
from __future__ import annotations

import json
from pathlib import Path

from playwright.sync_api import expect

from tests.web.editor_driver import Editor, has_class, write_json


def test_build_a_graph_from_an_empty_canvas_by_palette_and_wires(page):
    editor = Editor(page)
    editor.new_workflow()
    loader = editor.add_node("Load Checkpoint", (120, 330))
    positive = editor.add_node("CLIP Text Encode (Prompt)", (420, 90))
    negative = editor.add_node("CLIP Text Encode (Prompt)", (420, 300))
    latent = editor.add_node("Empty Latent Image", (420, 520))
    sampler = editor.add_node("KSampler", (740, 90))
    decode = editor.add_node("VAE Decode", (1040, 90))
    preview = editor.add_node("Preview Image", (1040, 260))
    assert editor.node_count() == 7

    wires = [(loader, 0, sampler, "model"), (loader, 1, positive, "clip"), (loader, 1, negative, "clip"),
             (positive, 0, sampler, "positive"), (negative, 0, sampler, "negative"),
             (latent, 0, sampler, "latent_image"), (sampler, 0, decode, "samples"), (loader, 2, decode, "vae"),
             (decode, 0, preview, "images")]
    for origin, slot, target, name in wires:
        editor.connect(origin, slot, target, name)
    assert editor.link_count() == 9
    editor.set_widget(positive, "text", "a red apple")
    editor.set_small_and_fast(latent, sampler)

    prompt = editor.api_prompt()
    assert {entry["class_type"] for entry in prompt.values()} == {
        "CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "PreviewImage"}
    assert prompt[sampler]["inputs"]["model"] == [loader, 0]
    assert prompt[decode]["inputs"]["vae"] == [loader, 2]
    assert prompt[positive]["inputs"]["text"] == "a red apple"
    assert prompt[latent]["inputs"]["width"] == 64

    editor.queue_and_wait_for_image('.node[data-type="PreviewImage"] img.output-image')


def test_queue_the_default_workflow_and_see_the_image_on_the_save_node(page):
    editor = Editor(page)
    expect(page.locator(".node")).to_have_count(7)
    expect(page.locator("#demo-banner")).to_be_visible()
    expect(editor.node("4").locator(".node-notice")).to_contain_text("Demo model")
    editor.set_small_and_fast()
    seed_before = editor.widget_input("3", "seed").input_value()
    page.evaluate("""() => {
        window.seen = { running: new Set(), progress: 0 };
        new MutationObserver(() => {
            for (const node of document.querySelectorAll('.node.running')) window.seen.running.add(node.dataset.nodeId);
            const bar = document.querySelector('.node[data-node-id="3"] .node-progress-bar');
            window.seen.progress = Math.max(window.seen.progress, parseFloat(bar.style.width) || 0);
        }).observe(document.getElementById('canvas'),
                   { subtree: true, attributes: true, attributeFilter: ['class', 'style'] });
    }""")

    image = editor.queue_and_wait_for_image()
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [64, 64]
    assert "3" in page.evaluate("() => [...window.seen.running]")
    assert page.evaluate("() => window.seen.progress") > 0
    expect(editor.widget_input("3", "seed")).not_to_have_value(seed_before)

    image.click()
    lightbox = page.locator(".lightbox")
    expect(lightbox).to_be_visible()
    assert lightbox.locator(".lightbox-download").get_attribute("download").endswith(".png")
    page.keyboard.press("Escape")
    expect(lightbox).to_have_count(0)


def test_an_incompatible_wire_is_refused_with_a_hint(page):
    editor = Editor(page)
    links_before = editor.link_count()
    editor.connect("4", 0, "6", "clip")
    expect(page.locator(".wire-hint")).to_contain_text("MODEL cannot connect to CLIP")
    assert editor.link_count() == links_before
    assert editor.api_prompt()["6"]["inputs"]["clip"] == ["4", 1]


def test_an_invalid_value_shows_the_error_on_the_node(page, tmp_path):
    editor = Editor(page)
    workflow = editor.workflow()
    loader = next(node for node in workflow["nodes"] if node["type"] == "CheckpointLoaderSimple")
    loader["widgets_values"] = ["missing-model.safetensors"]
    editor.open_file(write_json(tmp_path / "broken.json", workflow))
    expect(editor.widget("4", "ckpt_name")).to_contain_text("(missing)")

    page.click("#queue-button")
    node = editor.node("4")
    expect(node.locator(".node-error")).to_contain_text("ckpt_name: Value not in list")
    expect(node).to_have_attribute("class", has_class("has-error"))
    expect(editor.widget("4", "ckpt_name")).to_have_attribute("class", has_class("input-error"))
    expect(page.locator(".toast-error", has_text="failed validation")).to_contain_text("Load Checkpoint")
    assert editor.node_count() == 7


def test_an_execution_error_is_shown_on_the_failing_node(page, editor_server, tmp_path):
    (editor_server.input_dir / "broken.png").write_bytes(b"this is not an image")
    editor = Editor(page)
    workflow = {"nodes": [
        {"id": 1, "type": "LoadImage", "pos": [100, 100], "size": [300, 0], "inputs": [],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}, {"name": "MASK", "type": "MASK", "links": []}],
         "widgets_values": ["broken.png", "image"]},
        {"id": 2, "type": "PreviewImage", "pos": [500, 100], "size": [300, 0],
         "inputs": [{"name": "images", "type": "IMAGE", "link": 1}], "outputs": []}],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]]}
    editor.open_file(write_json(tmp_path / "load-broken.json", workflow))
    page.click("#queue-button")
    # the toast is transient, the mark on the node stays: check the toast first
    expect(page.locator(".toast-error", has_text="Load Image failed")).to_be_visible()
    expect(editor.node("1").locator(".node-error")).to_contain_text("not a readable image")
    assert editor.node_count() == 2


def test_save_then_load_gives_the_same_api_workflow(page, tmp_path):
    editor = Editor(page)
    editor.set_widget("6", "text", "a lighthouse at dusk")
    before = editor.api_prompt()
    positions = {node["id"]: node["pos"] for node in editor.workflow()["nodes"]}

    with page.expect_download() as saved:
        editor.menu("#workflow-menu-button", "Save (Ctrl+S)")
    path = tmp_path / "saved.json"
    saved.value.save_as(path)
    file = json.loads(path.read_text())
    assert file["version"] == 0.4 and len(file["nodes"]) == 7 and len(file["links"]) == 9

    with page.expect_download() as exported:
        editor.menu("#workflow-menu-button", "Export API format")
    api_path = tmp_path / "saved_api.json"
    exported.value.save_as(api_path)
    assert json.loads(api_path.read_text()) == before

    editor.new_workflow()
    editor.open_file(path)
    expect(page.locator(".node")).to_have_count(7)
    assert editor.api_prompt() == before
    assert {node["id"]: node["pos"] for node in editor.workflow()["nodes"]} == positions
    expect(page.locator("#workflow-name")).to_have_value("saved")


def test_dropping_a_saveimage_png_restores_its_graph(page):
    editor = Editor(page)
    editor.set_small_and_fast()
    editor.set_widget("6", "text", "a png with a workflow inside")
    queued = editor.api_prompt()
    image = editor.queue_and_wait_for_image()
    url = image.get_attribute("src")

    editor.new_workflow()
    editor.drop_file("#canvas", url, "ComfyUI_00001_.png", "image/png")
    expect(page.locator(".node")).to_have_count(7)
    assert editor.api_prompt() == queued


def test_reload_keeps_the_graph(page):
    editor = Editor(page)
    title = editor.node("5").locator(".node-title")
    box = title.bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 10)
    page.mouse.down()
    page.mouse.move(box["x"] + 140, box["y"] + 90, steps=6)
    page.mouse.up()
    editor.set_widget("7", "text", "kept across reloads")
    moved = next(node["pos"] for node in editor.workflow()["nodes"] if node["id"] == 5)
    editor.wait_for_autosave("kept across reloads")

    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator(".node")).to_have_count(7)
    expect(editor.widget_input("7", "text")).to_have_value("kept across reloads")
    assert next(node["pos"] for node in editor.workflow()["nodes"] if node["id"] == 5) == moved


def test_interrupt_stops_the_running_prompt_and_cancel_drops_a_pending_one(page, editor_server):
    editor = Editor(page)
    editor.set_small_and_fast(steps=10000)
    page.fill("#batch-count", "2")
    page.click("#queue-button")
    expect(editor.node("3")).to_have_attribute("class", has_class("has-progress"), timeout=60000)

    page.click("#queue-panel-button")
    panel = page.locator("#queue-panel")
    expect(panel.locator(".queue-item.pending")).to_have_count(1)
    panel.locator(".queue-item.pending .cancel-button").click()
    expect(panel.locator(".queue-item.pending")).to_have_count(0)

    interrupted_before = panel.locator(".history-item.interrupted").count()  # the server is shared per module
    page.click("#interrupt-button")
    expect(page.locator(".toast", has_text="Interrupted")).to_be_visible()
    expect(editor.node("3")).not_to_have_attribute("class", has_class("running"))
    expect(panel.locator(".history-item.interrupted")).to_have_count(interrupted_before + 1)
    assert editor_server.get_json("/queue") == {"queue_running": [], "queue_pending": []}



def test_templates_menu_loads_a_shipped_workflow(page):
    editor = Editor(page)
    editor.menu("#workflow-menu-button", "Template: img2img")
    shipped = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "img2img.json").read_text())
    expect(page.locator(".node")).to_have_count(len(shipped))  # the template is fetched, then laid out
    prompt = editor.api_prompt()
    assert sorted(node["class_type"] for node in prompt.values()) == sorted(
        node["class_type"] for node in shipped.values())
    sampler = next(node for node in prompt.values() if node["class_type"] == "KSampler")
    shipped_sampler = next(node for node in shipped.values() if node["class_type"] == "KSampler")
    assert sampler["inputs"]["denoise"] == shipped_sampler["inputs"]["denoise"]
