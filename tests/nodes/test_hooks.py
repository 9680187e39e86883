"""The hook nodes: their contracts against ComfyUI's (`COMFYUI_CONTRACTS`, read off comfy_extras/nodes_hooks.py),
the conditioning properties set as comfy/hooks.py sets them, HOOKS and keyframe values, keyframes followed by sigma
as ComfyUI's HookKeyframeGroup follows them, SetClipHooks against a LoRA-loaded CLIP, and a workflow through the
engine."""
import pytest
import torch

import nodes
from diffusion.families.sd.demo import DEMO_CHECKPOINT, DEMO_LORA
from diffusion.hooks import HookGroup, HookKeyframe, HookKeyframeGroup, KeyframeCursor, interpolated
from nodes import hooks as hk
from nodes.conditioning import CLIPTextEncode
from nodes.loaders import LoraLoader
from tests.nodes.conftest import validation_errors
from tests.nodes.family_workflows import run_workflow

PROPS = [("strength", ("FLOAT", 1.0, 0.0, 10.0, 0.01)), ("set_cond_area", ["default", "mask bounds"]),
         ("mask", "MASK"), ("hooks", "HOOKS"), ("timesteps", "TIMESTEPS_RANGE")]
PERCENT_0 = ("FLOAT", 0.0, 0.0, 1.0, 0.001)
PERCENT_1 = ("FLOAT", 1.0, 0.0, 1.0, 0.001)
HOOK_STRENGTH = ("FLOAT", 1.0, -20.0, 20.0, 0.01)
PAIR = ("CONDITIONING", "CONDITIONING")
PAIR_NAMES = ("positive", "negative")
KF = ("HOOK_KEYFRAMES",)
COMBO = "COMBO"  # a file list, its contents depend on the models folder

