"""ComfyUI's V3 node API (`comfy_api.latest`): a pack's extension loads through `comfy_entrypoint`, its nodes show
ComfyUI's classic specs and run through the engine with hidden values, lazy inputs, validation, lists, UI outputs,
async execution, expansion and progress."""
from __future__ import annotations

import torch

from engine.progress import NodeRunContext, bind_node_context
from tests.compat.test_real_pack_imports import load_packs, run


def test_v3_nodes_register_with_comfyuis_classic_specs(node_env, tmp_path):
    registry = load_packs(node_env, tmp_path, "v3_pack")
    add = registry.get("V3Add")
    assert add.INPUT_TYPES() == {
        "required": {"a": ("INT", {"default": 1, "min": 0, "max": 10, "tooltip": "The first."})},
        "optional": {"b": ("INT", {"default": 2, "min": 0, "max": 10, "display": "slider"})},
        "hidden": {"unique_id": "UNIQUE_ID"}}
    assert (add.RETURN_TYPES, add.RETURN_NAMES, add.CATEGORY, add.FUNCTION) == (("INT",), ("sum",), "v3/math", "run")
    assert add.DESCRIPTION == "Adds two integers." and not add.OUTPUT_NODE
    assert registry.get("V3Darken").FUNCTION == "run_async" and registry.get("V3Darken").OUTPUT_NODE
    assert registry.get("V3Darken").INPUT_TYPES()["required"]["mode"] == (["multiply", "keep"], {})
    assert registry.get("V3Range").OUTPUT_IS_LIST == (True,)
    assert registry.get("V3Pick").INPUT_TYPES()["required"]["when_true"] == ("INT", {"lazy": True})
    assert registry.entry("V3Add").display_name == "Add (V3)"


def test_v3_nodes_run_with_hidden_values_ui_lists_lazy_inputs_and_expansion(node_env, tmp_path):
    registry = load_packs(node_env, tmp_path, "v3_pack")
    prompt = {
        "1": {"class_type": "V3Add", "inputs": {"a": 3, "b": 4}},
        "2": {"class_type": "V3Pick", "inputs": {"first": False, "when_true": ["1", 0], "when_false": ["3", 0]}},
        "3": {"class_type": "V3Triple", "inputs": {"x": 5}},
        "4": {"class_type": "V3Add", "inputs": {"a": ["2", 0]}},
        "5": {"class_type": "V3Range", "inputs": {"count": 3}},
        "6": {"class_type": "V3Add", "inputs": {"a": ["5", 0], "b": 1}},
        "7": {"class_type": "PreviewAny", "inputs": {"source": ["6", 0]}},
        "8": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
    }
    result = run(registry, prompt)
    # 5 + 5 + 5 picked lazily; an optional input left out is not passed (b is execute's own 0), as in ComfyUI
    assert result.outputs["4"]["text"] == ("4:15",)
    assert "1" not in result.executed  # the lazy input that was not picked never ran
    assert result.outputs["6"]["text"] == ["6:1", "6:2", "6:3"]  # the list output mapped over the consumer


