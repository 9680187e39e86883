"""`comfy_api.v0_0_2` for plugins: ComfyUI's API version 0.0.2, the same as `latest` here."""
from comfy_api.latest import ComfyAPI, ComfyAPISync, ComfyExtension, io, ui

__all__ = ["ComfyAPI", "ComfyAPISync", "ComfyExtension", "io", "ui"]
