"""`python main.py`: start the HTTP server at once and load the engine (torch, nodes) in the background,
so the port answers within a moment of start and routes that need the engine wait for it.

The composition root next to `main.py`: the one place that puts `server` (HTTP), `app` (the runtime) and,
with `--workers` or `--ray-address`, `distributed` (Ray) together. It lives outside those packages so that
none of them imports another against the layering (`app` knows neither `server` nor `distributed`).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import logging
import sys
import threading
from typing import TYPE_CHECKING

from app.frontends import COMFYUI, FRONT_ENDS, NODEFLOW, FrontendMissing, official_frontend_dir
from app.settings import Settings

if TYPE_CHECKING:
    from distributed.cluster import Cluster

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
    server.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="a host name the server answers to besides localhost, loopback IPs and the listen "
                             "address (repeatable), e.g. the name of a reverse proxy; requests for other DNS names "
                             "are refused against DNS rebinding. With --listen beyond loopback, any IP address and "
                             "this machine's host name are accepted too")
    server.add_argument("--no-previews", action="store_true", help="do not send latent previews while sampling")
    server.add_argument("--max-upload-mb", type=int, default=100, help="largest accepted upload in MiB")
    server.add_argument("--max-history", type=int, default=10000, help="history entries kept (0 keeps all)")
    server.add_argument("--front-end", choices=FRONT_ENDS, default=NODEFLOW,
                        help="the browser frontend served at /: nodeflow's editor (default) or comfyui, ComfyUI's "
                             "official frontend (requirements-frontend.txt; `bash scripts/start.sh --front-end "
                             "comfyui` installs it)")
    server.add_argument("--multi-user", action="store_true",
                        help="ComfyUI's per-user data: users listed in <user dir>/users.json, each with its own "
                             "folder and settings, chosen by the client's comfy-user header")
    cluster = parser.add_argument_group("cluster (Ray workers run the queue; without these flags Ray is not used)")
    cluster.add_argument("--workers", type=int, default=None, metavar="N",
                         help="start a local Ray runtime with N workers: one GPU each where there are GPUs, "
                              "else CPU workers; with --ray-address, how many workers to place on the cluster "
                              "(default: one per GPU, or one CPU worker)")
    cluster.add_argument("--ray-address", default=None, metavar="ADDRESS",
                         help="join this Ray cluster (host:port of its head, or 'auto') instead of starting one")
    cluster.add_argument("--worker-timeout", type=float, default=60.0, metavar="SECONDS",
                         help="a worker that answers no heartbeat for this long is restarted (default 60)")


def serve(settings: Settings, args: argparse.Namespace) -> int:
    from aiohttp import web

    from server.app import ServerConfig, create_app
    from server.security import HostRule, is_loopback

    try:
        hosts = HostRule.for_listen(args.listen, args.allow_host)
    except ValueError as error:
        raise SystemExit(f"--listen/--allow-host: {error}") from error
    if not is_loopback(args.listen) and not args.auth_token:
        log.warning("listening on %s without --auth-token: anyone who can reach this port can run prompts "
                    "and read your outputs", args.listen)
    frontend = {}
    if args.front_end == COMFYUI:
        try:
            frontend = {"web_dir": official_frontend_dir(), "serve_web_root": True}
        except FrontendMissing as error:
            raise SystemExit(str(error)) from None
    runtime_future: concurrent.futures.Future = concurrent.futures.Future()
    config = ServerConfig(auth_token=args.auth_token, allowed_origins=frozenset(args.allow_origin), hosts=hosts,
                          max_upload_bytes=args.max_upload_mb * 1024 * 1024, previews=not args.no_previews,
                          max_history=args.max_history, multi_user=args.multi_user, **frontend)
    cluster = _cluster(settings, args)
    app = create_app(settings, config, runtime_future,  # before plugins import: they register routes on it
                     cluster.queue_worker if cluster is not None else None)
    threading.Thread(target=_load_runtime, args=(settings, runtime_future, cluster), name="engine-loader",
                     daemon=True).start()
    shown_host = "127.0.0.1" if args.listen in ("0.0.0.0", "::") else args.listen
    print(f"Serving on http://{shown_host}:{args.port}", file=sys.stderr, flush=True)
    web.run_app(app, host=args.listen, port=args.port, print=None, access_log=None)
    return 0


def _cluster(settings: Settings, args: argparse.Namespace) -> "Cluster | None":
    """Cluster mode's wiring when --workers or --ray-address is given; Ray is imported only then."""
    if args.workers is None and args.ray_address is None:
        return None
    if args.workers is not None and args.workers < 1:
        raise SystemExit("--workers must be 1 or more")
    if importlib.util.find_spec("ray") is None:
        raise SystemExit("--workers and --ray-address need Ray: .venv/bin/pip install ray==2.60.0")
    from distributed.cluster import Cluster
    from distributed.pool import ClusterOptions

    return Cluster(settings, ClusterOptions(workers=args.workers, address=args.ray_address,
                                            worker_timeout=args.worker_timeout))


def _load_runtime(settings: Settings, future: concurrent.futures.Future, cluster: "Cluster | None") -> None:
    from app.runtime import build_runtime

    try:
        runtime = build_runtime(settings)
        future.set_result(cluster.start(runtime) if cluster is not None else runtime)
    except BaseException as exc:
        log.exception("the engine failed to start")
        future.set_exception(exc)
