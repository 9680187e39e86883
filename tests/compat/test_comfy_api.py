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
