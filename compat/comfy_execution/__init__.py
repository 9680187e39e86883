"""ComfyUI's `comfy_execution` control-flow helpers, re-exported from the engine."""
