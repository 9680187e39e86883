"""Saved images appear complete or not at all, and a prompt run again after a crash (the same prompt id, as
recovery re-runs it) replaces what its interrupted run wrote instead of adding files."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.interrupt import InterruptFlag
from engine.progress import NodeRunContext, bind_node_context
from nodes import image as image_module
from nodes.image import SaveImage

PROJECT_DIR = Path(__file__).resolve().parents[2]


def _run_as(prompt_id: str, node_id: str, images: torch.Tensor, prefix: str = "crash/test") -> list[str]:
    context = NodeRunContext(node_id, prompt_id, InterruptFlag(), lambda *args: None)
    with bind_node_context(context):
        return [entry["filename"] for entry in SaveImage().save_images(images, prefix)["ui"]["images"]]


def _pngs(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.suffix == ".png" and not path.name.startswith("."))


def test_a_rerun_after_a_crash_mid_batch_replaces_its_own_files(node_env, monkeypatch):
    images = torch.rand(3, 8, 8, 3)
    written = image_module._write_png
    calls = []

    def crash_on_the_second(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt("the process dies here")
        return written(*args, **kwargs)

    monkeypatch.setattr(image_module, "_write_png", crash_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        _run_as("prompt-1", "9", images)
    folder = node_env.folders.output_dir / "crash"
    assert _pngs(folder) == ["test_00001_.png"]
    monkeypatch.setattr(image_module, "_write_png", written)
    assert _run_as("prompt-1", "9", images) == ["test_00001_.png", "test_00002_.png", "test_00003_.png"]
    assert _pngs(folder) == ["test_00001_.png", "test_00002_.png", "test_00003_.png"]  # nothing added
    saved = np.asarray(Image.open(folder / "test_00001_.png"))
    assert np.array_equal(saved, np.clip(255 * images[0].numpy(), 0, 255).astype(np.uint8))  # the re-run's pixels
    assert _run_as("prompt-2", "9", images[:1]) == ["test_00004_.png"]  # another prompt never replaces


KILLED_WHILE_WRITING = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    from PIL import Image
    from engine.interrupt import InterruptFlag
    from engine.progress import NodeRunContext, bind_node_context
    from nodes.environment import Folders, NodeEnvironment, use_environment
    from nodes.image import SaveImage

    real_save = Image.Image.save
    def save_slowly(self, handle, *args, **kwargs):  # half a PNG on disk, then the process is killed
        handle.write(b"\\x89PNG\\r\\n\\x1a\\n half written")
        handle.flush()
        print("writing", flush=True)
        time.sleep(60)
    Image.Image.save = save_slowly
    folders = Folders.under(Path(sys.argv[1]))
    folders.create()
    environment = NodeEnvironment(folders, torch.device("cpu"), torch.float32)
    with use_environment(environment), bind_node_context(NodeRunContext("9", "prompt-1", InterruptFlag(),
                                                                         lambda *args: None)):
        SaveImage().save_images(torch.rand(1, 8, 8, 3), "test")
""")


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9")
def test_a_kill_during_saving_leaves_no_truncated_image_and_the_rerun_writes_the_same_name(node_env, tmp_path):
    base = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", KILLED_WHILE_WRITING, str(base)], cwd=PROJECT_DIR,
                             stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(PROJECT_DIR), "OMP_NUM_THREADS": "1"})
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    output = base / "output"
    assert _pngs(output) == []  # only a hidden temporary file is left, which listings and /view ignore
    assert len(list(output.glob(".test_00001_.png.*.partial"))) == 1
    from nodes.environment import Folders, NodeEnvironment, use_environment

    folders = Folders.under(base)
    with use_environment(NodeEnvironment(folders, torch.device("cpu"), torch.float32, node_env.models)):
        assert _run_as("prompt-1", "9", torch.rand(1, 8, 8, 3), "test") == ["test_00001_.png"]
    assert sorted(path.name for path in output.iterdir()) == ["test_00001_.png"]  # the leftover is gone too
    Image.open(output / "test_00001_.png").verify()
