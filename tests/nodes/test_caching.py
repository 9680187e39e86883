"""EasyCache and LazyCache (`nodes/caching.py`, `diffusion/sampling/caching.py`): their contracts against ComfyUI's
(`COMFYUI_CONTRACTS`, read off comfy_extras/nodes_easycache.py), the skip decisions on synthetic sequences against
ComfyUI's rule worked out by hand, and sampling with the tiny SD1, SD3 and FLUX models: no cache, a zero threshold
and a span outside the run give the same latents; a threshold skips network calls (counted) and stays close."""
from __future__ import annotations

import contextlib
import logging
from typing import Any

import pytest
import torch

import nodes
from diffusion.sampling import caching
from nodes import caching as cache_nodes
from nodes.conditioning import CLIPTextEncode
from nodes.latent import EmptyLatentImage
from nodes.sampling import KSampler
from tests.nodes.conftest import validation_errors

CATEGORY = "advanced/debug/model"
CACHE_INPUTS = [("model", "MODEL"), ("reuse_threshold", ("FLOAT", 0.2, 0.0, 3.0, 0.01)),
                ("start_percent", ("FLOAT", 0.15, 0.0, 1.0, 0.01)), ("end_percent", ("FLOAT", 0.95, 0.0, 1.0, 0.01)),
                ("verbose", ("BOOLEAN", False))]
# node: (category, RETURN_TYPES, RETURN_NAMES or None, display name, experimental, the inputs in order)
COMFYUI_CONTRACTS: dict[str, tuple] = {
    "EasyCache": (CATEGORY, ("MODEL",), None, "EasyCache", True, CACHE_INPUTS),
    "LazyCache": (CATEGORY, ("MODEL",), None, "LazyCache", True, CACHE_INPUTS),
}


def _input_contract(spec: tuple) -> Any:
    kind, options = spec[0], spec[1] if len(spec) > 1 else {}
    if kind == "BOOLEAN":
        return (kind, options["default"])
    if kind in ("INT", "FLOAT"):
        return (kind, options["default"], options["min"], options["max"], options.get("step"))
    return kind


def _contract(name: str) -> tuple:
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    inputs = node_class.INPUT_TYPES()
    assert set(inputs) == {"required"}
    return (node_class.CATEGORY, node_class.RETURN_TYPES, getattr(node_class, "RETURN_NAMES", None),
            nodes.NODE_DISPLAY_NAME_MAPPINGS[name], getattr(node_class, "EXPERIMENTAL", False),
            [(input_name, _input_contract(spec)) for input_name, spec in inputs["required"].items()])


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_contract_is_comfyuis(name):
    assert _contract(name) == COMFYUI_CONTRACTS[name]
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert node_class.DESCRIPTION and len(node_class.OUTPUT_TOOLTIPS) == 1
    assert all(spec[1].get("tooltip") for spec in node_class.INPUT_TYPES()["required"].values())
    assert set(cache_nodes.NODE_CLASS_MAPPINGS) == set(COMFYUI_CONTRACTS)


# -- the skip rule on synthetic sequences ------------------------------------------------------------------------

class _Schedule:
    """A stand-in model sampling: percent p of the run is sigma 10 * (1 - p)."""

    def percent_to_sigma(self, percent: float) -> float:
        return 10.0 * (1.0 - percent)


def _scalar(value: float, rows: int = 1) -> torch.Tensor:
    return torch.full((rows, 1, 1, 1), float(value))


def _easycache(threshold: float, start: float = 0.0, end: float = 1.0) -> caching.EasyCacheRun:
    return caching.EasyCache(caching.CacheSettings(threshold, start, end)).for_run(_Schedule())


