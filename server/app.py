"""The aiohttp application: ComfyUI's HTTP routes (also under /api) and the websocket, over the engine.

Handlers only translate: parse and check the request, call the engine/store/runtime, shape the answer.
Client mistakes get a 4xx with a JSON body; nothing here knows about diffusion.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import logging
import mimetypes
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aiohttp import WSMsgType, web
from PIL import Image

from app.runtime import Runtime
from app.settings import PROJECT_DIR, Settings
from engine.validation import validate_prompt
from engine.workflow_format import WorkflowFormatError, is_editor_format, to_api_format
from server import files
from server.files import UnsafePathError
from server.hub import ClientHub
from server.plugin_api import PluginRoutes, PromptServer
from server.security import json_error, json_errors, make_auth_check, make_origin_check
from server.store import PromptStore
from server.worker import EventSink, PreviewEncoder, PromptWorker, QueueWorker, jpeg_preview

log = logging.getLogger(__name__)

WEB_DIR = PROJECT_DIR / "web"
WORKFLOWS_DIR = PROJECT_DIR / "workflows"


@dataclass(frozen=True)
class ServerConfig:
    auth_token: str | None = None
    allowed_origins: frozenset[str] = frozenset()
    max_upload_bytes: int = 100 * 1024 * 1024
    max_json_bytes: int = 20 * 1024 * 1024
    previews: bool = True
    max_history: int = 10000
    web_dir: Path = WEB_DIR
    workflows_dir: Path = WORKFLOWS_DIR


@dataclass
class ServerState:
    settings: Settings
    config: ServerConfig
    runtime_future: concurrent.futures.Future
    store: PromptStore
    hub: ClientHub = field(default_factory=ClientHub)
    worker: QueueWorker | None = None
    plugin_routes: PluginRoutes | None = None

    async def runtime(self) -> Runtime:
        try:
            return await asyncio.wrap_future(self.runtime_future)
        except Exception as exc:
            log.exception("the engine failed to start")
            raise web.HTTPServiceUnavailable(text=f"the engine failed to start: {exc}") from None

    def folder(self, kind: str) -> Path:
        return {"output": self.settings.output_dir, "input": self.settings.input_dir,
                "temp": self.settings.temp_dir}[kind]


STATE = web.AppKey("state", ServerState)

WorkerFactory = Callable[[PromptStore, EventSink, PreviewEncoder, concurrent.futures.Future], QueueWorker]


def in_process_worker(store: PromptStore, sink: EventSink, encode_preview: PreviewEncoder,
                      runtime_future: concurrent.futures.Future) -> PromptWorker:
    """The default: one thread of this process runs the queue on the runtime's executor."""
    return PromptWorker(store, lambda: runtime_future.result().executor, sink, encode_preview)


def create_app(settings: Settings, config: ServerConfig, runtime_future: concurrent.futures.Future,
               worker_factory: WorkerFactory = in_process_worker) -> web.Application:
    """Build the application; the runtime (nodes, torch) may still be loading in `runtime_future`.
    `worker_factory` makes what runs the queue (`distributed.cluster` passes the Ray workers')."""
    middlewares = [json_errors, make_origin_check(config.allowed_origins)]
    if config.auth_token:
        middlewares.append(make_auth_check(config.auth_token))
    app = web.Application(middlewares=middlewares, client_max_size=config.max_upload_bytes)
    store = PromptStore(settings.user_dir / "queue.sqlite3", max_history=config.max_history)
    state = ServerState(settings, config, runtime_future, store)
    routes = _routes()
    state.plugin_routes = PluginRoutes(routes)
    state.worker = worker_factory(store, state.hub, jpeg_preview if config.previews else (lambda image: None),
                                  runtime_future)
    app[STATE] = state
    PromptServer.instance = PromptServer(state)  # plugins imported from now on register routes on it
    runtime_future.add_done_callback(lambda _: state.plugin_routes.install(PromptServer.instance.routes))
    app.router.add_routes(routes)
    app.router.add_routes([web.route(r.method, "/api" + r.path, r.handler) for r in routes
                           if isinstance(r, web.RouteDef) and r.path != "/"])
    if config.web_dir.is_dir():
        app.router.add_static("/web/", config.web_dir, follow_symlinks=False)
    app.router.add_route("*", "/{tail:.*}", state.plugin_routes.handle)
    app.on_response_prepare.append(_no_cache_for_editor_files)
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    return app


