"""A small page object for the browser tests: finding nodes and sockets, dragging wires, reading the graph.

It drives the editor as a person does (mouse, keyboard, file pickers) and reads state through the page's
`window.nodeflow.app` only to check results.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from playwright.sync_api import Locator, Page, expect


class Editor:
    def __init__(self, page: Page) -> None:
        self.page = page

    # ---- finding things ------------------------------------------------------------------------------
    def node(self, node_id) -> Locator:
        return self.page.locator(f'.node[data-node-id="{node_id}"]')

    def node_of_type(self, node_type: str) -> Locator:
        return self.page.locator(f'.node[data-type="{node_type}"]')

    def output_socket(self, node_id, slot: int) -> Locator:
        return self.node(node_id).locator(f'.slot.output[data-slot="{slot}"] .socket')

    def input_socket(self, node_id, name: str) -> Locator:
        return self.node(node_id).locator(f'.slot.input[data-name="{name}"] .socket, '
                                          f'.widget-row[data-widget="{name}"] .socket').first

    def widget(self, node_id, name: str) -> Locator:
        return self.node(node_id).locator(f'.widget-row[data-widget="{name}"][data-kind="widget"]')

    def widget_input(self, node_id, name: str) -> Locator:
        return self.widget(node_id, name).locator("input, textarea, select").first

    # ---- acting --------------------------------------------------------------------------------------
    def drag(self, source: Locator, target: Locator) -> None:
        start = _center(source)
        end = _center(target)
        mouse = self.page.mouse
        mouse.move(*start)
        mouse.down()
        mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=5)
        mouse.move(*end, steps=5)
        mouse.up()

    def connect(self, origin_id, origin_slot: int, target_id, input_name: str) -> None:
        self.drag(self.output_socket(origin_id, origin_slot), self.input_socket(target_id, input_name))

    def menu(self, button_selector: str, item: str) -> None:
        self.page.click(button_selector)
        self.page.locator(".context-menu .menu-item", has_text=item).click()

    def new_workflow(self) -> None:
        self.menu("#workflow-menu-button", "New (empty canvas)")
        expect(self.page.locator(".node")).to_have_count(0)

    def add_node(self, search: str, at: tuple[float, float]) -> str:
        """Double-click the canvas at `at`, search the palette, take the first hit; returns the new node's id."""
        self.page.mouse.dblclick(*at)
        self.page.fill(".palette-search", search)
        self.page.keyboard.press("Enter")
        selected = self.page.locator(".node.selected")
        expect(selected).to_have_count(1)
        return selected.get_attribute("data-node-id")

    def set_widget(self, node_id, name: str, value) -> None:
        field = self.widget_input(node_id, name)
        if field.evaluate("el => el.tagName") == "SELECT":
            field.select_option(label=str(value))
        else:
            field.fill(str(value))
            field.press("Tab")

    def set_small_and_fast(self, latent_id="5", sampler_id="3", steps: int = 2) -> None:
        self.set_widget(latent_id, "width", 64)
        self.set_widget(latent_id, "height", 64)
        self.set_widget(sampler_id, "steps", steps)

    def open_file(self, path: Path) -> None:
        self.page.set_input_files("#file-input", str(path))

    def drop_file(self, selector: str, url: str, name: str, mime: str) -> None:
        """Drop a file (fetched from `url` in the page) onto an element, as a drag from the desktop does."""
        self.page.evaluate("""async ([selector, url, name, mime]) => {
            const blob = await (await fetch(url)).blob();
            const transfer = new DataTransfer();
            transfer.items.add(new File([blob], name, { type: mime }));
            const target = document.querySelector(selector);
            const box = target.getBoundingClientRect();
            const at = { clientX: box.left + box.width / 2, clientY: box.top + box.height / 2 };
            for (const type of ["dragenter", "dragover", "drop"]) {
                const init = { bubbles: true, cancelable: true, dataTransfer: transfer, ...at };
                target.dispatchEvent(new DragEvent(type, init));
            }
        }""", [selector, url, name, mime])

    # ---- reading state -------------------------------------------------------------------------------
    def api_prompt(self) -> dict:
        return self.page.evaluate("""async () => {
            const { editorToApi } = await import('/web/js/workflow_api.js');
            const app = window.nodeflow.app;
            return editorToApi(app.workflowForSaving(), app.defs);
        }""")

    def workflow(self) -> dict:
        return self.page.evaluate("() => window.nodeflow.app.workflowForSaving()")

    def link_count(self) -> int:
        return self.page.evaluate("() => window.nodeflow.app.graph.links.size")

    def node_count(self) -> int:
        return self.page.evaluate("() => window.nodeflow.app.graph.nodes.size")

    def queue_and_wait_for_image(self, selector: str = '.node[data-type="SaveImage"] img.output-image') -> Locator:
        """Press Queue and wait until an output image has loaded on the node `selector` points into."""
        self.page.click("#queue-button")
        image = self.page.locator(selector).first
        expect(image).to_be_visible(timeout=60000)
        self.page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
        return image

    def wait_for_autosave(self, contains: str) -> None:
        self.page.wait_for_function("text => (localStorage.getItem('nodeflow.workflow') || '').includes(text)",
                                    arg=contains)


def _center(locator: Locator) -> tuple[float, float]:
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    assert box is not None, f"{locator} is not visible"
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def has_class(name: str) -> re.Pattern:
    """For `to_have_attribute("class", ...)`: the element has this class among others."""
    return re.compile(rf"(^|\s){re.escape(name)}(\s|$)")
