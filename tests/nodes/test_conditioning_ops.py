"""The conditioning nodes (ConditioningCombine/Average/Concat/ZeroOut, SetArea/AreaPercentage/AreaStrength/Mask,
SetTimestepRange): their contracts against ComfyUI's (`COMFYUI_CONTRACTS`, read off ComfyUI's nodes.py), their
maths by hand, and the sampler honouring areas, masks, strengths and timestep ranges as ComfyUI's calc_cond_batch
does (one denoiser call checked value by value on the tiny SD1 model, network calls counted, whole runs through
KSampler and an API workflow)."""
import pytest
import torch

import nodes
from diffusion.sampling import guiders, regions
from nodes import conditioning_ops as co
from nodes.conditioning import CLIPTextEncode
from nodes.latent import EmptyLatentImage
from nodes.sampling import KSampler
from tests.nodes.family_workflows import run_workflow

MAX_RESOLUTION = 16384
STRENGTH = ("FLOAT", 1.0, 0.0, 10.0, 0.01)
PIXELS = ("INT", 0, 0, MAX_RESOLUTION, 8)
FRACTION = ("FLOAT", 0, 0, 1.0, 0.01)

# node: (category, RETURN_TYPES, RETURN_NAMES or None, the inputs in order: link type, combo choices or
# (INT/FLOAT, default, min, max, step))
COMFYUI_CONTRACTS: dict[str, tuple[str, tuple, tuple | None, list]] = {
    "ConditioningCombine": ("conditioning", ("CONDITIONING",), None, [
        ("conditioning_1", "CONDITIONING"), ("conditioning_2", "CONDITIONING")]),
    "ConditioningAverage": ("conditioning", ("CONDITIONING",), None, [
        ("conditioning_to", "CONDITIONING"), ("conditioning_from", "CONDITIONING"),
        ("conditioning_to_strength", ("FLOAT", 1.0, 0.0, 1.0, 0.01))]),
    "ConditioningConcat": ("conditioning", ("CONDITIONING",), None, [
        ("conditioning_to", "CONDITIONING"), ("conditioning_from", "CONDITIONING")]),
    "ConditioningSetArea": ("conditioning", ("CONDITIONING",), None, [
        ("conditioning", "CONDITIONING"), ("width", ("INT", 64, 64, MAX_RESOLUTION, 8)),
        ("height", ("INT", 64, 64, MAX_RESOLUTION, 8)), ("x", PIXELS), ("y", PIXELS), ("strength", STRENGTH)]),
    "ConditioningSetAreaPercentage": ("conditioning", ("CONDITIONING",), None, [
        ("conditioning", "CONDITIONING"), ("width", ("FLOAT", 1.0, 0, 1.0, 0.01)),
        ("height", ("FLOAT", 1.0, 0, 1.0, 0.01)), ("x", FRACTION), ("y", FRACTION), ("strength", STRENGTH)]),
    "ConditioningSetAreaStrength": ("conditioning", ("CONDITIONING",), None, [
        ("conditioning", "CONDITIONING"), ("strength", STRENGTH)]),
    "ConditioningSetMask": ("conditioning", ("CONDITIONING",), None, [
        ("conditioning", "CONDITIONING"), ("mask", "MASK"), ("strength", STRENGTH),
        ("set_cond_area", ["default", "mask bounds"])]),
    "ConditioningZeroOut": ("advanced/conditioning", ("CONDITIONING",), None, [("conditioning", "CONDITIONING")]),
    "ConditioningSetTimestepRange": ("advanced/conditioning", ("CONDITIONING",), None, [
        ("conditioning", "CONDITIONING"), ("start", ("FLOAT", 0.0, 0.0, 1.0, 0.001)),
        ("end", ("FLOAT", 1.0, 0.0, 1.0, 0.001))]),
    "ReferenceLatent": ("advanced/conditioning/edit_models", ("CONDITIONING",), None, [
        ("conditioning", "CONDITIONING")]),  # and the optional LATENT "latent"
}
DISPLAY_NAMES = {"ConditioningCombine": "Conditioning (Combine)", "ConditioningAverage": "Conditioning (Average)",
                 "ConditioningConcat": "Conditioning (Concat)", "ConditioningSetArea": "Conditioning (Set Area)",
                 "ConditioningSetAreaPercentage": "Conditioning (Set Area with Percentage)",
                 "ConditioningSetMask": "Conditioning (Set Mask)"}


