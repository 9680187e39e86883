"""A real server process with the engine's test nodes: `python -m tests.server.serve_test_nodes BASE_DIR PORT`.

Used by tests that must kill a server for real (persistence across `kill -9`)."""
import sys
from pathlib import Path

from aiohttp import web

from server.app import ServerConfig, create_app
from tests.server.conftest import make_settings, ready_runtime


def main() -> None:
    base, port = Path(sys.argv[1]), int(sys.argv[2])
    settings = make_settings(base)
    app = create_app(settings, ServerConfig(), ready_runtime(settings))
    print(f"Serving on http://127.0.0.1:{port}", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