# Inputs 0, 1, 2, ... at sigmas 10, 9, 8, ...; the network's output where it runs. ComfyUI's rule, by hand at
# threshold 0.45: step 0 and 1 run (no rate yet; step 1 measures rate |12-10|/|1-0| = 2); step 2 predicts
# 2 * |2-1| / 12 = 1/6 < 0.45: skipped, output 2 + (12 - 1) = 13; step 3 predicts 2 * |3-1| / 12 = 1/3, sum 1/2:
# runs (sum back to 0), rate |15-12| / |3-1| = 1.5; step 4: 1.5 * |4-3| / 15 = 0.1, skipped (4 + 12 = 16); step 5:
# 1.5 * |5-3| / 15 = 0.2, sum 0.3, skipped (17); step 6: 1.5 * 3 / 15 = 0.3, sum 0.6, runs.
NETWORK_OUTPUTS = {0: 10.0, 1: 12.0, 3: 15.0, 6: 20.0}
EXPECTED_OUTPUTS = [10.0, 12.0, 13.0, 15.0, 16.0, 17.0, 20.0]
EXPECTED_CALLS = [0, 1, 3, 6]


def _run_easycache(run: caching.EasyCacheRun, steps: int = 7, entries: int = 1) -> tuple[list[float], list[int]]:
    outputs, calls = [], []
    for step in range(steps):
        run.new_pass()
        sigma = torch.tensor([10.0 - step])
        for entry in range(entries):  # one call per entry, as for conditionings of different token lengths
            def call(step=step, entry=entry):
                calls.append(step) if entry == 0 else None
                return _scalar(NETWORK_OUTPUTS.get(step, 0.0) + 100.0 * entry)
            output = run.network_call(call, _scalar(step), sigma, [entry])
            if entry == 0:
                outputs.append(float(output))
            else:  # the second entry follows the first's decision, with its own cached change
                assert float(output) == outputs[-1] + 100.0
    return outputs, calls


def test_easycache_skips_as_comfyuis_rule():
    outputs, calls = _run_easycache(_easycache(0.45))
    assert outputs == pytest.approx(EXPECTED_OUTPUTS) and calls == EXPECTED_CALLS
    run = _easycache(0.45)
    assert _run_easycache(run, entries=2) == (pytest.approx(EXPECTED_OUTPUTS), EXPECTED_CALLS)
    assert run.skipped == 3


def test_easycache_reuses_each_entrys_change_within_one_call():
    """Negative and positive rows in one call (entries 1 and 0, two latents each; the negative's outputs the
    positive's negated, so that the rule's numbers are those above): entry 1, the call's first, decides; each
    entry's rows get their own cached change (entry 1 on step 2: 2 + (-12 - 1) = -11)."""
    run, calls, outputs = _easycache(0.45), [], []
    for step in range(7):
        run.new_pass()
        value = NETWORK_OUTPUTS.get(step, 0.0)
        network = torch.cat([_scalar(-value, rows=2), _scalar(value, rows=2)])
        output = run.network_call(lambda: calls.append(step) or network, _scalar(step, rows=4),
                                  torch.tensor([10.0 - step] * 4), [1, 0])
        outputs.append(output.flatten().tolist())
    assert calls == EXPECTED_CALLS and run.first_entry == 1
    negative = [-10.0, -12.0, -11.0, -15.0, -14.0, -13.0, -20.0]
    assert outputs == [pytest.approx([first] * 2 + [second] * 2) for first, second in zip(negative, EXPECTED_OUTPUTS)]


def test_easycache_threshold_zero_and_span():
    assert _run_easycache(_easycache(0.0), steps=4)[1] == [0, 1, 2, 3]
    # start at 25%: sigma 7.5, the first three steps (sigmas 10, 9, 8) only cache their change; step 3 is the first
    # measured, step 4 the first with a rate; step 5 predicts |5-4| * rate / output: below 3.0, skipped
    outputs = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 4: 6.0, 5: 0.0, 6: 0.0}
    run, calls = _easycache(3.0, start=0.25), []
    for step in range(7):
        run.new_pass()
        run.network_call(lambda step=step: calls.append(step) or _scalar(outputs[step]), _scalar(step),
                         torch.tensor([10.0 - step]), [0])
    assert calls == [0, 1, 2, 3, 4]
    # end at 35%: sigma 6.5. Outputs step + 1: rate 1 from step 1; step 2 predicts 1 / 2, step 3 adds |3-1| / 2
    # (sum 1.5): both skipped; from step 4 (sigma 6) on every step runs
    run, calls = _easycache(3.0, start=0.0, end=0.35), []
    for step in range(7):
        run.new_pass()
        run.network_call(lambda step=step: calls.append(step) or _scalar(step + 1.0), _scalar(step),
                         torch.tensor([10.0 - step]), [0])
    assert calls == [0, 1, 4, 5, 6]


