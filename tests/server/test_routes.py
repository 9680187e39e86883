import io
import json

import pytest
from PIL import Image

from tests.server.conftest import wait_for_history

CHAIN = {"1": {"class_type": "Const", "inputs": {"value": 2}},
         "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 3}},
         "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}


def png_bytes(size=(8, 8), color=(255, 0, 0, 255), mode="RGBA"):
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_post_prompt_runs_and_lands_in_history(client, calls):
    response = await client.post("/prompt", json={"prompt": CHAIN, "client_id": "abc",
                                                  "extra_data": {"extra_pnginfo": {"workflow": {"x": 1}}}})
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"prompt_id", "number", "node_errors"} and body["node_errors"] == {}
    entry = await wait_for_history(client, body["prompt_id"])
    assert entry["outputs"] == {"3": {"values": [5]}}
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached",
                                                           "execution_success"]
    number, prompt_id, prompt, extra_data, outputs = entry["prompt"]
    assert prompt_id == body["prompt_id"] and number == body["number"]
    assert prompt["2"]["inputs"] == {"a": ["1", 0], "b": 3}
    assert extra_data["client_id"] == "abc" and outputs == ["3"]


async def test_api_prefix_and_client_chosen_prompt_id(client):
    response = await client.post("/api/prompt", json={"prompt": CHAIN, "prompt_id": "mine-1"})
    assert (await response.json())["prompt_id"] == "mine-1"
    await wait_for_history(client, "mine-1")
    again = await client.post("/api/prompt", json={"prompt": CHAIN, "prompt_id": "mine-1"})
    assert again.status == 400


