"""`comfy.model_management` answered from the node environment and the model manager."""
from __future__ import annotations

import pytest
import torch
from comfy import model_management as mm

from diffusion.manager import ModelManager
from diffusion.memory import MemoryBudget, physical_ram_bytes
from nodes.environment import Folders, NodeEnvironment, use_environment

LINEAR_BYTES = (100 * 100 + 100) * 4  # torch.nn.Linear(100, 100) in fp32


@pytest.fixture
def environment(tmp_path):
    """A CPU environment whose model manager may keep two 40 kB modules, with three model files to load."""
    manager = ModelManager(torch.device("cpu"), torch.float32, MemoryBudget({"cpu": 2 * LINEAR_BYTES + 10}),
                           encoder_dtype=torch.float16)
    environment = NodeEnvironment(Folders.under(tmp_path), torch.device("cpu"), torch.float32, models=manager)
    files = {}
    for name in "abc":
        files[name] = tmp_path / f"{name}.bin"
        files[name].write_bytes(b"x")
    with use_environment(environment):
        yield environment, files


def _load(manager, path):
    return manager.cached("test", path, "name", lambda: torch.nn.Linear(100, 100))


def _held(manager):
    return {path.rsplit("/", 1)[-1] for _, path in manager.loaded()}


def test_devices_dtypes_and_states_follow_the_environment(environment):
    assert mm.get_torch_device() == torch.device("cpu") and mm.cpu_mode() and not mm.mps_mode()
    assert mm.unet_offload_device() == torch.device("cpu") == mm.vae_offload_device()
    assert mm.vram_state is mm.VRAMState.DISABLED and mm.cpu_state is mm.CPUState.CPU
    assert mm.unet_dtype() == torch.float32 and mm.vae_dtype() == torch.float32
    assert mm.text_encoder_dtype() == torch.float16  # the manager's encoder dtype (--fp16-text-enc)
    assert not mm.should_use_fp16() and not mm.should_use_bf16()
    assert mm.unet_manual_cast(torch.float32) is None and mm.unet_manual_cast(torch.float16) == torch.float32
    assert mm.is_device_cpu(torch.device("cpu")) and not mm.is_device_cuda(torch.device("cpu"))
    assert mm.get_autocast_device(torch.device("cpu")) == "cpu" and not mm.xformers_enabled()
    assert mm.dtype_size(torch.bfloat16) == 2 and mm.module_size(torch.nn.Linear(100, 100)) == LINEAR_BYTES
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        mm.not_a_name  # noqa: B018


def test_memory_figures_are_the_machines(environment):
    free, torch_free = mm.get_free_memory(torch.device("cpu"), torch_free_too=True)
    assert 0 < free <= physical_ram_bytes() and torch_free == free
    assert mm.get_total_memory(torch.device("cpu")) == physical_ram_bytes()
    assert mm.total_ram == physical_ram_bytes() / (1024 * 1024)


def test_free_memory_evicts_least_recently_used_but_keeps_what_is_asked(environment):
    env, files = environment
    a = _load(env.models, files["a"])
    _load(env.models, files["b"])
    mm.free_memory(LINEAR_BYTES, torch.device("cpu"), keep_loaded=[a])
    assert _held(env.models) == {"a.bin"}  # b was older than a's pin, and room for one more was asked
    mm.unload_all_models()
    assert _held(env.models) == set()


def test_load_models_gpu_marks_models_as_used_so_others_go_first(environment):
    env, files = environment
    a = _load(env.models, files["a"])
    _load(env.models, files["b"])
    mm.load_models_gpu([a])  # a is now the most recently used
    _load(env.models, files["c"])
    assert _held(env.models) == {"a.bin", "c.bin"}


def test_cast_helpers():
    weight = torch.ones(2, 2)
    cast = mm.cast_to_device(weight, torch.device("cpu"), torch.float16)
    assert cast.dtype == torch.float16 and mm.cast_to(weight, torch.bfloat16).dtype == torch.bfloat16
    assert mm.cast_to(weight, copy=True) is not weight


def test_optimized_attention_is_multi_head_attention():
    from comfy.ldm.modules.attention import optimized_attention

    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 8, generator=generator) for _ in range(3))
    heads, dim = 2, 4
    split = [t.view(2, -1, heads, dim).transpose(1, 2) for t in (q, k, v)]
    weights = torch.softmax(split[0] @ split[1].transpose(-1, -2) / dim ** 0.5, dim=-1)
    expected = (weights @ split[2]).transpose(1, 2).reshape(2, 5, 8)
    torch.testing.assert_close(optimized_attention(q, k, v, heads), expected)
    mask = torch.zeros(5, 5)
    mask[:, 3:] = float("-inf")  # the last two keys hidden
    masked_weights = torch.softmax(split[0] @ split[1].transpose(-1, -2) / dim ** 0.5 + mask, dim=-1)
    torch.testing.assert_close(optimized_attention(q, k, v, heads, mask=mask),
                               (masked_weights @ split[2]).transpose(1, 2).reshape(2, 5, 8))


def test_ops_layers_skip_initialisation_and_cast_when_asked(monkeypatch):
    from comfy import ops

    torch.manual_seed(0)
    reference = torch.nn.Linear(3, 2)
    conv_reference = torch.nn.Conv2d(2, 4, 3)

    def refuse(*args, **kwargs):
        raise AssertionError("random initialisation ran")

    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", refuse)
    layer = ops.disable_weight_init.Linear(3, 2)
    cast = ops.manual_cast.Linear(3, 2, dtype=torch.float16)
    conv = ops.manual_cast.conv_nd(2, 2, 4, 3, dtype=torch.bfloat16)
    for module, source in ((layer, reference), (cast, reference), (conv, conv_reference)):
        module.load_state_dict(source.state_dict())
    x = torch.randn(5, 3)
    torch.testing.assert_close(layer(x), reference(x))
    assert cast.weight.dtype == torch.float16 and cast(x).dtype == torch.float32  # computes in the input's dtype
    torch.testing.assert_close(cast(x), torch.nn.functional.linear(x, reference.weight.half().float(),
                                                                   reference.bias.half().float()))
    image = torch.randn(1, 2, 6, 6)
    torch.testing.assert_close(conv(image), torch.nn.functional.conv2d(
        image, conv_reference.weight.bfloat16().float(), conv_reference.bias.bfloat16().float()))
    assert ops.pick_operations(torch.float16, torch.float32) is ops.manual_cast
    assert ops.pick_operations(torch.float32, torch.float32) is ops.disable_weight_init
    assert isinstance(layer, torch.nn.Linear) and isinstance(layer, ops.CastWeightBiasOp)
