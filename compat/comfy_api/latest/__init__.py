"""`comfy_api.latest` for plugins: the V3 node API (`io`, `ui`), extensions (`ComfyExtension`, loaded from a
plugin's `comfy_entrypoint`), `ComfyAPI` / `ComfyAPISync` (`execution.set_progress`) and the value types under
ComfyUI's names (`Input`, `InputImpl`, `Types`: images, masks, audio, latents and nodeflow's VIDEO values)."""
from __future__ import annotations

from abc import ABC, abstractmethod

from comfy_api import input as _input
from comfy_api import input_impl as _input_impl
from comfy_api import util as _util
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


class Input:
    Image = _input.ImageInput
    Audio = _input.AudioInput
    Mask = _input.MaskInput
    Latent = _input.LatentInput
    Video = _input.VideoInput


class InputImpl:
    VideoFromFile = _input_impl.VideoFromFile
    VideoFromComponents = _input_impl.VideoFromComponents


class Types:
    VideoCodec = _util.VideoCodec
    VideoContainer = _util.VideoContainer
    VideoComponents = _util.VideoComponents


comfy_io = io

__all__ = ["ComfyExtension", "ComfyAPI", "ComfyAPISync", "Input", "InputImpl", "Types", "io", "comfy_io", "ui"]
