"""What ComfyUI plugins reach as `server.PromptServer.instance`: their routes, the app, the prompt queue, on-prompt
handlers and a way to message clients.

Plugins add routes at import time (`@PromptServer.instance.routes.get("/my-pack/thing")`, or
`PromptServer.instance.app.add_routes([...])`); those routes are served behind the same middlewares as ours (Host
check, origin check, auth token), through `server.plugin_routes`, because plugins load in the background after the
server already answers. `PromptServer.instance` is a class attribute only because that is the contract plugins are
written against; our own code passes state around.
"""
from __future__ import annotations

import enum
import logging
import struct
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from aiohttp import web

from engine.validation import ValidationResult, validate_prompt
from server.hub import jpeg_preview

if TYPE_CHECKING:
    from engine.interrupt import InterruptFlag
    from server.state import ServerState

log = logging.getLogger(__name__)


class BinaryEventTypes(enum.IntEnum):
    """ComfyUI's binary websocket events (the first 4 bytes of a binary frame, big-endian)."""

    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3
    PREVIEW_IMAGE_WITH_METADATA = 4


class PluginRouter:
    """The part of aiohttp's router plugins call on `PromptServer.instance.app.router`: each call adds a route to
    the plugins' table (served behind our middlewares), never to the server's own router."""

    def __init__(self, add: Callable[[list[web.AbstractRouteDef]], None]) -> None:
        self._add = add

    def add_route(self, method: str, path: str, handler: Callable, **kwargs: Any) -> None:
        self._add([web.route(method, path, handler, **kwargs)])

    def add_get(self, path: str, handler: Callable, **kwargs: Any) -> None:
        self._add([web.get(path, handler, **kwargs)])

    def add_post(self, path: str, handler: Callable, **kwargs: Any) -> None:
        self._add([web.post(path, handler, **kwargs)])

    def add_static(self, prefix: str, path: str, **kwargs: Any) -> None:
        self._add([web.static(prefix, path, **kwargs)])


class PluginApp:
    """`PromptServer.instance.app` as plugins use it: `add_routes` and `router.add_*`. Middlewares, sub-apps and
    signals of the real application are not open to plugins (they would bypass the security checks); asking for
    them raises an AttributeError that says so."""

    def __init__(self, add: Callable[[list[web.AbstractRouteDef]], None]) -> None:
        self._add = add
        self.router = PluginRouter(add)

    def add_routes(self, routes: Any) -> None:
        self._add(list(routes))

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"PromptServer.instance.app.{name} is not available to plugins in nodeflow: plugins "
                             f"add routes with app.add_routes / app.router.add_* or PromptServer.instance.routes")


class PromptQueueView:
    """`PromptServer.instance.prompt_queue`: ComfyUI's PromptQueue methods over our persistent queue. Queue items
    have ComfyUI's shape [number, prompt_id, prompt, extra_data, outputs_to_execute]."""

    def __init__(self, server: "PromptServer") -> None:
        self._server = server

    @property
    def _store(self):
        return self._server._state.store

    def get_current_queue(self) -> tuple[list[list[Any]], list[list[Any]]]:
        """(running items, pending items), each oldest first."""
        return ([item.as_list() for item in self._store.running()],
                [item.as_list() for item in self._store.pending()])

    get_current_queue_volatile = get_current_queue

    @property
    def currently_running(self) -> dict[int, list[Any]]:
        return dict(enumerate(item.as_list() for item in self._store.running()))

    def get_tasks_remaining(self) -> int:
        return self._store.remaining()

    def put(self, item: tuple | list) -> None:
        """Queue (number, prompt_id, prompt, extra_data, outputs_to_execute[, sensitive]) as POST /prompt would,
        after the same validation (a ValueError with the node errors when the prompt is invalid)."""
        number, prompt_id, prompt, extra_data, outputs = tuple(item)[:5]
        validation = self._server.validate(prompt, list(outputs) if outputs else None)
        if not validation.ok:
            raise ValueError(f"prompt_queue.put: prompt {prompt_id} is invalid: {validation.to_response()}")
        extra_data = dict(extra_data or {})
        store = self._store
        store.enqueue(prompt_id, validation.prompt, extra_data, validation.outputs, extra_data.get("client_id"),
                      front=number == float("-inf"), number=None if abs(number) == float("inf") else number)
        self._server._send_status()

    def wipe_queue(self) -> None:
        self._store.clear_pending()
        self._server._send_status()

    def delete_queue_item(self, function: Callable[[list[Any]], bool]) -> bool:
        """Delete the first pending item for which `function(item)` is true; whether one was deleted."""
        for item in self._store.pending():
            if function(item.as_list()):
                deleted = self._store.delete_pending([item.prompt_id]) > 0
                self._server._send_status()
                return deleted
        return False

    def get_history(self, prompt_id: str | None = None, max_items: int | None = None,
                    offset: int = -1) -> dict[str, Any]:
        if prompt_id is not None:
            return self._store.history_item(prompt_id)
        return self._store.history(max_items, offset)

    def wipe_history(self) -> None:
        self._store.clear_history()

    def delete_history_item(self, prompt_id: str) -> None:
        self._store.delete_history([prompt_id])


