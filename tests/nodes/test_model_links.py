"""Symbolic links in the models folder: one that leads outside is neither listed nor loaded unless links are
allowed (`--allow-model-links`), so validation and loading agree, and the error says why."""
import os

import pytest
import torch

from diffusion.families.sd.demo import DEMO_CHECKPOINT
from nodes.environment import Folders, NodeEnvironment, resolve_inside, use_environment
from nodes.loaders import CheckpointLoaderSimple

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink"), reason="symbolic links")


@pytest.fixture
def linked(tmp_path, tiny_models_dir):
    """A models folder whose checkpoints are links: one to a file elsewhere, one to a file inside it."""
    folders = Folders.under(tmp_path / "base")
    folders.create()
    elsewhere = tmp_path / "other-disk"
    elsewhere.mkdir()
    (elsewhere / "outside.safetensors").write_bytes((tiny_models_dir / "checkpoints" / DEMO_CHECKPOINT).read_bytes())
    checkpoints = folders.model_dir("checkpoints")
    (checkpoints / "outside.safetensors").symlink_to(elsewhere / "outside.safetensors")
    (checkpoints / "real.safetensors").write_bytes(b"x")
    (checkpoints / "inside.safetensors").symlink_to(checkpoints / "real.safetensors")
    return folders


def test_links_out_of_the_folder_are_not_listed_nor_loaded_by_default(linked, caplog):
    assert linked.list_models("checkpoints") == ["inside.safetensors", "real.safetensors"]
    assert "outside.safetensors is a link to" in caplog.text and "--allow-model-links" in caplog.text
    with pytest.raises(ValueError, match=r"ckpt_name: 'outside.safetensors' is a link to .*outside.safetensors, "
                                         r"outside .*checkpoints; start with --allow-model-links"):
        linked.model_file("checkpoints", "outside.safetensors", "ckpt_name")
    assert linked.model_file("checkpoints", "inside.safetensors", "ckpt_name").name == "real.safetensors"


def test_allowed_links_are_listed_and_load(linked, shared_model_manager):
    allowed = Folders(linked.models_dir, linked.input_dir, linked.output_dir, linked.temp_dir, linked.user_dir,
                      follow_model_links=True)
    assert "outside.safetensors" in allowed.list_models("checkpoints")
    with use_environment(NodeEnvironment(allowed, torch.device("cpu"), torch.float32, shared_model_manager)):
        model, clip, vae = CheckpointLoaderSimple().load_checkpoint("outside.safetensors")
    assert model.family == "sd"


def test_names_never_escape_even_when_links_are_followed(linked):
    for name in ("../../outside.safetensors", "/etc/passwd", "sub/../../x"):
        with pytest.raises(ValueError, match="points outside"):
            resolve_inside(linked.model_dir("checkpoints"), name, "ckpt_name", follow_links=True)


def test_links_out_of_the_input_folder_are_never_followed(linked, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"x")
    (linked.input_dir / "innocent.png").symlink_to(secret)
    assert linked.list_input_images() == []
    with pytest.raises(ValueError, match="is a link to .*, which is not followed"):
        resolve_inside(linked.input_dir, "innocent.png", "image")
