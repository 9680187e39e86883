"""Video nodes and the VIDEO value, as ComfyUI's (its `comfy_api` video types and image/video nodes): make a video
from frames (and audio), take one apart, load one from the input folder, save one to the output folder.

A VIDEO is a `Video`: `VideoFromComponents` (frames [N, H, W, 3] in 0..1, a frame rate, optional AUDIO
{"waveform": [1, channels, samples], "sample_rate"}) or `VideoFromFile` (a file, decoded only when its frames are
asked for). Encoding and decoding go through PyAV (FFmpeg): MP4 files hold H.264 video and AAC audio, WebM files
VP9 or AV1. Saved files carry the prompt and the workflow as container metadata (JSON values, as ComfyUI writes
them), are written under a temporary name and moved into place complete, and keep SaveImage's naming and re-run
journal.
"""
from __future__ import annotations

import abc
import enum
import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from nodes.environment import current_environment, resolve_inside
from nodes.image import SaveJournal, plan_names, split_prefix, write_file

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v", ".gif")


class VideoContainer(str, enum.Enum):
    """The file formats SaveVideo writes ("auto" is MP4)."""

    AUTO = "auto"
    MP4 = "mp4"

    @classmethod
    def as_input(cls) -> list[str]:
        return [member.value for member in cls]

    @classmethod
    def get_extension(cls, value: str) -> str:
        return "mp4" if cls(value) in (cls.AUTO, cls.MP4) else ""


class VideoCodec(str, enum.Enum):
    """The video codecs SaveVideo writes ("auto" is H.264)."""

    AUTO = "auto"
    H264 = "h264"

    @classmethod
    def as_input(cls) -> list[str]:
        return [member.value for member in cls]


@dataclass
class VideoComponents:
    """A video's parts: frames [N, H, W, 3] in 0..1, frames per second, optional AUDIO and metadata."""

    images: torch.Tensor
    frame_rate: Fraction
    audio: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class Video(abc.ABC):
    """A VIDEO value: its components, its size and length, and `save_to` a file. Subclasses say where the frames
    come from (`get_components`) and how they are written (`save_to`)."""

    @abc.abstractmethod
    def get_components(self) -> VideoComponents:
        """The frames, frame rate and audio."""

    @abc.abstractmethod
    def save_to(self, path: str | Path | BinaryIO, format: str = VideoContainer.AUTO, codec: str = VideoCodec.AUTO,
                metadata: dict[str, Any] | None = None) -> None:
        """Write the video to `path` (a file name or a binary stream) in `format` with `codec`."""

    def get_dimensions(self) -> tuple[int, int]:
        """(width, height)."""
        images = self.get_components().images
        return int(images.shape[2]), int(images.shape[1])

    def get_frame_count(self) -> int:
        return int(self.get_components().images.shape[0])

    def get_frame_rate(self) -> Fraction:
        return Fraction(self.get_components().frame_rate)

    def get_duration(self) -> float:
        """Seconds."""
        return self.get_frame_count() / float(self.get_frame_rate())

    def get_container_format(self) -> str:
        return "mp4"


