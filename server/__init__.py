"""The HTTP + websocket server: translates ComfyUI's API onto the engine. No node or diffusion logic here.

Depends on `app` (settings, runtime, the prompt store and queue worker) and `engine` only; never on `nodes`
or `distributed`, and nothing below it (`app`, `engine`, `nodes`) imports it. `serve.py` composes it with
the rest of the program.

`PromptServer`, `BinaryEventTypes` and `web` (aiohttp's) are exported because ComfyUI plugins import them
(`from server import PromptServer`), `PluginApp` for the Ray workers' stand-in. Those names are this package's one
public entry: plugins, `compat` and `distributed` (whose Ray workers stand in for it) import them from here and
never reach into the package's modules.
"""
from aiohttp import web

from server.plugin_api import BinaryEventTypes, PluginApp, PromptServer

__all__ = ["PromptServer", "BinaryEventTypes", "PluginApp", "web"]
