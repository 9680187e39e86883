"""ComfyUI's `comfy_api.input_impl`: VIDEO values made from a file or from frames (nodeflow's `nodes.video`)."""
from nodes.video import VideoFromComponents, VideoFromFile

__all__ = ["VideoFromFile", "VideoFromComponents"]
