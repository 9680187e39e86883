"""ComfyUI's frontend routes (#20): users, settings and user data files, with ComfyUI's shapes and status codes."""
import concurrent.futures
import io
import json
import logging
import os
import struct

import pytest
from aiohttp.test_utils import TestClient, TestServer

from server.state import STATE


async def test_users_without_multi_user_is_the_default_user(client, settings):
    assert await (await client.get("/api/users")).json() == {"storage": "server", "migrated": False}
    await client.post("/api/settings/Comfy.Locale", json="en")
    assert await (await client.get("/users")).json() == {"storage": "server", "migrated": True}
    assert (settings.user_dir / "default" / "comfy.settings.json").is_file()


async def test_settings_merge_persist_across_restart_and_answer_null_when_unset(make_client, settings):
    first = await make_client()
    assert await (await first.get("/api/settings")).json() == {}
    assert (await first.post("/api/settings", json={"a": 1, "b": [1, 2]})).status == 200
    assert (await first.post("/api/settings", json={"b": "x"})).status == 200
    assert (await first.post("/api/settings/Comfy.Theme", data=json.dumps({"dark": True}))).status == 200
    assert (await first.post("/settings/plain", data="3.5")).status == 200
    restarted = await make_client()  # a new application over the same user folder
    assert await (await restarted.get("/api/settings")).json() == {"a": 1, "b": "x", "Comfy.Theme": {"dark": True},
                                                                    "plain": 3.5}
    assert await (await restarted.get("/api/settings/Comfy.Theme")).json() == {"dark": True}
    assert await (await restarted.get("/api/settings/unset")).json() is None
    stored = json.loads((settings.user_dir / "default" / "comfy.settings.json").read_text())
    assert stored["a"] == 1
    assert not [name for name in os.listdir(settings.user_dir / "default") if name.endswith(".part")]


async def test_corrupt_settings_read_as_empty_and_bad_bodies_are_400(client, settings):
    (settings.user_dir / "default").mkdir()
    (settings.user_dir / "default" / "comfy.settings.json").write_text("{not json")
    assert await (await client.get("/api/settings")).json() == {}
    response = await client.post("/api/settings/x", data="{broken")
    assert response.status == 400 and "error" in await response.json()
    assert (await client.post("/api/settings", data="[1]")).status == 400


async def test_userdata_write_read_list_move_delete(client, settings):
    response = await client.post("/api/userdata/workflows%2Fa.json", data=b'{"nodes": []}')
    assert response.status == 200 and await response.json() == "workflows/a.json"
    assert (settings.user_dir / "default" / "workflows" / "a.json").read_bytes() == b'{"nodes": []}'
    assert await (await client.get("/api/userdata/workflows%2Fa.json")).read() == b'{"nodes": []}'
    await client.post("/api/userdata/workflows%2Fsub%2Fb.json", data=b"bb")
    (settings.user_dir / "default" / "workflows" / ".hidden").write_text("h")

    listing = await (await client.get("/api/userdata", params={"dir": "workflows"})).json()
    assert listing == ["a.json"]
    listing = await (await client.get("/api/userdata", params={"dir": "workflows", "recurse": "true"})).json()
    assert listing == ["a.json", "sub/b.json"]
    split = await (await client.get("/api/userdata", params={"dir": "workflows", "recurse": "true",
                                                             "split": "true"})).json()
    assert split == [["a.json", "a.json"], ["sub/b.json", "sub", "b.json"]]
    full = await (await client.get("/api/userdata", params={"dir": "workflows", "recurse": "true",
                                                            "full_info": "true"})).json()
    assert [(entry["path"], entry["size"]) for entry in full] == [("a.json", 13), ("sub/b.json", 2)]
    assert all(isinstance(entry["modified"], float) and "created" in entry for entry in full)

    tree = await (await client.get("/api/v2/userdata", params={"path": "workflows"})).json()
    assert [(entry["type"], entry["path"]) for entry in tree] == [
        ("directory", "workflows/sub"), ("file", "workflows/.hidden"), ("file", "workflows/a.json"),
        ("file", "workflows/sub/b.json")]
    assert tree[2]["size"] == 13 and tree[2]["name"] == "a.json"

    response = await client.post("/api/userdata/workflows%2Fa.json/move/workflows%2Fc.json",
                                 params={"full_info": "true"})
    info = await response.json()
    assert response.status == 200 and info["path"] == "workflows/c.json" and info["size"] == 13
    assert not (settings.user_dir / "default" / "workflows" / "a.json").exists()
    assert (await client.delete("/api/userdata/workflows%2Fc.json")).status == 204
    assert (await client.get("/api/userdata/workflows%2Fc.json")).status == 404
    assert (await client.delete("/api/userdata/workflows%2Fc.json")).status == 404


