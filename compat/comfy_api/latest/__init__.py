"""`comfy_api.latest` for plugins: the V3 node API (`io`, `ui`), extensions (`ComfyExtension`, loaded from a
plugin's `comfy_entrypoint`) and `ComfyAPI` / `ComfyAPISync` (`execution.set_progress`)."""
from __future__ import annotations

from abc import ABC, abstractmethod

from comfy_api.latest import io, ui
from comfy_api.latest.execution import Execution, ExecutionSync


class ComfyExtension(ABC):
    """What a plugin's `async def comfy_entrypoint()` returns: its V3 node classes (and a hook run at load)."""

    async def on_load(self) -> None:
        """Called once, before `get_node_list`."""

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """The extension's node classes."""


class ComfyAPI:
    """ComfyUI's async plugin API object: `await api.execution.set_progress(value, max_value, ...)`."""

    def __init__(self) -> None:
        self.execution = Execution()


class ComfyAPISync:
    """The same API, synchronous: `api.execution.set_progress(value, max_value, ...)`."""

    def __init__(self) -> None:
        self.execution = ExecutionSync()


ComfyAPI_latest = ComfyAPI

__all__ = ["ComfyExtension", "ComfyAPI", "ComfyAPISync", "io", "ui"]