def _contract(node_class: type) -> tuple[str, tuple, tuple | None, list]:
    inputs = []
    for name, (kind, options) in node_class.INPUT_TYPES()["required"].items():
        if isinstance(kind, list):
            inputs.append((name, kind))
        elif kind in ("INT", "FLOAT"):
            inputs.append((name, (kind, options["default"], options["min"], options["max"], options.get("step"))))
        else:
            inputs.append((name, kind))
    return node_class.CATEGORY, node_class.RETURN_TYPES, getattr(node_class, "RETURN_NAMES", None), inputs


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert node_class is co.NODE_CLASS_MAPPINGS[name]
    assert _contract(node_class) == COMFYUI_CONTRACTS[name]
    assert node_class.DESCRIPTION and callable(getattr(node_class(), node_class.FUNCTION))
    assert all(options.get("tooltip") for _, options in node_class.INPUT_TYPES()["required"].values())
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == DISPLAY_NAMES.get(name, name)


def test_every_node_is_in_the_table():
    # CLIPTextEncodeControlnet's contract is checked in test_text_options.py
    assert set(co.NODE_CLASS_MAPPINGS) - {"CLIPTextEncodeControlnet"} == set(COMFYUI_CONTRACTS)


def _entry(value: float, tokens: int, pooled: float | None = None, **options) -> list:
    if pooled is not None:
        options["pooled_output"] = torch.full((1, 2), pooled)
    return [torch.full((1, tokens, 2), value), options]


def test_combine_puts_entries_side_by_side():
    first, second = [_entry(1.0, 3)], [_entry(2.0, 5), _entry(3.0, 3)]
    (combined,) = co.ConditioningCombine().combine(first, second)
    assert [entry[0] for entry in combined] == [first[0][0], second[0][0], second[1][0]]
    assert len(first) == 1 and len(second) == 2


def test_average_interpolates_embeddings_and_pooled_outputs():
    to = [_entry(2.0, 3, pooled=2.0, width=512)]
    source = [_entry(4.0, 2, pooled=4.0), _entry(100.0, 2)]  # only the first entry counts
    (out,) = co.ConditioningAverage().addWeighted(to, source, 0.25)
    # 0.25 * 2 + 0.75 * 4 = 3.5 over the first two tokens; the third has zeros from `from`: 0.25 * 2
    assert torch.equal(out[0][0][0, :, 0], torch.tensor([3.5, 3.5, 0.5]))
    assert torch.equal(out[0][1]["pooled_output"], torch.full((1, 2), 3.5))
    assert out[0][1]["width"] == 512 and torch.equal(to[0][1]["pooled_output"], torch.full((1, 2), 2.0))
    (cut,) = co.ConditioningAverage().addWeighted([_entry(2.0, 1)], [_entry(4.0, 3, pooled=4.0)], 0.5)
    assert cut[0][0].shape == (1, 1, 2) and torch.equal(cut[0][1]["pooled_output"], torch.full((1, 2), 4.0))


def test_concat_appends_the_first_source_entry():
    (out,) = co.ConditioningConcat().concat([_entry(1.0, 3, strength=0.5), _entry(2.0, 2)],
                                             [_entry(7.0, 2), _entry(9.0, 4)])
    assert [entry[0][0, :, 0].tolist() for entry in out] == [[1, 1, 1, 7, 7], [2, 2, 7, 7]]
    assert out[0][1] == {"strength": 0.5}
    with pytest.raises(ValueError, match="conditioning_from"):
        co.ConditioningConcat().concat([_entry(1.0, 3)], [[torch.ones(1, 2, 5), {}]])


def test_zero_out_keeps_shapes_and_other_options():
    (out,) = co.ConditioningZeroOut().zero_out([_entry(3.0, 4, pooled=2.0, guidance=3.5)])
    assert torch.equal(out[0][0], torch.zeros(1, 4, 2))
    assert torch.equal(out[0][1]["pooled_output"], torch.zeros(1, 2)) and out[0][1]["guidance"] == 3.5


def test_area_mask_strength_and_range_options_are_comfyuis():
    base = [_entry(1.0, 3, pooled=1.0)]
    (area,) = co.ConditioningSetArea().append(base, 200, 64, 24, 80, 0.7)
    assert area[0][1]["area"] == (8, 25, 10, 3) and area[0][1]["strength"] == 0.7
    assert area[0][1]["set_area_to_bounds"] is False and "area" not in base[0][1]
    (percent,) = co.ConditioningSetAreaPercentage().append(base, 0.5, 0.25, 0.1, 0.2, 1.5)
    assert percent[0][1]["area"] == ("percentage", 0.25, 0.5, 0.2, 0.1)
    (strength,) = co.ConditioningSetAreaStrength().append(area, 2.0)
    assert strength[0][1]["strength"] == 2.0 and strength[0][1]["area"] == (8, 25, 10, 3)
    (masked,) = co.ConditioningSetMask().append(base, torch.ones(16, 16), 0.5, "mask bounds")
    assert masked[0][1]["mask"].shape == (1, 16, 16) and masked[0][1]["mask_strength"] == 0.5
    assert masked[0][1]["set_area_to_bounds"] is True
    (ranged,) = co.ConditioningSetTimestepRange().set_range(base, 0.25, 0.75)
    assert (ranged[0][1]["start_percent"], ranged[0][1]["end_percent"]) == (0.25, 0.75)