# node id: (category, RETURN_TYPES, RETURN_NAMES or None, the inputs in order, required then optional: link type,
# combo choices, (BOOLEAN, default) or (INT/FLOAT, default, min, max, step))
COMFYUI_CONTRACTS: dict[str, tuple[str, tuple, tuple | None, list]] = {
    "ConditioningSetProperties": ("advanced/hooks/cond single", ("CONDITIONING",), None, [
        ("cond_NEW", "CONDITIONING"), *PROPS]),
    "ConditioningSetPropertiesAndCombine": ("advanced/hooks/cond single", ("CONDITIONING",), None, [
        ("cond", "CONDITIONING"), ("cond_NEW", "CONDITIONING"), *PROPS]),
    "PairConditioningSetProperties": ("advanced/hooks/cond pair", PAIR, PAIR_NAMES, [
        ("positive_NEW", "CONDITIONING"), ("negative_NEW", "CONDITIONING"), *PROPS]),
    "PairConditioningSetPropertiesAndCombine": ("advanced/hooks/cond pair", PAIR, PAIR_NAMES, [
        ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("positive_NEW", "CONDITIONING"),
        ("negative_NEW", "CONDITIONING"), *PROPS]),
    "ConditioningSetDefaultCombine": ("advanced/hooks/cond single", ("CONDITIONING",), None, [
        ("cond", "CONDITIONING"), ("cond_DEFAULT", "CONDITIONING"), ("hooks", "HOOKS")]),
    "PairConditioningSetDefaultCombine": ("advanced/hooks/cond pair", PAIR, PAIR_NAMES, [
        ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("positive_DEFAULT", "CONDITIONING"),
        ("negative_DEFAULT", "CONDITIONING"), ("hooks", "HOOKS")]),
    "PairConditioningCombine": ("advanced/hooks/cond pair", PAIR, PAIR_NAMES, [
        ("positive_A", "CONDITIONING"), ("negative_A", "CONDITIONING"), ("positive_B", "CONDITIONING"),
        ("negative_B", "CONDITIONING")]),
    "ConditioningTimestepsRange": ("advanced/hooks", ("TIMESTEPS_RANGE",) * 3,
                                   ("TIMESTEPS_RANGE", "BEFORE_RANGE", "AFTER_RANGE"), [
        ("start_percent", PERCENT_0), ("end_percent", PERCENT_1)]),
    "CreateHookLora": ("advanced/hooks/create", ("HOOKS",), None, [
        ("lora_name", COMBO), ("strength_model", HOOK_STRENGTH), ("strength_clip", HOOK_STRENGTH),
        ("prev_hooks", "HOOKS")]),
    "CreateHookLoraModelOnly": ("advanced/hooks/create", ("HOOKS",), None, [
        ("lora_name", COMBO), ("strength_model", HOOK_STRENGTH), ("prev_hooks", "HOOKS")]),
    "CreateHookModelAsLora": ("advanced/hooks/create", ("HOOKS",), None, [
        ("ckpt_name", COMBO), ("strength_model", HOOK_STRENGTH), ("strength_clip", HOOK_STRENGTH),
        ("prev_hooks", "HOOKS")]),
    "CreateHookModelAsLoraModelOnly": ("advanced/hooks/create", ("HOOKS",), None, [
        ("ckpt_name", COMBO), ("strength_model", HOOK_STRENGTH), ("prev_hooks", "HOOKS")]),
    "SetClipHooks": ("advanced/hooks/clip", ("CLIP",), None, [
        ("clip", "CLIP"), ("apply_to_conds", ("BOOLEAN", True)), ("schedule_clip", ("BOOLEAN", False)),
        ("hooks", "HOOKS")]),
    "SetHookKeyframes": ("advanced/hooks/scheduling", ("HOOKS",), None, [
        ("hooks", "HOOKS"), ("hook_kf", "HOOK_KEYFRAMES")]),
    "CreateHookKeyframe": ("advanced/hooks/scheduling", KF, ("HOOK_KF",), [
        ("strength_mult", HOOK_STRENGTH), ("start_percent", PERCENT_0), ("prev_hook_kf", "HOOK_KEYFRAMES")]),
    "CreateHookKeyframesInterpolated": ("advanced/hooks/scheduling", KF, ("HOOK_KF",), [
        ("strength_start", ("FLOAT", 1.0, 0.0, 10.0, 0.001)), ("strength_end", ("FLOAT", 1.0, 0.0, 10.0, 0.001)),
        ("interpolation", ["linear", "ease_in", "ease_out", "ease_in_out"]), ("start_percent", PERCENT_0),
        ("end_percent", PERCENT_1), ("keyframes_count", ("INT", 5, 2, 100, 1)),
        ("print_keyframes", ("BOOLEAN", False)), ("prev_hook_kf", "HOOK_KEYFRAMES")]),
    "CreateHookKeyframesFromFloats": ("advanced/hooks/scheduling", KF, ("HOOK_KF",), [
        ("floats_strength", "FLOATS"), ("start_percent", PERCENT_0), ("end_percent", PERCENT_1),
        ("print_keyframes", ("BOOLEAN", False)), ("prev_hook_kf", "HOOK_KEYFRAMES")]),
    "CombineHooks2": ("advanced/hooks/combine", ("HOOKS",), None, [("hooks_A", "HOOKS"), ("hooks_B", "HOOKS")]),
    "CombineHooks4": ("advanced/hooks/combine", ("HOOKS",), None, [
        (f"hooks_{letter}", "HOOKS") for letter in "ABCD"]),
    "CombineHooks8": ("advanced/hooks/combine", ("HOOKS",), None, [
        (f"hooks_{letter}", "HOOKS") for letter in "ABCDEFGH"]),
}
DISPLAY_NAMES = {
    "ConditioningSetProperties": "Cond Set Props", "ConditioningSetPropertiesAndCombine": "Cond Set Props Combine",
    "PairConditioningSetProperties": "Cond Pair Set Props",
    "PairConditioningSetPropertiesAndCombine": "Cond Pair Set Props Combine",
    "ConditioningSetDefaultCombine": "Cond Set Default Combine",
    "PairConditioningSetDefaultCombine": "Cond Pair Set Default Combine",
    "PairConditioningCombine": "Cond Pair Combine",
    "ConditioningTimestepsRange": "Timesteps Range", "CreateHookLora": "Create Hook LoRA",
    "CreateHookLoraModelOnly": "Create Hook LoRA (MO)", "SetClipHooks": "Set CLIP Hooks",
    "CreateHookModelAsLora": "Create Hook Model as LoRA",
    "CreateHookModelAsLoraModelOnly": "Create Hook Model as LoRA (MO)",
    "SetHookKeyframes": "Set Hook Keyframes", "CreateHookKeyframe": "Create Hook Keyframe",
    "CreateHookKeyframesInterpolated": "Create Hook Keyframes Interp.",
    "CreateHookKeyframesFromFloats": "Create Hook Keyframes From Floats", "CombineHooks2": "Combine Hooks [2]",
    "CombineHooks4": "Combine Hooks [4]", "CombineHooks8": "Combine Hooks [8]",
}


