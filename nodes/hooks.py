"""ComfyUI's hook nodes (comfy_extras/nodes_hooks.py), with its node ids, inputs, outputs and categories: the
conditioning property nodes (strength, mask, hooks, timestep range on new entries, combined or not, single or as a
positive/negative pair), ConditioningTimestepsRange, the HOOKS makers (a LoRA, another checkpoint as a LoRA), the
keyframe makers that schedule hook strength over the sampling, SetHookKeyframes, CombineHooks and SetClipHooks.

HOOKS values are `diffusion.hooks.HookGroup`s; conditioning entries carry them under "hooks". Masks, strengths and
timestep ranges are the options `diffusion.sampling.regions` honours. Knows nothing of HTTP or the executor.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

from diffusion import loading
from diffusion.contracts import Conditioning, LoraPatch, TextEncoder
from diffusion.hooks import (
    INTERPOLATIONS,
    LORA,
    MODEL_AS_LORA,
    Hook,
    HookGroup,
    HookKeyframe,
    HookKeyframeGroup,
    combine_all,
    differences_patch,
    interpolated,
    with_conditioning_hooks,
    with_hooks,
)
from nodes.conditioning_ops import with_options
from nodes.environment import current_environment
from nodes.loaders import lora_clip

log = logging.getLogger(__name__)

PERCENT = {"min": 0.0, "max": 1.0, "step": 0.001}
HOOK_STRENGTH = {"default": 1.0, "min": -20.0, "max": 20.0, "step": 0.01}
PROPS_STRENGTH = {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}
SET_COND_AREA = (["default", "mask bounds"], {"tooltip": "default: the mask weights the whole image; mask bounds: "
                                                         "the entry is computed on the mask's bounding box only."})
PAIR_NAMES = ("positive", "negative")
PAIR_TOOLTIPS = ("The positive conditioning.", "The negative conditioning.")


def _property_inputs() -> dict[str, Any]:
    return {
        "strength": ("FLOAT", {**PROPS_STRENGTH, "tooltip": "The mask's strength (used only with a mask)."}),
        "set_cond_area": SET_COND_AREA,
    }


def _optional_property_inputs() -> dict[str, Any]:
    return {
        "mask": ("MASK", {"tooltip": "Where the new entries apply (weighted by strength)."}),
        "hooks": ("HOOKS", {"tooltip": "Weight hooks the new entries are sampled with, joined to theirs."}),
        "timesteps": ("TIMESTEPS_RANGE", {"tooltip": "The part of the sampling the new entries apply in."}),
    }


def with_properties(conditioning: Conditioning, strength: float, set_cond_area: str, mask: torch.Tensor | None,
                    hooks: HookGroup | None, timesteps: tuple[float, float] | None) -> Conditioning:
    """Hooks joined, then the mask (with its strength and area mode), then the timestep range, as ComfyUI's
    set_conds_props; strength applies only with a mask."""
    conditioning = with_hooks(conditioning, hooks)
    if mask is not None:
        conditioning = with_options(conditioning, {"mask": mask.unsqueeze(0) if mask.ndim < 3 else mask,
                                                   "set_area_to_bounds": set_cond_area != "default",
                                                   "mask_strength": strength})
    if timesteps is not None:
        conditioning = with_options(conditioning, {"start_percent": timesteps[0], "end_percent": timesteps[1]})
    return conditioning


def with_default(conditioning: Conditioning, hooks: HookGroup | None) -> Conditioning:
    """Entries marked as the default conditioning (ComfyUI's "default" option), hooks joined."""
    return with_options(with_hooks(conditioning, hooks), {"default": True})


class ConditioningSetProperties:
    DESCRIPTION = ("Sets properties on every entry of a conditioning: a mask with its strength, weight hooks and "
                   "the part of the sampling it applies in.")
    CATEGORY = "advanced/hooks/cond single"
    EXPERIMENTAL = True
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The conditioning with the properties set.",)
    FUNCTION = "set_properties"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"cond_NEW": ("CONDITIONING", {"tooltip": "The conditioning to set properties on."}),
                             **_property_inputs()},
                "optional": _optional_property_inputs()}

    def set_properties(self, cond_NEW: Conditioning, strength: float, set_cond_area: str,
                       mask: torch.Tensor | None = None, hooks: HookGroup | None = None,
                       timesteps: tuple[float, float] | None = None) -> tuple[Conditioning]:
        return (with_properties(cond_NEW, strength, set_cond_area, mask, hooks, timesteps),)