class _Schedule:
    def percent_to_sigma(self, percent: float) -> float:
        return 10.0 * (1.0 - percent)


def test_area_weights_feather_at_inner_edges():
    region = regions.region({"area": (8, 8, 4, 4), "strength": 2.0}, torch.Size([1, 1, 16, 16]), _Schedule())
    ramp = torch.tensor([0.5, 1, 1, 1, 1, 1, 1, 0.5])  # min(8, 8 // 4) = 2 rows fade in at each inner edge
    assert region.area == (8, 8, 4, 4)
    assert torch.equal(region.weight[0, 0], 2.0 * ramp[:, None] * ramp[None, :])
    corner = regions.region({"area": (8, 8, 0, 0)}, torch.Size([1, 1, 16, 16]), _Schedule())
    assert torch.equal(corner.weight[0, 0, :, 0], torch.tensor([1, 1, 1, 1, 1, 1, 1, 0.5]))  # image edge: no ramp
    clamped = regions.region({"area": (12, 4, 10, 0)}, torch.Size([1, 1, 16, 16]), _Schedule())
    assert clamped.area == (6, 4, 10, 0)
    with pytest.raises(ValueError, match="outside"):
        regions.region({"area": (8, 8, 16, 0)}, torch.Size([1, 1, 16, 16]), _Schedule())


def test_percentages_masks_and_ranges_resolve_as_comfyui():
    shape = torch.Size([2, 4, 20, 10])
    assert regions.region({"area": ("percentage", 0.5, 0.25, 0.1, 0.55)}, shape, _Schedule()).area == (10, 2, 2, 6)
    mask = torch.zeros(1, 40, 20)
    mask[0, 4:10, 2:4] = 1.0
    bounded = regions.region({"mask": mask, "set_area_to_bounds": True, "mask_strength": 0.5, "strength": 2.0},
                             shape, _Schedule())
    assert bounded.area == (8, 8, 2, 1)  # bilinear to 20x10: rows 2..4, column 1; at least 8 by 8
    assert bounded.weight.shape == (2, 4, 8, 8) and float(bounded.weight.max()) == pytest.approx(1.0)
    ranged = regions.region({"start_percent": 0.2, "end_percent": 0.6}, shape, _Schedule())
    assert (ranged.sigma_start, ranged.sigma_end) == (8.0, 4.0)
    assert [ranged.active(sigma) for sigma in (9.0, 8.0, 5.0, 4.0, 3.0)] == [False, True, True, True, False]


def test_area_twins_take_the_smallest_enclosing_entry():
    assert regions.area_twin((4, 4, 2, 2), [None, (8, 8, 0, 0), (6, 6, 1, 1), (2, 2, 2, 2)]) == 2
    assert regions.area_twin((4, 4, 2, 2), [None, (2, 2, 2, 2)]) == 0
    assert regions.area_twin((4, 4, 2, 2), [(4, 4, 2, 2), None]) is None
    assert regions.area_twin((4, 4, 2, 2), [(2, 2, 0, 0)]) is None


# --- the sampler on the tiny SD1 model ---

SIGMA = torch.tensor([3.0])


def _encode(clip, text):
    return CLIPTextEncode().encode(clip, text)[0]


def _denoised(model, positive, negative, x, cfg=3.0):
    guider = guiders.CFGGuider(model, positive, negative, cfg)
    with torch.inference_mode():
        return guider.denoiser(model.network, x.shape[0], None, model.model_sampling)(x, SIGMA)


def _estimate(model, conditioning, x):
    """The plain (unguided) denoised estimate of one conditioning."""
    return _denoised(model, conditioning, conditioning, x, cfg=1.0)


