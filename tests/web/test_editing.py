"""Editing in the browser: selection, clipboard, undo, the palette, wires dropped on empty canvas, image upload
and the mask painter, history, plugin extensions, and ComfyUI files with reroutes, primitives and groups."""
from __future__ import annotations

import io
import json
import re
import struct
from pathlib import Path

from PIL import Image
from playwright.sync_api import expect

from tests.web.editor_driver import Editor, has_class

ENGINE_FIXTURES = Path(__file__).resolve().parents[1] / "engine" / "fixtures"


def png_file(path: Path, color: tuple[int, int, int], size=(32, 24)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


def test_select_copy_paste_delete_undo_and_redo(page):
    editor = Editor(page)
    editor.node("5").locator(".node-title").click()
    editor.node("7").locator(".node-title").click(modifiers=["Shift"])
    expect(page.locator(".node.selected")).to_have_count(2)
    page.keyboard.press("Control+c")
    page.mouse.move(300, 650)
    page.keyboard.press("Control+v")
    expect(page.locator(".node")).to_have_count(9)
    expect(page.locator(".node.selected")).to_have_count(2)
    page.keyboard.press("Delete")
    expect(page.locator(".node")).to_have_count(7)
    page.keyboard.press("Control+z")
    expect(page.locator(".node")).to_have_count(9)
    page.keyboard.press("Control+z")
    expect(page.locator(".node")).to_have_count(7)
    page.keyboard.press("Control+y")
    expect(page.locator(".node")).to_have_count(9)

    page.keyboard.press("Escape")
    expect(page.locator(".node.selected")).to_have_count(0)
    page.keyboard.press(".")
    canvas = page.locator("#canvas").bounding_box()
    page.mouse.move(canvas["x"] + 5, canvas["y"] + 5)
    page.keyboard.down("Shift")
    page.mouse.down()
    page.mouse.move(canvas["x"] + canvas["width"] - 5, canvas["y"] + canvas["height"] - 5, steps=5)
    page.mouse.up()
    page.keyboard.up("Shift")
    expect(page.locator(".node.selected")).to_have_count(9)

    page.keyboard.press("?")
    expect(page.locator(".help-dialog")).to_contain_text("Queue the workflow")
    page.keyboard.press("Escape")
    expect(page.locator(".help-dialog")).to_have_count(0)


def test_a_wire_dropped_on_empty_canvas_offers_nodes_that_take_it(page):
    editor = Editor(page)
    start = editor.output_socket("8", 0).bounding_box()
    page.mouse.move(start["x"] + 6, start["y"] + 6)
    page.mouse.down()
    page.mouse.move(1100, 600, steps=8)
    page.mouse.up()
    palette = page.locator(".palette")
    expect(palette.locator(".palette-filter")).to_have_text("Nodes that take IMAGE")
    expect(palette.locator('.palette-item[data-type="PreviewImage"]')).to_have_count(1)
    expect(palette.locator('.palette-item[data-type="KSampler"]')).to_have_count(0)
    page.fill(".palette-search", "preview image")
    page.keyboard.press("Enter")
    expect(page.locator(".node")).to_have_count(8)
    new_id = page.locator(".node.selected").get_attribute("data-node-id")
    assert editor.api_prompt()[new_id]["inputs"]["images"] == ["8", 0]


def test_the_palette_groups_nodes_by_category_and_describes_them(page):
    page.click("#add-node-button")
    palette = page.locator(".palette")
    expect(palette.locator(".palette-category", has_text=re.compile(r"^sampling$"))).to_have_count(1)
    page.fill(".palette-search", "denoises latent")
    expect(palette.locator(".palette-item").first).to_have_attribute("data-type", "KSampler")
    expect(palette.locator(".palette-description")).to_contain_text("Denoises a latent image")
    page.keyboard.press("Escape")
    expect(palette).to_have_count(0)
    expect(page.locator(".node")).to_have_count(7)


def test_load_image_upload_drop_and_mask_painting(page, editor_server, tmp_path):
    editor = Editor(page)
    editor.new_workflow()
    node = editor.add_node("Load Image", (300, 200))
    red = png_file(tmp_path / "red.png", (255, 0, 0))
    page.set_input_files(f'.node[data-node-id="{node}"] .upload-input', str(red))
    expect(editor.widget(node, "image").locator("option:checked")).to_have_text("red.png")
    expect(editor.node(node).locator(".input-preview")).to_be_visible()

    blue = png_file(tmp_path / "blue.png", (0, 0, 255))
    page.route("**/test-files/blue.png", lambda route: route.fulfill(path=str(blue), content_type="image/png"))
    editor.drop_file(f'.node[data-node-id="{node}"]', "/test-files/blue.png", "blue.png", "image/png")
    expect(editor.widget(node, "image").locator("option:checked")).to_have_text("blue.png")
    assert (editor_server.input_dir / "blue.png").is_file()

    editor.node(node).locator(".mask-button").click()
    dialog = page.locator("dialog.mask-editor[data-ready=true]")
    expect(dialog).to_be_visible()
    canvas = dialog.locator(".mask-canvas").bounding_box()
    page.mouse.move(canvas["x"] + canvas["width"] * 0.2, canvas["y"] + canvas["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(canvas["x"] + canvas["width"] * 0.6, canvas["y"] + canvas["height"] * 0.5, steps=6)
    page.mouse.up()
    dialog.locator(".mask-save").click()
    expect(page.locator("dialog.mask-editor")).to_have_count(0)
    chosen = editor.widget(node, "image").locator("option:checked")
    expect(chosen).to_have_text(re.compile(r"^clipspace/"))
    masked = Image.open(editor_server.input_dir / chosen.inner_text())
    assert masked.mode == "RGBA" and masked.size == (32, 24)
    alpha = masked.getchannel("A")
    assert alpha.getpixel((2, 12)) == 255 and alpha.getpixel((12, 12)) == 0
    assert masked.getpixel((12, 12))[:3] == (0, 0, 255)
    assert editor.api_prompt()[node]["inputs"]["image"] == chosen.inner_text()


def test_a_history_item_loads_its_workflow_and_images(page):
    editor = Editor(page)
    editor.set_small_and_fast()
    editor.set_widget("6", "text", "remembered by the history")
    editor.node("6").locator(".node-title").click()
    page.keyboard.press("Control+Enter")
    expect(page.locator(".node[data-type=SaveImage] img.output-image")).to_be_visible(timeout=60000)
    editor.set_widget("6", "text", "changed afterwards")

    page.click("#queue-panel-button")
    latest = page.locator("#queue-panel .history-item").first
    expect(latest.locator(".history-image")).to_have_count(1)
    latest.locator(".load-button").click()
    expect(editor.widget_input("6", "text")).to_have_value("remembered by the history")
    expect(page.locator(".node[data-type=SaveImage] img.output-image")).to_be_visible()


def test_plugin_extensions_add_widgets_and_menu_items(page):
    editor = Editor(page)
    editor.new_workflow()
    node = editor.add_node("Text overlay (example)", (300, 200))
    picker = editor.widget(node, "color").locator('.custom-widget[data-extension="example-color"] input[type=color]')
    expect(picker).to_be_visible()
    picker.fill("#ff0000")
    assert editor.api_prompt()[node]["inputs"]["color"] == "#ff0000"

    page.evaluate("""() => window.nodeflow.register((editor) => editor.addNodeMenuItem({
        label: 'Shout the title', matches: (node) => node.type === 'ExampleTextOverlay',
        action: (node) => editor.graph.setTitle(node, 'LOUD'),
    }))""")
    editor.node(node).locator(".node-title").click(button="right")
    page.locator(".context-menu .menu-item", has_text="Shout the title").click()
    expect(editor.node(node).locator(".node-title-text")).to_have_text("LOUD")


def test_a_comfyui_file_with_reroutes_primitives_notes_groups_and_bypass_loads_and_round_trips(page, tmp_path):
    editor = Editor(page)
    editor.open_file(ENGINE_FIXTURES / "txt2img_modern.json")
    expect(page.locator(".node")).to_have_count(14)
    expect(page.locator(".group .group-title")).to_have_text("Model")
    expect(page.locator(".node.reroute")).to_have_count(2)
    expect(page.locator(".node.note")).to_have_count(2)
    expect(editor.node("10")).to_have_attribute("class", has_class("bypassed"))
    expect(editor.node("16")).to_have_attribute("class", has_class("muted"))
    expect(editor.node("13").locator(".node-title-text")).to_have_text("Seed")
    expect(editor.node("13").locator(".control-widget select")).to_have_value("fixed")
    prompt = editor.api_prompt()
    assert prompt["3"]["inputs"]["seed"] == 42
    assert prompt["3"]["inputs"]["model"] == ["4", 0]
    assert prompt["8"]["inputs"]["vae"] == ["4", 2]
    assert "16" not in prompt and "10" not in prompt

    with page.expect_download() as saved:
        editor.menu("#workflow-menu-button", "Save (Ctrl+S)")
    path = tmp_path / "modern-again.json"
    saved.value.save_as(path)
    assert json.loads(path.read_text())["groups"][0]["title"] == "Model"
    editor.new_workflow()
    editor.open_file(path)
    expect(page.locator(".node")).to_have_count(14)
    assert editor.api_prompt() == prompt


def test_pan_zoom_and_number_dragging(page):
    editor = Editor(page)
    canvas = page.locator("#canvas")
    scale = float(canvas.get_attribute("data-scale"))
    page.mouse.move(700, 650)
    page.mouse.wheel(0, -300)
    expect(canvas).not_to_have_attribute("data-scale", f"{scale:.2f}")
    assert float(canvas.get_attribute("data-scale")) > scale

    before = editor.node("5").bounding_box()
    page.mouse.move(1200, 650)
    page.mouse.down()
    page.mouse.move(1100, 600, steps=5)
    page.mouse.up()
    after = editor.node("5").bounding_box()
    assert (round(after["x"] - before["x"]), round(after["y"] - before["y"])) == (-100, -50)

    label = editor.widget("5", "batch_size").locator(".number-drag")
    box = label.bounding_box()
    page.mouse.move(box["x"] + 5, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 5 + 6 * 3, box["y"] + box["height"] / 2, steps=4)
    page.mouse.up()
    expect(editor.widget_input("5", "batch_size")).to_have_value("4")
    editor.widget("5", "width").locator("button", has_text="▶").click()
    expect(editor.widget_input("5", "width")).to_have_value("520")


def test_refresh_reloads_the_model_lists(page, editor_server):
    editor = Editor(page)
    extra = editor_server.base / "models" / "checkpoints" / "zz-extra.safetensors"
    extra.write_bytes(b"not loaded, only listed")
    try:
        options = editor.widget("4", "ckpt_name").locator("option")
        expect(options.filter(has_text="zz-extra.safetensors")).to_have_count(0)
        page.click("#refresh-button")
        expect(options.filter(has_text="zz-extra.safetensors")).to_have_count(1)
    finally:
        extra.unlink()


def test_latent_previews_from_the_websocket_show_on_the_running_node(page):
    frame = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(frame, format="JPEG")
    preview = struct.pack(">II", 1, 1) + frame.getvalue()

    def relay(client):
        server = client.connect_to_server()

        def from_server(message):
            if isinstance(message, bytes):
                return  # the server's own previews: replaced by the known frame, so the test sees only that
            client.send(message)
            if json.loads(message).get("type") == "progress":
                client.send(preview)

        server.on_message(from_server)
        client.on_message(server.send)

    page.route_web_socket("**/ws?*", relay)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    editor = Editor(page)
    editor.set_small_and_fast(steps=10000)
    page.click("#queue-button")
    image = editor.node("3").locator("img.preview-image")
    expect(image).to_be_visible(timeout=60000)
    # each frame replaces the <img>, so look it up afresh on every poll rather than holding one element
    page.wait_for_function("""() => [...document.querySelectorAll('.node[data-node-id="3"] img.preview-image')]
        .some((img) => img.complete && img.naturalWidth === 8)""", timeout=60000)
    page.click("#interrupt-button")
    expect(page.locator(".toast", has_text="Interrupted")).to_be_visible()


def test_a_workflow_with_subgraphs_is_converted_by_the_server(page):
    editor = Editor(page)
    editor.open_file(ENGINE_FIXTURES / "txt2img_subgraph.json")
    expect(page.locator(".node.subgraph .node-title-text")).to_have_text(["Text to Image", "Lake"])
    expect(page.locator(".toast-error")).to_have_count(0)
    page.click("#queue-button")
    expect(editor.node("4").locator(".node-error")).to_contain_text("ckpt_name: Value not in list")


def test_a_node_pack_that_failed_to_load_is_reported_with_the_name_it_misses(page):
    failed = [{"name": "broken_pack", "status": "failed", "missing": "comfy.not_here", "nodes": [],
               "error": "Traceback ...\nModuleNotFoundError: No module named 'comfy.not_here'\n"},
              {"name": "odd_pack", "status": "failed", "missing": None, "nodes": [],
               "error": "Traceback ...\nRuntimeError: odd pack refuses to load\n"}]
    page.route("**/custom_nodes", lambda route: route.fulfill(json=failed))
    page.reload()
    expect(page.locator(".toast", has_text="broken_pack")).to_contain_text("needs comfy.not_here")
    expect(page.locator(".toast", has_text="odd_pack")).to_contain_text("RuntimeError: odd pack refuses to load")