def _contract(node_class: type) -> tuple[str, tuple, tuple | None, list]:
    inputs = []
    spec = node_class.INPUT_TYPES()
    for name, (kind, options) in [*spec["required"].items(), *spec.get("optional", {}).items()]:
        if isinstance(kind, list):
            inputs.append((name, COMBO if name in ("lora_name", "ckpt_name") else kind))
        elif kind in ("INT", "FLOAT"):
            inputs.append((name, (kind, options["default"], options["min"], options["max"], options.get("step"))))
        elif kind == "BOOLEAN":
            inputs.append((name, (kind, options["default"])))
        else:
            inputs.append((name, kind))
    return node_class.CATEGORY, node_class.RETURN_TYPES, getattr(node_class, "RETURN_NAMES", None), inputs


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(node_env, name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert _contract(node_class) == COMFYUI_CONTRACTS[name]
    assert node_class.DESCRIPTION and callable(getattr(node_class(), node_class.FUNCTION))
    spec = node_class.INPUT_TYPES()
    inputs = [*spec["required"].values(), *spec.get("optional", {}).values()]
    assert all(options.get("tooltip") for _, options in inputs)
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == DISPLAY_NAMES[name]


def test_every_node_is_in_the_table():
    assert set(hk.NODE_CLASS_MAPPINGS) == set(COMFYUI_CONTRACTS)


# -- conditioning properties, as comfy/hooks.py set_conds_props and friends set them ---------------------------------

def _cond(value: float, **options):
    return [[torch.full((1, 2, 3), value), {"pooled_output": torch.full((1, 3), value), **options}]]


def test_properties_set_mask_strength_area_mode_and_range():
    mask = torch.ones(4, 4)
    (result,) = hk.ConditioningSetProperties().set_properties(_cond(1.0), 0.5, "mask bounds", mask,
                                                              None, (0.2, 0.7))
    options = result[0][1]
    assert options["mask"].shape == (1, 4, 4) and options["mask_strength"] == 0.5
    assert options["set_area_to_bounds"] is True
    assert (options["start_percent"], options["end_percent"]) == (0.2, 0.7)
    assert "strength" not in options and "hooks" not in options


def test_strength_without_a_mask_changes_nothing_as_in_comfyui():
    original = _cond(1.0)
    (result,) = hk.ConditioningSetProperties().set_properties(original, 3.0, "default")
    assert result[0][1].keys() == original[0][1].keys()
    assert result[0][0] is original[0][0]


def test_combine_variants_append_the_new_entries():
    old, new = _cond(1.0), _cond(2.0)
    (single,) = hk.ConditioningSetPropertiesAndCombine().set_properties(old, new, 1.0, "default",
                                                                        timesteps=(0.0, 0.5))
    assert [entry[0][0, 0, 0].item() for entry in single] == [1.0, 2.0]
    assert "start_percent" not in single[0][1] and single[1][1]["end_percent"] == 0.5
    positive, negative = hk.PairConditioningSetPropertiesAndCombine().set_properties(
        old, _cond(3.0), new, _cond(4.0), 1.0, "default", torch.ones(1, 4, 4))
    assert [entry[0][0, 0, 0].item() for entry in positive] == [1.0, 2.0]
    assert [entry[0][0, 0, 0].item() for entry in negative] == [3.0, 4.0]
    assert "mask" not in positive[0][1] and positive[1][1]["set_area_to_bounds"] is False
    pos, neg = hk.PairConditioningCombine().combine(old, _cond(3.0), new, _cond(4.0))
    assert len(pos) == len(neg) == 2 and pos[1][0] is new[0][0]


def test_default_combine_marks_the_new_entries_and_joins_hooks(node_env):
    (hooks,) = hk.CreateHookLora().create_hook(DEMO_LORA, 1.0, 1.0)
    (result,) = hk.ConditioningSetDefaultCombine().set_default_and_combine(_cond(1.0), _cond(2.0), hooks)
    assert "default" not in result[0][1] and result[1][1]["default"] is True and result[1][1]["hooks"] is hooks
    positive, negative = hk.PairConditioningSetDefaultCombine().set_default_and_combine(
        _cond(1.0), _cond(3.0), _cond(2.0), _cond(4.0))
    assert positive[1][1]["default"] and negative[1][1]["default"] and "hooks" not in negative[1][1]


def test_hooks_join_those_an_entry_already_has(node_env):
    (first,) = hk.CreateHookLora().create_hook(DEMO_LORA, 1.0, 1.0)
    (second,) = hk.CreateHookLoraModelOnly().create_hook_model_only(DEMO_LORA, 0.5)
    (once,) = hk.ConditioningSetProperties().set_properties(_cond(1.0), 1.0, "default", hooks=first)
    (twice,) = hk.ConditioningSetProperties().set_properties(once, 1.0, "default", hooks=second)
    assert twice[0][1]["hooks"].hooks == (*first.hooks, *second.hooks)


def test_timesteps_range_gives_the_range_and_the_parts_around_it():
    assert hk.ConditioningTimestepsRange().create_range(0.25, 0.6) == ((0.25, 0.6), (0.0, 0.25), (0.6, 1.0))


# -- HOOKS and keyframes ----------------------------------------------------------------------------------------------

def test_hook_makers_and_combine(node_env):
    (a,) = hk.CreateHookLora().create_hook(DEMO_LORA, 0.8, 0.3)
    assert len(a) == 1 and (a.hooks[0].strength_model, a.hooks[0].strength_clip) == (0.8, 0.3)
    assert hk.CreateHookLora().create_hook(DEMO_LORA, 0.0, 0.0, a) == (a,)
    (b,) = hk.CreateHookLoraModelOnly().create_hook_model_only(DEMO_LORA, 0.5, prev_hooks=a)
    assert len(b) == 2 and b.hooks[0] is a.hooks[0] and b.hooks[1].strength_clip == 0.0
    assert hk.CombineHooks2().combine_hooks() == (None,)
    (combined,) = hk.CombineHooks8().combine_hooks(hooks_B=a, hooks_E=b)
    assert combined.hooks == b.hooks  # a's hook is not repeated
    with pytest.raises(ValueError, match="lora_name"):
        hk.CreateHookLora().create_hook("missing.safetensors", 1.0, 1.0)


def test_keyframes_are_sorted_and_set_on_every_hook(node_env):
    (kf,) = hk.CreateHookKeyframe().create_hook_keyframe(0.5, 0.6)
    (kf,) = hk.CreateHookKeyframe().create_hook_keyframe(2.0, 0.1, kf)
    assert [(k.strength, k.start_percent) for k in kf.keyframes] == [(2.0, 0.1), (0.5, 0.6)]
    (hooks,) = hk.CreateHookLora().create_hook(DEMO_LORA, 1.0, 1.0)
    (scheduled,) = hk.SetHookKeyframes().set_hook_keyframes(hooks, kf)
    assert scheduled.hooks[0].keyframes is kf and hooks.hooks[0].keyframes.keyframes == ()
    assert scheduled.hooks[0].identity == hooks.hooks[0].identity
    assert hk.SetHookKeyframes().set_hook_keyframes(hooks) == (hooks,)
    (combined,) = hk.CombineHooks2().combine_hooks(hooks, scheduled)
    assert combined.hooks == hooks.hooks  # the same hook, whatever its keyframes


def test_interpolated_keyframes_match_comfyuis_weights():
    (kf,) = hk.CreateHookKeyframesInterpolated().create_hook_keyframes(1.0, 0.0, "ease_in", 0.0, 1.0, 5)
    assert [k.start_percent for k in kf.keyframes] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    # ease_in: (end - start) * t^2 + start
    assert [k.strength for k in kf.keyframes] == pytest.approx([1.0, 0.9375, 0.75, 0.4375, 0.0])
    assert [k.guarantee_steps for k in kf.keyframes] == [1, 0, 0, 0, 0]
    assert interpolated(0.0, 2.0, 3, "ease_in_out") == pytest.approx([0.0, 1.0, 2.0])
    assert interpolated(0.0, 1.0, 3, "ease_out") == pytest.approx([0.0, 0.75, 1.0])
    (floats,) = hk.CreateHookKeyframesFromFloats().create_hook_keyframes([0.2, 0.4, 0.8], 0.0, 0.5)
    assert [k.start_percent for k in floats.keyframes] == pytest.approx([0.0, 0.25, 0.5])
    assert [k.strength for k in floats.keyframes] == pytest.approx([0.2, 0.4, 0.8])
    (single,) = hk.CreateHookKeyframesFromFloats().create_hook_keyframes(0.7, 0.3, 1.0)
    assert len(single.keyframes) == 1 and single.keyframes[0].start_percent == pytest.approx(0.3)
    with pytest.raises(ValueError, match="floats_strength"):
        hk.CreateHookKeyframesFromFloats().create_hook_keyframes("x", 0.0, 1.0)


def test_the_cursor_switches_keyframes_at_their_sigma():
    # percent p starts at sigma 10 * (1 - p); steps at sigmas 10, 7.5, 5, 2.5
    group = HookKeyframeGroup().add(HookKeyframe(1.0, 0.0)).add(HookKeyframe(0.5, 0.5)).add(HookKeyframe(0.0, 0.7))
    cursor = KeyframeCursor(group, lambda p: 10.0 * (1 - p), max_sigma=10.0)
    assert [cursor.strength(s) for s in (10.0, 10.0, 7.5, 5.0, 2.5)] == [1.0, 1.0, 1.0, 0.5, 0.0]
    # a guaranteed keyframe keeps its step even when the next one has started
    late = HookKeyframeGroup().add(HookKeyframe(1.0, 0.0)).add(HookKeyframe(0.5, 0.0, guarantee_steps=1))
    cursor = KeyframeCursor(late, lambda p: 10.0 * (1 - p), max_sigma=10.0)
    assert [cursor.strength(s) for s in (10.0, 7.5)] == [1.0, 0.5]
    assert KeyframeCursor(HookKeyframeGroup(), lambda p: p, 1.0).strength(0.3) == 1.0


# -- SetClipHooks ----------------------------------------------------------------------------------------------------

def test_set_clip_hooks_encodes_as_a_lora_loaded_clip(sd1):
    model, clip, _ = sd1
    (hooks,) = hk.CreateHookLora().create_hook(DEMO_LORA, 1.0, 0.6)
    (hooked,) = hk.SetClipHooks().apply_hooks(clip, True, False, hooks)
    loaded = LoraLoader().load_lora(model, clip, DEMO_LORA, 1.0, 0.6)[1]
    expected = CLIPTextEncode().encode(loaded, "a cat")[0][0][0]
    assert torch.equal(CLIPTextEncode().encode(hooked, "a cat")[0][0][0], expected)
    assert not torch.equal(CLIPTextEncode().encode(clip, "a cat")[0][0][0], expected)
    (model_only,) = hk.CreateHookLoraModelOnly().create_hook_model_only(DEMO_LORA, 1.0)
    assert hk.SetClipHooks().apply_hooks(clip, False, False, model_only) == (clip,)
    assert hk.SetClipHooks().apply_hooks(clip, True, False) == (clip,)


def test_set_clip_hooks_scheduled_uses_the_first_keyframe(sd1):
    model, clip, _ = sd1
    (kf,) = hk.CreateHookKeyframe().create_hook_keyframe(0.5, 0.0)
    (hooks,) = hk.CreateHookLora().create_hook(DEMO_LORA, 1.0, 0.8)
    (hooks,) = hk.SetHookKeyframes().set_hook_keyframes(hooks, kf)
    (hooked,) = hk.SetClipHooks().apply_hooks(clip, True, True, hooks)
    loaded = LoraLoader().load_lora(model, clip, DEMO_LORA, 1.0, 0.4)[1]
    assert torch.equal(CLIPTextEncode().encode(hooked, "a cat")[0][0][0],
                       CLIPTextEncode().encode(loaded, "a cat")[0][0][0])


# -- through the engine ---------------------------------------------------------------------------------------------

def _text(clip, text):
    return {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": text}}


def test_a_hooks_workflow_validates_and_runs(node_env):
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO_CHECKPOINT}},
        "2": {"class_type": "CreateHookLora", "inputs": {"lora_name": DEMO_LORA, "strength_model": 1.0,
                                                         "strength_clip": 0.5}},
        "3": {"class_type": "CreateHookKeyframesInterpolated", "inputs": {
            "strength_start": 1.0, "strength_end": 0.2, "interpolation": "linear", "start_percent": 0.0,
            "end_percent": 1.0, "keyframes_count": 3, "print_keyframes": False}},
        "4": {"class_type": "SetHookKeyframes", "inputs": {"hooks": ["2", 0], "hook_kf": ["3", 0]}},
        "5": {"class_type": "CombineHooks2", "inputs": {"hooks_A": ["4", 0]}},
        "6": {"class_type": "SetClipHooks", "inputs": {"clip": ["1", 1], "apply_to_conds": True,
                                                       "schedule_clip": False, "hooks": ["5", 0]}},
        "7": _text(["6", 0], "a meadow"), "8": _text(["1", 1], "blurry"), "9": _text(["1", 1], "a red barn"),
        "10": {"class_type": "ConditioningTimestepsRange", "inputs": {"start_percent": 0.0, "end_percent": 0.5}},
        "11": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}},
        "12": {"class_type": "PairConditioningSetPropertiesAndCombine", "inputs": {
            "positive": ["7", 0], "negative": ["8", 0], "positive_NEW": ["9", 0], "negative_NEW": ["8", 0],
            "strength": 0.8, "set_cond_area": "default", "mask": ["11", 0], "timesteps": ["10", 0],
            "hooks": ["5", 0]}},
        "13": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "14": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 3, "steps": 2, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["12", 0], "negative": ["12", 1], "latent_image": ["13", 0], "denoise": 1.0}},
        "15": {"class_type": "VAEDecode", "inputs": {"samples": ["14", 0], "vae": ["1", 2]}},
        "16": {"class_type": "SaveImage", "inputs": {"images": ["15", 0], "filename_prefix": "hooks"}},
    }
    (image,) = run_workflow(node_env, prompt)
    assert image.size == (64, 64)