class ConditioningSetPropertiesAndCombine:
    DESCRIPTION = ("Sets properties (mask and strength, hooks, timestep range) on the entries of cond_NEW and "
                   "appends them to cond.")
    CATEGORY = "advanced/hooks/cond single"
    EXPERIMENTAL = True
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The entries of cond, then those of cond_NEW with the properties set.",)
    FUNCTION = "set_properties"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"cond": ("CONDITIONING", {"tooltip": "The conditioning kept as it is."}),
                             "cond_NEW": ("CONDITIONING", {"tooltip": "The conditioning to set properties on."}),
                             **_property_inputs()},
                "optional": _optional_property_inputs()}

    def set_properties(self, cond: Conditioning, cond_NEW: Conditioning, strength: float, set_cond_area: str,
                       mask: torch.Tensor | None = None, hooks: HookGroup | None = None,
                       timesteps: tuple[float, float] | None = None) -> tuple[Conditioning]:
        return ([*cond, *with_properties(cond_NEW, strength, set_cond_area, mask, hooks, timesteps)],)


class PairConditioningSetProperties:
    DESCRIPTION = "Sets the same properties (mask and strength, hooks, timestep range) on a positive and a negative."
    CATEGORY = "advanced/hooks/cond pair"
    EXPERIMENTAL = True
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = PAIR_NAMES
    OUTPUT_TOOLTIPS = ("The positive with the properties set.", "The negative with the properties set.")
    FUNCTION = "set_properties"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"positive_NEW": ("CONDITIONING", {"tooltip": PAIR_TOOLTIPS[0]}),
                             "negative_NEW": ("CONDITIONING", {"tooltip": PAIR_TOOLTIPS[1]}),
                             **_property_inputs()},
                "optional": _optional_property_inputs()}

    def set_properties(self, positive_NEW: Conditioning, negative_NEW: Conditioning, strength: float,
                       set_cond_area: str, mask: torch.Tensor | None = None, hooks: HookGroup | None = None,
                       timesteps: tuple[float, float] | None = None) -> tuple[Conditioning, Conditioning]:
        return tuple(with_properties(cond, strength, set_cond_area, mask, hooks, timesteps)
                     for cond in (positive_NEW, negative_NEW))


class PairConditioningSetPropertiesAndCombine:
    DESCRIPTION = ("Sets properties (mask and strength, hooks, timestep range) on a new positive and negative and "
                   "appends them to the existing pair.")
    CATEGORY = "advanced/hooks/cond pair"
    EXPERIMENTAL = True
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = PAIR_NAMES
    OUTPUT_TOOLTIPS = ("positive, then positive_NEW with the properties.",
                       "negative, then negative_NEW with the properties.")
    FUNCTION = "set_properties"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"positive": ("CONDITIONING", {"tooltip": "The positive kept as it is."}),
                             "negative": ("CONDITIONING", {"tooltip": "The negative kept as it is."}),
                             "positive_NEW": ("CONDITIONING", {"tooltip": "The positive to set properties on."}),
                             "negative_NEW": ("CONDITIONING", {"tooltip": "The negative to set properties on."}),
                             **_property_inputs()},
                "optional": _optional_property_inputs()}

    def set_properties(self, positive: Conditioning, negative: Conditioning, positive_NEW: Conditioning,
                       negative_NEW: Conditioning, strength: float, set_cond_area: str,
                       mask: torch.Tensor | None = None, hooks: HookGroup | None = None,
                       timesteps: tuple[float, float] | None = None) -> tuple[Conditioning, Conditioning]:
        return tuple([*old, *with_properties(new, strength, set_cond_area, mask, hooks, timesteps)]
                     for old, new in ((positive, positive_NEW), (negative, negative_NEW)))


