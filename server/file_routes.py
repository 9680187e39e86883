"""Routes that serve and receive user files: /view, /upload/image, /upload/mask (never outside their folders)."""
from __future__ import annotations

import io
import json
import mimetypes
import re
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from PIL import Image

from app import files
from server.requests import client_path_errors, existing_file, in_thread
from server.state import STATE, ServerState

PREVIEW_FORMATS = {"webp": "WEBP", "jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}
PREVIEW_QUALITY = re.compile(r"[0-9]{1,3}")
DEFAULT_QUALITY = 90
UPLOAD_FILE_FIELD = "image"  # the one file part of an upload form; every other field is text


async def view_file(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    kind = request.query.get("type", "output") or "output"
    if kind not in files.FOLDER_TYPES:
        raise web.HTTPBadRequest(text=f"'type' must be one of {', '.join(files.FOLDER_TYPES)}")
    path = existing_file(state.folder(kind), request.query.get("subfolder", ""), request.query.get("filename", ""))
    if path is None:
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
    except (OSError, Image.DecompressionBombError):
        raise web.HTTPBadRequest(text="the file is not an image that can be re-encoded") from None
    if channel == "rgb":
        image = image.convert("RGB")
    elif channel == "a":
        image = image.convert("RGBA").getchannel("A")
    elif channel not in (None, "", "rgba"):
        raise web.HTTPBadRequest(text="'channel' must be rgb, a or rgba")
    image_format, quality = _preview_format(preview) if preview else ("PNG", DEFAULT_QUALITY)
    if image_format == "JPEG":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=image_format, quality=quality)
    except (OSError, ValueError) as exc:  # e.g. a CMYK or 32-bit TIFF, which PNG cannot hold
        raise web.HTTPBadRequest(text=f"the image cannot be re-encoded as {image_format}: {exc}") from None
    return web.Response(body=buffer.getvalue(), content_type=f"image/{image_format.lower()}")


def _preview_format(preview: str) -> tuple[str, int]:
    """`webp;80` -> ("WEBP", 80); the quality (ASCII digits, 0 to 100) may be left out."""
    name, _, quality_text = preview.partition(";")
    quality_text = quality_text or str(DEFAULT_QUALITY)
    if name.lower() not in PREVIEW_FORMATS or not PREVIEW_QUALITY.fullmatch(quality_text) or int(quality_text) > 100:
        raise web.HTTPBadRequest(text="'preview' must be webp, jpeg or png, optionally ';quality' (0 to 100)")
    return PREVIEW_FORMATS[name.lower()], int(quality_text)


@dataclass
class UploadForm:
    """A multipart upload: its one file (`image`: name and bytes) and its text fields."""
    filename: str | None = None
    data: bytes = b""
    fields: dict[str, str] = field(default_factory=dict)


async def _read_upload_form(request: web.Request) -> UploadForm:
    if not request.content_type.startswith("multipart/"):
        raise web.HTTPUnsupportedMediaType(text="send the image as multipart/form-data")
    form = UploadForm()
    try:
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                raise web.HTTPBadRequest(text="nested multipart bodies are not accepted")
            if part.name is None:
                continue
            if (part.filename is not None) != (part.name == UPLOAD_FILE_FIELD):
                raise web.HTTPBadRequest(text=f"the form field {part.name!r} must be "
                                              f"{'a file' if part.name == UPLOAD_FILE_FIELD else 'text, not a file'}")
            if part.name == UPLOAD_FILE_FIELD:
                form.filename, form.data = part.filename, bytes(await part.read(decode=False))
            else:
                form.fields[part.name] = await part.text()
    except (ValueError, LookupError, RuntimeError, HttpProcessingError) as exc:  # what a malformed body raises
        raise web.HTTPBadRequest(text=f"malformed multipart body: {exc}") from None
    return form


def _upload_target(state: ServerState, form: UploadForm) -> tuple[str, str, Path]:
    kind = form.fields.get("type") or "input"
    if kind not in files.FOLDER_TYPES:
        raise web.HTTPBadRequest(text=f"'type' must be one of {', '.join(files.FOLDER_TYPES)}")
    subfolder = files.safe_subfolder(form.fields.get("subfolder") or "")
    folder = files.resolve_in_folder(state.folder(kind), "", subfolder) if subfolder else state.folder(kind)
    return kind, subfolder, folder


def _store_upload(state: ServerState, form: UploadForm, data: bytes) -> dict[str, str]:
    with client_path_errors():
        kind, subfolder, folder = _upload_target(state, form)
        name = files.safe_upload_name(form.filename)
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / name).is_dir():
            raise web.HTTPConflict(text=f"there is a folder named {name!r} where the file would go")
        overwrite = form.fields.get("overwrite", "").lower() in ("true", "1")
        if not overwrite and (folder / name).exists() and (folder / name).read_bytes() != data:
            name = files.unique_name(folder, name)
        files.write_atomically(folder / name, data)
    return {"name": name, "subfolder": subfolder, "type": kind}


async def upload_image(request: web.Request) -> web.Response:
    state = request.app[STATE]
    form = await _read_upload_form(request)
    if form.filename is None:
        raise web.HTTPBadRequest(text="the form needs an 'image' file field")
    try:
        await in_thread(files.check_upload, form.data)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return web.json_response(await in_thread(_store_upload, state, form, form.data))


def _mask_original(state: ServerState, form: UploadForm) -> Path:
    """The image a mask belongs to, named by the form's `original_ref`: JSON {filename, subfolder, type}."""
    problem = "'original_ref' must be JSON {filename, subfolder, type} naming an existing image"
    try:
        reference = json.loads(form.fields.get("original_ref") or "")
    except (ValueError, RecursionError):
        raise web.HTTPBadRequest(text=problem) from None
    if not isinstance(reference, dict):
        raise web.HTTPBadRequest(text=problem)
    kind, subfolder = reference.get("type") or "input", reference.get("subfolder") or ""
    filename = reference.get("filename") or ""
    if kind not in files.FOLDER_TYPES or not isinstance(subfolder, str) or not isinstance(filename, str):
        raise web.HTTPBadRequest(text=problem)
    path = existing_file(state.folder(kind), subfolder, filename)
    if path is None:
        raise web.HTTPBadRequest(text="the original image of the mask does not exist")
    return path


async def upload_mask(request: web.Request) -> web.Response:
    state = request.app[STATE]
    form = await _read_upload_form(request)
    if form.filename is None:
        raise web.HTTPBadRequest(text="the form needs an 'image' file field (the mask)")
    original_path = _mask_original(state, form)

    def combine() -> bytes:
        original = files.check_image(original_path.read_bytes())
        mask = files.check_image(form.data)
        buffer = io.BytesIO()
        files.apply_mask_to_alpha(original, mask).save(buffer, format="PNG")
        return buffer.getvalue()

    try:
        data = await in_thread(combine)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return web.json_response(await in_thread(_store_upload, state, form, data))


ROUTES = [
    web.get("/view", view_file),
    web.post("/upload/image", upload_image),
    web.post("/upload/mask", upload_mask),
]
