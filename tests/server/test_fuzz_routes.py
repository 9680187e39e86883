"""Hypothesis-driven fuzz of every route against a live server: query and path parameters, JSON bodies of any
shape and depth, multipart forms, odd headers and websocket messages. Whatever arrives, the answer is never a
5xx, and every 4xx has a JSON error body. Examples are bounded and derandomized: the file runs in well under
a minute and the same way on every machine.

Requests go through `http.client`, which sends bytes as given (aiohttp's client refuses some of them)."""
import asyncio
import concurrent.futures
import http.client
import io
import json
import threading
from urllib.parse import quote_from_bytes

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from PIL import Image

from app.runtime import Runtime
from engine.plugin_loader import PluginRecord
from server.app import ServerConfig, create_app
from server.plugin_api import PromptServer
from tests.server.conftest import make_settings, ready_runtime
from tests.server.test_persistence import free_port

FUZZ = hypothesis_settings(deadline=None, derandomize=True, database=None,
                           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                  HealthCheck.data_too_large])

# Every route of server/app.py, server/catalog_routes.py and server/file_routes.py, the editor's static files
# and a plugin route; `test_the_fuzz_knows_every_route` keeps this list complete.
PATHS = ["/", "/prompt", "/queue", "/history", "/history/{prompt_id}", "/interrupt", "/free", "/features", "/ws",
         "/view", "/upload/image", "/upload/mask", "/object_info", "/object_info/{node_class}", "/models",
         "/models/{folder}", "/embeddings", "/system_stats", "/workflow_templates", "/workflow_templates/{module}/{name}",
         "/custom_nodes", "/extensions", "/extensions/{plugin}/{path}", "/web/{path}", "/fuzz-pack/{item}",
         # ComfyUI's frontend routes (#20): server/userdata_routes.py and server/internal_routes.py
         "/users", "/settings", "/settings/{id}", "/userdata", "/v2/userdata", "/userdata/{file}",
         "/userdata/{file}/move/{dest}", "/internal/folder_paths", "/internal/files/{directory_type}",
         "/experiment/models", "/experiment/models/{folder}", "/view_metadata/{folder}", "/i18n",
         "/jobs", "/jobs/{job_id}", "/user.css", "/templates/{name}", "/global_subgraphs", "/internal/logs", "/internal/logs/raw",
         "/internal/logs/subscribe",
         "/global_subgraphs/{id}"]
JSON_ROUTES = ["/prompt", "/queue", "/history", "/interrupt", "/free"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
QUERY_NAMES = ["filename", "subfolder", "type", "preview", "channel", "max_items", "offset", "clientId", "token",
               "x", "dir", "recurse", "full_info", "split", "path", "overwrite", "status", "limit", "sort_by",
               "sort_order", "workflow_id"]
TRICKY_TEXT = ["", ".", "..", "../x", "/etc/passwd", "a" * 300, "é" * 150, "\x00", "a\x00b", "٩٠", "²",
               "jpeg;٩٠", "webp;99999999999999999999", "jpeg;", "png;-1", "1_000", str(10**20), "-" + "9" * 30,
               "NaN", "input", "output", "temp", "rgb", "a", "rgba", "a.png", "pack", "x.js", "%00", "\\..\\x"]

texts = st.sampled_from(TRICKY_TEXT) | st.text(max_size=12) | st.text(st.characters(codec="utf-8"), max_size=40)
raw_texts = texts.map(lambda text: text.encode()) | st.binary(max_size=40)  # also bytes that are not UTF-8

lone_surrogates = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)  # JSON can carry them
json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | texts | lone_surrogates
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(texts, inner, max_size=4), max_leaves=16)


@st.composite
def deep_json(draw) -> bytes:
    """Lists or objects nested from what the engine still walks (200) to far deeper than the parser goes."""
    depth = draw(st.sampled_from([200, 990, 1_500, 60_000]))
    if draw(st.booleans()):
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


node_ids = st.sampled_from(["1", "2", "3", "x"])
api_nodes = st.fixed_dictionaries({"class_type": st.sampled_from(["Const", "Add", "Output", "Text", ""]) | json_values,
                                   "inputs": st.dictionaries(st.sampled_from(["value", "a", "b", "text"]),
                                                             json_values | st.tuples(node_ids, st.integers(-1, 2))
                                                             .map(list), max_size=3) | json_values},
                                  optional={"_meta": json_values})
editor_nodes = st.fixed_dictionaries({}, optional={key: json_values for key in (
    "id", "type", "mode", "inputs", "outputs", "widgets_values", "properties", "title")}) | json_values
editor_workflows = st.fixed_dictionaries({"nodes": st.lists(editor_nodes, max_size=3)}, optional={
    "links": st.lists(st.lists(json_scalars, max_size=6) | json_values, max_size=3),
    "definitions": json_values | st.fixed_dictionaries({"subgraphs": st.lists(json_values, max_size=2)}),
    "version": json_values})