def test_v3_validation_fingerprint_async_ui_and_progress(node_env, tmp_path):
    registry = load_packs(node_env, tmp_path, "v3_pack")
    from engine.validation import validate_prompt

    refused = validate_prompt({"1": {"class_type": "V3Even", "inputs": {"x": 3}},
                               "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}, registry)
    assert not refused.ok and "x must be even, not 3" in str(refused.node_errors)
    image = torch.rand(1, 8, 8, 3, generator=torch.Generator().manual_seed(1))
    node_env.folders.input_dir.mkdir(parents=True, exist_ok=True)
    darken = registry.get("V3Darken")
    seen = []
    context = NodeRunContext("9", "p", _NeverInterrupted(), lambda node, value, total, preview: seen.append(
        (node, value, total, preview is not None)))
    import asyncio

    with bind_node_context(context):
        returned = asyncio.run(darken().run_async(image=image, factor=0.5, mode="multiply", prompt=None,
                                                   extra_pnginfo=None))
    torch.testing.assert_close(returned["result"][0], image * 0.5)
    (entry,) = returned["ui"]["images"]
    assert entry["type"] == "temp" and (node_env.folders.temp_dir / entry["subfolder"] / entry["filename"]).is_file()
    assert seen == [("9", 1, 2, False), ("9", 2, 2, True)]


class _NeverInterrupted:
    def raise_if_set(self) -> None:
        return None


def test_v3_dynamic_inputs_in_the_catalogue_as_comfyuis(node_env, tmp_path):
    registry = load_packs(node_env, tmp_path, "v3_pack")
    info = registry.node_info("V3Adjust")
    kind, options = info["input"]["required"]["method"]
    assert kind == "COMFY_DYNAMICCOMBO_V3" and options["tooltip"] == "How to adjust."
    assert [option["key"] for option in options["options"]] == ["brighten", "gamma"]
    gamma_inputs = options["options"][1]["inputs"]["required"]
    assert gamma_inputs["gamma"] == ("FLOAT", {"default": 2.0, "min": 0.1})
    assert gamma_inputs["clamp"][0] == "COMFY_DYNAMICCOMBO_V3"
    assert info["input"]["required"]["image"] == ("COMFY_MATCHTYPE_V3", {"template": {
        "template_id": "image_or_mask", "allowed_types": "IMAGE,MASK"}})
    assert info["output"] == ["COMFY_MATCHTYPE_V3"] and info["output_matchtypes"] == ["image_or_mask"]
    assert "output_matchtypes" not in registry.node_info("V3Add")
    kind, options = registry.node_info("V3Sum")["input"]["required"]["numbers"]
    assert kind == "COMFY_AUTOGROW_V3" and options["template"] == {
        "input": {"required": {"n": ("INT,FLOAT", {})}}, "min": 2, "prefix": "n", "max": 5}
    assert registry.node_info("V3Sum")["input"]["required"]["extra"][1]["template"]["input"] == {
        "required": {}, "optional": {"e": ("INT", {"forceInput": True})}}
    import json

    json.dumps(registry.object_info())  # the catalogue stays JSON


def test_v3_dynamic_combo_and_match_type_run_nested_as_comfyui_passes_them(node_env, tmp_path):
    registry = load_packs(node_env, tmp_path, "v3_pack")
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0x404040}},
        "2": {"class_type": "V3Adjust", "inputs": {"image": ["1", 0], "method": "brighten", "method.amount": 0.25}},
        "3": {"class_type": "V3Adjust", "inputs": {"image": ["2", 0], "method": "gamma", "method.gamma": 2.0,
                                                   "method.clamp": "on", "method.clamp.top": 0.3}},
        "4": {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 8, "height": 8}},
        "5": {"class_type": "V3Adjust", "inputs": {"image": ["4", 0], "method": "gamma", "method.gamma": 2.0,
                                                   "method.clamp": "off"}},
        # the MatchType output feeds an IMAGE input and a MASK input
        "6": {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}},
        "7": {"class_type": "MaskToImage", "inputs": {"mask": ["5", 0]}},
        "8": {"class_type": "ImageBatch", "inputs": {"image1": ["6", 0], "image2": ["7", 0]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    result = run(registry, prompt)
    import numpy as np
    from PIL import Image

    pixels = [np.asarray(Image.open(node_env.folders.temp_dir / entry["subfolder"] / entry["filename"]))
              for entry in result.outputs["9"]["images"]]
    brightened_squared = (0x40 / 255 + 0.25) ** 2  # under the clamp's 0.3
    assert abs(int(pixels[0][0, 0, 0]) - (1 - brightened_squared) * 255) <= 1 and pixels[0].std() == 0
    assert abs(int(pixels[1][0, 0, 0]) - 0.25 * 255) <= 1 and pixels[1].std() == 0  # the mask, squared


def test_v3_dynamic_inputs_are_validated_for_the_chosen_option(node_env, tmp_path):
    registry = load_packs(node_env, tmp_path, "v3_pack")
    from engine.validation import validate_prompt

    def errors(adjust_inputs):
        prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                               "color": 0}},
                  "2": {"class_type": "V3Adjust", "inputs": {"image": ["1", 0], **adjust_inputs}},
                  "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
        return str(validate_prompt(prompt, registry).node_errors)

    assert "method.amount" in errors({"method": "brighten"})  # the chosen option's widget is required
    assert "method.amount" in errors({"method": "brighten", "method.amount": 5.0})  # above its max
    assert "sharpen" in errors({"method": "sharpen"})  # not an option
    assert "method.clamp" in errors({"method": "gamma", "method.gamma": 1.0})
    assert errors({"method": "gamma", "method.gamma": 1.0, "method.clamp": "off"}) == "{}"
    # a MatchType socket refuses a type outside its template
    refused = validate_prompt({
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "2": {"class_type": "V3Adjust", "inputs": {"image": ["1", 0], "method": "brighten", "method.amount": 0.1}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}, registry)
    assert not refused.ok and "LATENT" in str(refused.node_errors)


def test_v3_autogrow_passes_the_connected_sockets_by_name(node_env, tmp_path):
    registry = load_packs(node_env, tmp_path, "v3_pack")
    prompt = {
        "1": {"class_type": "V3Add", "inputs": {"a": 3, "b": 4}},
        "2": {"class_type": "V3Sum", "inputs": {"numbers.n0": ["1", 0], "numbers.n1": 2.5, "numbers.n3": 1}},
        "3": {"class_type": "V3Sum", "inputs": {"numbers.n0": 1, "numbers.n1": 1, "extra.y": ["1", 0]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
    }
    result = run(registry, prompt)
    assert result.outputs["2"]["text"] == ("n0,n1,n3|",) and result.outputs["4"]["text"] == ["10.5"]
    assert result.outputs["3"]["text"] == ("n0,n1|y",) and result.outputs["5"]["text"] == ["9.0"]
    from engine.validation import validate_prompt

    refused = validate_prompt({"1": {"class_type": "V3Sum", "inputs": {"numbers.n0": 1}},
                               "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}, registry)
    assert "numbers.n1" in str(refused.node_errors)  # two are required
