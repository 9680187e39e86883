"""Our editor keeps workflows on the server (#20), in the user's workflows/ folder that ComfyUI's frontend lists
too: save (asking before replacing), list, open, rename, delete, and errors shown."""
from __future__ import annotations

import urllib.parse

from playwright.sync_api import expect

from tests.web.editor_driver import Editor


def _saved(editor_server) -> list[str]:
    listing = editor_server.get_json("/api/userdata?" + urllib.parse.urlencode(
        {"dir": "workflows", "recurse": "true", "full_info": "true"}))
    return sorted(entry["path"] for entry in listing)


def _answer_text(page, text: str) -> None:
    dialog = page.locator("dialog.text-dialog")
    dialog.locator("input").fill(text)
    dialog.locator("button.primary").click()


def test_save_list_open_rename_and_delete_on_the_server(page, editor_server):
    editor = Editor(page)
    nodes = page.locator(".node").count()
    editor.menu("#workflow-menu-button", "Save on the server…")
    _answer_text(page, "my flow")
    expect(page.locator(".toast", has_text="Saved my flow.json on the server")).to_be_visible()
    assert "my flow.json" in _saved(editor_server)
    stored = editor_server.get_json("/api/userdata/" + urllib.parse.quote("workflows/my flow.json", safe=""))
    assert len(stored["nodes"]) == nodes  # the editor format, as Save writes it

    # saving again under the same name asks first; declining keeps the file, accepting replaces it
    editor.new_workflow()
    page.once("dialog", lambda dialog: dialog.dismiss())
    editor.menu("#workflow-menu-button", "Save on the server…")
    _answer_text(page, "my flow")
    page.wait_for_timeout(300)
    assert len(editor_server.get_json("/api/userdata/workflows%2Fmy%20flow.json")["nodes"]) == nodes

    editor.menu("#workflow-menu-button", "Workflows on the server…")
    dialog = page.locator("dialog.server-workflows")
    row = dialog.locator('.server-workflow[data-file="my flow.json"]')
    row.locator("button", has_text="Open").click()
    expect(page.locator(".node")).to_have_count(nodes)

    editor.menu("#workflow-menu-button", "Workflows on the server…")
    row = page.locator('dialog.server-workflows .server-workflow[data-file="my flow.json"]')
    row.locator("button", has_text="Rename").click()
    _answer_text(page, "renamed")
    expect(page.locator('dialog.server-workflows .server-workflow[data-file="renamed.json"]')).to_have_count(1)
    assert "renamed.json" in _saved(editor_server) and "my flow.json" not in _saved(editor_server)

    page.once("dialog", lambda confirm: confirm.accept())
    page.locator('dialog.server-workflows .server-workflow[data-file="renamed.json"]').locator(
        "button", has_text="Delete").click()
    expect(page.locator("dialog.server-workflows .server-workflow")).to_have_count(0)
    assert "renamed.json" not in _saved(editor_server)
    page.locator("dialog.server-workflows button", has_text="Close").click()


def test_a_name_the_server_refuses_is_shown(page, editor_server):
    editor = Editor(page)
    editor.menu("#workflow-menu-button", "Save on the server…")
    _answer_text(page, "../outside")
    expect(page.locator(".toast.error, .toast", has_text="Cannot save on the server")).to_be_visible()
    assert not any("outside" in path for path in _saved(editor_server))