prompt_bodies = st.fixed_dictionaries(
    {"prompt": st.dictionaries(node_ids, api_nodes | json_values, max_size=4) | editor_workflows | json_values},
    optional={key: json_values for key in ("client_id", "extra_data", "front", "number", "prompt_id",
                                           "partial_execution_targets")})
route_bodies = st.fixed_dictionaries({}, optional={key: json_values for key in (
    "clear", "delete", "prompt_id", "unload_models", "free_memory")})
json_bodies = (route_bodies | json_values).map(lambda body: json.dumps(body).encode())


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (4, 4), (1, 2, 3, 4)).save(buffer, format="PNG")
    return buffer.getvalue()


header_texts = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                       max_size=40)  # what HTTP carries in a header without breaking the request itself
parts = st.fixed_dictionaries({
    "name": st.sampled_from(["image", "type", "subfolder", "overwrite", "original_ref", "other"]) | header_texts,
    "filename": st.none() | header_texts | st.sampled_from(["a.png", "../../x.png", "é" * 150 + ".png", "..."]),
    "content": st.just(png_bytes()) | raw_texts | json_bodies | deep_json(),
    "content_type": st.none() | st.sampled_from(["image/png", "text/plain; charset=latin-1",
                                                 "text/plain; charset=nope", "multipart/mixed; boundary=In"]),
    "encoding": st.none() | st.sampled_from(["gzip", "base64", "nonsense"])})


def multipart(form_parts: list[dict], cut: int | None) -> bytes:
    body = b""
    for part in form_parts:
        disposition = f'form-data; name="{part["name"]}"'
        if part["filename"] is not None:
            disposition += f'; filename="{part["filename"]}"'
        body += b"--XyZ\r\nContent-Disposition: " + disposition.encode("latin-1") + b"\r\n"
        if part["content_type"]:
            body += f"Content-Type: {part['content_type']}\r\n".encode()
        if part["encoding"]:
            body += f"Content-Encoding: {part['encoding']}\r\n".encode()
        body += b"\r\n" + part["content"] + b"\r\n"
    body += b"--XyZ--\r\n"
    return body if cut is None else body[:cut]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    """A server with the test nodes, a file of each kind to find, a plugin with scripts and a plugin route."""
    base = tmp_path_factory.mktemp("fuzz-routes")
    settings = make_settings(base)
    for folder in (settings.input_dir, settings.output_dir, settings.temp_dir):
        (folder / "a.png").write_bytes(png_bytes())
        (folder / "sub").mkdir()
        (folder / "sub" / "a.png").write_bytes(png_bytes())
    scripts = base / "pack" / "web"
    scripts.mkdir(parents=True)
    (scripts / "x.js").write_text("export {};")
    runtime = ready_runtime(settings).result()
    runtime = Runtime(runtime.settings, runtime.registry, runtime.executor,
                      plugins=[PluginRecord("pack", base / "pack", "loaded", web_directory=scripts)])
    runtime_future: concurrent.futures.Future = concurrent.futures.Future()
    app = create_app(settings, ServerConfig(max_upload_bytes=256 * 1024), runtime_future)

    @PromptServer.instance.routes.post("/fuzz-pack/{item}")
    async def plugin_route(request):
        return web.json_response({"item": request.match_info["item"], "body": (await request.read()).hex()})

    runtime_future.set_result(runtime)
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def send(port: int, method: str, target: str, body: bytes | None = None,
         headers: dict[str, str | bytes] | None = None) -> tuple[int, str, bytes]:
    headers = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


# HTTP's answers to a file request's Range or If-* headers, which aiohttp's FileResponse sends without a body
FILE_CONDITION_STATUSES = (412, 416)


def assert_answered(method: str, answer: tuple[int, str, bytes], sent: object) -> None:
    status, content_type, content = answer
    assert status < 500, (status, content[:300], sent)
    if status >= 400 and method != "HEAD" and status not in FILE_CONDITION_STATUSES:
        assert content_type.startswith("application/json"), (status, content_type, content[:300], sent)
        assert "error" in json.loads(content), (status, content[:300], sent)


def encoded(raw: bytes) -> str:
    return quote_from_bytes(raw, safe="")


@st.composite
def targets(draw) -> str:
    """A route with its path parameters filled (any bytes, percent-encoded) and any query string."""
    path = draw(st.sampled_from(PATHS))
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        value = encoded(draw(raw_texts))
        if path[start:end + 1] == "{path}" and draw(st.booleans()):  # a path of several segments
            value = "/".join([value, encoded(draw(raw_texts))])
        path = path[:start] + (value or "x") + path[end + 1:]
    query = draw(st.lists(st.tuples(st.sampled_from(QUERY_NAMES) | raw_texts.map(lambda raw: raw.decode("latin-1")),
                                    raw_texts), max_size=4))
    prefix = draw(st.sampled_from(["", "/api"])) if path != "/" else ""
    return prefix + path + ("?" + "&".join(f"{encoded(name.encode('latin-1'))}={encoded(value)}"
                                           for name, value in query) if query else "")


