"""Step-cache nodes, with ComfyUI's names and inputs: EasyCache and LazyCache. Each returns a new MODEL carrying a
cache of `diffusion.sampling.caching` (`DiffusionModel.sampling_wrappers`) that skips work on steps where the
output is predicted to change little, reusing the last computed step's change; the sigma-based samplers
(KSampler's and the custom-sampling nodes') apply it, each run with fresh state. A model carries one cache: a new
one replaces the one it had (ComfyUI keeps one cache per model too). Knows nothing of HTTP or the executor.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from diffusion.components import DiffusionModel
from diffusion.sampling import caching

CATEGORY = "advanced/debug/model"


def _cache_inputs(name: str) -> dict[str, Any]:
    return {"required": {
        "model": ("MODEL", {"tooltip": f"The model to add {name} to."}),
        "reuse_threshold": ("FLOAT", {
            "default": 0.2, "min": 0.0, "max": 3.0, "step": 0.01,
            "tooltip": "The threshold for reusing cached steps: steps are skipped while the summed predicted change "
                       "of the output stays under it (0: nothing is skipped; higher: more steps skipped, faster and "
                       "less faithful)."}),
        "start_percent": ("FLOAT", {
            "default": 0.15, "min": 0.0, "max": 1.0, "step": 0.01,
            "tooltip": f"The relative sampling step to begin use of {name} (a fraction of the model's schedule)."}),
        "end_percent": ("FLOAT", {
            "default": 0.95, "min": 0.0, "max": 1.0, "step": 0.01,
            "tooltip": f"The relative sampling step to end use of {name} (a fraction of the model's schedule)."}),
        "verbose": ("BOOLEAN", {"default": False,
                                "tooltip": "Whether to log verbose information: each step's decision and rates."}),
    }}


def _with_cache(model: DiffusionModel, cache: Any) -> DiffusionModel:
    others = tuple(wrapper for wrapper in model.sampling_wrappers
                   if not isinstance(wrapper, (caching.EasyCache, caching.LazyCache)))
    return dataclasses.replace(model, sampling_wrappers=others + (cache,))


class EasyCache:
    DESCRIPTION = ("Native EasyCache: skips the network on steps where its output is predicted to change little, "
                   "adding instead the change the last computed step made to its input. Decided per step on the "
                   "first conditioning's rows; every conditioning reuses its own cached change.")
    CATEGORY = CATEGORY
    EXPERIMENTAL = True
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with EasyCache.",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return _cache_inputs("EasyCache")

    def patch(self, model: DiffusionModel, reuse_threshold: float, start_percent: float, end_percent: float,
              verbose: bool) -> tuple[DiffusionModel]:
        settings = caching.CacheSettings(reuse_threshold, start_percent, end_percent, verbose)
        return (_with_cache(model, caching.EasyCache(settings)),)


class LazyCache:
    DESCRIPTION = ("A homebrew version of EasyCache - an even 'easier' version of EasyCache to implement: the whole "
                   "guided prediction is skipped and reused, one cache for all conditionings. Overall works worse "
                   "than EasyCache, but better in some rare cases, and works with everything.")
    CATEGORY = CATEGORY
    EXPERIMENTAL = True
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with LazyCache.",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return _cache_inputs("LazyCache")

    def patch(self, model: DiffusionModel, reuse_threshold: float, start_percent: float, end_percent: float,
              verbose: bool) -> tuple[DiffusionModel]:
        settings = caching.CacheSettings(reuse_threshold, start_percent, end_percent, verbose)
        return (_with_cache(model, caching.LazyCache(settings)),)


NODE_CLASS_MAPPINGS = {"EasyCache": EasyCache, "LazyCache": LazyCache}
NODE_DISPLAY_NAME_MAPPINGS = {"EasyCache": "EasyCache", "LazyCache": "LazyCache"}