async def test_overwrite_false_is_409_and_keeps_the_file(client, settings):
    await client.post("/api/userdata/w.json", data=b"first")
    response = await client.post("/api/userdata/w.json", params={"overwrite": "false"}, data=b"second")
    assert response.status == 409 and (await response.json())["error"]["message"] == "File already exists"
    assert (settings.user_dir / "default" / "w.json").read_bytes() == b"first"
    await client.post("/api/userdata/x.json", data=b"x")
    response = await client.post("/api/userdata/x.json/move/w.json", params={"overwrite": "false"})
    assert response.status == 409 and (settings.user_dir / "default" / "x.json").exists()
    response = await client.post("/api/userdata/w.json", params={"full_info": "true"}, data=b"third")
    assert (await response.json())["size"] == 5


async def test_userdata_status_codes_for_missing_and_absent(client):
    assert (await client.get("/api/userdata")).status == 400
    assert (await client.get("/api/userdata", params={"dir": "nothing"})).status == 404
    assert (await client.get("/api/v2/userdata", params={"path": "nothing"})).status == 404
    # a new user's folder holds what the official frontend reads as it starts (app.user_data.STARTER_*)
    starter = await (await client.get("/api/v2/userdata")).json()
    assert sorted((entry["type"], entry["path"]) for entry in starter) == [
        ("directory", "subgraphs"), ("directory", "workflows"), ("file", "comfy.templates.json"),
        ("file", "user.css")]
    await client.post("/api/userdata/f.json", data=b"f")
    assert (await client.get("/api/v2/userdata", params={"path": "f.json"})).status == 400
    assert (await client.post("/api/userdata/missing.json/move/other.json")).status == 404


@pytest.mark.parametrize("name", ["..%2F..%2Fescape.json", "%2E%2E%2Fescape.json", "a%2F..%2F..%2Fescape.json",
                                  "%2Fetc%2Fpasswd", "..%5Cescape.json", "a%00b"])
async def test_paths_leaving_the_user_folder_are_refused(client, settings, name):
    for response in (await client.post(f"/api/userdata/{name}", data=b"x"),
                     await client.get(f"/api/userdata/{name}"),
                     await client.delete(f"/api/userdata/{name}"),
                     await client.get("/api/userdata", params={"dir": name})):
        assert response.status == 403, name
        assert "error" in await response.json()
    assert (await client.get("/api/v2/userdata", params={"path": name})).status == 400
    assert not (settings.user_dir / "escape.json").exists() and not (settings.user_dir.parent / "escape.json").exists()


async def test_moves_and_links_out_of_the_user_folder_are_refused(client, settings, tmp_path):
    await client.post("/api/userdata/mine.json", data=b"m")
    response = await client.post("/api/userdata/mine.json/move/..%2F..%2Fstolen.json")
    assert response.status == 403 and not (tmp_path / "stolen.json").exists()
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    os.symlink(secret, settings.user_dir / "default" / "link.txt")
    os.symlink(tmp_path, settings.user_dir / "default" / "outside")
    assert (await client.get("/api/userdata/link.txt")).status == 403
    assert (await client.get("/api/userdata/outside%2Fsecret.txt")).status == 403
    assert (await client.post("/api/userdata/outside%2Fnew.txt", data=b"x")).status == 403
    assert not (tmp_path / "new.txt").exists()
    assert (await client.get("/api/userdata", params={"dir": "outside"})).status == 403


