"""What ComfyUI plugins reach as `server.PromptServer.instance`: their routes and a way to message clients.

Plugins add routes at import time (`@PromptServer.instance.routes.get("/my-pack/thing")`); those routes are
served behind the same middlewares as ours (Host check, origin check, auth token), through `server.plugin_routes`,
because plugins load in the background after the server already answers. `PromptServer.instance` is a class
attribute only because that is the contract plugins are written against; our own code passes state around.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web

if TYPE_CHECKING:
    from engine.interrupt import InterruptFlag
    from server.state import ServerState


class PromptServer:
    instance: ClassVar["PromptServer | None"] = None

    def __init__(self, state: "ServerState") -> None:
        self._state = state
        self.routes = web.RouteTableDef()

    @property
    def client_id(self) -> str | None:
        """The client that queued the running prompt (None when idle or queued without one)."""
        running = self._state.worker.current if self._state.worker else None
        return running.client_id if running is not None else None

    @property
    def last_node_id(self) -> str | None:
        return self._state.worker.current_node if self._state.worker else None

    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        """Send `{"type": event, "data": data}` to one client (or all); callable from any thread."""
        if isinstance(data, (bytes, bytearray)):
            self._state.hub.send_bytes_from_thread(bytes(data), sid)
        else:
            self._state.hub.send_from_thread(event, data, sid)

    async def send(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    def interrupt_flag(self) -> "InterruptFlag | None":
        future = self._state.runtime_future
        if future.done() and future.exception() is None:
            return future.result().executor.interrupt
        return None
