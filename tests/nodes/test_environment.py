from pathlib import Path

import pytest
import torch

from nodes.environment import (
    Folders,
    NodeEnvironment,
    cpu_computes_bf16_natively,
    current_environment,
    pick_device,
    pick_dtype,
    resolve_inside,
    set_default_environment,
    use_environment,
)
from nodes.loaders import CheckpointLoaderSimple


def _environment(base: Path) -> NodeEnvironment:
    folders = Folders.under(base)
    folders.create()
    return NodeEnvironment(folders, torch.device("cpu"), torch.float32)


def test_folders_layout_and_listing(tmp_path):
    folders = Folders.under(tmp_path)
    folders.create()
    for kind in ("checkpoints", "diffusers", "loras", "vae"):
        assert (tmp_path / "models" / kind).is_dir()
    (folders.model_dir("checkpoints") / "sub").mkdir()
    (folders.model_dir("checkpoints") / "sub" / "b.safetensors").write_bytes(b"")
    (folders.model_dir("checkpoints") / "a.ckpt").write_bytes(b"")
    (folders.model_dir("checkpoints") / "notes.txt").write_bytes(b"")
    assert folders.list_models("checkpoints") == ["a.ckpt", "sub/b.safetensors"]
    with pytest.raises(ValueError, match="unknown model folder kind"):
        folders.model_dir("unets")


def test_two_environments_coexist_and_combos_follow_the_current_one(tmp_path):
    first, second = _environment(tmp_path / "one"), _environment(tmp_path / "two")
    (first.folders.model_dir("checkpoints") / "first.safetensors").write_bytes(b"")
    (second.folders.model_dir("checkpoints") / "second.safetensors").write_bytes(b"")
    with use_environment(first):
        assert CheckpointLoaderSimple.INPUT_TYPES()["required"]["ckpt_name"][0] == ["first.safetensors"]
        with use_environment(second):
            assert current_environment() is second
            assert CheckpointLoaderSimple.INPUT_TYPES()["required"]["ckpt_name"][0] == ["second.safetensors"]
        assert current_environment() is first
    assert first.models is not second.models


def test_default_environment_applies_outside_use_blocks(tmp_path):
    environment = _environment(tmp_path)
    set_default_environment(environment)
    assert current_environment() is environment


def test_resolve_inside_refuses_escapes_and_missing_files(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"")
    assert resolve_inside(tmp_path, "ok.png", "image") == (tmp_path / "ok.png").resolve()
    with pytest.raises(ValueError, match="image: '../x.png' points outside"):
        resolve_inside(tmp_path, "../x.png", "image")
    with pytest.raises(ValueError, match="image: 'missing.png' not found"):
        resolve_inside(tmp_path, "missing.png", "image")


def test_cpu_switch_gives_cpu_and_fp32_or_native_bf16(monkeypatch):
    device = pick_device(force_cpu=True)
    assert device.type == "cpu"
    expected = torch.bfloat16 if cpu_computes_bf16_natively() else torch.float32
    assert pick_dtype(device) == expected
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert pick_dtype(device) == torch.float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert pick_dtype(device) == torch.bfloat16