def test_constant_inputs_are_validated(node_env):
    prompt = {"1": {"class_type": "ConditioningTimestepsRange", "inputs": {"start_percent": 1.5,
                                                                          "end_percent": 1.0}}}
    assert "start_percent" in str(validation_errors(prompt)["1"])
    prompt = {"1": {"class_type": "CreateHookLora", "inputs": {"lora_name": "nope.safetensors",
                                                               "strength_model": 1.0, "strength_clip": 1.0}}}
    assert "lora_name" in str(validation_errors(prompt)["1"])


def test_hook_groups_are_values():
    empty = HookGroup()
    assert len(empty) == 0 and empty.combined(None) == empty


# -- hooks at sampling time -------------------------------------------------------------------------------------------

def _denoiser(model, positive, negative, cfg):
    from diffusion.sampling import guiders

    return guiders.CFGGuider(model, positive, negative, cfg).denoiser(model.network, 1, None, model.model_sampling)


def _estimate(model, conditioning, x, sigma, loras=()):
    """The plain denoised estimate of one conditioning, with `loras` applied to the network as LoraLoader's are."""
    from diffusion.lora import lora_applied

    with torch.inference_mode(), lora_applied(model.network, model.lora_component, loras):
        return _denoiser(model, conditioning, conditioning, 1.0)(x, sigma)


