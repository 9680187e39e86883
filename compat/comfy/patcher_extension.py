"""`comfy.patcher_extension` for plugins: ComfyUI's wrapper and callback kinds, `WrapperExecutor` and the helpers
that keep wrappers in a transformer_options (or model_options) dict, over our MODEL's model_options
(`diffusion.patcher_api`). Of the wrapper kinds, nodeflow runs APPLY_MODEL (around each network call); a MODEL
refuses the others when they are added, and a sampling run refuses any found in its model_options. Of the
callback kinds (`CallbacksMP`), a MODEL runs ON_CLONE (in clone()), ON_PRE_RUN and ON_CLEANUP (around each sampling
run); `add_callback` of another kind raises, naming it.
"""
from __future__ import annotations

from typing import Any, Callable

from diffusion.patcher_api import WrapperExecutor, copied_options

__all__ = ["CallbacksMP", "WrapperExecutor", "WrappersMP", "add_wrapper", "add_wrapper_with_key",
           "copy_nested_dicts", "get_all_wrappers", "get_wrappers_with_key", "merge_nested_dicts"]


class CallbacksMP:
    """ComfyUI's ModelPatcher callback kinds; nodeflow runs ON_CLONE, ON_PRE_RUN and ON_CLEANUP."""

    ON_CLONE = "on_clone"
    ON_LOAD = "on_load_after"
    ON_DETACH = "on_detach_after"
    ON_CLEANUP = "on_cleanup"
    ON_PRE_RUN = "on_pre_run"
    ON_PREPARE_STATE = "on_prepare_state"
    ON_APPLY_HOOKS = "on_apply_hooks"
    ON_REGISTER_ALL_HOOK_PATCHES = "on_register_all_hook_patches"
    ON_INJECT_MODEL = "on_inject_model"
    ON_EJECT_MODEL = "on_eject_model"


class WrappersMP:
    """ComfyUI's wrapper kinds; nodeflow runs APPLY_MODEL."""

    OUTER_SAMPLE = "outer_sample"
    PREPARE_SAMPLING = "prepare_sampling"
    SAMPLER_SAMPLE = "sampler_sample"
    PREDICT_NOISE = "predict_noise"
    CALC_COND_BATCH = "calc_cond_batch"
    APPLY_MODEL = "apply_model"
    DIFFUSION_MODEL = "diffusion_model"


def _wrappers_of(options: dict, is_model_options: bool) -> dict:
    transformer_options = options.setdefault("transformer_options", {}) if is_model_options else options
    return transformer_options.setdefault("wrappers", {})


def add_wrapper_with_key(wrapper_type: str, key: str | None, wrapper: Callable[..., Any], transformer_options: dict,
                         is_model_options: bool = False) -> None:
    """`wrapper` under `key` in a transformer_options dict (a model_options dict with `is_model_options`)."""
    _wrappers_of(transformer_options, is_model_options).setdefault(wrapper_type, {}).setdefault(key, []).append(
        wrapper)


def add_wrapper(wrapper_type: str, wrapper: Callable[..., Any], transformer_options: dict,
                is_model_options: bool = False) -> None:
    add_wrapper_with_key(wrapper_type, None, wrapper, transformer_options, is_model_options)


def get_wrappers_with_key(wrapper_type: str, key: str | None, transformer_options: dict,
                          is_model_options: bool = False) -> list[Callable[..., Any]]:
    options = transformer_options.get("transformer_options", {}) if is_model_options else transformer_options
    return list(options.get("wrappers", {}).get(wrapper_type, {}).get(key, []))


def get_all_wrappers(wrapper_type: str, transformer_options: dict,
                     is_model_options: bool = False) -> list[Callable[..., Any]]:
    """Every wrapper of `wrapper_type`, key by key in the order they were added."""
    options = transformer_options.get("transformer_options", {}) if is_model_options else transformer_options
    return [wrapper for group in options.get("wrappers", {}).get(wrapper_type, {}).values() for wrapper in group]


def copy_nested_dicts(input_dict: dict) -> dict:
    """A copy of `input_dict` with its nested dicts and lists copied too (the objects in them shared)."""
    return copied_options(input_dict)


def merge_nested_dicts(dict1: dict, dict2: dict, copy_dict1: bool = True) -> dict:
    """`dict1` (copied when asked) with `dict2` merged in as ComfyUI merges them: lists extended by dict2's, other
    values replaced by dict2's, and nested dicts merged the other way round (dict2's nested dict as the base,
    dict1's merged into it)."""
    merged = copy_nested_dicts(dict1) if copy_dict1 else dict1
    for key, value in dict2.items():
        if isinstance(value, dict):
            merged[key] = merge_nested_dicts(value, merged.get(key, {}))
        elif isinstance(value, list):
            merged.setdefault(key, []).extend(value)
        else:
            merged[key] = value
    return merged
