"""KSampler behaviour beyond parity: progress and interrupt, KSamplerAdvanced ranges, conditioning shapes, errors."""
import copy
import dataclasses

import pytest
import torch

from diffusion.sampling.schedulers import make_scheduler
from engine.interrupt import ExecutionInterrupted, InterruptFlag
from engine.progress import NodeRunContext, bind_node_context
from nodes.conditioning import CLIPTextEncode
from nodes.latent import EmptyLatentImage
from nodes.sampling import KSampler, KSamplerAdvanced


@pytest.fixture
def inputs(sd1):
    model, clip, _ = sd1
    positive = CLIPTextEncode().encode(clip, "a lighthouse at dusk")[0]
    negative = CLIPTextEncode().encode(clip, "")[0]
    (latent,) = EmptyLatentImage().generate(32, 32, 1)
    return model, positive, negative, latent


def _ksampler(inputs, steps=4, sampler="euler", **extra):
    model, positive, negative, latent = inputs
    return KSampler().sample(model, 7, steps, 6.0, sampler, "normal", positive, negative, latent, **extra)[0]["samples"]


def test_progress_is_reported_per_step(inputs):
    reports = []
    context = NodeRunContext("5", "prompt-1", InterruptFlag(), lambda node, value, total, _: reports.append(
        (node, value, total)))
    with bind_node_context(context):
        _ksampler(inputs, steps=3)
    assert reports == [("5", 1, 3), ("5", 2, 3), ("5", 3, 3)]


def test_interrupt_stops_sampling_at_the_next_step(inputs):
    flag = InterruptFlag()
    reports = []

    def on_progress(node, value, total, preview):
        reports.append(value)
        flag.request()

    with bind_node_context(NodeRunContext("5", "p", flag, on_progress)):
        with pytest.raises(ExecutionInterrupted):
            _ksampler(inputs, steps=10)
    assert reports == [1]


def test_interrupt_is_honoured_inside_a_network_call(inputs):
    """Requested while the UNet's first down block runs, the interrupt stops the call before the next block: the
    up blocks never run and the network stays unhooked afterwards."""
    model = inputs[0]
    flag, blocks_run = InterruptFlag(), []
    handles = [model.network.down_blocks[0].register_forward_hook(lambda *_: flag.request()),
               *[block.register_forward_hook(lambda *_: blocks_run.append("up")) for block in model.network.up_blocks]]
    try:
        with bind_node_context(NodeRunContext("5", "p", flag, lambda *_: None)):
            with pytest.raises(ExecutionInterrupted):
                _ksampler(inputs, steps=2)
    finally:
        for handle in handles:
            handle.remove()
    assert blocks_run == []
    assert all(not block._forward_pre_hooks for block in model.network.down_blocks)


def test_advanced_sampler_in_two_passes_equals_one_pass(inputs):
    model, positive, negative, latent = inputs
    advanced = KSamplerAdvanced()
    first = advanced.sample(model, "enable", 7, 4, 6.0, "euler", "normal", positive, negative, latent, 0, 2,
                            "enable")[0]
    second = advanced.sample(model, "disable", 7, 4, 6.0, "euler", "normal", positive, negative, first, 2, 10000,
                             "disable")[0]
    # the hand-off goes through raw latents (process_out, then process_in), which rounds, as in ComfyUI
    one_pass = _ksampler(inputs, steps=4)
    assert (second["samples"] - one_pass).abs().max() <= 1e-5 * one_pass.abs().max()


def test_stopping_early_without_leftover_noise_returns_the_clean_estimate(inputs):
    """The diffusers loop: its last step goes to the clean estimate (ComfyUI's samplers: test_ksampler.py)."""
    model, positive, negative, latent = inputs
    advanced = KSamplerAdvanced()

    def run(end, leftover):
        return advanced.sample(model, "enable", 7, 4, 6.0, "euler", "diffusers", positive, negative, latent, 0, end,
                               leftover)[0]["samples"]

    before, noisy, clean = run(1, "enable"), run(2, "enable"), run(2, "disable")
    scheduler = make_scheduler(model.scheduler_config, "euler", "normal", 7)
    scheduler.set_timesteps(4)
    sigma, sigma_next = scheduler.sigmas[1], scheduler.sigmas[2]
    # Euler: noisy = x + (sigma_next - sigma) * d and clean = x - sigma * d, with x the latent before the step
    assert torch.allclose(noisy - before, (clean - before) * (sigma_next - sigma) / -sigma, atol=1e-4)
    with pytest.raises(ValueError, match="return_with_leftover_noise: sampler 'dpmpp_2m' cannot stop early"):
        advanced.sample(model, "enable", 7, 4, 6.0, "dpmpp_2m", "diffusers", positive, negative, latent, 0, 2,
                        "disable")


