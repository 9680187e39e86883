"""ComfyUI's patcher callbacks on a MODEL (`CallbacksMP`): ON_CLONE in clone(), ON_PRE_RUN / ON_CLEANUP around a
sampling run (also a failing one); kinds nodeflow has no moment for are refused by name."""
from __future__ import annotations

import pytest
from comfy.patcher_extension import CallbacksMP


def test_on_clone_sees_original_and_clone_and_is_copied(sd1):
    model = sd1[0].clone()
    seen = []
    model.add_callback_with_key(CallbacksMP.ON_CLONE, "mine", lambda original, clone: seen.append((original, clone)))
    clone = model.clone()
    assert seen == [(model, clone)]
    # the clone holds its own copy of the callbacks: removing there leaves the original's
    clone.remove_callbacks_with_key(CallbacksMP.ON_CLONE, "mine")
    assert clone.get_all_callbacks(CallbacksMP.ON_CLONE) == []
    assert len(model.get_all_callbacks(CallbacksMP.ON_CLONE)) == 1
    assert sd1[0].get_all_callbacks(CallbacksMP.ON_CLONE) == []


def test_pre_run_and_cleanup_around_sampling(sd1, euler_sampled):
    model, positive, negative = sd1
    expected = euler_sampled(model, positive, negative)
    patched = model.clone()
    events = []
    patched.add_callback(CallbacksMP.ON_PRE_RUN, lambda m: events.append(("pre_run", m)))
    patched.add_callback_with_key(CallbacksMP.ON_CLEANUP, "k", lambda m: events.append(("cleanup", m)))
    patched.add_callback_with_key(CallbacksMP.ON_PRE_RUN, "k", lambda m: events.append(("pre_run_k", m)))
    got = euler_sampled(patched, positive, negative)
    assert [name for name, _ in events] == ["pre_run", "pre_run_k", "cleanup"]
    assert all(m is patched for _, m in events)
    assert got.equal(expected)


def test_cleanup_runs_when_the_run_fails(sd1, euler_sampled):
    model, positive, negative = sd1
    patched = model.clone()
    events = []

    def failing_wrapper(apply_model, args):
        raise RuntimeError("wrapper failed")

    patched.set_model_unet_function_wrapper(failing_wrapper)
    patched.add_callback(CallbacksMP.ON_CLEANUP, lambda m: events.append("cleanup"))
    with pytest.raises(RuntimeError, match="wrapper failed"):
        euler_sampled(patched, positive, negative)
    assert events == ["cleanup"]


def test_callback_kinds_without_a_moment_are_refused(sd1):
    model = sd1[0].clone()
    with pytest.raises(AttributeError, match="on_load_after"):
        model.add_callback(CallbacksMP.ON_LOAD, lambda *a: None)
    assert model.callbacks == {}
