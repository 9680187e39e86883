"""A MODEL's `model_options` as packs use it: copied by clone(), patches written straight into it (IPAdapter's way)
applied, the UNet function wrapper and APPLY_MODEL wrappers around each network call, `comfy.patcher_extension`."""
from __future__ import annotations

import pytest
import torch
from comfy import patcher_extension
from comfy.ldm.modules.attention import optimized_attention

from nodes.latent import EmptyLatentImage
from nodes.model_patches import RescaleCFG
from nodes.sampling import common_ksampler


def test_clone_copies_model_options(sd1, euler_sampled):
    model = sd1[0]
    first = model.clone()
    first.model_options["transformer_options"]["mine"] = [1]
    second = first.clone()
    second.model_options["transformer_options"]["mine"].append(2)
    second.model_options["transformer_options"]["other"] = True
    assert first.model_options["transformer_options"] == {"mine": [1]}
    assert "mine" not in model.model_options["transformer_options"]


def test_patches_written_into_model_options_run(sd1, euler_sampled):
    """IPAdapter copies transformer_options, adds its attn2 replacements and sets them back."""
    model, positive, negative = sd1
    expected = euler_sampled(model, positive, negative)
    blocks = []

    def attend(q, k, v, extra_options):
        blocks.append(extra_options["block"])
        return optimized_attention(q, k, v, extra_options["n_heads"])

    patched = model.clone()
    options = patched.model_options["transformer_options"].copy()
    options["patches_replace"] = {"attn2": {("input", 4): attend, ("middle", 0, 0): attend}}
    patched.model_options["transformer_options"] = options
    torch.testing.assert_close(euler_sampled(patched, positive, negative), expected)
    assert set(blocks) == {("input", 4), ("middle", 0)}
    unknown = model.clone()
    unknown.model_options["transformer_options"]["patches"] = {"middle_patch": [lambda *a: a]}
    with pytest.raises(ValueError, match=r"patches \['middle_patch'\] are not supported"):
        euler_sampled(unknown, positive, negative)


def test_unet_function_wrapper_wraps_each_network_call(sd1, euler_sampled):
    model, positive, negative = sd1
    expected = euler_sampled(model, positive, negative)
    seen = []

    def passing(apply_model, args):
        seen.append((args["cond_or_uncond"], args["input"].shape[0], sorted(args["c"])))
        return apply_model(args["input"], args["timestep"], **args["c"])

    wrapped = model.clone()
    wrapped.set_model_unet_function_wrapper(passing)
    torch.testing.assert_close(euler_sampled(wrapped, positive, negative), expected)
    assert seen == [([1, 0], 2, ["c_crossattn", "transformer_options"])] * 2

    # a wrapper that evaluates each chunk separately gives the same estimate (up to batch-size rounding)
    def chunked(apply_model, args):
        x, t, c = args["input"], args["timestep"], args["c"]
        parts = [apply_model(x[i:i + 1], t[i:i + 1], **{**c, "c_crossattn": c["c_crossattn"][i:i + 1]})
                 for i in range(x.shape[0])]
        return torch.cat(parts)

    split = model.clone()
    split.set_model_unet_function_wrapper(chunked)
    torch.testing.assert_close(euler_sampled(split, positive, negative), expected, atol=2e-3, rtol=1e-3)

    # a wrapper's estimate is the step's: zeroed, one Euler step to sigma 0 lands on zeros
    scaled = model.clone()
    scaled.set_model_unet_function_wrapper(lambda apply_model, args: apply_model(
        args["input"], args["timestep"], **args["c"]) * 0.0)
    latent = EmptyLatentImage().generate(64, 64, 1)[0]
    out = common_ksampler(scaled, 3, 1, 1.0, "euler", "normal", positive, negative, latent)[0]["samples"]
    assert out.abs().max() < 1e-4 < expected.abs().max()