async def _no_cache_for_editor_files(request: web.Request, response: web.StreamResponse) -> None:
    """The editor's modules change with every update; browsers must not keep running old copies."""
    if request.path.startswith("/web/"):
        response.headers["Cache-Control"] = "no-cache"


async def _start(app: web.Application) -> None:
    state = app[STATE]
    await state.hub.start()
    state.worker.start()


async def _stop(app: web.Application) -> None:
    state = app[STATE]
    await asyncio.get_running_loop().run_in_executor(None, state.worker.stop)
    await state.hub.stop()
    state.store.close()


# ---- request helpers -----------------------------------------------------------------------------------
async def read_json(request: web.Request) -> dict[str, Any]:
    state = request.app[STATE]
    limit = state.config.max_json_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the request body must be a JSON object")
    return body


def _int_query(request: web.Request, name: str, default: int | None) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise web.HTTPBadRequest(text=f"query parameter {name!r} must be an integer") from None


def _string_list(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise web.HTTPBadRequest(text=f"{name!r} must be a list of ids")
    return [str(v) for v in value]


def _in_thread(function, *args):
    return asyncio.get_running_loop().run_in_executor(None, function, *args)


# ---- routes --------------------------------------------------------------------------------------------
def _routes() -> list[web.RouteDef]:
    return [
        web.get("/", index),
        web.post("/prompt", post_prompt),
        web.get("/prompt", get_prompt),
        web.get("/queue", get_queue),
        web.post("/queue", post_queue),
        web.get("/history", get_history),
        web.get("/history/{prompt_id}", get_history_item),
        web.post("/history", post_history),
        web.get("/view", view_file),
        web.post("/upload/image", upload_image),
        web.post("/upload/mask", upload_mask),
        web.get("/object_info", object_info),
        web.get("/object_info/{node_class}", object_info_one),
        web.get("/models", model_folders),
        web.get("/models/{folder}", model_files),
        web.get("/embeddings", embeddings),
        web.get("/system_stats", system_stats),
        web.post("/interrupt", interrupt),
        web.post("/free", free),
        web.get("/features", features),
        web.get("/workflow_templates", workflow_templates),
        web.get("/workflow_templates/{name}", workflow_template),
        web.get("/custom_nodes", custom_nodes),
        web.get("/extensions", extensions),
        web.get("/extensions/{plugin}/{path:.+}", extension_file),
        web.get("/ws", websocket),
    ]


async def index(request: web.Request) -> web.StreamResponse:
    page = request.app[STATE].config.web_dir / "index.html"
    if not page.is_file():
        return json_error(404, "the web editor is not installed")
    return web.FileResponse(page, headers={"Cache-Control": "no-cache"})


async def post_prompt(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await read_json(request)
    prompt = body.get("prompt")
    if not isinstance(prompt, dict) or not prompt:
        return web.json_response({"error": {"type": "no_prompt", "message": "No prompt provided",
                                            "details": "the body needs a 'prompt' object", "extra_info": {}},
                                  "node_errors": {}}, status=400)
    extra_data = body.get("extra_data") or {}
    if not isinstance(extra_data, dict):
        raise web.HTTPBadRequest(text="'extra_data' must be an object")
    targets = body.get("partial_execution_targets")
    if targets is not None:
        targets = _string_list(body, "partial_execution_targets")
    runtime = await state.runtime()
    try:
        api_prompt = to_api_format(prompt, runtime.registry) if is_editor_format(prompt) else prompt
    except WorkflowFormatError as exc:
        return web.json_response({"error": {"type": "invalid_prompt", "message": "Invalid workflow",
                                            "details": str(exc), "extra_info": {}}, "node_errors": {}}, status=400)
    validation = await _in_thread(validate_prompt, api_prompt, runtime.registry, targets)
    if not validation.ok:
        return web.json_response(validation.to_response(), status=400)
    prompt_id = body.get("prompt_id") or str(uuid.uuid4())
    if not isinstance(prompt_id, str) or len(prompt_id) > 200:
        raise web.HTTPBadRequest(text="'prompt_id' must be a string of at most 200 characters")
    if state.store.has_prompt(prompt_id):
        raise web.HTTPBadRequest(text=f"prompt_id {prompt_id!r} is already in the queue or history")
    client_id = body.get("client_id")
    if client_id is not None:
        if not isinstance(client_id, str):
            raise web.HTTPBadRequest(text="'client_id' must be a string")
        extra_data = {**extra_data, "client_id": client_id}
    number = body.get("number")
    if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))):
        raise web.HTTPBadRequest(text="'number' must be a number")
    item = state.store.enqueue(prompt_id, validation.prompt, extra_data, validation.outputs, client_id,
                               front=bool(body.get("front")), number=number)
    state.hub.send("status", {"status": state.worker.status()})
    return web.json_response({"prompt_id": prompt_id, "number": item.as_list()[0],
                              "node_errors": validation.node_errors})