def _lora_loras(model, strength):
    from nodes.loaders import LoraLoaderModelOnly

    return LoraLoaderModelOnly().load_lora_model_only(model, DEMO_LORA, strength)[0].loras


def test_a_hooked_lora_changes_only_its_conditionings_estimate(sd1):
    model, clip, _ = sd1
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 3.0
    sigma = torch.tensor([3.0])
    cat, blur = CLIPTextEncode().encode(clip, "a cat")[0], CLIPTextEncode().encode(clip, "blurry")[0]
    (hooks,) = hk.CreateHookLoraModelOnly().create_hook_model_only(DEMO_LORA, 0.7)
    (hooked_cat,) = hk.ConditioningSetProperties().set_properties(cat, 1.0, "default", hooks=hooks)
    with torch.inference_mode():
        result = _denoiser(model, hooked_cat, blur, 3.0)(x, sigma)
    cat_lora = _estimate(model, cat, x, sigma, _lora_loras(model, 0.7))
    blur_plain = _estimate(model, blur, x, sigma)
    assert not torch.allclose(cat_lora, _estimate(model, cat, x, sigma), atol=1e-3)
    torch.testing.assert_close(result, blur_plain + 3.0 * (cat_lora - blur_plain), rtol=1e-4, atol=1e-4)
    # the weights are back after the call
    torch.testing.assert_close(_estimate(model, blur, x, sigma), blur_plain, rtol=0, atol=0)


