"""The aiohttp application: ComfyUI's HTTP routes (also under /api) and the websocket, over the engine.

Handlers only translate: parse and check the request, call the engine/store/runtime, shape the answer.
Client mistakes get a 4xx with a JSON body; nothing here knows about diffusion.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import time
import uuid
from typing import Any, Callable

from aiohttp import WSMsgType, web

from app.prompt_store import PromptStore
from app.prompt_worker import DEFAULT_INTERRUPT_GRACE_S, EventSink, PreviewEncoder, PromptWorker, QueueWorker
from app.settings import Settings
from engine.validation import validate_prompt
from engine.workflow_format import WorkflowFormatError, is_editor_format, to_api_format
from server import catalog_routes, file_routes, internal_routes, jobs_routes, userdata_routes
from server.hub import jpeg_preview
from server.plugin_api import PromptServer
from server.plugin_routes import PluginRoutes
from server.requests import (
    SQLITE_MAX_INTEGER,
    existing_file,
    in_thread,
    int_query,
    is_storable_text,
    read_json,
    string_list,
)
from server.security import json_error, json_errors, make_auth_check, make_host_check, make_origin_check
from server.state import STATE, ServerConfig, ServerState

__all__ = ["ServerConfig", "ServerState", "create_app", "in_process_worker"]

log = logging.getLogger(__name__)

MAX_QUEUE_NUMBER = 2**53  # the queue keeps numbers as SQLite REALs, which tell whole numbers apart up to here


WorkerFactory = Callable[[PromptStore, EventSink, PreviewEncoder, concurrent.futures.Future], QueueWorker]


def in_process_worker(store: PromptStore, sink: EventSink, encode_preview: PreviewEncoder,
                      runtime_future: concurrent.futures.Future,
                      interrupt_grace: float = DEFAULT_INTERRUPT_GRACE_S) -> PromptWorker:
    """The default: one thread of this process runs the queue on the runtime's executor."""
    return PromptWorker(store, lambda: runtime_future.result().executor, sink, encode_preview,
                        warm_up=lambda: runtime_future.result().warm_up(), interrupt_grace=interrupt_grace,
                        after_prompt=lambda: runtime_future.result().release_freed_memory(),
                        read_ahead=lambda prompt: runtime_future.result().read_ahead(prompt))


def create_app(settings: Settings, config: ServerConfig, runtime_future: concurrent.futures.Future,
               worker_factory: WorkerFactory | None = None) -> web.Application:
    """Build the application; the runtime (nodes, torch) may still be loading in `runtime_future`.
    `worker_factory` makes what runs the queue: by default `in_process_worker` with the settings'
    interrupt grace (`distributed.cluster` passes the Ray workers')."""
    if worker_factory is None:
        worker_factory = functools.partial(in_process_worker, interrupt_grace=settings.interrupt_grace)
    middlewares = [json_errors, make_host_check(config.hosts), make_origin_check(config.allowed_origins)]
    if config.auth_token:
        middlewares.append(make_auth_check(config.auth_token))
    app = web.Application(middlewares=middlewares, client_max_size=config.max_upload_bytes)
    store = PromptStore(settings.user_dir / "queue.sqlite3", max_history=config.max_history)
    state = ServerState(settings, config, runtime_future, store)
    routes = _routes()
    state.plugin_routes = PluginRoutes(routes, web_root_file if config.serve_web_root else None)
    state.worker = worker_factory(store, state.hub, jpeg_preview if config.previews else (lambda image: None),
                                  runtime_future)
    app[STATE] = state
    PromptServer.instance = PromptServer(state)  # plugins imported from now on register routes on it
    runtime_future.add_done_callback(lambda _: state.plugin_routes.install(PromptServer.instance.plugin_routes()))
    app.router.add_routes(routes)
    app.router.add_routes([web.route(r.method, "/api" + r.path, r.handler) for r in routes
                           if isinstance(r, web.RouteDef) and r.path != "/"])
    app.router.add_get("/web/{path:.+}", editor_file)
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
    state.logs.sender = lambda client_id, data: state.hub.send_from_thread("logs", data, client_id)
    logging.getLogger().addHandler(state.logs)
    state.worker.start()


async def _stop(app: web.Application) -> None:
    state = app[STATE]
    logging.getLogger().removeHandler(state.logs)
    await asyncio.get_running_loop().run_in_executor(None, state.worker.stop)
    await state.hub.stop()
    state.store.close()


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
        web.post("/interrupt", interrupt),
        web.post("/free", free),
        web.get("/features", features),
        web.get("/ws", websocket),
        *file_routes.ROUTES,
        *catalog_routes.ROUTES,
        *userdata_routes.ROUTES,  # ComfyUI's frontend: users, settings, user data files (#20)
        *internal_routes.ROUTES,  # ComfyUI's frontend: folders, model library, metadata, translations (#20)
        *jobs_routes.ROUTES,  # ComfyUI's jobs API: the queue and history as jobs (#20)
    ]


