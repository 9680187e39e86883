"""`comfy_extras.nodes_upscale_model` for plugins: ComfyUI's upscale model nodes (ours, by the same names)."""
from __future__ import annotations

from nodes.upscale import ImageUpscaleWithModel, UpscaleModelLoader

NODE_CLASS_MAPPINGS = {"UpscaleModelLoader": UpscaleModelLoader, "ImageUpscaleWithModel": ImageUpscaleWithModel}
