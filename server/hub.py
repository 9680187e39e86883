"""The websocket clients and the one way to send them messages, from the event loop or any thread.

Messages are ComfyUI's: JSON `{"type", "data"}` text frames, and binary preview frames
(4-byte big-endian event type 1, 4-byte image format 1=JPEG 2=PNG, then the image bytes). A socket whose client
said it supports preview metadata (its first message, ComfyUI's feature flags) gets a preview that comes with
its node and prompt as ComfyUI's type-4 frame instead: 4-byte event type 4, 4-byte length of a JSON object
({node_id, display_node_id, parent_node_id, real_node_id, prompt_id, image_type}), that JSON, the image bytes.
The frame format is the websocket's business, so `jpeg_preview` lives here and queue workers are handed it as
their `PreviewEncoder`.
Everything goes through one outgoing queue drained by one task, so clients see events in the order the
engine emitted them, whichever thread emitted them. One client id may have several sockets (the editor open in
several tabs with the same `clientId`): each of them gets that client's messages.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import struct
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
IMAGE_FORMATS = {"JPEG": 1, "PNG": 2}
_MIME_TYPES = {1: "image/jpeg", 2: "image/png"}


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


def with_metadata(frame: bytes, node_id: str, prompt_id: str) -> bytes:
    """A type-1 preview frame as ComfyUI's type-4 frame for `node_id` of `prompt_id`; other frames as they are."""
    event, image_format = struct.unpack(">II", frame[:8])
    if event != PREVIEW_IMAGE or image_format not in _MIME_TYPES:
        return frame
    metadata = json.dumps({"node_id": node_id, "display_node_id": node_id, "parent_node_id": None,
                           "real_node_id": node_id, "prompt_id": prompt_id,
                           "image_type": _MIME_TYPES[image_format]}).encode("utf-8")
    return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(metadata)) + metadata + frame[8:]


class ClientHub:
    def __init__(self) -> None:
        self.sockets: dict[str, list[web.WebSocketResponse]] = {}
        self.metadata_sockets: set[web.WebSocketResponse] = set()  # those that take type-4 previews
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

    def wants_preview_metadata(self, socket: web.WebSocketResponse) -> None:
        self.metadata_sockets.add(socket)

    def remove(self, sid: str, socket: web.WebSocketResponse) -> None:
        self.metadata_sockets.discard(socket)
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

    def send_bytes_from_thread(self, payload: bytes, sid: str | None, node_id: str | None = None,
                               prompt_id: str | None = None) -> None:
        """Queue a binary frame; a preview given with its node and prompt goes as type 4 where wanted."""
        self._put_threadsafe((_Frame(payload, node_id, prompt_id), sid))

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
                    if isinstance(message, _Frame):
                        await socket.send_bytes(message.for_socket(socket in self.metadata_sockets))
                    else:
                        await socket.send_json(message)
                except (ConnectionError, RuntimeError) as exc:
                    log.debug("dropping a message to %s: %s", target, exc)


class _Frame:
    """A binary frame queued for clients, with the node and prompt of a preview when known."""

    def __init__(self, payload: bytes, node_id: str | None, prompt_id: str | None) -> None:
        self.payload, self.node_id, self.prompt_id = payload, node_id, prompt_id

    def for_socket(self, wants_metadata: bool) -> bytes:
        if wants_metadata and self.node_id is not None and self.prompt_id is not None:
            return with_metadata(self.payload, self.node_id, self.prompt_id)
        return self.payload
