"""Client mistakes found by probing a live server: each is a 4xx with a JSON error, never a 500."""
import io
import json

import pytest
from PIL import Image

CHAIN = {"1": {"class_type": "Const", "inputs": {"value": 2}},
         "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}


def png_bytes():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    return buffer.getvalue()


async def assert_client_error(response, *statuses):
    body = await response.json()
    assert response.status in (statuses or range(400, 500)), (response.status, body)
    assert "error" in body, body
    return body


@pytest.mark.parametrize("inputs", [["value", 1], "value", 5, True], ids=["list", "string", "number", "true"])
async def test_node_inputs_that_are_not_an_object(client, inputs):
    prompt = {**CHAIN, "1": {"class_type": "Const", "inputs": inputs}}
    await assert_client_error(await client.post("/prompt", json={"prompt": prompt}), 400)


@pytest.mark.parametrize("class_type", [["Const"], {"name": "Const"}], ids=["list", "object"])
async def test_class_type_that_is_not_a_string(client, class_type):
    prompt = {**CHAIN, "1": {"class_type": class_type, "inputs": {"value": 2}}}
    await assert_client_error(await client.post("/prompt", json={"prompt": prompt}), 400)


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", str(10**30).encode(), b"1e300"])
async def test_queue_numbers_that_cannot_be_stored(client, number):
    body = b'{"prompt": %s, "number": %s}' % (json.dumps(CHAIN).encode(), number)
    response = await client.post("/prompt", data=body, headers={"Content-Type": "application/json"})
    await assert_client_error(response, 400)


@pytest.mark.parametrize("route", ["/prompt", "/interrupt", "/queue", "/history", "/free", "/api/prompt"])
@pytest.mark.parametrize("depth", [50_000, 100_000])
async def test_json_nested_deeper_than_the_parser_goes(client, route, depth):
    deep = b"[" * depth + b"]" * depth
    response = await client.post(route, data=b'{"prompt": ' + deep + b"}",
                                 headers={"Content-Type": "application/json"})
    body = await assert_client_error(response, 400)
    assert "nested too deeply" in body["error"]["message"]


async def test_deeply_nested_websocket_messages_are_ignored(client):
    socket = await client.ws_connect("/ws?clientId=deep")
    await socket.receive_json()
    await socket.send_str("[" * 100_000 + "]" * 100_000)
    await socket.send_json({"type": "feature_flags", "data": {}})
    assert not socket.closed
    await socket.close()


@pytest.mark.parametrize("query", [{"max_items": str(10**20)}, {"offset": str(10**20)}, {"offset": str(-10**20)},
                                   {"max_items": "٩٠"}, {"max_items": "1_0"}, {"max_items": "9" * 5000}])
async def test_history_paging_numbers_out_of_range(client, query):
    await assert_client_error(await client.get("/history", params=query), 400)


async def test_history_paging_accepts_the_largest_stored_number(client):
    assert (await client.get("/history", params={"max_items": str(2**63 - 1), "offset": "0"})).status == 200


@pytest.mark.parametrize("query", [{"filename": "a" * 300 + ".png"}, {"filename": "a.png", "subfolder": "s" * 300},
                                   {"filename": "a.png", "preview": "jpeg;99999999999999999999"},
                                   {"filename": "a.png", "preview": "jpeg;٩٠"},
                                   {"filename": "a.png", "preview": "webp;101"},
                                   {"filename": "a.png", "preview": "jpeg;" + "9" * 5000}])
async def test_view_parameters_that_cannot_name_or_encode_a_file(client, settings, query):
    (settings.output_dir / "a.png").write_bytes(png_bytes())
    await assert_client_error(await client.get("/view", params=query), 400)


async def test_view_quality_in_range_still_reencodes(client, settings):
    (settings.output_dir / "a.png").write_bytes(png_bytes())
    response = await client.get("/view", params={"filename": "a.png", "preview": "jpeg;100"})
    assert response.status == 200 and response.content_type == "image/jpeg"


async def test_view_of_an_image_the_asked_format_cannot_hold(client, settings):
    Image.new("CMYK", (4, 4)).save(settings.output_dir / "print.tif")
    await assert_client_error(await client.get("/view", params={"filename": "print.tif", "channel": "rgba"}), 400)


async def test_workflow_template_with_a_very_long_name(client):
    await assert_client_error(await client.get("/workflow_templates/nodeflow/" + "a" * 300 + ".json"), 400)


def multipart(*parts: tuple[bytes, bytes]) -> bytes:
    """A hand-made multipart body: (Content-Disposition parameters, content) per part. aiohttp's own
    FormData refuses to write the malformed headers these tests need."""
    body = b"".join(b"--XyZ\r\nContent-Disposition: form-data; " + header + b"\r\n\r\n" + content + b"\r\n"
                    for header, content in parts)
    return body + b"--XyZ--\r\n"


async def post_multipart(client, body: bytes, route="/upload/image"):
    return await client.post(route, data=body, headers={"Content-Type": "multipart/form-data; boundary=XyZ"})


@pytest.mark.parametrize("parts", [
    [(b'name="image"; filename="a\x00b.png"', png_bytes())],
    [(b'name="image"; filename="' + "é".encode() * 150 + b'.png"', png_bytes())],
    [(b'name="image"; filename="x.png"', png_bytes()), (b'name="subfolder"', "é".encode() * 150)],
    [(b'name="image"; filename="x.png"', png_bytes()), (b'name="subfolder"; filename="s.txt"', b"masks")],
    [(b'name="image"; filename="x.png"', png_bytes()), (b'name="type"', b"\xff\xfe")],
    [(b'name="image"', png_bytes())],
], ids=["nul-in-name", "300-byte-name", "300-byte-subfolder", "subfolder-as-file", "undecodable-field",
        "image-as-text"])
async def test_upload_forms_that_cannot_be_stored(client, settings, parts):
    await assert_client_error(await post_multipart(client, multipart(*parts)), 400)
    assert not any(path.is_file() for path in settings.input_dir.rglob("*"))


async def test_upload_over_an_existing_folder_is_a_conflict(client, settings):
    (settings.input_dir / "taken.png").mkdir()
    for fields in ([], [(b'name="overwrite"', b"true")]):
        body = multipart((b'name="image"; filename="taken.png"', png_bytes()), *fields)
        await assert_client_error(await post_multipart(client, body), 409)
    (settings.input_dir / "file.png").write_bytes(png_bytes())
    body = multipart((b'name="image"; filename="x.png"', png_bytes()), (b'name="subfolder"', b"file.png"))
    await assert_client_error(await post_multipart(client, body), 409)
    assert sorted(path.name for path in settings.input_dir.rglob("*")) == ["file.png", "taken.png"]


async def test_nested_multipart_and_a_missing_boundary(client):
    nested = (b"--XyZ\r\nContent-Type: multipart/mixed; boundary=In\r\n\r\n--In\r\n\r\nx\r\n--In--\r\n"
              b"--XyZ--\r\n")
    await assert_client_error(await post_multipart(client, nested), 400)
    response = await client.post("/upload/image", data=b"x", headers={"Content-Type": "multipart/form-data"})
    await assert_client_error(response, 400)


@pytest.mark.parametrize("reference", [b'{"filename": 5}', b'{"filename": "a.png", "subfolder": ["x"]}',
                                       b'{"filename": "a.png", "type": ["input"]}', b"[" * 100_000,
                                       b'{"filename": "' + b"a" * 300 + b'.png"}'])
async def test_mask_references_that_name_no_image(client, settings, reference):
    (settings.input_dir / "a.png").write_bytes(png_bytes())
    body = multipart((b'name="image"; filename="m.png"', png_bytes()), (b'name="original_ref"', reference))
    await assert_client_error(await post_multipart(client, body, "/upload/mask"), 400)


@pytest.mark.parametrize("origin", ["http://127.0.0.1:99999999", "http://[::1", "http://127.0.0.1:8362 evil",
                                    "http://127.0.0.1:abc", "http://:80", "://"])
async def test_malformed_origins_are_refused(client, origin):
    await assert_client_error(await client.get("/queue", headers={"Origin": origin}), 403)


@pytest.mark.parametrize("host", ["127.0.0.1:abc", "127.0.0.1:99999", "[::1", "user@127.0.0.1", "127.0.0.1 evil",
                                  "[nonsense]:80", ":80"])
async def test_malformed_host_headers_are_refused(client, host):
    await assert_client_error(await client.get("/queue", headers={"Host": host}), 400)
    origin = {"Origin": f"http://127.0.0.1:{client.port}"}
    await assert_client_error(await client.get("/queue", headers={"Host": host, **origin}), 400)


@pytest.mark.parametrize("route, body", [
    ("/prompt", {"prompt": CHAIN, "prompt_id": "\ud800"}), ("/prompt", {"prompt": CHAIN, "client_id": "a\udfff"}),
    ("/queue", {"delete": ["\ud800"]}), ("/history", {"delete": ["\ud800"]}), ("/queue", {"delete": [True]}),
])
async def test_ids_that_utf8_cannot_store(client, route, body):
    """JSON's "\\ud800" escapes make strings with lone surrogates, which the SQLite queue cannot store."""
    response = await client.post(route, data=json.dumps(body), headers={"Content-Type": "application/json"})
    await assert_client_error(response, 400)