@hypothesis_settings(FUZZ, max_examples=200)
@given(method=st.sampled_from(METHODS), target=targets())
def test_any_route_with_any_parameters(live_server, method, target):
    assert_answered(method, send(live_server, method, target), target)


@hypothesis_settings(FUZZ, max_examples=150)
@given(route=st.sampled_from(JSON_ROUTES), body=json_bodies | deep_json() | st.binary(max_size=64),
       api=st.booleans())
def test_json_routes_with_any_body(live_server, route, body, api):
    answer = send(live_server, "POST", ("/api" if api else "") + route, body, {"Content-Type": "application/json"})
    assert_answered("POST", answer, body[:300])


@hypothesis_settings(FUZZ, max_examples=200)
@given(body=prompt_bodies, api=st.booleans())
def test_post_prompt_with_prompts_of_any_shape(live_server, body, api):
    """API-format and editor-format prompts whose nodes, inputs and class types may be anything."""
    answer = send(live_server, "POST", "/api/prompt" if api else "/prompt", json.dumps(body).encode(),
                  {"Content-Type": "application/json"})
    assert_answered("POST", answer, body)


@pytest.mark.filterwarnings("ignore::aiohttp.BadContentDispositionHeader")  # what malformed parts make aiohttp say
@hypothesis_settings(FUZZ, max_examples=120)
@given(route=st.sampled_from(["/upload/image", "/upload/mask", "/api/upload/image"]),
       form_parts=st.lists(parts, max_size=4), cut=st.none() | st.integers(0, 400),
       boundary=st.sampled_from(["XyZ", "XyZ", "", "other", '"XyZ"']))
def test_uploads_with_any_form(live_server, route, form_parts, cut, boundary):
    content_type = f"multipart/form-data; boundary={boundary}" if boundary else "multipart/form-data"
    body = multipart(form_parts, cut)
    answer = send(live_server, "POST", route, body, {"Content-Type": content_type})
    assert_answered("POST", answer, (route, form_parts, cut, boundary))


odd_headers = st.dictionaries(
    st.sampled_from(["Host", "Origin", "Authorization", "Cookie", "Content-Type", "Accept", "Referer",
                     "Sec-WebSocket-Key", "Upgrade", "Connection", "X-Forwarded-Host", "If-Modified-Since",
                     "Range", "Accept-Language"]),
    header_texts | st.sampled_from(["127.0.0.1:abc", "[::1", "localhost", "evil.example", "http://[::1",
                                    "http://127.0.0.1:99999999", "null", "Bearer ", "websocket", "bytes=5-1",
                                    "bytes=0-0", "multipart/form-data", "application/json; charset=nope"]),
    max_size=4)


@hypothesis_settings(FUZZ, max_examples=150)
@given(method=st.sampled_from(["GET", "POST"]), target=targets(), headers=odd_headers,
       body=st.none() | json_bodies)
def test_any_route_with_odd_headers(live_server, method, target, headers, body):
    assert_answered(method, send(live_server, method, target, body, headers), (target, headers))


@hypothesis_settings(FUZZ, max_examples=25)
@given(client_id=st.none() | texts, messages=st.lists(st.binary(max_size=30) | json_bodies | deep_json()
                                                      | texts.map(str.encode), max_size=4),
       as_text=st.booleans())
def test_websocket_with_any_client_id_and_messages(live_server, client_id, messages, as_text):
    async def talk() -> None:
        query = {} if client_id is None else {"clientId": client_id}
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{live_server}/ws", params=query,
                                          max_msg_size=0) as socket:
                assert (await socket.receive_json(timeout=10))["type"] == "status"
                for message in messages:
                    if as_text:
                        await socket.send_str(message.decode("utf-8", "replace"))
                    else:
                        await socket.send_bytes(message)
                async with session.post(f"http://127.0.0.1:{live_server}/queue", json={}) as response:
                    assert response.status == 200  # which tells every socket the queue's status
                while (reply := await socket.receive_json(timeout=10))["type"] != "status":
                    assert reply["type"] == "feature_flags", reply

    asyncio.run(talk())
    assert send(live_server, "GET", "/prompt")[0] == 200


def test_the_fuzz_knows_every_route(tmp_path):
    """A new route must be added to PATHS, so the fuzz reaches it too."""
    settings = make_settings(tmp_path)
    app = create_app(settings, ServerConfig(), ready_runtime(settings))
    registered = {resource.canonical.replace("{path:.+}", "{path}") for resource in app.router.resources()}
    known = {path.replace("/fuzz-pack/{item}", "/{tail}") for path in PATHS}
    assert {path for path in registered if not path.startswith("/api/")} == known
