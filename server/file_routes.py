"""Routes that serve and receive user files: /view, /upload/image, /upload/mask (never outside their folders)."""
from __future__ import annotations

import io
import json
import mimetypes
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image

from app import files
from app.files import UnsafePathError
from server.requests import in_thread
from server.state import STATE, ServerState


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
        return await in_thread(_reencode, path, preview, channel)
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
        await in_thread(files.check_image, data)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return web.json_response(await in_thread(_store_upload, state, form, data, filename))


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
        data = await in_thread(combine)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return web.json_response(await in_thread(_store_upload, state, form, data, filename))


ROUTES = [
    web.get("/view", view_file),
    web.post("/upload/image", upload_image),
    web.post("/upload/mask", upload_mask),
]