class ConditioningSetDefaultCombine:
    DESCRIPTION = ("Appends cond_DEFAULT to cond, marked as the default conditioning (ComfyUI's 'default' "
                   "option), with the given hooks.")
    CATEGORY = "advanced/hooks/cond single"
    EXPERIMENTAL = True
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The entries of cond, then those of cond_DEFAULT marked as default.",)
    FUNCTION = "set_default_and_combine"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"cond": ("CONDITIONING", {"tooltip": "The conditioning kept as it is."}),
                             "cond_DEFAULT": ("CONDITIONING", {"tooltip": "The conditioning marked as default."})},
                "optional": {"hooks": ("HOOKS", {"tooltip": "Weight hooks joined to the default entries."})}}

    def set_default_and_combine(self, cond: Conditioning, cond_DEFAULT: Conditioning,
                                hooks: HookGroup | None = None) -> tuple[Conditioning]:
        return ([*cond, *with_default(cond_DEFAULT, hooks)],)


class PairConditioningSetDefaultCombine:
    DESCRIPTION = ("Appends a default positive and negative to a pair, marked as the default conditioning, with "
                   "the given hooks.")
    CATEGORY = "advanced/hooks/cond pair"
    EXPERIMENTAL = True
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = PAIR_NAMES
    OUTPUT_TOOLTIPS = ("positive, then positive_DEFAULT marked as default.",
                       "negative, then negative_DEFAULT marked as default.")
    FUNCTION = "set_default_and_combine"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"positive": ("CONDITIONING", {"tooltip": "The positive kept as it is."}),
                             "negative": ("CONDITIONING", {"tooltip": "The negative kept as it is."}),
                             "positive_DEFAULT": ("CONDITIONING", {"tooltip": "The default positive."}),
                             "negative_DEFAULT": ("CONDITIONING", {"tooltip": "The default negative."})},
                "optional": {"hooks": ("HOOKS", {"tooltip": "Weight hooks joined to the default entries."})}}

    def set_default_and_combine(self, positive: Conditioning, negative: Conditioning,
                                positive_DEFAULT: Conditioning, negative_DEFAULT: Conditioning,
                                hooks: HookGroup | None = None) -> tuple[Conditioning, Conditioning]:
        return ([*positive, *with_default(positive_DEFAULT, hooks)],
                [*negative, *with_default(negative_DEFAULT, hooks)])


class PairConditioningCombine:
    DESCRIPTION = "Appends pair B's entries to pair A's: positives with positives, negatives with negatives."
    CATEGORY = "advanced/hooks/cond pair"
    EXPERIMENTAL = True
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = PAIR_NAMES
    OUTPUT_TOOLTIPS = ("positive_A, then positive_B.", "negative_A, then negative_B.")
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"positive_A": ("CONDITIONING", {"tooltip": "The first positive."}),
                             "negative_A": ("CONDITIONING", {"tooltip": "The first negative."}),
                             "positive_B": ("CONDITIONING", {"tooltip": "The second positive."}),
                             "negative_B": ("CONDITIONING", {"tooltip": "The second negative."})}}

    def combine(self, positive_A: Conditioning, negative_A: Conditioning, positive_B: Conditioning,
                negative_B: Conditioning) -> tuple[Conditioning, Conditioning]:
        return ([*positive_A, *positive_B], [*negative_A, *negative_B])