def test_keyframes_switch_the_hooks_strength_at_their_step(sd1):
    model, clip, _ = sd1
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * 2.0
    cat = CLIPTextEncode().encode(clip, "a cat")[0]
    (kf,) = hk.CreateHookKeyframe().create_hook_keyframe(1.0, 0.0)
    (kf,) = hk.CreateHookKeyframe().create_hook_keyframe(0.5, 0.5, kf)
    (hooks,) = hk.CreateHookLoraModelOnly().create_hook_model_only(DEMO_LORA, 0.8)
    (hooks,) = hk.SetHookKeyframes().set_hook_keyframes(hooks, kf)
    (hooked,) = hk.ConditioningSetProperties().set_properties(cat, 1.0, "default", hooks=hooks)
    halfway = float(model.model_sampling.percent_to_sigma(0.5))
    early, late = torch.tensor([halfway * 2]), torch.tensor([halfway * 0.5])
    denoiser = _denoiser(model, hooked, hooked, 1.0)
    with torch.inference_mode():
        first, second = denoiser(x, early), denoiser(x, late)
    torch.testing.assert_close(first, _estimate(model, cat, x, early, _lora_loras(model, 0.8)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(second, _estimate(model, cat, x, late, _lora_loras(model, 0.4)), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(second, _estimate(model, cat, x, late, _lora_loras(model, 0.8)), atol=1e-3)


def test_hooks_and_loraloader_loras_together_are_refused(sd1):
    model, clip, _ = sd1
    cat = CLIPTextEncode().encode(clip, "a cat")[0]
    (hooks,) = hk.CreateHookLoraModelOnly().create_hook_model_only(DEMO_LORA, 1.0)
    (hooked,) = hk.ConditioningSetProperties().set_properties(cat, 1.0, "default", hooks=hooks)
    from diffusion.lora import lora_applied

    with torch.inference_mode(), lora_applied(model.network, model.lora_component, _lora_loras(model, 1.0)):
        with pytest.raises(ValueError, match="hooks"):
            _denoiser(model, hooked, cat, 2.0)


@pytest.fixture
def other_sd1(node_env):
    """A second tiny SD1 checkpoint (other weights, same architecture), removed afterwards."""
    from diffusion.families.sd import demo as tiny

    path = tiny.write_checkpoint(tiny.build_tiny_components("sd1", seed=11),
                                 node_env.folders.model_dir("checkpoints") / "tiny-sd1-hook-other.safetensors")
    yield path.name
    path.unlink()


def test_a_checkpoint_as_a_hook_gives_its_weights(sd1, other_sd1):
    from nodes.loaders import CheckpointLoaderSimple

    model, clip, _ = sd1
    other_model, other_clip, _ = CheckpointLoaderSimple().load_checkpoint(other_sd1)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)) * 2.0
    sigma = torch.tensor([2.0])
    cat = CLIPTextEncode().encode(clip, "a cat")[0]
    (hooks,) = hk.CreateHookModelAsLora().create_hook(other_sd1, 1.0, 1.0)
    (hooked,) = hk.ConditioningSetProperties().set_properties(cat, 1.0, "default", hooks=hooks)
    with torch.inference_mode():
        result = _denoiser(model, hooked, hooked, 1.0)(x, sigma)
        expected = _denoiser(other_model, cat, cat, 1.0)(x, sigma)
        plain = _denoiser(model, cat, cat, 1.0)(x, sigma)
    assert not torch.allclose(plain, expected, atol=1e-3)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4)
    (hooked_clip,) = hk.SetClipHooks().apply_hooks(clip, True, False, hooks)
    torch.testing.assert_close(CLIPTextEncode().encode(hooked_clip, "a dog")[0][0][0],
                               CLIPTextEncode().encode(other_clip, "a dog")[0][0][0], rtol=1e-4, atol=1e-4)
    (model_only,) = hk.CreateHookModelAsLoraModelOnly().create_hook_model_only(other_sd1, 0.5)
    assert model_only.hooks[0].strength_clip == 0.0
    with pytest.raises(ValueError, match="ckpt_name"):
        hk.CreateHookModelAsLora().create_hook("missing.safetensors", 1.0, 1.0)