async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].worker.status())


async def get_queue(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    return web.json_response({"queue_running": [item.as_list() for item in store.running()],
                              "queue_pending": [item.as_list() for item in store.pending()]})


async def post_queue(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await read_json(request)
    if body.get("clear"):
        state.store.clear_pending()
    if "delete" in body:
        state.store.delete_pending(_string_list(body, "delete"))
    state.hub.send("status", {"status": state.worker.status()})
    return web.json_response({})


async def get_history(request: web.Request) -> web.Response:
    max_items = _int_query(request, "max_items", None)
    offset = _int_query(request, "offset", -1)
    if max_items is not None and max_items < 0:
        raise web.HTTPBadRequest(text="'max_items' must not be negative")
    return web.json_response(request.app[STATE].store.history(max_items, offset))


async def get_history_item(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].store.history_item(request.match_info["prompt_id"]))


async def post_history(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    body = await read_json(request)
    if body.get("clear"):
        store.clear_history()
    if "delete" in body:
        store.delete_history(_string_list(body, "delete"))
    return web.json_response({})


async def view_file(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    kind = request.query.get("type", "output") or "output"
    if kind not in files.FOLDER_TYPES:
        raise web.HTTPBadRequest(text=f"'type' must be one of {', '.join(files.FOLDER_TYPES)}")
    try:
        path = files.resolve_in_folder(state.folder(kind), request.query.get("subfolder", ""),
                                       request.query.get("filename", ""))
    except UnsafePathError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    if not path.is_file():
        raise web.HTTPNotFound(text="no such file")
    preview = request.query.get("preview")
    channel = request.query.get("channel")
    if preview or channel:
        return await _in_thread(_reencode, path, preview, channel)
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return web.FileResponse(path, headers={"Content-Type": content_type,
                                           "Content-Disposition": f'filename="{path.name}"'})


def _reencode(path: Path, preview: str | None, channel: str | None) -> web.Response:
    """`preview=webp;90` or `jpeg;80` re-encodes; `channel=rgb|a|rgba` picks channels, as ComfyUI's /view."""
    try:
        image = Image.open(path)
        image.load()
    except OSError:
        raise web.HTTPBadRequest(text="the file is not an image") from None
    if channel == "rgb":
        image = image.convert("RGB")
    elif channel == "a":
        image = image.convert("RGBA").getchannel("A")
    elif channel not in (None, "", "rgba"):
        raise web.HTTPBadRequest(text="'channel' must be rgb, a or rgba")
    image_format, quality = "PNG", 90
    if preview:
        name, _, quality_text = preview.partition(";")
        image_format = {"webp": "WEBP", "jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}.get(name.lower(), "")
        if not image_format:
            raise web.HTTPBadRequest(text="'preview' must be webp, jpeg or png, optionally ';quality'")
        quality = int(quality_text) if quality_text.isdigit() else 90
    if image_format == "JPEG":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, quality=quality)
    return web.Response(body=buffer.getvalue(), content_type=f"image/{image_format.lower()}")


async def _read_upload_form(request: web.Request) -> dict[str, Any]:
    if not request.content_type.startswith("multipart/"):
        raise web.HTTPUnsupportedMediaType(text="send the image as multipart/form-data")
    form: dict[str, Any] = {}
    reader = await request.multipart()
    async for part in reader:
        if part.name is None:
            continue
        if part.filename is not None:
            form[part.name] = (part.filename, await part.read(decode=False))
        else:
            form[part.name] = await part.text()
    return form


def _upload_target(state: ServerState, form: dict[str, Any]) -> tuple[str, str, Path]:
    kind = form.get("type") or "input"
    if kind not in files.FOLDER_TYPES:
        raise web.HTTPBadRequest(text=f"'type' must be one of {', '.join(files.FOLDER_TYPES)}")
    try:
        subfolder = files.safe_subfolder(form.get("subfolder") or "")
        folder = files.resolve_in_folder(state.folder(kind), "", subfolder) if subfolder else state.folder(kind)
    except UnsafePathError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return kind, subfolder, folder


def _store_upload(state: ServerState, form: dict[str, Any], data: bytes, filename: str) -> dict[str, str]:
    kind, subfolder, folder = _upload_target(state, form)
    try:
        name = files.safe_upload_name(filename)
    except UnsafePathError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    folder.mkdir(parents=True, exist_ok=True)
    overwrite = str(form.get("overwrite", "")).lower() in ("true", "1")
    if not overwrite and (folder / name).exists() and (folder / name).read_bytes() != data:
        name = files.unique_name(folder, name)
    files.write_atomically(folder / name, data)
    return {"name": name, "subfolder": subfolder, "type": kind}


async def upload_image(request: web.Request) -> web.Response:
    state = request.app[STATE]
    form = await _read_upload_form(request)
    upload = form.get("image")
    if not isinstance(upload, tuple):
        raise web.HTTPBadRequest(text="the form needs an 'image' file field")
    filename, data = upload
    try:
        await _in_thread(files.check_image, data)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return web.json_response(await _in_thread(_store_upload, state, form, data, filename))


async def upload_mask(request: web.Request) -> web.Response:
    state = request.app[STATE]
    form = await _read_upload_form(request)
    upload = form.get("image")
    if not isinstance(upload, tuple):
        raise web.HTTPBadRequest(text="the form needs an 'image' file field (the mask)")
    try:
        reference = json.loads(form.get("original_ref") or "")
        if not isinstance(reference, dict):
            raise ValueError
        original_kind = reference.get("type") or "input"
        if original_kind not in files.FOLDER_TYPES:
            raise ValueError
        original_path = files.resolve_in_folder(state.folder(original_kind), reference.get("subfolder") or "",
                                                reference.get("filename") or "")
    except (ValueError, UnsafePathError):
        raise web.HTTPBadRequest(text="'original_ref' must be JSON {filename, subfolder, type} "
                                      "naming an existing image") from None
    if not original_path.is_file():
        raise web.HTTPBadRequest(text="the original image of the mask does not exist")
    filename, mask_bytes = upload

    def combine() -> bytes:
        original = files.check_image(original_path.read_bytes())
        mask = files.check_image(mask_bytes)
        buffer = io.BytesIO()
        files.apply_mask_to_alpha(original, mask).save(buffer, format="PNG")
        return buffer.getvalue()

    try:
        data = await _in_thread(combine)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return web.json_response(await _in_thread(_store_upload, state, form, data, filename))


async def object_info(request: web.Request) -> web.Response:
    runtime = await request.app[STATE].runtime()
    return web.json_response(await _in_thread(runtime.registry.object_info))


async def object_info_one(request: web.Request) -> web.Response:
    runtime = await request.app[STATE].runtime()
    node_class = request.match_info["node_class"]
    if node_class not in runtime.registry:
        raise web.HTTPNotFound(text=f"no node class {node_class!r}")
    return web.json_response({node_class: await _in_thread(runtime.registry.node_info, node_class)})


async def model_folders(request: web.Request) -> web.Response:
    runtime = await request.app[STATE].runtime()
    return web.json_response(runtime.model_folders())


async def model_files(request: web.Request) -> web.Response:
    runtime = await request.app[STATE].runtime()
    folder = request.match_info["folder"]
    if folder not in runtime.model_folders():
        raise web.HTTPNotFound(text=f"no model folder {folder!r}")
    return web.json_response(await _in_thread(runtime.list_models, folder))


async def embeddings(request: web.Request) -> web.Response:
    runtime = await request.app[STATE].runtime()
    names = await _in_thread(runtime.list_models, "embeddings")
    return web.json_response([name.rsplit(".", 1)[0] for name in names])


async def system_stats(request: web.Request) -> web.Response:
    runtime = await request.app[STATE].runtime()
    return web.json_response(await _in_thread(runtime.system_stats))


async def interrupt(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await read_json(request)
    wanted = body.get("prompt_id")
    if wanted is not None and not isinstance(wanted, str):
        raise web.HTTPBadRequest(text="'prompt_id' must be a string")
    await state.runtime()
    state.worker.interrupt(wanted)
    return web.json_response({})


async def free(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await read_json(request)
    runtime = await state.runtime()
    await _in_thread(runtime.free_memory, bool(body.get("unload_models")), bool(body.get("free_memory")))
    return web.json_response({})


async def features(request: web.Request) -> web.Response:
    return web.json_response(_feature_flags(request.app[STATE]))


def _feature_flags(state: ServerState) -> dict[str, Any]:
    return {"supports_preview_metadata": False, "max_upload_size": state.config.max_upload_bytes}


async def workflow_templates(request: web.Request) -> web.Response:
    """The names of the shipped workflows (API format), for the editor's templates menu."""
    folder = request.app[STATE].config.workflows_dir
    names = sorted(path.stem for path in folder.glob("*.json")) if folder.is_dir() else []
    return web.json_response(names)


async def workflow_template(request: web.Request) -> web.StreamResponse:
    folder = request.app[STATE].config.workflows_dir
    try:
        path = files.resolve_in_folder(folder, "", request.match_info["name"] + ".json")
    except UnsafePathError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    if not path.is_file():
        raise web.HTTPNotFound(text="no such workflow template")
    return web.FileResponse(path, headers={"Content-Type": "application/json"})


async def custom_nodes(request: web.Request) -> web.Response:
    """Every plugin found: name, path, status, load time, error (with traceback), nodes, collisions."""
    runtime = await request.app[STATE].runtime()
    return web.json_response([record.as_dict() for record in runtime.plugins])


async def extensions(request: web.Request) -> web.Response:
    """The JavaScript files plugins expose through WEB_DIRECTORY, for the editor to import at start."""
    runtime = await request.app[STATE].runtime()
    urls = []
    for record in runtime.plugins:
        if record.status == "loaded" and record.web_directory is not None:
            for script in sorted(record.web_directory.rglob("*.js")):
                urls.append(f"/extensions/{record.name}/{script.relative_to(record.web_directory).as_posix()}")
    return web.json_response(urls)


async def extension_file(request: web.Request) -> web.StreamResponse:
    runtime = await request.app[STATE].runtime()
    record = next((r for r in runtime.plugins if r.name == request.match_info["plugin"]
                   and r.status == "loaded" and r.web_directory is not None), None)
    if record is None:
        raise web.HTTPNotFound(text="no such extension")
    try:
        path = files.resolve_in_folder(record.web_directory, "", request.match_info["path"])
    except UnsafePathError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    if not path.is_file():
        raise web.HTTPNotFound(text="no such file")
    content_type = "text/javascript" if path.suffix == ".js" else mimetypes.guess_type(path.name)[0]
    return web.FileResponse(path, headers={"Content-Type": content_type or "application/octet-stream"})


async def websocket(request: web.Request) -> web.WebSocketResponse:
    state = request.app[STATE]
    socket = web.WebSocketResponse(heartbeat=30, max_msg_size=1024 * 1024)
    await socket.prepare(request)
    sid = request.query.get("clientId") or uuid.uuid4().hex
    await socket.send_json({"type": "status", "data": {"status": state.worker.status(), "sid": sid}})
    running = state.worker.current
    if running is not None and running.client_id == sid and state.worker.current_node is not None:
        await socket.send_json({"type": "executing", "data": {"node": state.worker.current_node,
                                                              "prompt_id": running.prompt_id}})
    state.hub.add(sid, socket)
    try:
        first_message = True
        async for message in socket:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(message.data)
            except json.JSONDecodeError:
                continue
            if first_message and isinstance(data, dict) and data.get("type") == "feature_flags":
                await socket.send_json({"type": "feature_flags", "data": _feature_flags(state)})
            first_message = False
    finally:
        state.hub.remove(sid, socket)
    return socket