class ConditioningTimestepsRange:
    DESCRIPTION = ("A part of the sampling, from start_percent to end_percent, plus the parts before and after it, "
                   "for the timesteps input of the conditioning property nodes.")
    CATEGORY = "advanced/hooks"
    EXPERIMENTAL = True
    RETURN_TYPES = ("TIMESTEPS_RANGE", "TIMESTEPS_RANGE", "TIMESTEPS_RANGE")
    RETURN_NAMES = ("TIMESTEPS_RANGE", "BEFORE_RANGE", "AFTER_RANGE")
    OUTPUT_TOOLTIPS = ("start_percent to end_percent.", "0 to start_percent.", "end_percent to 1.")
    FUNCTION = "create_range"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "start_percent": ("FLOAT", {"default": 0.0, **PERCENT, "tooltip": "Where the range starts (0: first "
                                                                              "step)."}),
            "end_percent": ("FLOAT", {"default": 1.0, **PERCENT, "tooltip": "Where the range ends (1: last step)."}),
        }}

    def create_range(self, start_percent: float, end_percent: float) -> tuple[tuple[float, float], ...]:
        return ((start_percent, end_percent), (0.0, start_percent), (end_percent, 1.0))


def _lora_resolver(lora_name: str):
    """A resolve(family, strength, modules) for a hook on a LoRA file: the file read once per family."""
    environment = current_environment()
    path = environment.folders.model_file("loras", lora_name, "lora_name")
    read: dict[str, tuple[Any, Any]] = {}

    def resolve(family: str, strength: float, modules: list[tuple[str, Any]]) -> LoraPatch:
        if family not in read:
            read[family] = loading.load_lora(environment.models, path, family, "lora_name")
        state, alphas = read[family]
        return LoraPatch(lora_name, state, alphas, strength)

    return resolve


def _model_resolver(ckpt_name: str):
    """A resolve(family, strength, modules) for a hook on another checkpoint: its weights' differences to the
    modules', computed once per set of modules."""
    environment = current_environment()
    path = environment.folders.model_file("checkpoints", ckpt_name, "ckpt_name")
    computed: dict[tuple[int, ...], LoraPatch] = {}

    def resolve(family: str, strength: float, modules: list[tuple[str, Any]]) -> LoraPatch:
        key = tuple(id(module) for _, module in modules)
        if key not in computed:
            model, clip, _ = loading.load_checkpoint(environment.models, path, "ckpt_name")
            if model.family != family:
                raise ValueError(f"ckpt_name: {ckpt_name} is a {model.family} checkpoint, the model a {family} one")
            others = [(model.lora_component, model.network), *clip.lora_modules()]
            computed[key] = differences_patch(ckpt_name, modules, others)
        return dataclasses.replace(computed[key], strength=strength)

    return resolve


def _hook_model_inputs(with_clip: bool) -> dict[str, Any]:
    names = current_environment().folders.list_models("checkpoints")
    inputs = {"ckpt_name": (names, {"tooltip": "The checkpoint in models/checkpoints whose weights are used."}),
              "strength_model": ("FLOAT", {**HOOK_STRENGTH, "tooltip": "How far to move the model's weights "
                                                                        "towards the checkpoint's (1: all the way)."})}
    if with_clip:
        inputs["strength_clip"] = ("FLOAT", {**HOOK_STRENGTH, "tooltip": "How far to move the text encoder's "
                                                                          "weights (through SetClipHooks)."})
    return {"required": inputs, "optional": {"prev_hooks": ("HOOKS", {"tooltip": "Hooks to add this one to."})}}


def _hook_lora_inputs(with_clip: bool) -> dict[str, Any]:
    names = current_environment().folders.list_models("loras")
    inputs = {"lora_name": (names, {"tooltip": "The LoRA file in models/loras."}),
              "strength_model": ("FLOAT", {**HOOK_STRENGTH, "tooltip": "How strongly to change the model."})}
    if with_clip:
        inputs["strength_clip"] = ("FLOAT", {**HOOK_STRENGTH, "tooltip": "How strongly to change the text "
                                                                          "encoder (through SetClipHooks)."})
    return {"required": inputs, "optional": {"prev_hooks": ("HOOKS", {"tooltip": "Hooks to add this one to."})}}


def _added(prev_hooks: HookGroup | None, hook: Hook | None) -> HookGroup:
    group = prev_hooks if prev_hooks is not None else HookGroup()
    return group if hook is None else group.combined(HookGroup((hook,)))


