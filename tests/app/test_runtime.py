"""The real runtime: built-in nodes registered, demo models on first start, model listing, stats, /free."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.runtime import build_runtime
from app.settings import Settings
from engine.cache import CacheEntry
from nodes.environment import use_environment


def settings_for(tmp_path, **overrides):
    values = dict(models_dir=tmp_path / "models", input_dir=tmp_path / "input", output_dir=tmp_path / "output",
                  temp_dir=tmp_path / "temp", user_dir=tmp_path / "user", cache_size=8, cpu=True, threads=1,
                  disable_custom_nodes=True)
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    return build_runtime(settings_for(tmp_path_factory.mktemp("runtime")))


def test_empty_models_folder_gets_the_demo_model(runtime):
    assert runtime.list_models("checkpoints") == ["tiny-sd1.safetensors"]
    assert runtime.list_models("diffusers") == ["tiny-sd1"]
    assert runtime.list_models("loras") == ["tiny-sd1-lora.safetensors"]
    assert runtime.list_models("embeddings") == []
    assert "checkpoints" in runtime.model_folders() and "embeddings" in runtime.model_folders()


def test_no_demo_models_when_disabled(tmp_path):
    runtime = build_runtime(settings_for(tmp_path, demo_models=False))
    assert runtime.list_models("checkpoints") == []


def test_the_model_links_switch_reaches_the_folders(tmp_path):
    import argparse

    from app.settings import add_common_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    assert settings_from_args(parser.parse_args(["--allow-model-links"])).allow_model_links
    assert not settings_from_args(parser.parse_args([])).allow_model_links
    runtime = build_runtime(settings_for(tmp_path, demo_models=False, allow_model_links=True))
    assert runtime.environment.folders.follow_model_links


def test_builtin_nodes_are_registered_like_plugins(runtime):
    for name in ("CheckpointLoaderSimple", "CLIPTextEncode", "KSampler", "VAEDecode", "SaveImage"):
        assert runtime.registry.entry(name).source == "nodes"
    with use_environment(runtime.environment):  # another test may have installed its own default
        info = runtime.registry.node_info("CheckpointLoaderSimple")
    assert info["input"]["required"]["ckpt_name"][0] == ["tiny-sd1.safetensors"]


def test_system_stats_and_free(runtime):
    stats = runtime.system_stats()
    assert stats["system"]["pytorch_version"] and stats["system"]["ram_total"] > 0
    # ComfyUI's fields its frontend reads: the OS as os.name, the versions
    from app import versions

    assert stats["system"]["os"] == os.name and stats["system"]["comfyui_version"] == versions.COMFYUI_VERSION
    assert stats["system"]["required_frontend_version"] == versions.COMFYUI_FRONTEND_VERSION
    assert stats["system"]["installed_templates_version"] == versions.installed_templates_version()
    assert "required_templates_version" in stats["system"]
    assert stats["devices"][0]["type"] == "cpu"
    runtime.executor.cache.put("x", CacheEntry(([1],)))
    runtime.free_memory(unload_models=True, free_memory=True)
    assert len(runtime.executor.cache) == 0


def test_make_demo_models_command_writes_the_editing_models_too(tmp_path, capsys):
    import main

    folders = ["--models-dir", str(tmp_path / "m"), "--user-dir", str(tmp_path / "u"), "--input-dir",
               str(tmp_path / "i"), "--output-dir", str(tmp_path / "o"), "--temp-dir", str(tmp_path / "t")]
    assert main.main(["make-demo-models", *folders]) == 0
    printed = capsys.readouterr().out
    assert "images are noise" in printed
    checkpoints = sorted(p.name for p in (tmp_path / "m" / "checkpoints").iterdir())
    assert "tiny-sd1.safetensors" in checkpoints and len(checkpoints) >= 3
    diffusers = {p.name for p in (tmp_path / "m" / "diffusers").iterdir()}
    assert len(diffusers) >= 6  # SD1, inpainting, InstructPix2Pix, SDXL, SD3, FLUX, unCLIP folders


def test_warm_up_imports_the_model_libraries_in_a_fresh_process():
    code = ("import sys; from app.runtime import Runtime; from types import SimpleNamespace; "
            "assert 'diffusers' not in sys.modules; "
            "Runtime(None, None, None, environment=SimpleNamespace()).warm_up(); "
            "assert 'diffusers.models.unets.unet_2d_condition' in sys.modules; "
            "assert 'transformers.models.clip.modeling_clip' in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-2000:]


def test_default_threads_use_the_usable_cores_unless_omp_num_threads_says(monkeypatch):
    from app import settings
    from app.cpus import usable_cpu_count

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert settings.default_thread_count() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert settings.default_thread_count() == usable_cpu_count()
    monkeypatch.setattr(settings, "usable_cpu_count", lambda: 5)
    assert settings.default_thread_count() == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "auto")  # not a count: ignored
    assert settings.default_thread_count() == 5


def test_read_ahead_starts_reading_the_checkpoints_a_prompt_loads(tmp_path):
    """The first prompt's files are read while the libraries import (`Runtime.read_ahead`): only nodes that can
    (`READ_AHEAD`) with inputs that resolve inside their folders; what nobody takes goes after the prompt."""
    runtime = build_runtime(settings_for(tmp_path))
    reads = runtime.environment.read_ahead
    runtime.read_ahead({
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd1.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
        "3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "../../outside.safetensors"}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "missing.safetensors"}},
        "5": {"class_type": "UNETLoader", "inputs": {"unet_name": ["9", 0], "weight_dtype": "default"}},
        "6": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd1.safetensors", "extra": 1}},
        "7": {"class_type": "NoSuchNode", "inputs": {}},
        "8": "not a node"})
    assert len(reads) == 1
    runtime.release_freed_memory()
    assert len(reads) == 0
