"""`python main.py`: start the HTTP server at once and load the engine (torch, nodes) in the background,
so the port answers within a moment of start and routes that need the engine wait for it."""
from __future__ import annotations

import argparse
import concurrent.futures
import ipaddress
import logging
import sys
import threading

from app.settings import Settings

log = logging.getLogger(__name__)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    server = parser.add_argument_group("server")
    server.add_argument("--listen", nargs="?", const="0.0.0.0", default="127.0.0.1", metavar="IP",
                        help="address to bind (default 127.0.0.1; --listen alone means every interface)")
    server.add_argument("--port", type=int, default=8188)
    server.add_argument("--auth-token", default=None,
                        help="require this token on every route and the websocket (Bearer header or ?token=)")
    server.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="an extra Origin allowed to call the API from a browser (repeatable)")
    server.add_argument("--no-previews", action="store_true", help="do not send latent previews while sampling")
    server.add_argument("--max-upload-mb", type=int, default=100, help="largest accepted upload in MiB")
    server.add_argument("--max-history", type=int, default=10000, help="history entries kept (0 keeps all)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(settings: Settings, args: argparse.Namespace) -> int:
    from aiohttp import web

    from server.app import ServerConfig, create_app

    if not is_loopback(args.listen) and not args.auth_token:
        log.warning("listening on %s without --auth-token: anyone who can reach this port can run prompts "
                    "and read your outputs", args.listen)
    runtime_future: concurrent.futures.Future = concurrent.futures.Future()
    config = ServerConfig(auth_token=args.auth_token, allowed_origins=frozenset(args.allow_origin),
                          max_upload_bytes=args.max_upload_mb * 1024 * 1024, previews=not args.no_previews,
                          max_history=args.max_history)
    app = create_app(settings, config, runtime_future)  # before plugins import: they register routes on it
    threading.Thread(target=_load_runtime, args=(settings, runtime_future), name="engine-loader",
                     daemon=True).start()
    shown_host = "127.0.0.1" if args.listen in ("0.0.0.0", "::") else args.listen
    print(f"Serving on http://{shown_host}:{args.port}", file=sys.stderr, flush=True)
    web.run_app(app, host=args.listen, port=args.port, print=None, access_log=None)
    return 0


def _load_runtime(settings: Settings, future: concurrent.futures.Future) -> None:
    from app.runtime import build_runtime

    try:
        future.set_result(build_runtime(settings))
    except BaseException as exc:
        log.exception("the engine failed to start")
        future.set_exception(exc)
