"""The HTTP + websocket server: translates ComfyUI's API onto the engine. No node or diffusion logic here.

Depends on `app` (settings, runtime, the prompt store and queue worker) and `engine` only; never on `nodes`
or `distributed`, and nothing below it (`app`, `engine`, `nodes`) imports it. `serve.py` composes it with
the rest of the program.

`PromptServer` is exported because ComfyUI plugins import it as `from server import PromptServer`. That name
is this package's one public entry: plugins, `compat` and `distributed` (whose Ray workers stand in for it)
import it from here and never reach into the package's modules.
"""
from server.plugin_api import PromptServer

__all__ = ["PromptServer"]