def test_an_area_entry_is_blended_into_its_region_only(sd1):
    model, clip, _ = sd1
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)) * 3.0
    cat, dog, blur = _encode(clip, "a cat"), _encode(clip, "a dog"), _encode(clip, "blurry")
    (dog_area,) = co.ConditioningSetArea().append(dog, 64, 64, 32, 32, 1.0)  # latents 8x8 at (4, 4)
    (positive,) = co.ConditioningCombine().combine(cat, dog_area)
    result = _denoised(model, positive, blur, x)

    crop = (..., slice(4, 12), slice(4, 12))
    cat_full, dog_crop = _estimate(model, cat, x), _estimate(model, dog, x[crop].contiguous())
    blur_full, blur_crop = _estimate(model, blur, x), _estimate(model, blur, x[crop].contiguous())
    ramp = torch.tensor([0.5, 1, 1, 1, 1, 1, 1, 0.5])
    weight = ramp[:, None] * ramp[None, :]
    inside_positive = cat_full.clone()
    inside_positive[crop] = (cat_full[crop] + dog_crop * weight) / (1 + weight)
    # the negative gets the area's twin (its own text over the area), as ComfyUI's sampler adds it
    inside_negative = blur_full.clone()
    inside_negative[crop] = (blur_full[crop] + blur_crop * weight) / (1 + weight)
    expected = inside_negative + 3.0 * (inside_positive - inside_negative)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4)
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[4:12, 4:12] = False
    plain = _denoised(model, cat, blur, x)
    torch.testing.assert_close(result[..., outside], plain[..., outside], rtol=1e-5, atol=1e-5)
    assert (result[crop] - plain[crop]).abs().max() > 1e-3


def test_a_mask_entry_is_weighted_by_mask_times_strength(sd1):
    model, clip, _ = sd1
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * 3.0
    cat, dog = _encode(clip, "a cat"), _encode(clip, "a dog")
    mask = torch.zeros(8, 8)
    mask[:, 4:] = 1.0
    mask[2, 2] = 0.5
    (dog_masked,) = co.ConditioningSetMask().append(dog, mask, 0.6, "default")
    (positive,) = co.ConditioningCombine().combine(cat, dog_masked)
    result = _denoised(model, positive, positive, x, cfg=1.0)
    weight = mask * 0.6
    expected = (_estimate(model, cat, x) + _estimate(model, dog, x) * weight) / (1 + weight)
    # (the two entries share one network call there; alone they round differently on the CPU, by 2e-4)
    torch.testing.assert_close(result, expected, rtol=1e-3, atol=1e-3)
    (everywhere,) = co.ConditioningSetMask().append(dog, torch.ones(8, 8), 1.0, "default")
    masked = co.ConditioningCombine().combine(cat, everywhere)[0]
    plain = co.ConditioningCombine().combine(cat, dog)[0]
    assert torch.equal(_estimate(model, masked, x), _estimate(model, plain, x))


def _counting_rows(model):
    calls = []
    handle = model.network.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    return calls, handle


def test_a_timestep_range_entry_is_skipped_outside_its_range(sd1):
    model, clip, _ = sd1
    (late,) = co.ConditioningSetTimestepRange().set_range(_encode(clip, "a dog"), 0.5, 1.0)
    (positive,) = co.ConditioningCombine().combine(_encode(clip, "a cat"), late)
    latent = EmptyLatentImage().generate(64, 64, 1)[0]
    sigmas = model.model_sampling
    threshold = sigmas.percent_to_sigma(0.5)
    calls, handle = _counting_rows(model)
    try:
        KSampler().sample(model, 3, 6, 1.0, "euler", "karras", positive, positive, latent)
    finally:
        handle.remove()
    from diffusion.sampling import sigma_schedules
    schedule = sigma_schedules.ksampler_sigmas(sigmas, "karras", 6, 1.0, "euler")[:-1]
    assert calls == [1 if float(sigma) > threshold else 2 for sigma in schedule]
    assert 1 in calls and 2 in calls


def test_ksampler_runs_areas_deterministically_and_keeps_them_local(sd1):
    model, clip, _ = sd1
    cat, dog, blur = _encode(clip, "a cat"), _encode(clip, "a dog"), _encode(clip, "blurry")
    (dog_area,) = co.ConditioningSetArea().append(dog, 64, 64, 64, 64, 1.0)
    (positive,) = co.ConditioningCombine().combine(cat, dog_area)
    latent = EmptyLatentImage().generate(128, 128, 1)[0]
    with_area = KSampler().sample(model, 5, 3, 4.0, "euler", "normal", positive, blur, latent)[0]["samples"]
    again = KSampler().sample(model, 5, 3, 4.0, "euler", "normal", positive, blur, latent)[0]["samples"]
    plain = KSampler().sample(model, 5, 3, 4.0, "euler", "normal", cat, blur, latent)[0]["samples"]
    assert torch.equal(with_area, again)
    change = (with_area - plain).abs().mean(dim=(0, 1))
    assert change[8:, 8:].mean() > 3 * change[:6, :6].mean()