def test_apply_to_conds_attaches_the_hooks_to_what_the_clip_encodes(sd1):
    from diffusion.families.sd.text_encoding import SdClip
    from nodes.conditioning import CLIPSetLastLayer

    model, clip, _ = sd1
    (hooks,) = hk.CreateHookLoraModelOnly().create_hook_model_only(DEMO_LORA, 0.7)
    (hooked_clip,) = hk.SetClipHooks().apply_hooks(clip, True, False, hooks)
    assert isinstance(hooked_clip, SdClip)
    (cat,) = CLIPTextEncode().encode(hooked_clip, "a cat")
    assert cat[0][1]["hooks"] == hooks
    torch.testing.assert_close(cat[0][0], CLIPTextEncode().encode(clip, "a cat")[0][0][0], rtol=0, atol=0)
    (last_layer,) = CLIPSetLastLayer().set_last_layer(hooked_clip, -2)
    assert CLIPTextEncode().encode(last_layer, "a cat")[0][0][1]["hooks"] == hooks
    (more,) = hk.CreateHookLoraModelOnly().create_hook_model_only(DEMO_LORA, 0.2)
    (twice,) = hk.SetClipHooks().apply_hooks(hooked_clip, True, False, more)
    assert CLIPTextEncode().encode(twice, "a cat")[0][0][1]["hooks"].hooks == (*hooks.hooks, *more.hooks)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    sigma = torch.tensor([1.5])
    with torch.inference_mode():
        result = _denoiser(model, cat, cat, 1.0)(x, sigma)
    plain_cat = CLIPTextEncode().encode(clip, "a cat")[0]
    torch.testing.assert_close(result, _estimate(model, plain_cat, x, sigma, _lora_loras(model, 0.7)),
                               rtol=1e-4, atol=1e-4)