async def test_multi_user_separates_users_by_the_comfy_user_header(make_client, settings):
    client = await make_client(multi_user=True)
    assert await (await client.get("/api/users")).json() == {"storage": "server", "users": {}}
    alice = await (await client.post("/api/users", json={"username": "Alice B"})).json()
    assert alice.startswith("Alice-B_") and len(alice) == len("Alice-B_") + 36
    duplicate = await client.post("/api/users", json={"username": "Alice B"})
    assert duplicate.status == 400 and await duplicate.json() == {"error": "Duplicate username."}
    assert (await client.post("/api/users", json={"username": "  "})).status == 400
    bob = await (await client.post("/api/users", json={"username": "bob"})).json()
    assert (await (await client.get("/users")).json())["users"] == {alice: "Alice B", bob: "bob"}

    await client.post("/api/userdata/w.json", data=b"alice's", headers={"comfy-user": alice})
    await client.post("/api/settings", json={"who": "alice"}, headers={"comfy-user": alice})
    assert (await client.get("/api/userdata/w.json", headers={"comfy-user": bob})).status == 404
    assert await (await client.get("/api/settings", headers={"comfy-user": bob})).json() == {}
    assert await (await client.get("/api/settings", headers={"comfy-user": alice})).json() == {"who": "alice"}
    assert (settings.user_dir / alice / "w.json").read_bytes() == b"alice's"
    assert (await client.get("/api/settings", headers={"comfy-user": "mallory"})).status == 401
    assert (await client.get("/api/settings")).status == 401  # no header: "default", which is not a user here
    assert (await client.get("/api/userdata/w.json", headers={"comfy-user": "../x"})).status == 403
    assert (await client.get("/api/v2/userdata", headers={"comfy-user": "mallory"})).status == 403


async def test_without_multi_user_the_header_is_ignored(client, settings):
    await client.post("/api/userdata/w.json", data=b"w", headers={"comfy-user": "someone"})
    assert (settings.user_dir / "default" / "w.json").exists()


async def test_new_routes_require_the_token_and_refuse_other_origins(make_client):
    client = await make_client(auth_token="sesame")
    assert (await client.get("/api/settings")).status == 401
    assert (await client.post("/api/userdata/w.json", data=b"x")).status == 401
    headers = {"Authorization": "Bearer sesame"}
    assert (await client.get("/api/settings", headers=headers)).status == 200
    foreign = {**headers, "Origin": "http://evil.example"}
    assert (await client.post("/api/userdata/w.json", data=b"x", headers=foreign)).status == 403
    assert (await client.get("/api/userdata/w.json", headers=headers)).status == 404
    host = await client.get("/api/users", headers={**headers, "Host": "evil.example"})
    assert host.status == 403



def _safetensors(header: dict) -> bytes:
    """A safetensors file with no tensors: an 8-byte little-endian header length, then the JSON header."""
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw


@pytest.fixture
async def models_client(settings, shared_model_manager):
    """A server whose runtime lists the model folders under the settings' models dir (no nodes needed)."""
    import torch

    from app.runtime import Runtime
    from engine.cache import OutputCache
    from engine.executor import Executor
    from nodes.environment import Folders, NodeEnvironment
    from server.app import ServerConfig, create_app
    from tests.engine.nodes_for_tests import make_registry

    checkpoints, loras = settings.models_dir / "checkpoints", settings.models_dir / "loras" / "sub"
    loras.mkdir(parents=True)
    checkpoints.mkdir(parents=True)
    (checkpoints / "a.safetensors").write_bytes(_safetensors({"__metadata__": {"ss_network_dim": "4"}}))
    (checkpoints / "bare.safetensors").write_bytes(_safetensors({}))
    (loras / "b.pt").write_bytes(b"12345")
    (checkpoints / "notes.txt").write_text("not a model")
    folders = Folders(settings.models_dir, settings.input_dir, settings.output_dir, settings.temp_dir,
                      settings.user_dir)
    registry = make_registry()
    runtime = Runtime(settings, registry, Executor(registry, OutputCache(4)),
                      environment=NodeEnvironment(folders, torch.device("cpu"), torch.float32, shared_model_manager))
    future = concurrent.futures.Future()
    future.set_result(runtime)
    client = TestClient(TestServer(create_app(settings, ServerConfig(), future), host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()


async def test_model_library_lists_our_model_folders_and_files(models_client, settings):
    folders = await (await models_client.get("/api/experiment/models")).json()
    names = [folder["name"] for folder in folders]
    assert "checkpoints" in names and "loras" in names and "configs" not in names
    assert {"name": "loras", "folders": [str(settings.models_dir / "loras")]} in folders
    files = await (await models_client.get("/api/experiment/models/checkpoints")).json()
    assert [entry["name"] for entry in files] == ["a.safetensors", "bare.safetensors"]
    assert files[0]["pathIndex"] == 0 and files[0]["size"] == (settings.models_dir / "checkpoints" /
                                                                "a.safetensors").stat().st_size
    loras = await (await models_client.get("/experiment/models/loras")).json()
    assert [(entry["name"], entry["size"]) for entry in loras] == [("sub/b.pt", 5)]
    assert (await models_client.get("/api/experiment/models/nope")).status == 404
    paths = await (await models_client.get("/internal/folder_paths")).json()
    assert paths["checkpoints"] == [str(settings.models_dir / "checkpoints")]


async def test_view_metadata_answers_the_safetensors_metadata_or_404(models_client):
    response = await models_client.get("/api/view_metadata/checkpoints", params={"filename": "a.safetensors"})
    assert await response.json() == {"ss_network_dim": "4"}
    for folder, name in (("checkpoints", "bare.safetensors"), ("checkpoints", "missing.safetensors"),
                         ("checkpoints", "notes.txt"), ("nope", "a.safetensors"), ("loras", "sub/b.pt")):
        response = await models_client.get(f"/api/view_metadata/{folder}", params={"filename": name})
        assert response.status == 404, (folder, name)
    escape = await models_client.get("/api/view_metadata/checkpoints", params={"filename": "../../x.safetensors"})
    assert escape.status in (400, 403)


async def test_internal_files_lists_plain_files_newest_first(client, settings):
    for age, name in ((30, "old.png"), (10, "new.png"), (20, "mid.png")):
        path = settings.output_dir / name
        path.write_bytes(b"x")
        os.utime(path, (1_000_000 - age, 1_000_000 - age))
    (settings.output_dir / "folder").mkdir()
    assert await (await client.get("/internal/files/output")).json() == ["new.png", "mid.png", "old.png"]
    assert await (await client.get("/internal/files/input")).json() == []
    response = await client.get("/internal/files/models")
    assert response.status == 400 and await response.json() == {"error": "Invalid directory type"}


async def test_i18n_merges_plugins_locales(make_client, settings, tmp_path):
    from engine.plugin_loader import PluginRecord

    def locale(pack, language, name, value):
        path = tmp_path / pack / "locales" / language / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))

    locale("a_pack", "en", "main.json", {"menu": {"run": "Run", "stop": "Stop"}})
    locale("a_pack", "en", "nodeDefs.json", {"NodeA": {"display_name": "Node A"}})
    locale("b_pack", "en", "main.json", {"menu": {"stop": "Halt"}})
    locale("b_pack", "fr", "settings.json", {"x": {"name": "X"}})
    locale("c_failed", "en", "main.json", {"never": True})
    (tmp_path / "b_pack" / "locales" / "en" / "commands.json").write_text("{broken")
    client = await make_client()
    runtime = client.app[STATE].runtime_future.result()
    runtime.plugins = [PluginRecord("b_pack", tmp_path / "b_pack", "loaded"),
                       PluginRecord("a_pack", tmp_path / "a_pack", "loaded"),
                       PluginRecord("c_failed", tmp_path / "c_failed", "failed")]
    assert await (await client.get("/api/i18n")).json() == {
        "en": {"menu": {"run": "Run", "stop": "Halt"}, "nodeDefs": {"NodeA": {"display_name": "Node A"}}},
        "fr": {"settings": {"x": {"name": "X"}}},
    }


async def test_a_users_folder_starts_with_what_the_frontend_reads(client, settings):
    """Its first requests (saved workflows, subgraphs, the user's stylesheet, node templates) all find something."""
    listing = await client.get("/api/userdata", params={"dir": "workflows", "recurse": "true", "full_info": "true"})
    assert listing.status == 200 and await listing.json() == []
    assert (await client.get("/api/userdata", params={"dir": "subgraphs"})).status == 200
    assert await (await client.get("/api/userdata/comfy.templates.json")).json() == []
    css = await client.get("/user.css")
    assert css.status == 200 and css.content_type == "text/css" and await css.text() == ""
    (settings.user_dir / "default" / "user.css").write_text("body { color: red }")
    assert await (await client.get("/user.css")).text() == "body { color: red }"
    await client.post("/api/userdata/comfy.templates.json", data=b'[{"name": "t"}]', params={"overwrite": "true"})
    await client.get("/api/users")  # preparing the folder again leaves the user's files alone
    assert await (await client.get("/api/userdata/comfy.templates.json")).json() == [{"name": "t"}]