async def index(request: web.Request) -> web.StreamResponse:
    page = request.app[STATE].config.web_dir / "index.html"
    if not page.is_file():
        return json_error(404, "the web editor is not installed")
    return web.FileResponse(page, headers={"Cache-Control": "no-cache"})


async def web_root_file(request: web.Request) -> web.StreamResponse | None:
    """A file of the served frontend's folder at its own path (the official frontend's assets, scripts and core
    extensions); None when there is none."""
    path = existing_file(request.app[STATE].config.web_dir, "", request.path.lstrip("/"))
    return None if path is None else web.FileResponse(path)


async def editor_file(request: web.Request) -> web.StreamResponse:
    """The editor's modules and styles (a missing one is a JSON 404, as on every other route)."""
    path = existing_file(request.app[STATE].config.web_dir, "", request.match_info["path"])
    if path is None:
        raise web.HTTPNotFound(text="no such editor file")
    return web.FileResponse(path)


async def post_prompt(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await read_json(request)
    if PromptServer.instance is not None:  # plugins' on-prompt handlers may rewrite the body (ComfyUI's contract)
        body = await in_thread(PromptServer.instance.trigger_on_prompt, body)
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
        targets = string_list(body, "partial_execution_targets")
    runtime = await state.runtime()
    try:
        api_prompt = to_api_format(prompt, runtime.registry) if is_editor_format(prompt) else prompt
    except WorkflowFormatError as exc:
        return web.json_response({"error": {"type": "invalid_prompt", "message": "Invalid workflow",
                                            "details": str(exc), "extra_info": {}}, "node_errors": {}}, status=400)
    validation = await in_thread(validate_prompt, api_prompt, runtime.registry, targets)
    if not validation.ok:
        return web.json_response(validation.to_response(), status=400)
    prompt_id = body.get("prompt_id") or str(uuid.uuid4())
    if not is_storable_text(prompt_id) or len(prompt_id) > 200:
        raise web.HTTPBadRequest(text="'prompt_id' must be a string of at most 200 characters")
    if state.store.has_prompt(prompt_id):
        raise web.HTTPBadRequest(text=f"prompt_id {prompt_id!r} is already in the queue or history")
    extra_data = {**extra_data, "create_time": int(time.time() * 1000)}  # ComfyUI's; the jobs API sorts by it
    client_id = body.get("client_id")
    if client_id is not None:
        if not is_storable_text(client_id):
            raise web.HTTPBadRequest(text="'client_id' must be a string")
        extra_data = {**extra_data, "client_id": client_id}
    number = body.get("number")
    if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))
                               or not -MAX_QUEUE_NUMBER <= number <= MAX_QUEUE_NUMBER):
        raise web.HTTPBadRequest(text=f"'number' must be a number from {-MAX_QUEUE_NUMBER} to {MAX_QUEUE_NUMBER}")
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
        state.store.delete_pending(string_list(body, "delete"))
    state.hub.send("status", {"status": state.worker.status()})
    return web.json_response({})


async def get_history(request: web.Request) -> web.Response:
    max_items = int_query(request, "max_items", None, 0, SQLITE_MAX_INTEGER)
    offset = int_query(request, "offset", -1, -SQLITE_MAX_INTEGER, SQLITE_MAX_INTEGER)
    return web.json_response(request.app[STATE].store.history(max_items, offset))


async def get_history_item(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].store.history_item(request.match_info["prompt_id"]))


async def post_history(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    body = await read_json(request)
    if body.get("clear"):
        store.clear_history()
    if "delete" in body:
        store.delete_history(string_list(body, "delete"))
    return web.json_response({})


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
    await in_thread(runtime.free_memory, bool(body.get("unload_models")), bool(body.get("free_memory")))
    return web.json_response({})


async def features(request: web.Request) -> web.Response:
    return web.json_response(_feature_flags(request.app[STATE]))


def _feature_flags(state: ServerState) -> dict[str, Any]:
    return {"supports_preview_metadata": True, "max_upload_size": state.config.max_upload_bytes}


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
            except (ValueError, RecursionError):  # not JSON, or nested too deeply to parse: not for us
                continue
            if first_message and isinstance(data, dict) and data.get("type") == "feature_flags":
                flags = data.get("data")
                if isinstance(flags, dict) and flags.get("supports_preview_metadata") is True:
                    state.hub.wants_preview_metadata(socket)
                await socket.send_json({"type": "feature_flags", "data": _feature_flags(state)})
            first_message = False
    finally:
        state.hub.remove(sid, socket)
    return socket
