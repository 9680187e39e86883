"""bench/gpu_payload.py's parts that need no package index: a wheel cut in two travels and comes back whole, the
ComfyUI archive leaves out what the snapshot cannot give, the stage folders stay out of git, and the size check
counts what a call carries."""
import subprocess
import tarfile
from pathlib import Path

import pytest

from bench import gpu_payload


def _git(folder: Path, *arguments: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *arguments], cwd=folder, check=True,
                   capture_output=True)


def test_a_wheel_split_in_two_is_joined_byte_for_byte(tmp_path):
    first, second, joined = (tmp_path / name for name in ("first", "second", "joined"))
    for folder in (first, second, joined):
        folder.mkdir()
    wheel = tmp_path / "av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(bytes(range(256)) * 41 + b"odd")
    gpu_payload.split_in_two(wheel, first, second)
    assert {path.name for path in first.iterdir()} == {wheel.name + ".part1"}
    assert {path.name for path in second.iterdir()} == {wheel.name + ".part2"}
    assert gpu_payload.join(first, second, joined) == [joined / wheel.name]
    assert (joined / wheel.name).read_bytes() == wheel.read_bytes()


def test_join_says_which_half_is_missing(tmp_path):
    wheel = tmp_path / "av-1-py3-none-any.whl"
    wheel.write_bytes(b"0123456789")
    gpu_payload.split_in_two(wheel, tmp_path, tmp_path)
    (tmp_path / (wheel.name + ".part2")).unlink()
    with pytest.raises(SystemExit, match="part2 is missing: carry .stage2"):
        gpu_payload.join(tmp_path, tmp_path, tmp_path)
    with pytest.raises(SystemExit, match="run `prepare` on this machine first"):
        gpu_payload.join(tmp_path / "nothing", tmp_path, tmp_path)


def test_comfyui_archive_leaves_out_tests_and_the_llama_tokenizer(tmp_path):
    repository = tmp_path / "ComfyUI"
    for name in ("main.py", "comfy/sd.py", "comfy/text_encoders/llama_tokenizer/tokenizer.json",
                 "comfy/text_encoders/llama_tokenizer/tokenizer_config.json", "tests/test_a.py",
                 "tests-unit/test_b.py"):
        (repository / name).parent.mkdir(parents=True, exist_ok=True)
        (repository / name).write_text(name)
    _git(repository, "init", "-q")
    _git(repository, "add", ".")
    _git(repository, "commit", "-q", "-m", "snapshot")
    archive = tmp_path / "comfyui.tar.xz"
    gpu_payload.comfyui_archive(repository / ".git", archive)
    with tarfile.open(archive) as unpacked:
        files = {member.name for member in unpacked.getmembers() if member.isfile()}
    assert files == {"comfyui/main.py", "comfyui/comfy/sd.py",
                     "comfyui/comfy/text_encoders/llama_tokenizer/tokenizer_config.json"}


def test_stages_are_ignored_once_and_the_tree_size_counts_what_travels(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "tracked.py").write_bytes(b"x" * 100)
    (tmp_path / ".gitignore").write_text("ignored/\n")
    (tmp_path / "ignored").mkdir()
    (tmp_path / "ignored" / "big").write_bytes(b"x" * 5000)
    _git(tmp_path, "add", "tracked.py")
    (tmp_path / "untracked.txt").write_bytes(b"y" * 10)
    exclude = tmp_path / ".git" / "info" / "exclude"
    exclude.write_text("# local\n")
    gpu_payload.ignore_stages(tmp_path)
    gpu_payload.ignore_stages(tmp_path)
    assert exclude.read_text() == "# local\n/.stage1/\n/.stage2/\n"
    (tmp_path / ".stage1").mkdir()
    (tmp_path / ".stage1" / "diffusers.whl").write_bytes(b"z" * 7000)
    assert gpu_payload.working_tree_bytes(tmp_path) == 100 + 10 + len("ignored/\n")  # tracked, untracked, .gitignore


def test_build_refuses_a_folder_that_is_no_git_directory(tmp_path):
    with pytest.raises(SystemExit, match="not a git directory"):
        gpu_payload.build(tmp_path, tmp_path / "ComfyUI", "3.12")
