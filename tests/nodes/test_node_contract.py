"""Every built-in node follows the ComfyUI node-class contract and registers through the engine's registry."""
import pytest

import nodes
from engine import input_spec
from engine.registry import NodeRegistry


def test_all_builtins_register_and_describe(node_env):
    registry = NodeRegistry()
    assert registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS) == []
    catalogue = registry.object_info()
    assert set(catalogue) == set(nodes.NODE_CLASS_MAPPINGS)
    assert catalogue["KSampler"]["display_name"] == "KSampler"
    assert catalogue["SaveImage"]["output_node"] is True
    assert set(nodes.NODE_DISPLAY_NAME_MAPPINGS) == set(nodes.NODE_CLASS_MAPPINGS)


@pytest.mark.parametrize("class_type", sorted(nodes.NODE_CLASS_MAPPINGS))
def test_node_is_documented(node_env, class_type):
    node_class = nodes.NODE_CLASS_MAPPINGS[class_type]
    assert callable(getattr(node_class(), node_class.FUNCTION))
    assert node_class.DESCRIPTION and node_class.CATEGORY
    for spec in input_spec.input_specs(node_class).values():
        if spec.section != "hidden":
            assert spec.options.get("tooltip"), f"{class_type}.{spec.name} has no tooltip"


def test_combo_choices_come_from_the_models_folder(node_env):
    specs = input_spec.input_specs(nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"])
    assert "tiny-sd1.safetensors" in specs["ckpt_name"].choices
    specs = input_spec.input_specs(nodes.NODE_CLASS_MAPPINGS["DiffusersLoader"])
    assert "tiny-sd1" in specs["model_path"].choices
    specs = input_spec.input_specs(nodes.NODE_CLASS_MAPPINGS["LoraLoader"])
    assert "tiny-sd1-lora.safetensors" in specs["lora_name"].choices
