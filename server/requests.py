"""Reading client requests strictly: bounded JSON bodies, typed query parameters, lists of ids."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from server.state import STATE


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


def int_query(request: web.Request, name: str, default: int | None) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise web.HTTPBadRequest(text=f"query parameter {name!r} must be an integer") from None


def string_list(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise web.HTTPBadRequest(text=f"{name!r} must be a list of ids")
    return [str(v) for v in value]


def in_thread(function, *args):
    return asyncio.get_running_loop().run_in_executor(None, function, *args)
