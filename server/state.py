"""The server's configuration and the state its handlers share (one `ServerState` per application)."""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from app.log_ring import LogRing
from app.prompt_store import PromptStore
from app.prompt_worker import QueueWorker
from app.runtime import Runtime
from app.settings import PROJECT_DIR, Settings
from server.hub import ClientHub
from server.plugin_routes import PluginRoutes
from server.security import HostRule

log = logging.getLogger(__name__)

WEB_DIR = PROJECT_DIR / "web"
WORKFLOWS_DIR = PROJECT_DIR / "workflows"


@dataclass(frozen=True)
class ServerConfig:
    auth_token: str | None = None
    allowed_origins: frozenset[str] = frozenset()
    hosts: HostRule = field(default_factory=lambda: HostRule.for_listen("127.0.0.1"))  # Host names answered
    max_upload_bytes: int = 100 * 1024 * 1024
    max_json_bytes: int = 20 * 1024 * 1024
    previews: bool = True
    max_history: int = 10000
    web_dir: Path = WEB_DIR
    workflows_dir: Path = WORKFLOWS_DIR
    multi_user: bool = False  # ComfyUI's --multi-user: the comfy-user header picks the user folder
    # the frontend's files: web_dir is served at / and, with the official frontend, every path no route answers
    # (its assets, scripts and core extensions), as ComfyUI serves its web root
    serve_web_root: bool = False


@dataclass
class ServerState:
    settings: Settings
    config: ServerConfig
    runtime_future: concurrent.futures.Future
    store: PromptStore
    hub: ClientHub = field(default_factory=ClientHub)
    worker: QueueWorker | None = None
    plugin_routes: PluginRoutes | None = None
    logs: LogRing = field(default_factory=LogRing)  # the recent log lines, for the frontend's terminal panel

    async def runtime(self) -> Runtime:
        try:
            return await asyncio.wrap_future(self.runtime_future)
        except Exception as exc:
            log.exception("the engine failed to start")
            raise web.HTTPServiceUnavailable(text=f"the engine failed to start: {exc}") from None

    def folder(self, kind: str) -> Path:
        return {"output": self.settings.output_dir, "input": self.settings.input_dir,
                "temp": self.settings.temp_dir}[kind]


STATE = web.AppKey("state", ServerState)
