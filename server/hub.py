"""The websocket clients and the one way to send them messages, from the event loop or any thread.

Messages are ComfyUI's: JSON `{"type", "data"}` text frames, and binary preview frames
(4-byte big-endian event type 1, 4-byte image format 1=JPEG 2=PNG, then the image bytes).
"""
from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

PREVIEW_IMAGE = 1
IMAGE_FORMATS = {"JPEG": 1, "PNG": 2}


def preview_frame(image_bytes: bytes, image_format: str = "JPEG") -> bytes:
    return struct.pack(">II", PREVIEW_IMAGE, IMAGE_FORMATS[image_format]) + image_bytes


class ClientHub:
    def __init__(self) -> None:
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def add(self, sid: str, socket: web.WebSocketResponse) -> None:
        self.sockets[sid] = socket

    def remove(self, sid: str, socket: web.WebSocketResponse) -> None:
        if self.sockets.get(sid) is socket:
            del self.sockets[sid]

    async def send(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        """Send to one client, or to all when `sid` is None; a vanished client is skipped."""
        message = {"type": event, "data": data}
        for target, socket in self._targets(sid):
            try:
                await socket.send_json(message)
            except (ConnectionError, RuntimeError) as exc:
                log.debug("dropping message to %s: %s", target, exc)

    async def send_bytes(self, payload: bytes, sid: str | None) -> None:
        for target, socket in self._targets(sid):
            try:
                await socket.send_bytes(payload)
            except (ConnectionError, RuntimeError) as exc:
                log.debug("dropping preview to %s: %s", target, exc)

    def _targets(self, sid: str | None) -> list[tuple[str, web.WebSocketResponse]]:
        if sid is None:
            return list(self.sockets.items())
        socket = self.sockets.get(sid)
        return [(sid, socket)] if socket is not None else []

    def send_from_thread(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        if self.loop is not None and not self.loop.is_closed():
            asyncio.run_coroutine_threadsafe(self.send(event, data, sid), self.loop)

    def send_bytes_from_thread(self, payload: bytes, sid: str | None) -> None:
        if self.loop is not None and not self.loop.is_closed():
            asyncio.run_coroutine_threadsafe(self.send_bytes(payload, sid), self.loop)