def test_default_entries_fill_what_the_others_leave_uncovered(sd1):
    model, clip, _ = sd1
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4)) * 2.0
    sigma = torch.tensor([2.5])
    cat, dog = CLIPTextEncode().encode(clip, "a cat")[0], CLIPTextEncode().encode(clip, "a dog")[0]
    left = torch.zeros(8, 8)
    left[:, :4] = 1.0
    (cat_left,) = hk.ConditioningSetProperties().set_properties(cat, 1.0, "default", left)
    (positive,) = hk.ConditioningSetDefaultCombine().set_default_and_combine(cat_left, dog)
    with torch.inference_mode():
        result = _denoiser(model, positive, positive, 1.0)(x, sigma)
    cat_estimate, dog_estimate = _estimate(model, cat, x, sigma), _estimate(model, dog, x, sigma)
    expected = torch.where(left.bool(), cat_estimate, dog_estimate)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4)
    # an entry covering everything leaves the default nothing: it is not run
    (covered,) = hk.ConditioningSetDefaultCombine().set_default_and_combine(cat, dog)
    with torch.inference_mode():
        torch.testing.assert_close(_denoiser(model, covered, covered, 1.0)(x, sigma), cat_estimate,
                                   rtol=1e-4, atol=1e-4)


def test_the_diffusers_scheduler_refuses_hooked_conditioning(sd1):
    from nodes.latent import EmptyLatentImage
    from nodes.sampling import KSampler

    model, clip, _ = sd1
    cat = CLIPTextEncode().encode(clip, "a cat")[0]
    (hooks,) = hk.CreateHookLoraModelOnly().create_hook_model_only(DEMO_LORA, 1.0)
    (hooked,) = hk.ConditioningSetProperties().set_properties(cat, 1.0, "default", hooks=hooks)
    (latent,) = EmptyLatentImage().generate(64, 64, 1)
    with pytest.raises(ValueError, match="scheduler: the 'diffusers' scheduler does not apply conditioning hooks"):
        KSampler().sample(model, 0, 2, 2.0, "euler", "diffusers", hooked, cat, latent)