async def test_an_installed_templates_package_is_served(client, tmp_path, monkeypatch):
    package = tmp_path / "site" / "comfyui_workflow_templates"
    (package / "templates").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "templates" / "index.json").write_text('[{"moduleName": "default", "templates": []}]')
    (package / "templates" / "default.json").write_text('{"nodes": []}')
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert await (await client.get("/templates/index.json")).json() == [{"moduleName": "default", "templates": []}]
    assert await (await client.get("/api/templates/default.json")).json() == {"nodes": []}
    assert (await client.get("/templates/index_logo.json")).status == 404  # the package has none


async def test_templates_index_subgraphs_and_template_cards(client):
    assert await (await client.get("/templates/index.json")).json() == []
    assert await (await client.get("/templates/index.fr.json")).json() == []
    assert await (await client.get("/templates/index_logo.json")).json() == {}
    assert await (await client.get("/api/global_subgraphs")).json() == {}
    missing = await client.get("/api/global_subgraphs/nope")
    assert missing.status == 200 and await missing.json() is None  # ComfyUI's answer for an unknown id
    card = await client.get("/api/workflow_templates/nodeflow/txt2img.jpg")
    assert card.status == 200 and card.content_type == "image/jpeg"
    from PIL import Image

    with Image.open(io.BytesIO(await card.read())) as image:
        assert image.size == (256, 256)
    assert (await client.get("/api/workflow_templates/nodeflow/nope.jpg")).status == 404


async def test_node_packs_subgraph_blueprints(make_client, tmp_path):
    import hashlib

    from engine.plugin_loader import PluginRecord

    pack = tmp_path / "blueprint_pack"
    (pack / "subgraphs").mkdir(parents=True)
    (pack / "subgraphs" / "upscale.json").write_text('{"nodes": []}')
    client = await make_client(PluginRecord("blueprint_pack", pack, "loaded"))
    listing = await (await client.get("/api/global_subgraphs")).json()
    key = hashlib.sha256(f"custom_node{(pack / 'subgraphs' / 'upscale.json').as_posix()}".encode()).hexdigest()
    assert listing == {key: {"source": "custom_node", "name": "upscale",
                             "info": {"node_pack": "custom_nodes.blueprint_pack"}}}
    entry = await (await client.get(f"/api/global_subgraphs/{key}")).json()
    assert entry["data"] == '{"nodes": []}' and entry["name"] == "upscale"


async def test_logs_for_the_frontends_terminal(client):
    logging.getLogger("nodeflow.test").warning("hello terminal")
    raw = await (await client.get("/internal/logs/raw")).json()
    assert {"cols", "rows"} <= set(raw["size"]) and raw["entries"][-1]["m"] == "hello terminal\n"
    assert isinstance(raw["entries"][-1]["t"], str)
    assert (await (await client.get("/internal/logs")).json()).endswith(" - hello terminal\n")

    socket = await client.ws_connect("/ws?clientId=terminal")
    await socket.receive_json()  # status
    bad = await client.patch("/internal/logs/subscribe", json={"clientId": "terminal"})
    assert bad.status == 400 and "enabled" in (await bad.json())["error"]["message"]
    subscribed = await client.patch("/internal/logs/subscribe", json={"clientId": "terminal", "enabled": True})
    assert subscribed.status == 200
    logging.getLogger("nodeflow.test").warning("second line")
    message = await socket.receive_json(timeout=5)
    while message["type"] != "logs":
        message = await socket.receive_json(timeout=5)
    assert message["data"]["entries"][0]["m"] == "second line\n" and "cols" in message["data"]["size"]
    await client.patch("/internal/logs/subscribe", json={"clientId": "terminal", "enabled": False})
    await socket.close()


def test_the_log_ring_keeps_the_last_lines():
    from app.log_ring import LogRing

    ring, sent = LogRing(capacity=2), []
    ring.sender = lambda client_id, data: sent.append((client_id, data["entries"][0]["m"]))
    logger = logging.getLogger("nodeflow.test.ring")
    logger.addHandler(ring)
    try:
        for line in ("a", "b", "c"):
            logger.warning(line)
        ring.subscribe("x", True)
        logger.warning("d")
    finally:
        logger.removeHandler(ring)
    assert [entry["m"] for entry in ring.entries()] == ["c\n", "d\n"] and sent == [("x", "d\n")]