def test_denoise_zero_returns_the_input(inputs):
    model, positive, negative, latent = inputs
    latent = {"samples": torch.randn(1, 4, 4, 4)}
    out = KSampler().sample(model, 7, 4, 6.0, "euler", "normal", positive, negative, latent, 0.0)[0]
    assert torch.equal(out["samples"], latent["samples"])


def test_long_positive_with_short_negative(inputs, sd1):
    model, _, negative, latent = inputs
    long_prompt = CLIPTextEncode().encode(sd1[1], " ".join(["a"] * 100))[0]
    assert long_prompt[0][0].shape[1] == 154
    out = KSampler().sample(model, 7, 2, 6.0, "euler", "normal", long_prompt, negative, latent)[0]
    assert torch.isfinite(out["samples"]).all()


def test_repeated_conditioning_entries_average_to_the_same_result(inputs):
    # In float64: the doubled entry makes a batch of three rows instead of two, and CPU kernels chosen by batch
    # size round fp32 differently (1e-4 after three steps on some CPUs), which is not what is tested here.
    model, positive, negative, latent = inputs
    model = dataclasses.replace(model, network=copy.deepcopy(model.network).double())
    doubled = positive + [[positive[0][0], dict(positive[0][1])]]
    out = KSampler().sample(model, 7, 3, 6.0, "euler", "normal", doubled, negative, latent)[0]["samples"]
    single = KSampler().sample(model, 7, 3, 6.0, "euler", "normal", positive, negative, latent)[0]["samples"]
    assert torch.allclose(out, single, atol=1e-5)


def test_latent_extras_are_kept(inputs):
    model, positive, negative, latent = inputs
    out = KSampler().sample(model, 7, 1, 6.0, "euler", "normal", positive, negative,
                            {**latent, "batch_index": [3]})[0]
    assert out["batch_index"] == [3]


def test_unsupported_sampler_scheduler_pairs_are_refused(inputs):
    with pytest.raises(ValueError, match="scheduler: 'karras' is not available with sampler 'ddim'"):
        make_scheduler({}, "ddim", "karras", 0)
    with pytest.raises(ValueError, match="sampler_name: unknown sampler 'euler_x'"):
        make_scheduler({}, "euler_x", "normal", 0)


def test_v_prediction_model_samples(node_env):
    from nodes.loaders import CheckpointLoaderSimple

    model, clip, vae = CheckpointLoaderSimple().load_checkpoint("tiny-sd2-v.safetensors")
    positive = CLIPTextEncode().encode(clip, "a lighthouse")[0]
    (latent,) = EmptyLatentImage().generate(32, 32, 1)
    out = KSampler().sample(model, 1, 2, 5.0, "euler", "normal", positive, positive, latent)[0]["samples"]
    scheduler = make_scheduler(model.scheduler_config, "euler", "normal", 1)
    assert scheduler.config.prediction_type == "v_prediction"
    assert torch.isfinite(out).all()


def test_samplers_needing_missing_packages_are_not_offered(monkeypatch):
    import importlib.util

    from diffusion.sampling import schedulers as sampler

    real_find_spec = importlib.util.find_spec
    assert {"euler", "dpmpp_2m_sde", "uni_pc", "lcm", "ddim", "pndm"} <= set(sampler.available_samplers())
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "scipy" else real_find_spec(name, *args))
    assert "lms" not in sampler.available_samplers() and "dpmpp_sde" not in sampler.available_samplers()
    assert "beta" not in sampler.available_schedulers() and "karras" in sampler.available_schedulers()
    with pytest.raises(ValueError, match="sampler_name: unknown sampler 'lms'"):
        make_scheduler({}, "lms", "normal", 0)