class VideoFromComponents(Video):
    """A video made of tensors, encoded when saved: H.264 (yuv420p) in MP4, audio as AAC."""

    def __init__(self, components: VideoComponents) -> None:
        images = components.images
        if images.ndim != 4 or images.shape[-1] < 3 or len(images) == 0:
            raise ValueError(f"images: a video needs frames [N, H, W, 3], got shape {tuple(images.shape)}")
        self.components = components

    def get_components(self) -> VideoComponents:
        return VideoComponents(self.components.images, self.components.frame_rate, self.components.audio)

    def save_to(self, path: str | Path | BinaryIO, format: str = VideoContainer.AUTO, codec: str = VideoCodec.AUTO,
                metadata: dict[str, Any] | None = None) -> None:
        if VideoContainer(format) not in (VideoContainer.AUTO, VideoContainer.MP4):
            raise ValueError(f"format: {format!r} is not a format this video can be saved in (mp4)")
        if VideoCodec(codec) not in (VideoCodec.AUTO, VideoCodec.H264):
            raise ValueError(f"codec: {codec!r} is not a codec this video can be saved with (h264)")
        images, audio = self.components.images, self.components.audio
        height, width = int(images.shape[1]), int(images.shape[2])
        if width % 2 or height % 2:
            raise ValueError(f"images: H.264 needs an even width and height, got {width}x{height}")
        import av

        frame_rate = Fraction(round(float(self.components.frame_rate) * 1000), 1000)
        with av.open(path, mode="w", format="mp4", options={"movflags": "use_metadata_tags"}) as output:
            _write_metadata(output, metadata)
            stream = output.add_stream("libx264", rate=frame_rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            audio_stream = None
            if audio is not None:
                audio_stream = output.add_stream("aac", rate=int(audio["sample_rate"]))
            _encode_frames(output, stream, images)
            if audio_stream is not None:
                _encode_audio(output, audio_stream, audio, len(images) / float(frame_rate))


class VideoFromFile(Video):
    """A video file (a path or a binary file object), decoded when its frames are asked for and copied
    stream by stream (no re-encoding) when saved."""

    def __init__(self, file: str | Path | BinaryIO) -> None:
        self.file = str(file) if isinstance(file, Path) else file

    def _open(self) -> Any:
        import av

        if hasattr(self.file, "seek"):
            self.file.seek(0)
        try:
            return av.open(self.file, mode="r")
        except av.error.FFmpegError as error:
            raise ValueError(f"video: {self._name()} is not a video file FFmpeg can read ({error})") from None

    def _name(self) -> str:
        return repr(Path(self.file).name) if isinstance(self.file, str) else "the stream"

    def _video_stream(self, container: Any) -> Any:
        if not container.streams.video:
            raise ValueError(f"video: {self._name()} has no video stream")
        return container.streams.video[0]

    def get_dimensions(self) -> tuple[int, int]:
        with self._open() as container:
            stream = self._video_stream(container)
            return int(stream.codec_context.width), int(stream.codec_context.height)

    def get_frame_rate(self) -> Fraction:
        with self._open() as container:
            stream = self._video_stream(container)
            return Fraction(stream.average_rate or stream.guessed_rate or 1)

    def get_frame_count(self) -> int:
        with self._open() as container:
            stream = self._video_stream(container)
            if stream.frames:
                return int(stream.frames)
            return sum(1 for _ in container.decode(stream))

    def get_container_format(self) -> str:
        with self._open() as container:
            return str(container.format.name)

    def get_components(self) -> VideoComponents:
        with self._open() as container:
            stream = self._video_stream(container)
            frame_rate = Fraction(stream.average_rate or stream.guessed_rate or 1)
            frames = [torch.from_numpy(frame.to_ndarray(format="rgb24")) for frame in container.decode(stream)]
            metadata = dict(container.metadata)
        if not frames:
            raise ValueError(f"video: {self._name()} has no frames")
        images = torch.stack(frames).float() / 255.0
        return VideoComponents(images, frame_rate, self._audio(), metadata)

    def _audio(self) -> dict[str, Any] | None:
        import av

        with self._open() as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            planar = av.AudioResampler(format="fltp", layout=stream.layout, rate=stream.rate)  # [channels, samples]
            chunks = [converted.to_ndarray() for frame in container.decode(stream)
                      for converted in planar.resample(frame)]
            if not chunks:
                return None
            waveform = torch.from_numpy(np.concatenate(chunks, axis=1)).unsqueeze(0)
            return {"waveform": waveform, "sample_rate": int(stream.rate)}

    def save_to(self, path: str | Path | BinaryIO, format: str = VideoContainer.AUTO, codec: str = VideoCodec.AUTO,
                metadata: dict[str, Any] | None = None) -> None:
        VideoContainer(format), VideoCodec(codec)  # a ValueError naming a format or codec we do not write
        with self._open() as source:
            is_mp4 = str(source.format.name).split(",")[0] == "mov"  # FFmpeg's name for the MP4 family
            source_codec = self._video_stream(source).codec_context.name
        if not is_mp4 or (VideoCodec(codec) == VideoCodec.H264 and source_codec != "h264"):
            # another container or codec than the file's: encoded as SaveVideo encodes new videos
            VideoFromComponents(self.get_components()).save_to(path, format, codec, metadata)
            return
        import av

        with self._open() as source:
            with av.open(path, mode="w", format="mp4", options={"movflags": "use_metadata_tags"}) as output:
                _write_metadata(output, metadata)
                streams = {stream: output.add_stream_from_template(stream)
                           for stream in (*source.streams.video[:1], *source.streams.audio[:1])}
                for packet in source.demux(list(streams)):
                    if packet.dts is None:
                        continue  # the flush packet that ends each stream
                    packet.stream = streams[packet.stream]
                    output.mux(packet)


def _write_metadata(output: Any, metadata: dict[str, Any] | None) -> None:
    for key, value in (metadata or {}).items():
        output.metadata[str(key)] = json.dumps(value)


def _encode_frames(output: Any, stream: Any, images: torch.Tensor) -> None:
    import av

    for image in images:
        pixels = (image[..., :3].float() * 255.0).clamp(0, 255).to(torch.uint8).cpu().numpy()
        output.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
    output.mux(stream.encode(None))


def _encode_audio(output: Any, stream: Any, audio: dict[str, Any], seconds: float) -> None:
    """The first batch item of AUDIO, cut to the video's length."""
    import av

    waveform = audio["waveform"]
    if waveform.ndim != 3 or waveform.shape[1] not in (1, 2):
        raise ValueError(f"audio: expected a waveform [batch, 1 or 2 channels, samples], got "
                         f"{tuple(waveform.shape)}")
    samples = waveform[0, :, :math.ceil(seconds * int(audio["sample_rate"]))].float().contiguous().cpu().numpy()
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono" if len(samples) == 1 else "stereo")
    frame.sample_rate, frame.pts = int(audio["sample_rate"]), 0
    output.mux(stream.encode(frame))
    output.mux(stream.encode(None))


def _saved_metadata(prompt: Any, extra_pnginfo: Any) -> dict[str, Any] | None:
    metadata = dict(extra_pnginfo) if isinstance(extra_pnginfo, dict) else {}
    if prompt is not None:
        metadata["prompt"] = prompt
    return metadata or None


def save_video_file(filename_prefix: str, extension: str, write: Any) -> dict[str, Any]:
    """One file `<prefix>_<counter>_.<extension>` in the output folder, written atomically by `write(handle)`,
    with SaveImage's naming and re-run journal; the UI entry that shows it on the node."""
    folders = current_environment().folders
    directory, subfolder, base = split_prefix(folders.output_dir, filename_prefix)
    directory.mkdir(parents=True, exist_ok=True)
    (name,), replace = plan_names(directory, base, 1, f".{extension}", SaveJournal.for_current_node(folders.user_dir))
    written = write_file(directory, name, base, replace, write)
    return {"ui": {"images": [{"filename": written, "subfolder": subfolder, "type": "output"}],
                   "animated": (True,)}}


_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


class CreateVideo:
    DESCRIPTION = "Makes a video from images (and audio) at a frame rate."
    CATEGORY = "image/video"
    RETURN_TYPES = ("VIDEO",)
    FUNCTION = "create"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"images": ("IMAGE", {"tooltip": "The images to create a video from."}),
                             "fps": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0,
                                               "tooltip": "Frames per second."})},
                "optional": {"audio": ("AUDIO", {"tooltip": "The audio to add to the video."})}}

    def create(self, images: torch.Tensor, fps: float, audio: dict[str, Any] | None = None) -> tuple[Video]:
        return (VideoFromComponents(VideoComponents(images, Fraction(fps), audio)),)


