"""Middlewares that make the server safe by default, and JSON errors for every client mistake.

- Requests for a host name the server does not answer to are refused (`HostRule`), so a web page cannot use
  DNS rebinding (its own name made to resolve to 127.0.0.1) to reach the server as if it were the same site.
- Cross-origin requests are refused: a browser page on another site must not queue prompts or read files.
- With an auth token, every route and the websocket require it (`Authorization: Bearer`, or `?token=` for
  the websocket and <img> URLs, which cannot set headers).
- Any HTTP error becomes a JSON body; an unexpected exception becomes a JSON 500 without a traceback.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": {"type": _ERROR_TYPES.get(status, "error"), "message": message, **extra}},
                             status=status)


_ERROR_TYPES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
                500: "server_error"}


def _host_of(value: str) -> str:
    return value.lower().removesuffix(".")


def origin_matches_host(origin: str, host: str | None) -> bool:
    if not host:
        return False
    try:
        parts = urlsplit(origin)
        origin_port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        request = urlsplit(f"//{host}")
        request_port = request.port or origin_port
    except ValueError:  # a port out of range or not a number, an unclosed IPv6 bracket: no match
        return False
    if not parts.hostname or not request.hostname:
        return False
    return _host_of(parts.hostname) == _host_of(request.hostname) and origin_port == request_port


_HOST_HEADER = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[^\s:/?#@\[\]\\]+))(?::(?P<port>[0-9]{1,5}))?")


def host_name(value: str) -> str | None:
    """The host in a Host header (`name`, `name:port`, `[v6]:port`): lowercase, without port or final dot,
    IP addresses in their canonical form; None when the value is malformed."""
    match = _HOST_HEADER.fullmatch(value)
    if match is None or (match["port"] and int(match["port"]) > 65535):
        return None
    if match["ipv6"]:
        try:
            return str(ipaddress.IPv6Address(match["ipv6"]))
        except ValueError:
            return None
    name = _host_of(match["name"])
    try:
        return str(ipaddress.IPv4Address(name))
    except ValueError:
        return name or None


def _configured_host_name(value: str) -> str:
    """A name given on the command line: a bare IP (also IPv6 without brackets) or what a Host header holds."""
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        name = host_name(value)
    if name is None:
        raise ValueError(f"{value!r} is not a host name or IP address")
    return name


def is_loopback(name: str) -> bool:
    try:
        return name == "localhost" or ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HostRule:
    """The Host names the server answers to. A DNS rebinding page sends its own DNS name as Host (the name it
    made resolve to this machine), so a name must be one the server was started for; an IP literal can never
    be rebound (its page's origin is that address), so IPs are accepted wherever the server can be reached.

    - Always: `localhost`, loopback IPs (127.0.0.0/8, ::1), the listen address and every `--allow-host` name.
    - Listening beyond loopback (`--listen`, `--listen 0.0.0.0`, `::` or a LAN address): also any IP literal
      (users reach the machine by its LAN or public address) and the machine's own host name (`mypc`,
      `mypc.local`); any other DNS name needs `--allow-host`.
    """
    names: frozenset[str]
    any_ip: bool

    @classmethod
    def for_listen(cls, listen: str, allowed: Iterable[str] = ()) -> HostRule:
        """The rule for a server bound to `listen`; raises ValueError for a malformed name in `allowed`."""
        listen_name = _configured_host_name(listen)
        names = {"localhost", listen_name, *(_configured_host_name(name) for name in allowed)}
        reachable_from_network = not is_loopback(listen_name)
        if reachable_from_network:
            machine = _host_of(socket.gethostname())
            short = machine.split(".")[0]
            names |= {machine, short, f"{short}.local"}
        return cls(frozenset(names), any_ip=reachable_from_network)

    def allows(self, name: str) -> bool:
        if name in self.names:
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        return self.any_ip or address.is_loopback


def make_host_check(rule: HostRule) -> Callable:
    @web.middleware
    async def host_check(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Host")
        if header:  # browsers always send one: a request without it is no rebinding web page
            name = host_name(header)
            if name is None:
                return json_error(400, f"malformed Host header {header!r}")
            if not rule.allows(name):
                return json_error(403, f"requests for host {name!r} are refused (DNS rebinding protection); "
                                       f"start the server with --allow-host {name} to accept it")
        return await handler(request)
    return host_check


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
