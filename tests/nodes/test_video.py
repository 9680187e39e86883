"""Video nodes (ComfyUI's CreateVideo, GetVideoComponents, LoadVideo, SaveVideo, SaveWEBM) and the VIDEO value:
frames and audio survive an MP4 round trip, saved files carry the prompt and workflow, re-saving a loaded MP4
copies its streams, and bad input gets errors naming the input."""
import json
import shutil
from fractions import Fraction

import av
import pytest
import torch

import nodes
from app.runtime import build_executor
from engine.cache import OutputCache
from engine.registry import NodeRegistry
from engine.validation import validate_prompt
from nodes import video
from tests.nodes.conftest import validation_errors


def _frames(count: int = 6, height: int = 32, width: int = 48) -> torch.Tensor:
    """Flat colours that change per frame (what lossy H.264 keeps nearly exactly)."""
    levels = torch.linspace(0.1, 0.9, count)
    return torch.stack([torch.stack([torch.full((height, width), level), torch.full((height, width), 1 - level),
                                     torch.full((height, width), 0.5)], dim=-1) for level in levels])


def _tone(seconds: float, rate: int = 16000) -> dict:
    time = torch.arange(int(seconds * rate)) / rate
    wave = 0.5 * torch.sin(2 * torch.pi * 440 * time)
    return {"waveform": torch.stack([wave, -wave]).unsqueeze(0), "sample_rate": rate}


def _run(prompt: dict, extra_pnginfo: dict | None = None):
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    validation = validate_prompt(prompt, registry)
    assert validation.ok and not validation.node_errors, validation.to_response()
    extra = {"extra_pnginfo": extra_pnginfo} if extra_pnginfo else {}
    result = build_executor(registry, OutputCache()).execute(validation.prompt, "p1", extra, validation.outputs)
    assert result.success, result.error
    return result


def test_components_survive_an_mp4_round_trip_with_audio(node_env, tmp_path):
    frames, audio = _frames(), _tone(6 / 12)
    path = tmp_path / "clip.mp4"
    video.VideoFromComponents(video.VideoComponents(frames, Fraction(12), audio)).save_to(
        str(path), metadata={"prompt": {"1": {"class_type": "X"}}})
    loaded = video.VideoFromFile(path)
    assert loaded.get_dimensions() == (48, 32) and loaded.get_frame_rate() == 12 and loaded.get_frame_count() == 6
    assert loaded.get_duration() == pytest.approx(0.5) and loaded.get_container_format().startswith("mov,mp4")
    components = loaded.get_components()
    assert components.images.shape == (6, 32, 48, 3)
    assert (components.images - frames).abs().max() < 0.03  # lossy, but the colours stay
    assert components.audio["sample_rate"] == 16000 and components.audio["waveform"].shape[:2] == (1, 2)
    assert json.loads(components.metadata["prompt"]) == {"1": {"class_type": "X"}}


def test_create_save_load_and_take_apart_through_the_engine(node_env):
    node_env.folders.input_dir.mkdir(parents=True, exist_ok=True)
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 4, "color": 0x3366CC}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "clips/run",
                                                    "format": "auto", "codec": "auto"}},
        "4": {"class_type": "SaveWEBM", "inputs": {"images": ["1", 0], "filename_prefix": "web", "codec": "vp9",
                                                   "fps": 8.0, "crf": 20.0}},
    }
    result = _run(prompt, {"workflow": {"nodes": []}})
    (saved,) = result.outputs["3"]["images"]
    assert saved == {"filename": "run_00001_.mp4", "subfolder": "clips", "type": "output"}
    assert result.outputs["3"]["animated"] == (True,)
    mp4 = node_env.folders.output_dir / "clips" / "run_00001_.mp4"
    with av.open(str(mp4)) as container:
        assert json.loads(container.metadata["workflow"]) == {"nodes": []}
        assert json.loads(container.metadata["prompt"])["2"]["class_type"] == "CreateVideo"
        assert container.streams.video[0].codec_context.name == "h264"
    webm = node_env.folders.output_dir / result.outputs["4"]["images"][0]["filename"]
    with av.open(str(webm)) as container:
        assert container.streams.video[0].codec_context.name == "vp9" and container.streams.video[0].frames in (0, 4)
    assert not list(node_env.folders.output_dir.rglob("*.partial"))

    shutil.copy(mp4, node_env.folders.input_dir / "run.mp4")
    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "run.mp4"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 2]}},
        "5": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "copy", "format": "mp4",
                                                    "codec": "auto"}},
    }
    result = _run(prompt)
    assert len(result.outputs["3"]["images"]) == 4 and result.outputs["4"]["text"] == ["8.0"]
    copy = node_env.folders.output_dir / "copy_00001_.mp4"
    with av.open(str(copy)) as copied, av.open(str(mp4)) as original:
        # a loaded MP4 is saved by copying its packets: the same encoded frames
        assert [bytes(p) for p in copied.demux(video=0) if p.size] == \
            [bytes(p) for p in original.demux(video=0) if p.size]
        assert json.loads(copied.metadata["prompt"])["1"]["class_type"] == "LoadVideo"


def test_bad_video_input_is_named(node_env):
    node_env.folders.input_dir.mkdir(parents=True, exist_ok=True)
    (node_env.folders.input_dir / "notes.mp4").write_text("not a video")
    with pytest.raises(ValueError, match="not a video file"):
        video.VideoFromFile(node_env.folders.input_dir / "notes.mp4").get_components()
    errors = validation_errors({"1": {"class_type": "LoadVideo", "inputs": {"file": "../secret.mp4"}},
                                "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}}})
    assert "outside" in json.dumps(errors["1"])
    with pytest.raises(ValueError, match="even width and height"):
        video.VideoFromComponents(video.VideoComponents(_frames(width=47), Fraction(8))).save_to(
            str(node_env.folders.output_dir / "odd.mp4"))
    with pytest.raises(ValueError, match="frames"):
        video.VideoFromComponents(video.VideoComponents(torch.zeros(2, 8, 8), Fraction(8)))
    with pytest.raises(ValueError, match="'webm'"):
        video.VideoFromComponents(video.VideoComponents(_frames(), Fraction(8))).save_to(
            str(node_env.folders.output_dir / "x.mp4"), format="webm")