def test_easycache_measures_every_eighth_pixel_of_the_first_entry():
    run = _easycache(10.0)
    first, second = torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    first[..., 1::8, :] = 5.0  # off the subsampled grid: no input change seen
    outputs = iter([torch.ones(2, 1, 16, 16), torch.full((2, 1, 16, 16), 3.0)])
    for x in (torch.cat([second, second]), torch.cat([first, second])):
        run.new_pass()
        run.network_call(lambda: next(outputs), x, torch.tensor([5.0]), [0, 1])
    assert run.input_prev.shape == (1, 1, 2, 2) and run.transformation_rate == float("inf")


class _Denoiser:
    model_sampling = _Schedule()
    uncond_denoised = None

    def __init__(self, outputs: dict[int, float]) -> None:
        self.outputs, self.calls = outputs, []

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        step = int(10 - float(sigma[0]))
        self.calls.append(step)
        return _scalar(self.outputs[step])


def test_lazycache_skips_as_comfyuis_rule():
    # the same sequence as EasyCache's from the start of the run
    inner = _Denoiser(NETWORK_OUTPUTS)
    run = caching.LazyCache(caching.CacheSettings(0.45, 0.0, 1.0)).for_run(inner)
    outputs = [float(run(_scalar(step), torch.tensor([10.0 - step]))) for step in range(7)]
    assert outputs == pytest.approx(EXPECTED_OUTPUTS) and inner.calls == EXPECTED_CALLS and run.skipped == 3
    # LazyCache keeps its last input and output before start_percent (sigma 7.5): step 3, the first in the span,
    # measures its input change (where EasyCache starts measuring at step 4) and the rate |4-3| / |3-2| = 1; step 4
    # predicts 1 * |4-3| / 4 = 0.25 < 0.45: skipped (4 + (4-3) = 5); step 5 adds 1 * |5-3| / 4: sum 0.75, runs
    inner = _Denoiser({0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 5: 9.0})
    run = caching.LazyCache(caching.CacheSettings(0.45, 0.25, 1.0)).for_run(inner)
    outputs = [float(run(_scalar(step), torch.tensor([10.0 - step]))) for step in range(6)]
    assert inner.calls == [0, 1, 2, 3, 5] and outputs[4] == pytest.approx(5.0)
    assert _run_easycache(_easycache(0.45, start=0.25), steps=6)[1] == [0, 1, 2, 3, 4, 5]


def test_cache_restarts_when_the_latents_change_shape(caplog):
    run = _easycache(10.0)
    for step, size in enumerate([1, 1, 2, 2]):
        run.new_pass()
        calls = []
        run.network_call(lambda: calls.append(1) or torch.full((1, 1, size, size), step + 1.0),
                         torch.full((1, 1, size, size), float(step)), torch.tensor([9.0 - step]), [0])
        assert calls == [1]  # the third step restarts empty: no rate, nothing skipped
    assert "restarting the cache" in caplog.text


# -- sampling with the tiny models -------------------------------------------------------------------------------