class CreateHookLora:
    DESCRIPTION = ("A weight hook of a LoRA: conditioning carrying it is sampled with the LoRA applied to the "
                   "model, and SetClipHooks applies it to a text encoder.")
    CATEGORY = "advanced/hooks/create"
    EXPERIMENTAL = True
    RETURN_TYPES = ("HOOKS",)
    OUTPUT_TOOLTIPS = ("prev_hooks with the LoRA hook added.",)
    FUNCTION = "create_hook"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return _hook_lora_inputs(with_clip=True)

    def create_hook(self, lora_name: str, strength_model: float, strength_clip: float,
                    prev_hooks: HookGroup | None = None) -> tuple[HookGroup]:
        if strength_model == 0 and strength_clip == 0:
            return (_added(prev_hooks, None),)
        hook = Hook(LORA, lora_name, strength_model, strength_clip, _lora_resolver(lora_name))
        return (_added(prev_hooks, hook),)


class CreateHookLoraModelOnly(CreateHookLora):
    DESCRIPTION = "A weight hook of a LoRA on the model only (its text-encoder layers are not used)."
    FUNCTION = "create_hook_model_only"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return _hook_lora_inputs(with_clip=False)

    def create_hook_model_only(self, lora_name: str, strength_model: float,
                               prev_hooks: HookGroup | None = None) -> tuple[HookGroup]:
        return self.create_hook(lora_name, strength_model, 0.0, prev_hooks)


class CreateHookModelAsLora:
    DESCRIPTION = ("A weight hook of another checkpoint of the same family used as a LoRA: weights move by "
                   "strength times their difference to the checkpoint's (ComfyUI's model_as_lora).")
    CATEGORY = "advanced/hooks/create"
    EXPERIMENTAL = True
    RETURN_TYPES = ("HOOKS",)
    OUTPUT_TOOLTIPS = ("prev_hooks with the checkpoint hook added.",)
    FUNCTION = "create_hook"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return _hook_model_inputs(with_clip=True)

    def create_hook(self, ckpt_name: str, strength_model: float, strength_clip: float,
                    prev_hooks: HookGroup | None = None) -> tuple[HookGroup]:
        hook = Hook(MODEL_AS_LORA, ckpt_name, strength_model, strength_clip, _model_resolver(ckpt_name))
        return (_added(prev_hooks, hook),)


class CreateHookModelAsLoraModelOnly(CreateHookModelAsLora):
    DESCRIPTION = "A weight hook of another checkpoint used as a LoRA, on the model only."
    FUNCTION = "create_hook_model_only"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return _hook_model_inputs(with_clip=False)

    def create_hook_model_only(self, ckpt_name: str, strength_model: float,
                               prev_hooks: HookGroup | None = None) -> tuple[HookGroup]:
        return self.create_hook(ckpt_name, strength_model, 0.0, prev_hooks)


class SetClipHooks:
    DESCRIPTION = ("Applies the hooks to a text encoder at their clip strengths, so prompts are encoded as with a "
                   "LoRA-loaded CLIP; with apply_to_conds its encodings also carry the hooks, so the model is "
                   "sampled with them for those prompts.")
    CATEGORY = "advanced/hooks/clip"
    EXPERIMENTAL = True
    RETURN_TYPES = ("CLIP",)
    OUTPUT_TOOLTIPS = ("The text encoder with the hooks applied.",)
    FUNCTION = "apply_hooks"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "clip": ("CLIP", {"tooltip": "The text encoder to apply the hooks to."}),
            "apply_to_conds": ("BOOLEAN", {"default": True, "tooltip": "Also attach the hooks to the conditioning "
                                                                       "encoded with this CLIP."}),
            "schedule_clip": ("BOOLEAN", {"default": False, "tooltip": "Scale the clip strength by the hooks' "
                                                                       "keyframes."}),
        }, "optional": {"hooks": ("HOOKS", {"tooltip": "The hooks to apply."})}}

    def apply_hooks(self, clip: TextEncoder, apply_to_conds: bool, schedule_clip: bool,
                    hooks: HookGroup | None = None) -> tuple[TextEncoder]:
        if hooks is None:
            return (clip,)
        for hook in hooks.clip_hooks():
            keyframes = hook.keyframes.keyframes
            strength = hook.strength_clip * (keyframes[0].strength if schedule_clip and keyframes else 1.0)
            if hook.kind == LORA:
                clip = lora_clip(clip, hook.source, strength)
            else:
                clip = clip.with_lora(hook.resolve(clip.family, strength, clip.lora_modules()))
        if apply_to_conds and hooks.model_hooks():
            hooked = with_conditioning_hooks(clip, hooks)
            if hooked is None:
                log.warning("SetClipHooks: this %s cannot attach hooks to its conditioning", type(clip).__name__)
            clip = hooked or clip
        return (clip,)


