import os
import pickle
import time
from pathlib import Path

import pytest
import torch

import nodes.environment as environment_module
import nodes.folder_listings as listings_module
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
from nodes.folder_listings import list_files
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


def _settle(*roots: Path) -> None:
    """Date the folders and every folder in them back, as if they had not changed for a while (a scan that saw a
    very fresh one is not reused)."""
    backdated = time.time_ns() - 60 * 10**9
    for root in roots:
        for directory, _, _ in os.walk(root):
            os.utime(directory, ns=(backdated, backdated))


def _count_scans(monkeypatch) -> list[Path]:
    scanned = []
    scan = listings_module._scan_tree

    def counting_scan(root):
        scanned.append(root)
        return scan(root)

    monkeypatch.setattr(listings_module, "_scan_tree", counting_scan)
    return scanned


def test_listings_are_reused_until_a_scanned_folder_changes(tmp_path, monkeypatch):
    folders = Folders.under(tmp_path)
    folders.create()
    loras = folders.model_dir("loras")
    (loras / "style").mkdir()
    (loras / "style" / "ink.safetensors").write_bytes(b"")
    (loras / "a.safetensors").write_bytes(b"")
    scanned = _count_scans(monkeypatch)
    changes = [(lambda: (loras / "style" / "pencil.safetensors").write_bytes(b""), "style/pencil.safetensors"),
               (lambda: (loras / "new" / "deeper").mkdir(parents=True), None),
               (lambda: (loras / "new" / "deeper" / "b.ckpt").write_bytes(b""), "new/deeper/b.ckpt")]
    listing = ["a.safetensors", "style/ink.safetensors"]
    for change, new_file in changes:
        _settle(loras)
        scanned.clear()
        assert folders.list_models("loras") == listing
        assert folders.list_models("loras") == listing
        assert folders.list_models("loras", (".safetensors", ".ckpt")) == listing
        assert scanned == [loras]
        change()
        listing = sorted(listing + [new_file] if new_file else listing)
        assert folders.list_models("loras") == listing
    _settle(loras)
    assert folders.list_models("loras") == listing
    (loras / "a.safetensors").unlink()
    assert folders.list_models("loras") == listing[1:]


def test_a_folder_changed_moments_ago_is_scanned_again(tmp_path, monkeypatch):
    folders = Folders.under(tmp_path)
    folders.create()
    scanned = _count_scans(monkeypatch)
    assert folders.list_models("vae") == []
    assert folders.list_models("vae") == []
    assert len(scanned) == 2


def test_diffusers_and_input_listings_are_cached_and_follow_changes(tmp_path, monkeypatch):
    folders = Folders.under(tmp_path)
    folders.create()
    pipeline = folders.model_dir("diffusers") / "family" / "tiny"
    pipeline.mkdir(parents=True)
    (pipeline / "model_index.json").write_text("{}")
    (folders.input_dir / "cat.png").write_bytes(b"")
    _settle(folders.model_dir("diffusers"), pipeline.parent, pipeline, folders.input_dir)
    scanned = _count_scans(monkeypatch)
    for _ in range(2):
        assert folders.list_diffusers_models() == ["family/tiny"]
        assert folders.list_input_images() == ["cat.png"]
    assert len(scanned) == 2
    (folders.model_dir("diffusers") / "other").mkdir()
    (folders.model_dir("diffusers") / "other" / "model_index.json").write_text("{}")
    (folders.input_dir / "dog.jpg").write_bytes(b"")
    assert folders.list_diffusers_models() == ["family/tiny", "other"]
    assert folders.list_input_images() == ["cat.png", "dog.jpg"]


def test_a_missing_folder_lists_nothing_until_it_appears(tmp_path):
    folders = Folders.under(tmp_path)
    assert folders.list_models("checkpoints") == [] and folders.list_diffusers_models() == []
    folders.create()
    (folders.model_dir("checkpoints") / "x.safetensors").write_bytes(b"")
    assert folders.list_models("checkpoints") == ["x.safetensors"]


def test_listing_matches_a_plain_rglob_with_hidden_files_and_linked_folders(tmp_path):
    root = tmp_path / "tree"
    (root / "real" / ".hidden_dir").mkdir(parents=True)
    (root / "real" / "a.safetensors").write_bytes(b"")
    (root / "real" / ".hidden.safetensors").write_bytes(b"")
    (root / "real" / ".hidden_dir" / "b.PT").write_bytes(b"")
    (root / "real" / "notes.txt").write_bytes(b"")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "c.ckpt").write_bytes(b"")
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "file_link.ckpt").symlink_to(tmp_path / "elsewhere" / "c.ckpt")
    rglob_listing = sorted(path.relative_to(root).as_posix() for path in root.rglob("*")
                           if path.is_file() and path.suffix.lower() in environment_module.CHECKPOINT_EXTENSIONS
                           and not path.name.startswith("."))
    assert list_files(root, environment_module.CHECKPOINT_EXTENSIONS, follow_links=True) == rglob_listing
    assert rglob_listing == ["file_link.ckpt", "real/.hidden_dir/b.PT", "real/a.safetensors"]
    # without following links, the link out of the folder is left out (see test_model_links.py)
    assert list_files(root, environment_module.CHECKPOINT_EXTENSIONS) == rglob_listing[1:]


def test_folders_with_their_listings_survive_pickling_and_compare_by_paths(tmp_path):
    folders = Folders.under(tmp_path)
    folders.create()
    folders.list_models("checkpoints")
    copy = pickle.loads(pickle.dumps(folders))
    assert copy == folders and hash(copy) == hash(folders)
    assert copy.listings is not folders.listings and copy.list_models("checkpoints") == []
