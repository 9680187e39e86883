"""Middlewares that make the server safe by default, and JSON errors for every client mistake.

- Cross-origin requests are refused: a browser page on another site must not queue prompts or read files.
- With an auth token, every route and the websocket require it (`Authorization: Bearer`, or `?token=` for
  the websocket and <img> URLs, which cannot set headers).
- Any HTTP error becomes a JSON body; an unexpected exception becomes a JSON 500 without a traceback.
"""
from __future__ import annotations

import hmac
import logging
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": {"type": _ERROR_TYPES.get(status, "error"), "message": message, **extra}},
                             status=status)


_ERROR_TYPES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
                500: "server_error"}


def _host_of(value: str) -> str:
    return value.lower().removesuffix(".")


def origin_matches_host(origin: str, host: str | None) -> bool:
    if not host:
        return False
    parts = urlsplit(origin)
    if not parts.hostname:
        return False
    origin_host = _host_of(parts.hostname)
    origin_port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    request = urlsplit(f"//{host}")
    if not request.hostname:
        return False
    request_port = request.port or origin_port
    return origin_host == _host_of(request.hostname) and origin_port == request_port


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.content_type == "application/json":
            raise
        message = exc.reason if exc.text in (None, "", f"{exc.status}: {exc.reason}") else exc.text
        response = json_error(exc.status, message)
        for header in ("Allow", "WWW-Authenticate"):
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal server error (see the server log)")


def make_origin_check(allowed_origins: frozenset[str]) -> Callable:
    @web.middleware
    async def origin_check(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin and origin != "null" and origin not in allowed_origins \
                and not origin_matches_host(origin, request.headers.get("Host")):
            return json_error(403, f"cross-origin request from {origin} refused")
        if origin == "null":
            return json_error(403, "requests from opaque origins are refused")
        return await handler(request)
    return origin_check


AUTH_COOKIE = "nodeflow_token"


def make_auth_check(token: str) -> Callable:
    """Accept the token as a Bearer header, a `?token=` query (then also set as a SameSite=Strict cookie,
    so the editor's own module and image requests carry it) or that cookie."""
    expected = token.encode()

    @web.middleware
    async def auth_check(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        candidates = [header[len("Bearer "):] if header.startswith("Bearer ") else "",
                      request.query.get("token", ""), request.cookies.get(AUTH_COOKIE, "")]
        if not any(hmac.compare_digest(given.encode(), expected) for given in candidates if given):
            response = json_error(401, "authentication required: pass the server's token")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        response = await handler(request)
        if request.query.get("token") and not response.prepared:
            response.set_cookie(AUTH_COOKIE, token, httponly=True, samesite="Strict")
        return response
    return auth_check