@contextlib.contextmanager
def _counted_calls(network: torch.nn.Module):
    calls: list[int] = []
    handle = network.register_forward_pre_hook(lambda module, args, kwargs: calls.append(1), with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def _sd1_sample(sd1, model: Any, steps: int = 10, scheduler: str = "normal", size: int = 64) -> torch.Tensor:
    _, clip, _ = sd1
    positive = CLIPTextEncode().encode(clip, "a red fox in the snow")[0]
    negative = CLIPTextEncode().encode(clip, "blurry, low quality and some words")[0]
    (latent,) = EmptyLatentImage().generate(size, size, 1)
    return KSampler().sample(model, 7, steps, 6.0, "euler", scheduler, positive, negative, latent)[0]["samples"]


def test_sd1_exact_without_skips_and_skipping_with_a_threshold(sd1, caplog):
    model = sd1[0]
    with _counted_calls(model.network) as calls:
        plain = _sd1_sample(sd1, model)
    assert len(calls) == 10  # one call a step: the negative and positive rows batched
    for node in (cache_nodes.EasyCache(), cache_nodes.LazyCache()):
        # nothing skipped: a zero threshold, a span that starts at the end or ends at the start
        for threshold, start, end in ((0.0, 0.0, 1.0), (3.0, 1.0, 1.0), (3.0, 0.0, 0.0)):
            (patched,) = node.patch(model, threshold, start, end, False)
            assert torch.equal(_sd1_sample(sd1, patched), plain), (node, threshold, start, end)
        (patched,) = node.patch(model, 0.05, 0.15, 0.95, True)
        with _counted_calls(model.network) as calls, caplog.at_level(logging.INFO):
            cached = _sd1_sample(sd1, patched)
        assert 4 <= len(calls) <= 7, node  # ComfyUI's default span leaves the first and last steps computed
        assert "skipping step" in caplog.text and "step(s) skipped so far" in caplog.text
        assert (cached - plain).abs().mean() < 0.2 * plain.abs().mean(), node
        with _counted_calls(model.network) as again:  # each run starts fresh
            assert torch.equal(_sd1_sample(sd1, patched), cached) and len(again) == len(calls)
        assert model.sampling_wrappers == ()  # the loaded model is left as it was


def test_a_new_cache_replaces_the_old_and_the_diffusers_scheduler_refuses_them(sd1):
    model = sd1[0]
    (easy,) = cache_nodes.EasyCache().patch(model, 0.2, 0.15, 0.95, False)
    (lazy,) = cache_nodes.LazyCache().patch(easy, 0.3, 0.1, 0.9, False)
    assert lazy.sampling_wrappers == (caching.LazyCache(caching.CacheSettings(0.3, 0.1, 0.9, False)),)
    with pytest.raises(ValueError, match="^scheduler: 'diffusers' .* no step caches"):
        _sd1_sample(sd1, lazy, steps=2, scheduler="diffusers")


def test_easycache_keys_conditionings_of_separate_calls(sd1):
    """Conditionings of different token lengths run in separate calls: the first decides for the step."""
    model, clip, _ = sd1
    positive = CLIPTextEncode().encode(clip, "a red fox " * 150)[0]  # 6 chunks of 77 tokens: 6x the negative
    negative = CLIPTextEncode().encode(clip, "blurry")[0]
    (latent,) = EmptyLatentImage().generate(64, 64, 1)
    with _counted_calls(model.network) as calls:
        KSampler().sample(model, 7, 10, 6.0, "euler", "normal", positive, negative, latent)
    assert len(calls) == 20
    (patched,) = cache_nodes.EasyCache().patch(model, 0.05, 0.15, 0.95, False)
    with _counted_calls(model.network) as calls:
        KSampler().sample(patched, 7, 10, 6.0, "euler", "normal", positive, negative, latent)
    assert len(calls) % 2 == 0 and len(calls) < 20  # both calls of a step skipped together


API_WORKFLOW = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": None}},
    "2": {"class_type": "EasyCache", "inputs": {"model": ["1", 0], "reuse_threshold": 0.2, "start_percent": 0.15,
                                                "end_percent": 0.95, "verbose": False}},
    "3": {"class_type": "LazyCache", "inputs": {"model": ["1", 0], "reuse_threshold": 0.2, "start_percent": 0.15,
                                                "end_percent": 0.95, "verbose": True}},
    "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["1", 1]}},
    "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
    "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "7": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "seed": 1, "steps": 4, "cfg": 6.0,
                                               "sampler_name": "euler", "scheduler": "normal", "positive": ["4", 0],
                                               "negative": ["5", 0], "latent_image": ["6", 0], "denoise": 1.0}},
    "8": {"class_type": "KSampler", "inputs": {"model": ["3", 0], "seed": 1, "steps": 4, "cfg": 6.0,
                                               "sampler_name": "euler", "scheduler": "normal", "positive": ["4", 0],
                                               "negative": ["5", 0], "latent_image": ["6", 0], "denoise": 1.0}},
    "9": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
    "10": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
    "11": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "easycache"}},
    "12": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "lazycache"}},
}


