"""Serving the routes plugins add (`PromptServer.instance.routes`) behind the server's own middlewares: a
catch-all hands every request no built-in route matched to the plugins' router. Knows nothing of plugins
beyond their route table."""
from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

# What answers a GET that neither a built-in nor a plugin route matched (a web root's files), or None
Fallback = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


class PluginRoutes:
    """Dispatches requests that no built-in route matched to the routes plugins registered, then, for GET and
    HEAD, to `fallback` (the web root ComfyUI serves last)."""

    def __init__(self, builtin_routes: list[web.RouteDef], fallback: Fallback | None = None) -> None:
        self._router: web.UrlDispatcher | None = None
        self._builtin = web.UrlDispatcher()
        self._builtin.add_routes(builtin_routes)
        self._fallback = fallback

    def install(self, routes: list[web.AbstractRouteDef]) -> None:
        router = web.UrlDispatcher()
        router.add_routes(routes)
        self._router = router

    async def handle(self, request: web.Request) -> web.StreamResponse:
        match = await self._router.resolve(request) if self._router is not None else None
        if match is None or getattr(match, "http_exception", None) is not None:
            builtin_error = getattr(await self._builtin.resolve(request), "http_exception", None)
            if builtin_error is not None and builtin_error.status == 405:  # a known path, another method
                raise builtin_error
            if self._fallback is not None and request.method in ("GET", "HEAD"):
                response = await self._fallback(request)
                if response is not None:
                    return response
            if match is not None:
                raise match.http_exception
            raise web.HTTPNotFound(text=f"no route {request.path}")
        # aiohttp offers no public way to hand a request the match of a second router; plugin handlers
        # read path parameters from request.match_info, so give a clone of the request the plugin's match.
        match.add_app(request.app)
        match.freeze()
        routed = request.clone()
        routed._match_info = match  # noqa: SLF001
        return await match.handler(routed)