async def test_invalid_prompt_is_a_400_with_node_errors(client):
    bad = {"1": {"class_type": "Const", "inputs": {"value": 99999}},
           "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    response = await client.post("/prompt", json={"prompt": bad})
    assert response.status == 400
    body = await response.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["1"]["errors"][0]["type"] == "value_bigger_than_max"
    history = await (await client.get("/history")).json()
    assert history == {}


async def test_partial_execution_targets(client, calls):
    prompt = dict(CHAIN)
    prompt["9"] = {"class_type": "Output", "inputs": {"value": ["1", 0]}}
    response = await client.post("/prompt", json={"prompt": prompt, "partial_execution_targets": ["9"]})
    entry = await wait_for_history(client, (await response.json())["prompt_id"])
    assert list(entry["outputs"]) == ["9"]
    assert not any(c.startswith("Add") for c in calls)


@pytest.mark.parametrize("body, status", [
    (b"{not json", 400), (b"[1, 2]", 400), (b'{"prompt": 5}', 400), (b'{"prompt": {}}', 400),
    (b'{"prompt": {"1": {"class_type": "Const", "inputs": {"value": 1}}}, "extra_data": 3}', 400),
    (b'{"prompt": {"1": {"class_type": "Output", "inputs": {"value": 1}}}, "number": "x"}', 400),
    (b'{"prompt": {"1": "nonsense"}}', 400),
])
async def test_malformed_prompt_bodies_are_4xx_json(client, body, status):
    response = await client.post("/prompt", data=body, headers={"Content-Type": "application/json"})
    assert response.status == status
    assert "error" in await response.json()


async def test_queue_listing_delete_and_clear(client, settings):
    slow = {"1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "Slow", "inputs": {"value": ["1", 0], "steps": 200, "delay": 0.01}},
            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    first = await (await client.post("/prompt", json={"prompt": slow})).json()
    ids = []
    for value in range(3):
        prompt = {"1": {"class_type": "Const", "inputs": {"value": value + 10}},
                  "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
        ids.append((await (await client.post("/prompt", json={"prompt": prompt})).json())["prompt_id"])
    queue = await (await client.get("/queue")).json()
    pending_ids = [item[1] for item in queue["queue_pending"]]
    assert set(pending_ids) <= set(ids)
    status = await (await client.get("/prompt")).json()
    assert status["exec_info"]["queue_remaining"] >= 1
    assert (await client.post("/queue", json={"delete": [ids[0]]})).status == 200
    assert (await client.post("/queue", json={"clear": True})).status == 200
    queue = await (await client.get("/queue")).json()
    assert queue["queue_pending"] == []
    await client.post("/interrupt", json={})
    entry = await wait_for_history(client, first["prompt_id"])
    assert entry["status"]["status_str"] in ("error", "success")


async def test_front_puts_a_prompt_first(client, calls):
    slow = {"1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "Slow", "inputs": {"value": ["1", 0], "steps": 20, "delay": 0.01}},
            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    await client.post("/prompt", json={"prompt": slow})

    def single(value):
        return {"1": {"class_type": "Const", "inputs": {"value": value}},
                "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    late = await (await client.post("/prompt", json={"prompt": single(100)})).json()
    early = await (await client.post("/prompt", json={"prompt": single(200), "front": True})).json()
    await wait_for_history(client, late["prompt_id"])
    await wait_for_history(client, early["prompt_id"])
    assert calls.index("Const:200") < calls.index("Const:100")


async def test_history_paging_delete_and_clear(client):
    ids = []
    for value in range(4):
        prompt = {"1": {"class_type": "Const", "inputs": {"value": value}},
                  "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
        prompt_id = (await (await client.post("/prompt", json={"prompt": prompt})).json())["prompt_id"]
        await wait_for_history(client, prompt_id)
        ids.append(prompt_id)
    assert list(await (await client.get("/history?max_items=2")).json()) == ids[2:]
    assert list(await (await client.get("/history?max_items=2&offset=1")).json()) == ids[1:3]
    assert (await client.get("/history?max_items=abc")).status == 400
    await client.post("/history", json={"delete": [ids[0]]})
    assert list(await (await client.get("/history")).json()) == ids[1:]
    assert await (await client.get(f"/history/{ids[0]}")).json() == {}
    await client.post("/history", json={"clear": True})
    assert await (await client.get("/history")).json() == {}


async def test_node_error_is_recorded_and_the_worker_goes_on(client):
    failing = {"1": {"class_type": "Const", "inputs": {"value": 1}},
               "2": {"class_type": "Fail", "inputs": {"value": ["1", 0]}},
               "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    bad = await (await client.post("/prompt", json={"prompt": failing})).json()
    good = await (await client.post("/prompt", json={"prompt": CHAIN})).json()
    entry = await wait_for_history(client, bad["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    error = dict(entry["status"]["messages"])["execution_error"]
    assert error["node_id"] == "2" and error["exception_message"] == "cannot handle 1"
    assert (await wait_for_history(client, good["prompt_id"]))["status"]["status_str"] == "success"


async def test_object_info(client):
    info = await (await client.get("/object_info")).json()
    assert info["Const"]["input"]["required"]["value"][0] == "INT"
    one = await (await client.get("/object_info/Add")).json()
    assert list(one) == ["Add"] and one["Add"]["output_name"] == ["sum"]
    assert (await client.get("/object_info/Nope")).status == 404


async def test_view_serves_files_and_refuses_escapes(client, settings, tmp_path):
    (settings.output_dir / "sub").mkdir()
    (settings.output_dir / "sub" / "a.png").write_bytes(png_bytes())
    (tmp_path / "secret.txt").write_text("secret")
    (settings.output_dir / "link.png").symlink_to(tmp_path / "secret.txt")
    response = await client.get("/view", params={"filename": "a.png", "subfolder": "sub", "type": "output"})
    assert response.status == 200 and response.content_type == "image/png"
    assert await response.read() == png_bytes()
    webp = await client.get("/view", params={"filename": "a.png", "subfolder": "sub", "preview": "webp;50"})
    assert webp.status == 200 and webp.content_type == "image/webp"
    for params in ({"filename": "../secret.txt"}, {"filename": "secret.txt", "subfolder": ".."},
                   {"filename": str(tmp_path / "secret.txt")}, {"filename": "link.png"},
                   {"filename": "a.png", "subfolder": "/etc"}, {"filename": "a.png", "type": "models"},
                   {"filename": ""}):
        response = await client.get("/view", params=params)
        assert response.status in (400, 404), params
        assert "secret" not in await response.text()
    assert (await client.get("/view", params={"filename": "nope.png"})).status == 404


async def test_upload_image_names_subfolders_and_refusals(client, settings):
    async def upload(name, data, **fields):
        from aiohttp import FormData
        payload = FormData()
        payload.add_field("image", data, filename=name, content_type="image/png")
        for key, value in fields.items():
            payload.add_field(key, value)
        return await client.post("/upload/image", data=payload)

    first = await upload("cat.png", png_bytes())
    assert await first.json() == {"name": "cat.png", "subfolder": "", "type": "input"}
    assert (settings.input_dir / "cat.png").read_bytes() == png_bytes()
    same = await upload("cat.png", png_bytes())
    assert (await same.json())["name"] == "cat.png"
    other = await upload("cat.png", png_bytes(color=(0, 255, 0, 255)))
    assert (await other.json())["name"] == "cat (1).png"
    overwritten = await upload("cat.png", png_bytes(color=(0, 0, 255, 255)), overwrite="true")
    assert (await overwritten.json())["name"] == "cat.png"
    nested = await upload("../../evil.png", png_bytes(), subfolder="masks/a")
    assert await nested.json() == {"name": "evil.png", "subfolder": "masks/a", "type": "input"}
    assert (settings.input_dir / "masks" / "a" / "evil.png").is_file()
    assert (await upload("x.png", png_bytes(), subfolder="../up")).status == 400
    refused = await upload("x.png", b"not an image")
    assert refused.status == 400 and "not a readable video either" in await refused.text()
    assert (await (await upload(".hidden", png_bytes())).json())["name"] == "hidden"
    assert (await upload("...", png_bytes())).status == 400
    assert (await client.post("/upload/image", json={"image": "x"})).status == 415


async def test_upload_image_takes_a_video_for_load_video(client, settings):
    from fractions import Fraction

    import torch
    from aiohttp import FormData

    from nodes.video import VideoComponents, VideoFromComponents

    buffer = io.BytesIO()
    VideoFromComponents(VideoComponents(torch.rand(3, 16, 16, 3), Fraction(8))).save_to(buffer)
    payload = FormData()
    payload.add_field("image", buffer.getvalue(), filename="clip.mp4", content_type="video/mp4")
    response = await client.post("/upload/image", data=payload)
    assert await response.json() == {"name": "clip.mp4", "subfolder": "", "type": "input"}
    assert (settings.input_dir / "clip.mp4").read_bytes() == buffer.getvalue()


async def test_upload_mask_puts_the_mask_into_the_originals_alpha(client, settings):
    from aiohttp import FormData
    Image.new("RGB", (4, 4), (10, 20, 30)).save(settings.input_dir / "photo.png")
    mask = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    mask.putpixel((1, 1), (0, 0, 0, 255))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    payload = FormData()
    payload.add_field("image", buffer.getvalue(), filename="clipspace-mask.png", content_type="image/png")
    payload.add_field("original_ref", json.dumps({"filename": "photo.png", "subfolder": "", "type": "input"}))
    response = await client.post("/upload/mask", data=payload)
    assert response.status == 200
    name = (await response.json())["name"]
    result = Image.open(settings.input_dir / name)
    assert result.mode == "RGBA" and result.getpixel((1, 1)) == (10, 20, 30, 255)
    assert result.getpixel((0, 0)) == (10, 20, 30, 0)
    payload = FormData()
    payload.add_field("image", buffer.getvalue(), filename="m.png", content_type="image/png")
    payload.add_field("original_ref", json.dumps({"filename": "../../etc/passwd", "type": "input"}))
    assert (await client.post("/upload/mask", data=payload)).status == 400


async def test_unknown_routes_and_methods_are_json(client):
    response = await client.get("/no/such/route")
    assert response.status == 404 and (await response.json())["error"]["type"] == "not_found"
    response = await client.delete("/prompt")
    assert response.status == 405 and "error" in await response.json()


async def test_huge_json_bodies_are_refused(make_client):
    client = await make_client(max_json_bytes=1000)
    response = await client.post("/prompt", data=b'{"prompt": "' + b"x" * 5000 + b'"}',
                                 headers={"Content-Type": "application/json"})
    assert response.status == 413 and "error" in await response.json()


async def test_cross_origin_requests_are_refused(client):
    response = await client.post("/prompt", json={"prompt": CHAIN}, headers={"Origin": "http://evil.example"})
    assert response.status == 403
    response = await client.get("/view", params={"filename": "x.png"}, headers={"Origin": "null"})
    assert response.status == 403
    own = f"http://{client.host}:{client.port}"
    response = await client.get("/queue", headers={"Origin": own})
    assert response.status == 200


async def test_auth_token_guards_every_route(make_client):
    client = await make_client(auth_token="s3cret")
    assert (await client.get("/queue")).status == 401
    assert (await client.get("/queue", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await client.get("/queue", headers={"Authorization": "Bearer s3cret"})).status == 200
    response = await client.get("/queue", params={"token": "s3cret"})
    assert response.status == 200 and "nodeflow_token" in response.cookies
    assert (await client.get("/object_info")).status == 200  # the cookie set above now authenticates


async def test_interrupt_stops_the_running_prompt(client):
    slow = {"1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "Slow", "inputs": {"value": ["1", 0], "steps": 5000, "delay": 0.005}},
            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    prompt_id = (await (await client.post("/prompt", json={"prompt": slow})).json())["prompt_id"]
    import asyncio
    for _ in range(200):
        if (await (await client.get("/queue")).json())["queue_running"]:
            break
        await asyncio.sleep(0.01)
    await client.post("/interrupt", json={"prompt_id": "someone-else"})
    await asyncio.sleep(0.05)
    assert (await (await client.get("/queue")).json())["queue_running"]
    await client.post("/interrupt")
    entry = await wait_for_history(client, prompt_id)
    assert [m[0] for m in entry["status"]["messages"]][-1] == "execution_interrupted"


async def test_editor_is_served_without_stale_caching(client):
    page = await client.get("/")
    assert page.status == 200 and "text/html" in page.content_type
    module = await client.get("/web/js/main.js")
    assert module.status == 200 and module.headers["Cache-Control"] == "no-cache"
    assert (await client.get("/web/../server/app.py")).status in (403, 404)


async def test_large_json_bodies_arriving_in_many_chunks_are_read_whole(client):
    prompt = {"1": {"class_type": "Text", "inputs": {"text": "x" * 300_000, "mode": "keep"}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    response = await client.post("/prompt", json={"prompt": prompt})
    assert response.status == 200, await response.text()
    await wait_for_history(client, (await response.json())["prompt_id"])


async def test_workflow_templates_are_listed_and_served(client):
    """ComfyUI's {module: [names]} map: our shipped workflows under "nodeflow", served as {module}/{name}.json."""
    modules = await (await client.get("/api/workflow_templates")).json()
    assert {"txt2img", "inpaint_model", "sdxl_txt2img", "flux_txt2img", "unclip_cascade"} <= set(modules["nodeflow"])
    txt2img = await (await client.get("/api/workflow_templates/nodeflow/txt2img.json")).json()
    assert any(node["class_type"] == "KSampler" for node in txt2img.values())
    assert (await client.get("/workflow_templates/nodeflow/nope.json")).status == 404
    assert (await client.get("/workflow_templates/nodeflow/txt2img")).status == 404  # ComfyUI's names end in .json
    assert (await client.get("/workflow_templates/other/txt2img.json")).status == 404
    assert (await client.get("/workflow_templates/nodeflow/..%2F..%2Fpyproject.toml")).status in (400, 404)


async def test_node_packs_example_workflows_are_templates(make_client, tmp_path):
    from engine.plugin_loader import PluginRecord

    pack = tmp_path / "example_pack"
    (pack / "example_workflows").mkdir(parents=True)
    (pack / "example_workflows" / "demo.json").write_text('{"nodes": []}')
    client = await make_client(PluginRecord("example_pack", pack, "loaded"))
    modules = await (await client.get("/workflow_templates")).json()
    assert modules["example_pack"] == ["demo"] and "txt2img" in modules["nodeflow"]
    assert await (await client.get("/api/workflow_templates/example_pack/demo.json")).json() == {"nodes": []}