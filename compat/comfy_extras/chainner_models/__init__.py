"""`comfy_extras.chainner_models` for plugins: ComfyUI's old upscale model loading, now spandrel's."""