def test_the_diffusers_scheduler_refuses_regional_conditioning(sd1):
    model, clip, _ = sd1
    (ranged,) = co.ConditioningSetTimestepRange().set_range(_encode(clip, "a cat"), 0.0, 0.5)
    latent = EmptyLatentImage().generate(64, 64, 1)[0]
    with pytest.raises(ValueError, match="positive: area, mask and timestep-range"):
        KSampler().sample(model, 1, 2, 4.0, "euler", "diffusers", ranged, ranged, latent)


def _text(clip_link, text):
    return {"class_type": "CLIPTextEncode", "inputs": {"clip": clip_link, "text": text}}


def test_a_regional_workflow_validates_and_runs(node_env):
    from diffusion.families.sd.demo import DEMO_CHECKPOINT

    clip = ["1", 1]
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO_CHECKPOINT}},
        "2": _text(clip, "a meadow"), "3": _text(clip, "a red barn"), "4": _text(clip, "blurry"),
        "5": _text(clip, "sunset"),
        "6": {"class_type": "ConditioningSetArea",
              "inputs": {"conditioning": ["3", 0], "width": 64, "height": 64, "x": 64, "y": 0, "strength": 1.2}},
        "7": {"class_type": "ConditioningSetAreaPercentage",
              "inputs": {"conditioning": ["5", 0], "width": 1.0, "height": 0.5, "x": 0, "y": 0, "strength": 0.8}},
        "8": {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["7", 0], "start": 0.0,
                                                                      "end": 0.6}},
        "9": {"class_type": "ConditioningAverage", "inputs": {"conditioning_to": ["2", 0],
                                                             "conditioning_from": ["5", 0],
                                                             "conditioning_to_strength": 0.75}},
        "10": {"class_type": "ConditioningConcat", "inputs": {"conditioning_to": ["9", 0],
                                                             "conditioning_from": ["3", 0]}},
        "11": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["10", 0],
                                                              "conditioning_2": ["6", 0]}},
        "12": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["11", 0],
                                                              "conditioning_2": ["8", 0]}},
        "13": {"class_type": "ConditioningSetAreaStrength", "inputs": {"conditioning": ["4", 0], "strength": 1.0}},
        "14": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["13", 0]}},
        "15": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 64, "batch_size": 1}},
        "16": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 7, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["12", 0], "negative": ["14", 0], "latent_image": ["15", 0], "denoise": 1.0}},
        "17": {"class_type": "VAEDecode", "inputs": {"samples": ["16", 0], "vae": ["1", 2]}},
        "18": {"class_type": "SaveImage", "inputs": {"images": ["17", 0], "filename_prefix": "regional"}},
    }
    (image,) = run_workflow(node_env, prompt, size=128)
    assert image.size == (128, 128)


def test_mask_bounds_run_the_entry_on_the_masks_box(sd1):
    model, clip, _ = sd1
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2)) * 3.0
    cat, dog = _encode(clip, "a cat"), _encode(clip, "a dog")
    mask = torch.zeros(1, 16, 16)
    mask[0, 2:6, 3:5] = 1.0  # bounds 4x2 at (2, 3): widened to 8x8
    (dog_box,) = co.ConditioningSetMask().append(dog, mask, 1.0, "mask bounds")
    result = _estimate(model, co.ConditioningCombine().combine(cat, dog_box)[0], x)
    box = (..., slice(2, 10), slice(3, 11))
    dog_crop = _estimate(model, dog, x[box].contiguous())
    expected = _estimate(model, cat, x).clone()
    weight = mask[0][2:10, 3:11]
    expected[box] = (expected[box] + dog_crop * weight) / (1 + weight)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4)


def test_joint_guiders_honour_regions(sd1):
    model, clip, _ = sd1
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(4)) * 3.0
    (dog_area,) = co.ConditioningSetArea().append(_encode(clip, "a dog"), 64, 64, 0, 64, 1.0)
    (cond1,) = co.ConditioningCombine().combine(_encode(clip, "a cat"), dog_area)
    blur = _encode(clip, "blurry")
    dual = guiders.DualCFGGuider(model, cond1, blur, blur, 1.0, 1.0)  # regular, both scales 1: cond1 alone
    with torch.inference_mode():
        result = dual.denoiser(model.network, 1, None, model.model_sampling)(x, SIGMA)
    assert torch.equal(result, _estimate(model, cond1, x))
