"""Reading client requests strictly: bounded JSON bodies, typed query parameters, lists of ids, and the files
clients name. Whatever a client sends, a mistake becomes a 4xx here, never an exception deeper down."""
from __future__ import annotations

import asyncio
import errno
import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from aiohttp import web

from app import files
from app.files import UnsafePathError
from server.state import STATE

ASCII_INTEGER = re.compile(r"[+-]?[0-9]{1,30}")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON's \ud800 escapes make them; UTF-8, so SQLite, cannot store them
SQLITE_MAX_INTEGER = 2**63 - 1  # what the queue's SQLite database can store; larger numbers overflow there


async def read_json_value(request: web.Request, empty: Any = None) -> Any:
    """The body as any JSON value, read within the JSON size limit; an empty body is `empty` when given, else a 400."""
    limit = request.app[STATE].config.max_json_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if empty is not None and not raw.strip():
        return empty
    try:
        return json.loads(raw)
    except ValueError as exc:  # also numbers too long to convert and bytes that are not text
        raise web.HTTPBadRequest(text=f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise web.HTTPBadRequest(text="the request body is nested too deeply") from None


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (an empty body is {})."""
    body = await read_json_value(request, empty={})
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the request body must be a JSON object")
    return body


def int_query(request: web.Request, name: str, default: int | None, minimum: int, maximum: int) -> int | None:
    """An integer query parameter written in ASCII digits (int() would also take '٩٠' and '1_000')."""
    value = request.query.get(name)
    if value is None or value == "":
        return default
    if not ASCII_INTEGER.fullmatch(value) or not minimum <= int(value) <= maximum:
        raise web.HTTPBadRequest(text=f"query parameter {name!r} must be an integer from {minimum} to {maximum}")
    return int(value)


def is_storable_text(value: Any) -> bool:
    return isinstance(value, str) and not LONE_SURROGATE.search(value)


def string_list(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(is_storable_text(v) or type(v) is int for v in value):
        raise web.HTTPBadRequest(text=f"{name!r} must be a list of ids")
    return [str(v) for v in value]


UNUSABLE_NAME_ERRORS = frozenset({errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ, errno.ELOOP})
TAKEN_NAME_ERRORS = frozenset({errno.ENOTDIR, errno.EISDIR, errno.EEXIST})  # a file where a folder is needed, ...


@contextmanager
def client_path_errors() -> Iterator[None]:
    """Answer 4xx for what a client-named path makes the file system refuse (a name too long for it, a file
    where the path needs a folder); other OS errors are the server's own problem and pass on."""
    try:
        yield
    except UnsafePathError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    except UnicodeError:
        raise web.HTTPBadRequest(text="the path has characters the file system cannot store") from None
    except OSError as exc:
        if exc.errno in UNUSABLE_NAME_ERRORS:
            raise web.HTTPBadRequest(text=f"unusable path: {exc.strerror}") from None
        if exc.errno in TAKEN_NAME_ERRORS:
            raise web.HTTPConflict(text=f"the path is taken by another file or folder: {exc.strerror}") from None
        raise


def existing_file(folder: Path, subfolder: str, filename: str) -> Path | None:
    """The regular file a client names inside `folder`, or None when there is none; 4xx for a name that
    leaves the folder or could never name a file there."""
    with client_path_errors():
        path = files.resolve_in_folder(folder, subfolder, filename)
        return path if path.is_file() else None


def in_thread(function, *args):
    return asyncio.get_running_loop().run_in_executor(None, function, *args)