def test_regional_conditioning_runs_with_the_cache_restarting(sd1, caplog):
    """Area entries run on their crop: the shapes change from call to call, and the cache restarts (as ComfyUI's
    resets), warning once per run."""
    from nodes.conditioning_ops import ConditioningSetArea

    model, clip, _ = sd1
    positive = CLIPTextEncode().encode(clip, "a red fox")[0]
    area = ConditioningSetArea().append(CLIPTextEncode().encode(clip, "snow")[0], 32, 32, 0, 0, 1.0)[0]
    negative = CLIPTextEncode().encode(clip, "blurry")[0]
    (latent,) = EmptyLatentImage().generate(64, 64, 1)
    plain = KSampler().sample(model, 7, 6, 6.0, "euler", "normal", positive + area, negative, latent)[0]["samples"]
    (patched,) = cache_nodes.EasyCache().patch(model, 3.0, 0.0, 1.0, False)
    with caplog.at_level(logging.INFO):
        cached = KSampler().sample(patched, 7, 6, 6.0, "euler", "normal", positive + area, negative,
                                   latent)[0]["samples"]
    assert caplog.text.count("restarting the cache") == 1
    assert torch.equal(cached, plain)


def test_api_workflow_validates_and_runs(node_env):
    import copy

    from diffusion.families.sd.demo import DEMO_CHECKPOINT
    from tests.nodes.family_workflows import run_workflow

    prompt = copy.deepcopy(API_WORKFLOW)
    prompt["1"]["inputs"]["ckpt_name"] = DEMO_CHECKPOINT
    images = run_workflow(node_env, prompt)
    assert len(images) == 2 and all(image.size == (64, 64) for image in images)
    bad = copy.deepcopy(prompt)
    bad["2"]["inputs"]["reuse_threshold"] = 3.5
    bad["3"]["inputs"]["verbose"] = "yes"
    errors = validation_errors(bad)
    assert any("reuse_threshold" in str(error) for error in errors["2"])
    assert "3" in errors


# -- the transformer families ------------------------------------------------------------------------------------

def _transformer_sample(model: Any, clip: Any, steps: int = 8) -> torch.Tensor:
    from nodes.flux import EmptySD3LatentImage

    positive = CLIPTextEncode().encode(clip, "a red fox in the snow")[0]
    negative = CLIPTextEncode().encode(clip, "blurry")[0]
    (latent,) = EmptySD3LatentImage().generate(32, 32, 1)
    return KSampler().sample(model, 3, steps, 3.5, "euler", "simple", positive, negative, latent)[0]["samples"]


def _check_family(model: Any, clip: Any) -> None:
    with _counted_calls(model.network) as calls:
        plain = _transformer_sample(model, clip)
    plain_calls = len(calls)
    for node in (cache_nodes.EasyCache(), cache_nodes.LazyCache()):
        (exact,) = node.patch(model, 0.0, 0.15, 0.95, False)
        assert torch.equal(_transformer_sample(exact, clip), plain), node
        (patched,) = node.patch(model, 0.5, 0.15, 0.95, False)
        with _counted_calls(model.network) as calls:
            cached = _transformer_sample(patched, clip)
        assert len(calls) < plain_calls, node
        assert torch.isfinite(cached).all() and (cached - plain).abs().mean() < 0.5 * plain.abs().mean(), node


def test_sd3(node_env, tiny_models_dir):
    from diffusion.families.sd3 import demo as sd3_tiny
    from nodes.loaders import DiffusersLoader

    sd3_tiny.make_sd3_demo_models(tiny_models_dir)
    model, clip, _ = DiffusersLoader().load_checkpoint(sd3_tiny.DEMO_DIFFUSERS)
    _check_family(model, clip)


def test_flux(node_env, tiny_models_dir):
    from diffusion.families.flux import demo as tiny_flux
    from nodes.loaders import DiffusersLoader

    tiny_flux.make_flux_demo_models(tiny_models_dir)
    model, clip, _ = DiffusersLoader().load_checkpoint(tiny_flux.DEMO_FLUX_DIFFUSERS)
    _check_family(model, clip)
