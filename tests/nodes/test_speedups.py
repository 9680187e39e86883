"""Optional speed-ups (attention slicing, channels-last, torch.compile): each samples within a small tolerance
of the plain model, leaves the shared network exactly as it was, and refuses what the model or device cannot do."""
import shutil

import pytest
import torch

from diffusion.speedups import Speedups, speedups_applied
from nodes.conditioning import CLIPTextEncode
from nodes.latent import EmptyLatentImage
from nodes.sampling import KSampler
from nodes.speedups import ModelSpeedups, TorchCompileModel

TOLERANCE = 1e-4  # max abs latent difference against the plain model, fp32 on the CPU
# ComfyUI's schedules start at the top sigma, where the tiny random model's latents reach ~50 (the diffusers
# loop's ~10): relative there, for rounding that the first denoised estimate multiplies by that sigma
RELATIVE_TOLERANCE = 5e-5


@pytest.fixture
def inputs(sd1):
    model, clip, _ = sd1
    positive = CLIPTextEncode().encode(clip, "a lighthouse at dusk")[0]
    negative = CLIPTextEncode().encode(clip, "")[0]
    (latent,) = EmptyLatentImage().generate(64, 64, 1)
    return model, positive, negative, latent


def _sample(model, inputs, steps=3, scheduler="diffusers"):
    _, positive, negative, latent = inputs
    samples = KSampler().sample(model, 11, steps, 7.0, "euler", scheduler, positive, negative, latent)[0]["samples"]
    return model.latent_format.process_in(samples)  # in model space, where the tolerances are measured


def _limit(plain, scheduler):
    return TOLERANCE if scheduler == "diffusers" else RELATIVE_TOLERANCE * plain.abs().max().item()


def _snapshot(module):
    return {name: (tensor.detach().clone(), tensor.is_contiguous()) for name, tensor in module.state_dict().items()}


def _unchanged(module, snapshot) -> bool:
    state = module.state_dict()
    return all(torch.equal(state[name], tensor) and state[name].is_contiguous() == contiguous
               for name, (tensor, contiguous) in snapshot.items())


@pytest.mark.parametrize("scheduler", ["diffusers", "normal"])
@pytest.mark.parametrize("options", [
    {"attention_slicing": "auto"},
    {"attention_slicing": "max"},
    {"channels_last": True},
    {"channels_last": True, "attention_slicing": "max"},
])
def test_speedups_match_the_plain_model_and_leave_the_network_as_it_was(inputs, options, scheduler):
    model = inputs[0]
    plain = _sample(model, inputs, scheduler=scheduler)
    processors = {name: type(processor) for name, processor in model.network.attn_processors.items()}
    snapshot = _snapshot(model.network)
    (fast_model,) = ModelSpeedups().apply(model, **options)
    fast = _sample(fast_model, inputs, scheduler=scheduler)
    difference = (fast - plain).abs().max().item()
    assert difference <= _limit(plain, scheduler), f"{options}: {difference}"
    assert {name: type(processor) for name, processor in model.network.attn_processors.items()} == processors
    assert _unchanged(model.network, snapshot)
    assert torch.equal(_sample(model, inputs, scheduler=scheduler), plain)  # the shared model samples as before


def test_the_speedups_are_really_in_place_while_sampling(inputs):
    unet = inputs[0].network
    with speedups_applied(unet, Speedups(channels_last=True, attention_slicing="max")) as network:
        assert network is unet
        assert any(type(p).__name__ == "SlicedAttnProcessor" for p in unet.attn_processors.values())
        conv = unet.conv_in.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert unet.conv_in.weight.is_contiguous()
    assert not any(type(p).__name__ == "SlicedAttnProcessor" for p in unet.attn_processors.values())


def test_the_network_is_restored_when_sampling_fails(inputs):
    unet = inputs[0].network
    snapshot = _snapshot(unet)
    with pytest.raises(RuntimeError, match="boom"):
        with speedups_applied(unet, Speedups(channels_last=True, attention_slicing="auto")):
            raise RuntimeError("boom")
    assert _unchanged(unet, snapshot)
    assert not any(type(p).__name__ == "SlicedAttnProcessor" for p in unet.attn_processors.values())


def test_unsupported_speedups_are_clear_errors_naming_the_input(inputs, node_env):
    with pytest.raises(ValueError, match="backend: the cudagraphs backend needs a CUDA device"):
        TorchCompileModel().patch(inputs[0], "cudagraphs")
    with pytest.raises(ValueError, match="compile: the cudagraphs backend needs a CUDA device"):
        ModelSpeedups().apply(inputs[0], compile="cudagraphs")
    with pytest.raises(ValueError, match="attention slicing"):
        Speedups(attention_slicing="some")


def test_attention_slicing_is_refused_for_transformer_models(node_env, tiny_models_dir):
    from diffusion.families.flux import demo as tiny_flux
    from nodes.loaders import UNETLoader

    tiny_flux.make_flux_demo_models(tiny_models_dir)
    (flux_model,) = UNETLoader().load_unet(tiny_flux.DEMO_FLUX_TRANSFORMER)
    with pytest.raises(ValueError, match="attention_slicing: attention slicing works on UNet models"):
        ModelSpeedups().apply(flux_model, attention_slicing="auto")


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile's inductor backend needs a C++ compiler on the CPU")
@pytest.mark.parametrize("scheduler", ["diffusers", "normal"])
def test_torch_compile_matches_and_compiles_once(inputs, scheduler):
    from torch._dynamo.utils import counters

    model = inputs[0]
    plain = _sample(model, inputs, steps=2, scheduler=scheduler)
    (compiled_model,) = TorchCompileModel().patch(model, "inductor")
    first = _sample(compiled_model, inputs, steps=2, scheduler=scheduler)
    assert (first - plain).abs().max().item() <= _limit(plain, scheduler)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    (again,) = TorchCompileModel().patch(model, "inductor")  # as a later prompt's node would
    second = _sample(again, inputs, steps=2, scheduler=scheduler)
    assert counters["stats"]["unique_graphs"] == graphs  # the compiled code was reused, nothing recompiled
    assert torch.equal(first, second)
    assert torch.equal(_sample(model, inputs, steps=2, scheduler=scheduler), plain)