class SetHookKeyframes:
    DESCRIPTION = "Gives every hook of a group the keyframes that scale its strength over the sampling."
    CATEGORY = "advanced/hooks/scheduling"
    EXPERIMENTAL = True
    RETURN_TYPES = ("HOOKS",)
    OUTPUT_TOOLTIPS = ("The hooks with the keyframes.",)
    FUNCTION = "set_hook_keyframes"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"hooks": ("HOOKS", {"tooltip": "The hooks to schedule."})},
                "optional": {"hook_kf": ("HOOK_KEYFRAMES", {"tooltip": "The keyframes (none: hooks unchanged)."})}}

    def set_hook_keyframes(self, hooks: HookGroup, hook_kf: HookKeyframeGroup | None = None) -> tuple[HookGroup]:
        return (hooks if hook_kf is None else hooks.with_keyframes(hook_kf),)


KEYFRAMES_OUT = ("HOOK_KEYFRAMES",)
KEYFRAMES_NAME = ("HOOK_KF",)
PREV_KEYFRAMES = {"prev_hook_kf": ("HOOK_KEYFRAMES", {"tooltip": "Keyframes to add these to."})}


class CreateHookKeyframe:
    DESCRIPTION = "A keyframe: from start_percent of the sampling on, hook strengths are multiplied by strength_mult."
    CATEGORY = "advanced/hooks/scheduling"
    EXPERIMENTAL = True
    RETURN_TYPES = KEYFRAMES_OUT
    RETURN_NAMES = KEYFRAMES_NAME
    OUTPUT_TOOLTIPS = ("prev_hook_kf with the keyframe added.",)
    FUNCTION = "create_hook_keyframe"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "strength_mult": ("FLOAT", {**HOOK_STRENGTH, "tooltip": "The multiplier of the hooks' strengths."}),
            "start_percent": ("FLOAT", {"default": 0.0, **PERCENT, "tooltip": "Where in the sampling it starts."}),
        }, "optional": PREV_KEYFRAMES}

    def create_hook_keyframe(self, strength_mult: float, start_percent: float,
                             prev_hook_kf: HookKeyframeGroup | None = None) -> tuple[HookKeyframeGroup]:
        return ((prev_hook_kf or HookKeyframeGroup()).add(HookKeyframe(strength_mult, start_percent)),)


def _added_keyframes(prev: HookKeyframeGroup | None, percents: list[float], strengths: list[float],
                     print_keyframes: bool) -> HookKeyframeGroup:
    """Keyframes at `percents` with `strengths`; the first keeps at least one step."""
    group = prev or HookKeyframeGroup()
    for index, (percent, strength) in enumerate(zip(percents, strengths)):
        group = group.add(HookKeyframe(float(strength), float(percent), 1 if index == 0 else 0))
        if print_keyframes:
            log.info("Hook Keyframe - start_percent:%s = %s", percent, strength)
    return group


