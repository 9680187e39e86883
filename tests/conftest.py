"""Shared fixtures: tiny random-weight Stable Diffusion models, built once per test run into a temporary folder,
and node environments that point at them."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with the SD1 demo models (checkpoint, diffusers folder, kohya LoRA) and tiny SD2
    checkpoints (epsilon; v-prediction marked by a `v_pred` key)."""
    from diffusion.families.sd import demo as tiny

    models_dir = tmp_path_factory.mktemp("models")
    tiny.make_demo_models(models_dir)
    tiny.write_checkpoint(tiny.build_tiny_components("sd2", seed=2), models_dir / "checkpoints" / "tiny-sd2.safetensors")
    tiny.write_checkpoint(tiny.build_tiny_components("sd2", seed=3, v_prediction=True),
                          models_dir / "checkpoints" / "tiny-sd2-v.safetensors")
    return models_dir


@pytest.fixture(scope="session")
def shared_model_manager():
    """One model cache for the whole run, so each tiny model file is loaded once."""
    import torch

    from diffusion.manager import ModelManager

    return ModelManager(torch.device("cpu"), torch.float32)


@pytest.fixture
def node_env(tmp_path: Path, tiny_models_dir: Path, shared_model_manager):
    """A CPU/fp32 environment with the tiny models and fresh input/output/temp folders, made current."""
    import torch

    from nodes.environment import Folders, NodeEnvironment, use_environment

    folders = Folders(tiny_models_dir, tmp_path / "input", tmp_path / "output", tmp_path / "temp", tmp_path / "user")
    folders.create()
    environment = NodeEnvironment(folders, torch.device("cpu"), torch.float32, shared_model_manager)
    with use_environment(environment):
        yield environment
