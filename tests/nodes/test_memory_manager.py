"""The model manager's memory budget: LRU eviction, pinning, /free, sizes for /system_stats, the output cache kept
consistent with evictions, a prompt needing two models over the budget, and the device/dtype/budget flags."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pytest
import torch

from diffusion.components import Vae
from diffusion.loading import load_checkpoint
from diffusion.manager import ModelManager
from diffusion.memory import MemoryBudget, parse_memory_size, size_in_bytes
from engine.cache import CacheEntry, OutputCache

LINEAR_BYTES = (100 * 100 + 100) * 4  # torch.nn.Linear(100, 100) in fp32


def cpu_manager(budget_bytes: int | None) -> ModelManager:
    budget = MemoryBudget({"cpu": budget_bytes}) if budget_bytes is not None else None
    return ModelManager(torch.device("cpu"), torch.float32, budget)


@pytest.fixture
def files(tmp_path):
    """Three tiny model files, keyed by name; the loaders below build a 40 kB module for each."""
    paths = {}
    for name in "abc":
        paths[name] = tmp_path / f"{name}.bin"
        paths[name].write_bytes(b"x")
    return paths


def load(manager: ModelManager, path) -> torch.nn.Module:
    return manager.cached("test", path, "name", lambda: torch.nn.Linear(100, 100))


def test_least_recently_used_is_unloaded_first(files):
    manager = cpu_manager(2 * LINEAR_BYTES + 10)
    a = load(manager, files["a"])
    load(manager, files["b"])
    assert load(manager, files["a"]) is a  # a is now the most recently used
    load(manager, files["c"])
    held = {path.rsplit("/", 1)[-1] for _, path in manager.loaded()}
    assert held == {"a.bin", "c.bin"}
    assert manager.unloads == {("test", str(files["b"].resolve())): 1}
    load(manager, files["b"])  # read again: a is now the least recently used
    assert {path.rsplit("/", 1)[-1] for _, path in manager.loaded()} == {"c.bin", "b.bin"}
    assert manager.loads[("test", str(files["b"].resolve()))] == 2
    assert sum(manager.unloads.values()) == 2 and manager.offloads == {}


def test_report_lists_models_with_sizes_most_recent_first(files):
    manager = cpu_manager(10 * LINEAR_BYTES)
    load(manager, files["a"])
    load(manager, files["b"])
    report = manager.report()
    assert [entry["path"] for entry in report["models"]] == [str(files["b"].resolve()), str(files["a"].resolve())]
    assert all(entry["size_bytes"] == LINEAR_BYTES and entry["device"] == "cpu" for entry in report["models"])
    assert report["devices"]["cpu"] == {"used_bytes": 2 * LINEAR_BYTES, "budget_bytes": 10 * LINEAR_BYTES}


def test_a_pinned_model_is_never_unloaded_and_an_oversized_load_still_succeeds(files):
    manager = cpu_manager(LINEAR_BYTES + 10)
    a = load(manager, files["a"])
    with manager.using(Vae(a, "wrapper around a")):
        b = load(manager, files["b"])  # over budget, but a is in use: both stay
        assert len(manager.loaded()) == 2 and manager.unloads == {}
    load(manager, files["c"])  # between uses: both a and b go
    assert [path for _, path in manager.loaded()] == [str(files["c"].resolve())]
    assert isinstance(b, torch.nn.Module) and b.weight.shape == (100, 100)  # handed-out objects survive


def run_through_engine(manager: ModelManager, node_class: type, **inputs) -> None:
    """Run one node as the engine runs it (the runtime's executor, with its node-call guard), its inputs handed
    over by a source node as links hand them over."""
    from app.runtime import build_executor
    from engine.registry import NodeRegistry
    from nodes.environment import Folders, NodeEnvironment, use_environment

    class Given:
        RETURN_TYPES = tuple("*" for _ in inputs)
        FUNCTION = "give"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        def give(self):
            return tuple(inputs.values())

    registry = NodeRegistry()
    registry.register_mappings({"Given": Given, "Tested": node_class})
    prompt = {"given": {"class_type": "Given", "inputs": {}},
              "tested": {"class_type": "Tested", "inputs": {name: ["given", index] for index, name in enumerate(inputs)}}}
    environment = NodeEnvironment(Folders.under(Path(tempfile.mkdtemp())), torch.device("cpu"), torch.float32, manager)
    with use_environment(environment):
        result = build_executor(registry, OutputCache()).execute(prompt, "p", {}, ["tested"])
    assert result.success, result.error


def test_a_sampling_node_pins_its_model(files, monkeypatch):
    from nodes import sampling

    manager = cpu_manager(LINEAR_BYTES + 10)
    a = load(manager, files["a"])

    def sample_while_loading(*args, **kwargs):
        load(manager, files["b"])  # a load inside the node (a lazy text encoder, say) must not evict its model
        assert len(manager.loaded()) == 2
        return torch.zeros(1, 4, 8, 8)

    monkeypatch.setattr(sampling, "ksample", sample_while_loading)
    monkeypatch.setattr(sampling, "hand_off", lambda samples, latent, leftover: samples)
    run_through_engine(manager, sampling.KSampler, model=Vae(a, "a"), seed=1, steps=1, cfg=1.0, sampler_name="euler",
                       scheduler="normal", positive=[], negative=[], latent_image={"samples": torch.zeros(1, 4, 8, 8)})
    load(manager, files["c"])
    assert manager.unloads[("test", str(files["a"].resolve()))] == 1


@pytest.mark.parametrize("node", ["VAEDecode", "VAEEncode", "CLIPTextEncode"])
def test_decode_and_encode_nodes_pin_their_model(files, node, monkeypatch):
    from diffusion.families.sd.text_encoding import SdClip
    from nodes import latent
    from nodes.conditioning import CLIPTextEncode

    manager = cpu_manager(LINEAR_BYTES + 10)
    a = load(manager, files["a"])
    loaded_inside = []

    def work_that_loads(*args, **kwargs):  # as a lazily read text encoder loads inside the node
        load(manager, files["b"])
        loaded_inside.append(len(manager.loaded()))
        return torch.zeros(1, 4, 8, 8)

    for name in ("decode", "encode"):
        monkeypatch.setattr(Vae, name, work_that_loads)
    monkeypatch.setattr(SdClip, "encode_prompt", work_that_loads)
    monkeypatch.setattr(latent, "crop_to_vae_multiple", lambda vae, pixels: pixels)
    if node == "VAEDecode":
        run_through_engine(manager, latent.VAEDecode, vae=Vae(a, "a"), samples={"samples": torch.zeros(1, 4, 8, 8)})
    elif node == "VAEEncode":
        run_through_engine(manager, latent.VAEEncode, vae=Vae(a, "a"), pixels=torch.zeros(1, 64, 64, 3))
    else:
        run_through_engine(manager, CLIPTextEncode, clip=SdClip(None, a, "a"), text="a prompt")
    assert loaded_inside == [2]  # the node's own model was not evicted for the load inside it


def test_free_unloads_everything_and_tells_listeners(files):
    manager = cpu_manager(None)
    evicted = []
    manager.add_eviction_listener(evicted.append)
    a, b = load(manager, files["a"]), load(manager, files["b"])
    manager.clear()
    assert manager.loaded() == [] and evicted == [a, b]
    assert load(manager, files["a"]) is not a  # read again on next use


def test_eviction_drops_cached_outputs_holding_the_model(files):
    from app.runtime import drop_cached_outputs_holding

    manager = cpu_manager(LINEAR_BYTES + 10)
    cache = OutputCache()
    manager.add_eviction_listener(lambda value: drop_cached_outputs_holding(cache, value))
    a = load(manager, files["a"])
    cache.put("loader", CacheEntry(([Vae(a, "a")],)))
    cache.put("latents", CacheEntry(([torch.zeros(1, 4, 8, 8)],)))
    load(manager, files["b"])
    assert "loader" not in cache and "latents" in cache


def test_sizes_count_each_storage_once():
    linear = torch.nn.Linear(100, 100)
    assert size_in_bytes((Vae(linear, "x"), Vae(linear, "y"), {"lora": torch.zeros(10)})) == LINEAR_BYTES + 40


def test_memory_sizes_parse():
    assert parse_memory_size("8GB", 100) == 8 * 1000**3
    assert parse_memory_size("1.5 GiB", 100) == int(1.5 * 1024**3)
    assert parse_memory_size("0.5", 1000) == 500
    assert parse_memory_size("2000000", 1000) == 2_000_000
    for bad in ("lots", "8XB", "-1GB", "0"):
        with pytest.raises(ValueError):
            parse_memory_size(bad, 1000)
    budget = MemoryBudget.for_device(torch.device("cpu"), "0.5")
    assert budget.limit(torch.device("cpu")) > 0 and budget.limit(torch.device("cuda")) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_models_are_offloaded_to_the_cpu_and_moved_back(files):
    manager = ModelManager(torch.device("cuda"), torch.float32,
                           MemoryBudget({"cuda": LINEAR_BYTES + 10, "cpu": 10 * LINEAR_BYTES}))
    a = manager.cached("test", files["a"], "name", lambda: torch.nn.Linear(100, 100).cuda())
    manager.cached("test", files["b"], "name", lambda: torch.nn.Linear(100, 100).cuda())
    assert a.weight.device.type == "cpu" and manager.offloads == {("test", str(files["a"].resolve())): 1}
    assert manager.cached("test", files["a"], "name", lambda: None) is a and a.weight.device.type == "cuda"
    assert manager.unloads == {} and sum(manager.offloads.values()) == 2
    b = manager.cached("test", files["b"], "name", lambda: None)
    with manager.using(Vae(b, "b")):  # a node about to run with b brings it back, offloading a
        assert b.weight.device.type == "cuda" and a.weight.device.type == "cpu"


def two_checkpoint_prompt(seed: int) -> dict:
    """Two independent txt2img chains, each with its own checkpoint."""
    prompt = {}
    for prefix, checkpoint in (("a", "tiny-sd1.safetensors"), ("b", "tiny-sd2.safetensors")):
        prompt.update({
            f"{prefix}1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
            f"{prefix}2": {"class_type": "CLIPTextEncode", "inputs": {"text": "lighthouse", "clip": [f"{prefix}1", 1]}},
            f"{prefix}3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": [f"{prefix}1", 1]}},
            f"{prefix}4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            f"{prefix}5": {"class_type": "KSampler", "inputs": {
                "model": [f"{prefix}1", 0], "positive": [f"{prefix}2", 0], "negative": [f"{prefix}3", 0],
                "latent_image": [f"{prefix}4", 0], "seed": seed, "steps": 2, "cfg": 7.0, "sampler_name": "euler",
                "scheduler": "normal", "denoise": 1.0}},
            f"{prefix}6": {"class_type": "VAEDecode", "inputs": {"samples": [f"{prefix}5", 0],
                                                                "vae": [f"{prefix}1", 2]}},
            f"{prefix}7": {"class_type": "SaveImage", "inputs": {"images": [f"{prefix}6", 0],
                                                                "filename_prefix": prefix}},
        })
    return prompt


def run_two_checkpoints(executor, folders, seed: int) -> list:
    """Run the two-checkpoint prompt; the pixels saved by each chain."""
    import numpy as np
    from PIL import Image

    from engine.validation import validate_prompt

    validation = validate_prompt(two_checkpoint_prompt(seed), executor.registry)
    assert validation.ok, validation.to_response()
    result = executor.execute(validation.prompt, f"seed{seed}", {}, validation.outputs)
    assert result.success, result.error
    saved = [result.outputs[node]["images"][0] for node in ("a7", "b7")]
    return [np.asarray(Image.open(folders.output_dir / entry["subfolder"] / entry["filename"])) for entry in saved]


def test_a_prompt_needing_two_models_over_the_budget_completes_and_reruns(tmp_path, tiny_models_dir,
                                                                          shared_model_manager):
    import numpy as np

    import nodes
    from app.runtime import drop_cached_outputs_holding
    from engine.executor import Executor
    from engine.registry import NodeRegistry
    from nodes.environment import Folders, NodeEnvironment, use_environment

    sizes = [size_in_bytes(load_checkpoint(shared_model_manager, tiny_models_dir / "checkpoints" / name))
             for name in ("tiny-sd1.safetensors", "tiny-sd2.safetensors")]
    budget = max(sizes) + min(sizes) // 2  # room for one checkpoint, not both
    manager = cpu_manager(budget)
    folders = Folders(tiny_models_dir, tmp_path / "input", tmp_path / "output", tmp_path / "temp", tmp_path / "user")
    folders.create()
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    cache = OutputCache()
    manager.add_eviction_listener(lambda value: drop_cached_outputs_holding(cache, value))
    executor = Executor(registry, cache)
    with use_environment(NodeEnvironment(folders, torch.device("cpu"), torch.float32, manager)):
        run_two_checkpoints(executor, folders, seed=7)
        assert sum(manager.unloads.values()) == 1 and len(manager.loaded()) == 1
        assert manager.report()["devices"]["cpu"]["used_bytes"] <= budget
        images = run_two_checkpoints(executor, folders, seed=8)  # the evicted loader's cached output is gone
        assert manager.report()["devices"]["cpu"]["used_bytes"] <= budget
    assert sum(manager.loads.values()) >= 3 and sum(manager.unloads.values()) >= 2
    with use_environment(NodeEnvironment(folders, torch.device("cpu"), torch.float32, shared_model_manager)):
        reference = run_two_checkpoints(Executor(registry, OutputCache()), folders, seed=8)  # no budget
    for image, expected in zip(images, reference):
        np.testing.assert_array_equal(image, expected)  # reloaded models give bit-identical images


def test_flags_reach_the_environment(tmp_path):
    from app.runtime import build_runtime
    from app.settings import add_common_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    folders = ["--models-dir", str(tmp_path / "m"), "--user-dir", str(tmp_path / "u"), "--input-dir",
               str(tmp_path / "i"), "--output-dir", str(tmp_path / "o"), "--temp-dir", str(tmp_path / "t")]
    settings = settings_from_args(parser.parse_args(
        [*folders, "--cpu", "--bf16", "--max-ram", "2GB", "--reserve-vram", "0.5", "--no-demo-models",
         "--disable-custom-nodes", "--threads", "1", "--fp32-text-enc"]))
    assert (settings.dtype, settings.max_ram, settings.reserve_vram) == ("bf16", "2GB", 0.5)
    assert settings.text_encoder_dtype == "fp32"
    from nodes import environment as environment_module

    previous_default = list(environment_module._default_environment)
    try:
        environment = build_runtime(settings).environment
    finally:
        environment_module._default_environment[:] = previous_default
    assert environment.device.type == "cpu" and environment.dtype == torch.bfloat16
    assert environment.models.dtype == torch.bfloat16 and environment.models.encoder_dtype == torch.float32
    assert environment.models.budget.limit(torch.device("cpu")) == 2 * 1000**3
    with pytest.raises(SystemExit):
        parser.parse_args(["--fp16", "--fp32"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--fp16-text-enc", "--bf16-text-enc"])
    with pytest.raises(SystemExit):
        settings_from_args(parser.parse_args(["--max-ram", "plenty"]))
    default = settings_from_args(parser.parse_args([]))
    assert default.dtype is None and default.max_ram is None and default.text_encoder_dtype is None


def tiny_text_encoder() -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    return CLIPTextModel(CLIPTextConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=8)).eval()


def test_text_encoders_take_the_text_encoder_precision():
    """`--fp16-text-enc` beside fp32 on the CPU rounds encoder weights to fp16 and computes in fp32 (ComfyUI's
    CPU behaviour); other modules keep the manager's dtype; on its own dtype an encoder is simply placed in it."""
    encoder, other = tiny_text_encoder(), torch.nn.Linear(4, 4)
    original = {name: tensor.clone() for name, tensor in encoder.state_dict().items()}
    other_weight = other.weight.detach().clone()
    manager = ModelManager(torch.device("cpu"), torch.float32, encoder_dtype=torch.float16)
    manager.place(encoder), manager.place(other)
    for name, tensor in encoder.state_dict().items():
        expected = original[name].to(torch.float16).to(torch.float32) if tensor.is_floating_point() else original[name]
        assert tensor.dtype == original[name].dtype and torch.equal(tensor, expected), name
    assert any(not torch.equal(tensor, original[name]) for name, tensor in encoder.state_dict().items())
    assert torch.equal(other.weight, other_weight)

    wide = ModelManager(torch.device("cpu"), torch.bfloat16, encoder_dtype=torch.float32)
    encoder, other = wide.place(tiny_text_encoder()), wide.place(torch.nn.Linear(4, 4))
    assert {p.dtype for p in encoder.parameters()} == {torch.float32} and other.weight.dtype == torch.bfloat16


def test_a_lora_is_counted_where_its_tensors_live(files):
    manager = ModelManager(torch.device("cpu"), torch.float32, MemoryBudget({"cpu": 10 * LINEAR_BYTES}))
    manager.cached("lora", files["a"], "lora_name", lambda: ({"unet.x.lora_A.weight": torch.zeros(10)}, None))
    assert manager.report()["models"][0] == {"kind": "lora", "path": str(files["a"].resolve()), "device": "cpu",
                                             "size_bytes": 40}