class CreateHookKeyframesInterpolated:
    DESCRIPTION = ("keyframes_count keyframes evenly spaced from start_percent to end_percent, their strengths "
                   "going from strength_start to strength_end along the interpolation.")
    CATEGORY = "advanced/hooks/scheduling"
    EXPERIMENTAL = True
    RETURN_TYPES = KEYFRAMES_OUT
    RETURN_NAMES = KEYFRAMES_NAME
    OUTPUT_TOOLTIPS = ("prev_hook_kf with the keyframes added.",)
    FUNCTION = "create_hook_keyframes"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        strength = {"min": 0.0, "max": 10.0, "step": 0.001}
        return {"required": {
            "strength_start": ("FLOAT", {"default": 1.0, **strength, "tooltip": "The first keyframe's strength."}),
            "strength_end": ("FLOAT", {"default": 1.0, **strength, "tooltip": "The last keyframe's strength."}),
            "interpolation": (list(INTERPOLATIONS), {"tooltip": "How strengths move from start to end."}),
            "start_percent": ("FLOAT", {"default": 0.0, **PERCENT, "tooltip": "Where the first keyframe starts."}),
            "end_percent": ("FLOAT", {"default": 1.0, **PERCENT, "tooltip": "Where the last keyframe starts."}),
            "keyframes_count": ("INT", {"default": 5, "min": 2, "max": 100, "step": 1,
                                        "tooltip": "How many keyframes."}),
            "print_keyframes": ("BOOLEAN", {"default": False, "tooltip": "Log each keyframe."}),
        }, "optional": PREV_KEYFRAMES}

    def create_hook_keyframes(self, strength_start: float, strength_end: float, interpolation: str,
                              start_percent: float, end_percent: float, keyframes_count: int,
                              print_keyframes: bool = False,
                              prev_hook_kf: HookKeyframeGroup | None = None) -> tuple[HookKeyframeGroup]:
        percents = interpolated(start_percent, end_percent, keyframes_count, "linear")
        strengths = interpolated(strength_start, strength_end, keyframes_count, interpolation)
        return (_added_keyframes(prev_hook_kf, percents, strengths, print_keyframes),)


class CreateHookKeyframesFromFloats:
    DESCRIPTION = "One keyframe per float, evenly spaced from start_percent to end_percent."
    CATEGORY = "advanced/hooks/scheduling"
    EXPERIMENTAL = True
    RETURN_TYPES = KEYFRAMES_OUT
    RETURN_NAMES = KEYFRAMES_NAME
    OUTPUT_TOOLTIPS = ("prev_hook_kf with the keyframes added.",)
    FUNCTION = "create_hook_keyframes"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "floats_strength": ("FLOATS", {"default": -1, "min": -1, "step": 0.001, "forceInput": True,
                                           "tooltip": "The keyframes' strengths (a float or a list of floats)."}),
            "start_percent": ("FLOAT", {"default": 0.0, **PERCENT, "tooltip": "Where the first keyframe starts."}),
            "end_percent": ("FLOAT", {"default": 1.0, **PERCENT, "tooltip": "Where the last keyframe starts."}),
            "print_keyframes": ("BOOLEAN", {"default": False, "tooltip": "Log each keyframe."}),
        }, "optional": PREV_KEYFRAMES}

    def create_hook_keyframes(self, floats_strength: Any, start_percent: float, end_percent: float,
                              print_keyframes: bool = False,
                              prev_hook_kf: HookKeyframeGroup | None = None) -> tuple[HookKeyframeGroup]:
        if isinstance(floats_strength, (int, float)):
            floats_strength = [float(floats_strength)]
        elif isinstance(floats_strength, torch.Tensor):
            floats_strength = floats_strength.flatten().tolist()
        elif not isinstance(floats_strength, (list, tuple)):
            raise ValueError(f"floats_strength: a float or a list of floats, not {type(floats_strength).__name__}")
        percents = interpolated(start_percent, end_percent, len(floats_strength), "linear")
        return (_added_keyframes(prev_hook_kf, percents, list(floats_strength), print_keyframes),)


