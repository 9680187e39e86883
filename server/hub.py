"""The websocket clients and the one way to send them messages, from the event loop or any thread.

Messages are ComfyUI's: JSON `{"type", "data"}` text frames, and binary preview frames
(4-byte big-endian event type 1, 4-byte image format 1=JPEG 2=PNG, then the image bytes). The frame format
is the websocket's business, so `jpeg_preview` lives here and queue workers are handed it as their
`PreviewEncoder`.
Everything goes through one outgoing queue drained by one task, so clients see events in the order the
engine emitted them, whichever thread emitted them. One client id may have several sockets (the editor open in
several tabs with the same `clientId`): each of them gets that client's messages.
"""
from __future__ import annotations

import asyncio
import io
import logging
import struct
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

PREVIEW_IMAGE = 1
IMAGE_FORMATS = {"JPEG": 1, "PNG": 2}


def preview_frame(image_bytes: bytes, image_format: str = "JPEG") -> bytes:
    return struct.pack(">II", PREVIEW_IMAGE, IMAGE_FORMATS[image_format]) + image_bytes


def jpeg_preview(preview: Any, max_size: int = 512) -> bytes | None:
    """Encode a preview as a ComfyUI binary preview frame. Nodes pass a PIL image, or an object whose
    `to_image()` makes one (so the work is only done when previews are on), or ComfyUI's preview tuple
    `(format, PIL image, max_size)` (ProgressBar, `send_sync`), framed in its own format and size (None: ours);
    anything else is ignored."""
    from PIL import Image

    image_format = "JPEG"
    if isinstance(preview, (tuple, list)) and len(preview) == 3 and str(preview[0]).upper() in IMAGE_FORMATS:
        image_format, size, preview = str(preview[0]).upper(), preview[2], preview[1]
        max_size = int(size) if size is not None else max_size
    image = preview.to_image() if hasattr(preview, "to_image") else preview
    if not isinstance(image, Image.Image):
        return None
    image = image.convert("RGB")
    image.thumbnail((max_size, max_size))
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **({"quality": 80} if image_format == "JPEG" else {}))
    return preview_frame(buffer.getvalue(), image_format)


class ClientHub:
    def __init__(self) -> None:
        self.sockets: dict[str, list[web.WebSocketResponse]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._outgoing: asyncio.Queue | None = None
        self._sender: asyncio.Task | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._outgoing = asyncio.Queue()
        self._sender = asyncio.create_task(self._drain())

    async def stop(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        for sockets in list(self.sockets.values()):
            for socket in list(sockets):
                await socket.close()

    def add(self, sid: str, socket: web.WebSocketResponse) -> None:
        self.sockets.setdefault(sid, []).append(socket)

    def remove(self, sid: str, socket: web.WebSocketResponse) -> None:
        sockets = self.sockets.get(sid, [])
        if socket in sockets:
            sockets.remove(socket)
        if not sockets:
            self.sockets.pop(sid, None)

    def send(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        """Queue a JSON message for one client, or for all when `sid` is None. Call from the event loop."""
        self._outgoing.put_nowait(({"type": event, "data": data}, sid))

    def send_from_thread(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        self._put_threadsafe(({"type": event, "data": data}, sid))

    def send_bytes_from_thread(self, payload: bytes, sid: str | None) -> None:
        self._put_threadsafe((payload, sid))

    def _put_threadsafe(self, item: tuple[Any, str | None]) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._outgoing.put_nowait, item)

    async def _drain(self) -> None:
        while True:
            message, sid = await self._outgoing.get()
            clients = self.sockets.items() if sid is None else [(sid, self.sockets.get(sid, []))]
            targets = [(target, socket) for target, sockets in clients for socket in list(sockets)]
            for target, socket in targets:
                try:
                    if isinstance(message, bytes):
                        await socket.send_bytes(message)
                    else:
                        await socket.send_json(message)
                except (ConnectionError, RuntimeError) as exc:
                    log.debug("dropping a message to %s: %s", target, exc)
