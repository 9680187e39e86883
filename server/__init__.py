"""The HTTP + websocket server: translates ComfyUI's API onto the engine. No node or diffusion logic here.

`PromptServer` is exported because ComfyUI plugins import it as `from server import PromptServer`.
"""
from server.plugin_api import PromptServer

__all__ = ["PromptServer"]