def _combine_node(letters: str):
    class CombineHooks:
        DESCRIPTION = f"The hooks of up to {len(letters)} groups in one group (unconnected inputs are skipped)."
        CATEGORY = "advanced/hooks/combine"
        EXPERIMENTAL = True
        RETURN_TYPES = ("HOOKS",)
        OUTPUT_TOOLTIPS = ("The combined hooks.",)
        FUNCTION = "combine_hooks"

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            return {"required": {}, "optional": {f"hooks_{letter}": ("HOOKS", {"tooltip": f"Hooks {letter}."})
                                                 for letter in letters}}

        def combine_hooks(self, *in_order: HookGroup | None, **hooks: HookGroup | None
                          ) -> tuple[HookGroup | None]:
            named = [hooks.get(f"hooks_{letter}") for letter in letters[len(in_order):]]
            return (combine_all([*in_order, *named]),)

    CombineHooks.__name__ = CombineHooks.__qualname__ = f"CombineHooks{len(letters)}"
    return CombineHooks


CombineHooks2, CombineHooks4, CombineHooks8 = _combine_node("AB"), _combine_node("ABCD"), _combine_node("ABCDEFGH")

NODE_CLASS_MAPPINGS = {
    "CreateHookLora": CreateHookLora,
    "CreateHookLoraModelOnly": CreateHookLoraModelOnly,
    "CreateHookModelAsLora": CreateHookModelAsLora,
    "CreateHookModelAsLoraModelOnly": CreateHookModelAsLoraModelOnly,
    "SetHookKeyframes": SetHookKeyframes,
    "CreateHookKeyframe": CreateHookKeyframe,
    "CreateHookKeyframesInterpolated": CreateHookKeyframesInterpolated,
    "CreateHookKeyframesFromFloats": CreateHookKeyframesFromFloats,
    "CombineHooks2": CombineHooks2,
    "CombineHooks4": CombineHooks4,
    "CombineHooks8": CombineHooks8,
    "ConditioningSetProperties": ConditioningSetProperties,
    "ConditioningSetPropertiesAndCombine": ConditioningSetPropertiesAndCombine,
    "PairConditioningSetProperties": PairConditioningSetProperties,
    "PairConditioningSetPropertiesAndCombine": PairConditioningSetPropertiesAndCombine,
    "ConditioningSetDefaultCombine": ConditioningSetDefaultCombine,
    "PairConditioningSetDefaultCombine": PairConditioningSetDefaultCombine,
    "PairConditioningCombine": PairConditioningCombine,
    "SetClipHooks": SetClipHooks,
    "ConditioningTimestepsRange": ConditioningTimestepsRange,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "CreateHookLora": "Create Hook LoRA",
    "CreateHookLoraModelOnly": "Create Hook LoRA (MO)",
    "CreateHookModelAsLora": "Create Hook Model as LoRA",
    "CreateHookModelAsLoraModelOnly": "Create Hook Model as LoRA (MO)",
    "SetHookKeyframes": "Set Hook Keyframes",
    "CreateHookKeyframe": "Create Hook Keyframe",
    "CreateHookKeyframesInterpolated": "Create Hook Keyframes Interp.",
    "CreateHookKeyframesFromFloats": "Create Hook Keyframes From Floats",
    "CombineHooks2": "Combine Hooks [2]",
    "CombineHooks4": "Combine Hooks [4]",
    "CombineHooks8": "Combine Hooks [8]",
    "ConditioningSetProperties": "Cond Set Props",
    "ConditioningSetPropertiesAndCombine": "Cond Set Props Combine",
    "PairConditioningSetProperties": "Cond Pair Set Props",
    "PairConditioningSetPropertiesAndCombine": "Cond Pair Set Props Combine",
    "ConditioningSetDefaultCombine": "Cond Set Default Combine",
    "PairConditioningSetDefaultCombine": "Cond Pair Set Default Combine",
    "PairConditioningCombine": "Cond Pair Combine",
    "SetClipHooks": "Set CLIP Hooks",
    "ConditioningTimestepsRange": "Timesteps Range",
}
