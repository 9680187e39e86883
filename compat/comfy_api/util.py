"""ComfyUI's `comfy_api.util`: the video container and codec choices and a video's components (`nodes.video`)."""
from nodes.video import VideoCodec, VideoComponents, VideoContainer

__all__ = ["VideoContainer", "VideoCodec", "VideoComponents"]