class PromptServer:
    instance: ClassVar["PromptServer | None"] = None

    def __init__(self, state: "ServerState") -> None:
        self._state = state
        self.routes = web.RouteTableDef()
        self._app_routes: list[web.AbstractRouteDef] = []
        self.app = PluginApp(self._add_app_routes)
        self.prompt_queue = PromptQueueView(self)
        self.on_prompt_handlers: list[Callable[[dict[str, Any]], dict[str, Any]]] = []

    def plugin_routes(self) -> list[web.AbstractRouteDef]:
        """Every route plugins added, through `routes` or through `app`."""
        return [*self.routes, *self._app_routes]

    def _add_app_routes(self, routes: list[web.AbstractRouteDef]) -> None:
        self._app_routes.extend(routes)
        if self._state.runtime_future.done():  # added after start-up: serve it from now on
            self._state.plugin_routes.install(self.plugin_routes())

    @property
    def client_id(self) -> str | None:
        """The client that queued the running prompt (None when idle or queued without one)."""
        running = self._state.worker.current if self._state.worker else None
        return running.client_id if running is not None else None

    @property
    def last_prompt_id(self) -> str | None:
        running = self._state.worker.current if self._state.worker else None
        return running.prompt_id if running is not None else None

    @property
    def last_node_id(self) -> str | None:
        return self._state.worker.current_node if self._state.worker else None

    def add_on_prompt_handler(self, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """`handler(body)` sees (and may rewrite) every POST /prompt body before it is validated."""
        self.on_prompt_handlers.append(handler)

    def trigger_on_prompt(self, body: dict[str, Any]) -> dict[str, Any]:
        """Pass a POST /prompt body through the handlers in order; one that raises is logged and skipped, as in
        ComfyUI, so a faulty pack cannot stop prompts."""
        for handler in self.on_prompt_handlers:
            try:
                changed = handler(body)
            except Exception:  # noqa: BLE001 - a plugin's bug must not refuse the user's prompt
                log.exception("on-prompt handler %r failed and was skipped", handler)
                continue
            if isinstance(changed, dict):
                body = changed
        return body

    def validate(self, prompt: dict[str, Any], targets: list[str] | None = None) -> ValidationResult:
        """Validate an API-format prompt against the running registry (plugins' nodes included)."""
        future = self._state.runtime_future
        if not future.done() or future.exception() is not None:
            raise RuntimeError("the node registry is not loaded yet: prompts can be validated once plugins loaded")
        return validate_prompt(prompt, future.result().registry, targets)

    def send_sync(self, event: Any, data: Any, sid: str | None = None) -> None:
        """Send `{"type": event, "data": data}` to one client (or all); callable from any thread. Binary events
        are framed as ComfyUI frames them: a preview is `(format, PIL image, max_size)` ("JPEG" or "PNG"), text is
        `(node_id, text)`-framed bytes made by `send_progress_text`."""
        if isinstance(event, int) and not isinstance(event, bool):
            self.send_bytes(_binary_frame(int(event), data), sid)
        elif isinstance(data, (bytes, bytearray)):
            self.send_bytes(bytes(data), sid)
        else:
            self.send_event(event, data, sid)

    def send_bytes(self, frame: bytes, sid: str | None) -> None:
        """Where binary frames go (the websocket hub; a Ray worker's stand-in sends them to the head)."""
        self._state.hub.send_bytes_from_thread(frame, sid)

    def send_event(self, event: str, data: Any, sid: str | None) -> None:
        """Where JSON events go (the websocket hub; a Ray worker's stand-in sends them to the head)."""
        self._state.hub.send_from_thread(event, data, sid)

    async def send(self, event: Any, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    def send_progress_text(self, text: str | bytes, node_id: str, sid: str | None = None) -> None:
        """ComfyUI's progress text for a node: binary event 3, the node id's length and the node id, then text."""
        node = str(node_id).encode()
        body = text.encode() if isinstance(text, str) else bytes(text)
        self.send_bytes(struct.pack(">II", BinaryEventTypes.TEXT, len(node)) + node + body,
                        sid if sid is not None else self.client_id)

    def _send_status(self) -> None:
        self.send_event("status", {"status": self._state.worker.status()}, None)

    def interrupt_flag(self) -> "InterruptFlag | None":
        future = self._state.runtime_future
        if future.done() and future.exception() is None:
            return future.result().executor.interrupt
        return None


def _binary_frame(event: int, data: Any) -> bytes:
    """A plugin's binary event as ComfyUI frames it; previews `(format, PIL image, max_size)` are encoded here
    (UNENCODED previews too)."""
    if event in (BinaryEventTypes.PREVIEW_IMAGE, BinaryEventTypes.UNENCODED_PREVIEW_IMAGE) and isinstance(
            data, (tuple, list)):
        frame = jpeg_preview(tuple(data))
        if frame is None:
            raise ValueError("send_sync: a preview must be (\"JPEG\" or \"PNG\", PIL image, max_size)")
        return frame
    if isinstance(data, (bytes, bytearray)):
        return struct.pack(">I", event) + bytes(data)
    raise ValueError(f"send_sync: binary event {event} needs bytes or a (format, image, max_size) preview")


__all__ = ["BinaryEventTypes", "PromptServer", "PluginApp", "PromptQueueView"]