def test_apply_model_wrappers_see_comfyuis_arguments(sd1, euler_sampled):
    model, positive, negative = sd1
    expected = euler_sampled(model, positive, negative)
    seen = []

    def outer(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        seen.append(("outer", tuple(transformer_options["cond_or_uncond"]), len(transformer_options["sample_sigmas"]),
                     transformer_options.get("mine")))
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    def inner(executor, x, t, *args, **kwargs):
        seen.append(("inner",))
        return executor(x, t, *args, **kwargs)

    wrapped = model.clone()
    wrapped.model_options["transformer_options"]["mine"] = "value"
    wrapped.add_wrapper_with_key(patcher_extension.WrappersMP.APPLY_MODEL, "outer", outer)
    wrapped.add_wrapper(patcher_extension.WrappersMP.APPLY_MODEL, inner)
    assert wrapped.get_wrappers(patcher_extension.WrappersMP.APPLY_MODEL, "outer") == [outer]
    torch.testing.assert_close(euler_sampled(wrapped, positive, negative), expected)
    assert seen[:2] == [("outer", (1, 0), 3, "value"), ("inner",)] and len(seen) == 4
    wrapped.remove_wrappers_with_key(patcher_extension.WrappersMP.APPLY_MODEL, "outer")
    assert wrapped.get_wrappers(patcher_extension.WrappersMP.APPLY_MODEL, "outer") == []

    # a wrapper moving x towards zero changes the result; one added to a clone leaves the original alone
    damped = model.clone()
    damped.add_wrapper_with_key("apply_model", "damp", lambda executor, x, t, *a, **k: executor(x * 0.5, t, *a, **k))
    assert not torch.allclose(euler_sampled(damped, positive, negative), expected)
    assert euler_sampled(model, positive, negative).equal(expected)


def test_wrapper_kinds_nodeflow_does_not_run_are_refused(sd1, euler_sampled):
    model, positive, negative = sd1
    with pytest.raises(AttributeError, match="'sampler_sample' wrappers are not supported"):
        model.clone().add_wrapper_with_key(patcher_extension.WrappersMP.SAMPLER_SAMPLE, "k", lambda *a: None)
    written = model.clone()
    patcher_extension.add_wrapper_with_key(patcher_extension.WrappersMP.PREDICT_NOISE, "k", lambda *a: None,
                                           written.model_options, is_model_options=True)
    with pytest.raises(ValueError, match=r"wrappers \['predict_noise'\] are not supported"):
        euler_sampled(written, positive, negative)
    with pytest.raises(AttributeError, match="'on_load_after' callbacks are not supported"):
        model.clone().add_callback_with_key(patcher_extension.CallbacksMP.ON_LOAD, "k", lambda *a: None)


def test_model_options_and_our_own_patches_together(sd1, euler_sampled):
    """A pack's wrapper beside our RescaleCFG patch: both apply (the wrapper passing through changes nothing)."""
    model, positive, negative = sd1
    (rescaled,) = RescaleCFG().patch(model, 0.7)
    expected = euler_sampled(rescaled, positive, negative)
    both = rescaled.clone()
    both.set_model_unet_function_wrapper(lambda apply_model, args: apply_model(args["input"], args["timestep"],
                                                                               **args["c"]))
    torch.testing.assert_close(euler_sampled(both, positive, negative), expected)
    assert not torch.allclose(expected, euler_sampled(model, positive, negative))


def test_patcher_extension_helpers():
    options = {}
    first, second = object(), object()
    patcher_extension.add_wrapper_with_key("apply_model", "a", first, options, is_model_options=True)
    patcher_extension.add_wrapper("apply_model", second, options["transformer_options"])
    assert patcher_extension.get_all_wrappers("apply_model", options, is_model_options=True) == [first, second]
    assert patcher_extension.get_wrappers_with_key("apply_model", "a", options["transformer_options"]) == [first]
    copied = patcher_extension.copy_nested_dicts(options)
    copied["transformer_options"]["wrappers"]["apply_model"]["a"].append(second)
    assert options["transformer_options"]["wrappers"]["apply_model"]["a"] == [first]
    merged = patcher_extension.merge_nested_dicts({"l": [1], "d": {"x": 1, "y": 1}, "s": 1},
                                                  {"l": [2], "d": {"x": 2, "z": 2}, "s": 2})
    # ComfyUI's merge: lists joined, plain values from the second, nested dicts with the first's values on top
    assert merged == {"l": [1, 2], "d": {"x": 1, "y": 1, "z": 2}, "s": 2}
    calls = []

    def wrapper(executor, value):
        calls.append(("wrapper", executor.class_obj))
        return executor(value + 1) * 10

    executor = patcher_extension.WrapperExecutor.new_class_executor(lambda value: value * 2, "owner", [wrapper])
    assert executor.execute(1) == 40 and calls == [("wrapper", "owner")]


def test_outer_sample_wrappers_wrap_each_run_and_may_add_network_wrappers(sd1, euler_sampled):
    """KJNodes' TTM way: an OUTER_SAMPLE wrapper adds an APPLY_MODEL wrapper to the guider's model_options (the
    run's own copy) and calls on; the original MODEL keeps its options."""
    model, positive, negative = sd1
    expected = euler_sampled(model, positive, negative)
    seen, calls = {}, []

    def apply_wrapper(executor, x, t, *args, **kwargs):
        calls.append(float(t[0]))
        return executor(x, t, *args, **kwargs)

    def outer(executor, noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed, **kwargs):
        guider = executor.class_obj
        seen.update(seed=seed, steps=len(sigmas) - 1, shape=tuple(noise.shape), latent=tuple(latent_image.shape),
                    model_sampling=guider.model_patcher.model.model_sampling is not None)
        wrappers = guider.model_options["transformer_options"]["wrappers"]
        wrappers.setdefault(patcher_extension.WrappersMP.APPLY_MODEL, {})["recorder"] = [apply_wrapper]
        return executor(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed, **kwargs)

    wrapped = model.clone()
    wrapped.add_wrapper_with_key(patcher_extension.WrappersMP.OUTER_SAMPLE, "ttm", outer)
    torch.testing.assert_close(euler_sampled(wrapped, positive, negative), expected)
    assert seen == {"seed": 3, "steps": 2, "shape": (1, 4, 8, 8), "latent": (1, 4, 8, 8), "model_sampling": True}
    assert len(calls) == 2  # the added network wrapper ran at each step of that run
    assert "apply_model" not in wrapped.model_options["transformer_options"]["wrappers"]
    calls.clear()
    euler_sampled(wrapped, positive, negative)
    assert len(calls) == 2  # added afresh to each run's copy, not piled up

    def quieter(executor, noise, latent_image, *args, **kwargs):
        return executor(noise * 0.5, latent_image, *args, **kwargs)

    changed = model.clone()
    changed.add_wrapper(patcher_extension.WrappersMP.OUTER_SAMPLE, quieter)
    assert not torch.allclose(euler_sampled(changed, positive, negative), expected)