class GetVideoComponents:
    DESCRIPTION = "Extracts all components from a video: frames, audio, and frame rate."
    CATEGORY = "image/video"
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("images", "audio", "fps")
    FUNCTION = "components"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"video": ("VIDEO", {"tooltip": "The video to extract components from."})}}

    def components(self, video: Video) -> tuple[torch.Tensor, dict[str, Any] | None, float]:
        components = video.get_components()
        return components.images, components.audio, float(components.frame_rate)


class LoadVideo:
    DESCRIPTION = "Loads a video from the input folder (decoded only when its frames are used)."
    CATEGORY = "image/video"
    RETURN_TYPES = ("VIDEO",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        folders = current_environment().folders
        files = folders.listings.files(folders.input_dir, VIDEO_EXTENSIONS)
        return {"required": {"file": (files, {"video_upload": True, "tooltip": "The video in the input folder."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, file: str) -> bool | str:
        try:
            _input_video(file)
        except ValueError as error:
            return str(error)
        return True

    @classmethod
    def IS_CHANGED(cls, file: str) -> float:
        return _input_video(file).stat().st_mtime  # as ComfyUI: the time, not a hash of a large file

    def load(self, file: str) -> tuple[Video]:
        return (VideoFromFile(_input_video(file)),)


def _input_video(name: str) -> Path:
    return resolve_inside(current_environment().folders.input_dir, name, "file")


class SaveVideo:
    DESCRIPTION = "Saves the video to the output folder, with the prompt and workflow in its metadata."
    CATEGORY = "image/video"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "video": ("VIDEO", {"tooltip": "The video to save."}),
            "filename_prefix": ("STRING", {"default": "video/ComfyUI", "tooltip": (
                "File name prefix; may start with subfolders (a/b/name).")}),
            "format": (VideoContainer.as_input(), {"default": "auto", "tooltip": "The format to save the video as."}),
            "codec": (VideoCodec.as_input(), {"default": "auto", "tooltip": "The codec to use for the video."}),
        }, "hidden": _HIDDEN}

    def save(self, video: Video, filename_prefix: str, format: str, codec: str, prompt: Any = None,
             extra_pnginfo: Any = None) -> dict[str, Any]:
        metadata = _saved_metadata(prompt, extra_pnginfo)
        extension = VideoContainer.get_extension(format)
        return save_video_file(filename_prefix, extension,
                               lambda handle: video.save_to(handle, format, codec, metadata))


class SaveWEBM:
    DESCRIPTION = "Saves the images as a WebM video (VP9 or AV1) in the output folder, with the workflow."
    CATEGORY = "image/video"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    EXPERIMENTAL = True
    FUNCTION = "save"
    ENCODERS = {"vp9": ("libvpx-vp9", "yuv420p"), "av1": ("libsvtav1", "yuv420p10le")}

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The frames, in order."}),
            "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": (
                "File name prefix; may start with subfolders (a/b/name).")}),
            "codec": (list(cls.ENCODERS), {"tooltip": "VP9 (libvpx) or AV1 (SVT-AV1)."}),
            "fps": ("FLOAT", {"default": 24.0, "min": 0.01, "max": 1000.0, "step": 0.01,
                              "tooltip": "Frames per second."}),
            "crf": ("FLOAT", {"default": 32.0, "min": 0, "max": 63.0, "step": 1, "tooltip": (
                "Higher crf means lower quality with a smaller file size, lower crf means higher quality and a "
                "larger file.")}),
        }, "hidden": _HIDDEN}

    def save(self, images: torch.Tensor, filename_prefix: str, codec: str, fps: float, crf: float,
             prompt: Any = None, extra_pnginfo: Any = None) -> dict[str, Any]:
        if images.ndim != 4 or len(images) == 0:
            raise ValueError(f"images: expected a non-empty IMAGE batch, got shape {tuple(images.shape)}")
        encoder, pixel_format = self.ENCODERS[codec]

        def write(handle: BinaryIO) -> None:
            import av

            with av.open(handle, mode="w", format="webm") as output:
                _write_metadata(output, _saved_metadata(prompt, extra_pnginfo))
                stream = output.add_stream(encoder, rate=Fraction(round(fps * 1000), 1000))
                stream.width, stream.height = int(images.shape[-2]), int(images.shape[-3])
                stream.pix_fmt, stream.bit_rate = pixel_format, 0
                stream.options = {"crf": str(int(crf)), **({"preset": "6"} if codec == "av1" else {})}
                _encode_frames(output, stream, images)

        return save_video_file(filename_prefix, "webm", write)


NODE_CLASS_MAPPINGS = {
    "CreateVideo": CreateVideo,
    "GetVideoComponents": GetVideoComponents,
    "LoadVideo": LoadVideo,
    "SaveVideo": SaveVideo,
    "SaveWEBM": SaveWEBM,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "CreateVideo": "Create Video",
    "GetVideoComponents": "Get Video Components",
    "LoadVideo": "Load Video",
    "SaveVideo": "Save Video",
    "SaveWEBM": "SaveWEBM",
}
