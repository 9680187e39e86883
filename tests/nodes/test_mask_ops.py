"""The mask nodes against ComfyUI: contracts (`COMFYUI_CONTRACTS`, read off comfy_extras/nodes_mask.py), the values
ComfyUI's nodes compute (worked out by hand below), bad input, and an API-format workflow through the engine."""
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import nodes
from app.runtime import build_executor
from engine.cache import OutputCache
from engine.registry import NodeRegistry
from engine.validation import validate_prompt
from nodes import mask as mask_nodes
from nodes.latent import MAX_RESOLUTION
from nodes.mask import CropMask, ImageColorToMask, MaskComposite, MaskPreview, SolidMask, ThresholdMask

OFFSET = ("INT", 0, 0, MAX_RESOLUTION, 1)
SIDE = ("INT", 512, 1, MAX_RESOLUTION, 1)

# node: (category, RETURN_TYPES, display name, inputs in order: link type, combo choices, (BOOLEAN, default) or
# (INT/FLOAT, default, min, max, step); optional inputs are marked with a leading "?")
COMFYUI_CONTRACTS: dict[str, tuple[str, tuple, str, list]] = {
    "SolidMask": ("mask", ("MASK",), "SolidMask", [
        ("value", ("FLOAT", 1.0, 0.0, 1.0, 0.01)), ("width", SIDE), ("height", SIDE)]),
    "MaskComposite": ("mask", ("MASK",), "MaskComposite", [
        ("destination", "MASK"), ("source", "MASK"), ("x", OFFSET), ("y", OFFSET),
        ("operation", ["multiply", "add", "subtract", "and", "or", "xor"])]),
    "CropMask": ("mask", ("MASK",), "CropMask", [
        ("mask", "MASK"), ("x", OFFSET), ("y", OFFSET), ("width", SIDE), ("height", SIDE)]),
    "ThresholdMask": ("mask", ("MASK",), "ThresholdMask", [
        ("mask", "MASK"), ("value", ("FLOAT", 0.5, 0.0, 1.0, 0.01))]),
    "ImageColorToMask": ("mask", ("MASK",), "ImageColorToMask", [
        ("image", "IMAGE"), ("color", ("INT", 0, 0, 0xFFFFFF, 1))]),
    "MaskPreview": ("mask", (), "MaskPreview", [("mask", "MASK")]),
    "ImageToMask": ("mask", ("MASK",), "Convert Image to Mask", [
        ("image", "IMAGE"), ("channel", ["red", "green", "blue", "alpha"])]),
    "MaskToImage": ("mask", ("IMAGE",), "Convert Mask to Image", [("mask", "MASK")]),
    "InvertMask": ("mask", ("MASK",), "Invert Mask", [("mask", "MASK")]),
    "GrowMask": ("mask", ("MASK",), "Grow Mask", [
        ("mask", "MASK"), ("expand", ("INT", 0, -MAX_RESOLUTION, MAX_RESOLUTION, 1)),
        ("tapered_corners", ("BOOLEAN", True))]),
    "FeatherMask": ("mask", ("MASK",), "Feather Mask", [
        ("mask", "MASK"), ("left", OFFSET), ("top", OFFSET), ("right", OFFSET), ("bottom", OFFSET)]),
    "ImageCompositeMasked": ("image", ("IMAGE",), "Image Composite Masked", [
        ("destination", "IMAGE"), ("source", "IMAGE"), ("x", OFFSET), ("y", OFFSET),
        ("resize_source", ("BOOLEAN", False)), ("?mask", "MASK")]),
}


def contract(node_class: type) -> tuple[str, tuple, list]:
    """(CATEGORY, RETURN_TYPES, inputs) in the table's notation."""
    inputs = []
    spec = node_class.INPUT_TYPES()
    for section, marker in (("required", ""), ("optional", "?")):
        for name, (kind, options) in spec.get(section, {}).items():
            if isinstance(kind, list):
                inputs.append((marker + name, kind))
            elif kind in ("INT", "FLOAT"):
                inputs.append((marker + name, (kind, options["default"], options["min"], options["max"],
                                               options.get("step"))))
            elif kind == "BOOLEAN":
                inputs.append((marker + name, (kind, options["default"])))
            else:
                inputs.append((marker + name, kind))
    return node_class.CATEGORY, node_class.RETURN_TYPES, inputs


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    category, return_types, display_name, inputs = COMFYUI_CONTRACTS[name]
    assert contract(node_class) == (category, return_types, inputs)
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == display_name
    assert node_class.DESCRIPTION and callable(getattr(node_class(), node_class.FUNCTION))


def test_every_mask_node_but_the_loader_is_in_the_table():
    assert set(mask_nodes.NODE_CLASS_MAPPINGS) - {"LoadImageMask"} == set(COMFYUI_CONTRACTS)
    assert MaskPreview.OUTPUT_NODE is True


def test_solid_mask():
    (mask,) = SolidMask().solid(0.25, 3, 2)
    assert mask.shape == (1, 2, 3) and mask.dtype == torch.float32 and torch.equal(mask, torch.full((1, 2, 3), 0.25))


def _composite(destination, source, x, y, operation):
    return MaskComposite().combine(destination, source, x, y, operation)[0]


def test_mask_composite_operations_at_an_offset():
    destination = torch.full((1, 3, 4), 0.7)
    source = torch.tensor([[[0.6, 0.2], [0.4, 0.9]]])
    # source placed at x=3, y=1: only column 3, rows 1-2 are covered (source column 0); the rest is untouched
    inside = (slice(None), slice(1, 3), slice(3, 4))
    expected_inside = {
        "multiply": [[0.42], [0.28]],
        "add": [[1.0], [1.0]],          # 1.3 and 1.1, clamped
        "subtract": [[0.1], [0.3]],
        "and": [[1.0], [0.0]],          # round(0.7)=1 with round(0.6)=1, round(0.4)=0
        "or": [[1.0], [1.0]],
        "xor": [[0.0], [1.0]],
    }
    for operation, values in expected_inside.items():
        output = _composite(destination, source, 3, 1, operation)
        assert output.shape == (1, 3, 4)
        assert torch.allclose(output[inside], torch.tensor([values])), operation
        untouched = torch.ones(1, 3, 4, dtype=torch.bool)
        untouched[inside] = False
        assert torch.equal(output[untouched], destination[untouched]), operation
    assert torch.equal(destination, torch.full((1, 3, 4), 0.7))  # the input is not changed


def test_mask_composite_batches_and_out_of_bounds():
    destination = torch.zeros(2, 2, 2)
    destination[1] = 0.5
    source = torch.ones(1, 1, 1)
    output = _composite(destination, source, 1, 1, "add")
    assert torch.equal(output[:, 1, 1], torch.tensor([1.0, 1.0])) and output[1, 0, 0] == 0.5
    grown = _composite(source.expand(1, 2, 2), torch.zeros(3, 2, 2), 0, 0, "multiply")  # a batch of 1 repeated
    assert grown.shape == (3, 2, 2) and grown.sum() == 0
    assert torch.equal(_composite(destination, source, 5, 0, "add"), destination)  # entirely outside: no change
    with pytest.raises(ValueError, match="^source: batch of 2 does not match"):
        _composite(torch.zeros(3, 2, 2), torch.zeros(2, 2, 2), 0, 0, "add")


def test_crop_mask():
    mask = torch.arange(20, dtype=torch.float32).reshape(1, 4, 5)
    (cropped,) = CropMask().crop(mask, 1, 2, 3, 512)
    assert torch.equal(cropped, torch.tensor([[[11.0, 12.0, 13.0], [16.0, 17.0, 18.0]]]))
    (single,) = CropMask().crop(mask[0], 0, 0, 2, 1)  # a [height, width] mask becomes a batch of one
    assert torch.equal(single, torch.tensor([[[0.0, 1.0]]]))
    with pytest.raises(ValueError, match="^x: 5 lies outside the 5x4 mask"):
        CropMask().crop(mask, 5, 0, 1, 1)


def test_threshold_mask():
    mask = torch.tensor([[[0.2, 0.5, 0.51, 1.0]]])
    (hard,) = ThresholdMask().image_to_mask(mask, 0.5)
    assert torch.equal(hard, torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]))  # strictly above the value


def test_image_color_to_mask():
    image = torch.tensor([[[[1.0, 0.5, 0.0], [1.0, 0.49, 0.0], [1.2, 0.502, -0.1]]]])
    # 0.5 * 255 = 127.5 rounds (half to even) to 128, 0.49 * 255 = 124.95 to 125; values are clamped to 0..1 first
    (mask,) = ImageColorToMask().image_to_mask(image, 0xFF8000)
    assert torch.equal(mask, torch.tensor([[[1.0, 0.0, 1.0]]]))
    (grey,) = ImageColorToMask().image_to_mask(torch.full((1, 1, 2, 1), 1.0), 0xFFFFFF)
    assert torch.equal(grey, torch.ones(1, 1, 2))
    with pytest.raises(ValueError, match="^image: expected an IMAGE"):
        ImageColorToMask().image_to_mask(torch.zeros(2, 2), 0)


def test_mask_preview_writes_grey_temp_images(node_env):
    mask = torch.tensor([[[0.0, 1.0], [0.5, 1.0]]])
    result = MaskPreview().execute(mask.expand(2, -1, -1))
    entries = result["ui"]["images"]
    assert len(entries) == 2 and all(entry["type"] == "temp" for entry in entries)
    picture = np.asarray(Image.open(node_env.folders.temp_dir / entries[0]["subfolder"] / entries[0]["filename"]))
    assert picture.shape == (2, 2, 3)
    assert picture[..., 0].tolist() == [[0, 255], [127, 255]] and (picture[..., 0] == picture[..., 2]).all()
    assert not list(node_env.folders.output_dir.iterdir())


def _execute(prompt: dict[str, Any]) -> dict[str, Any]:
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    validation = validate_prompt(prompt, registry)
    assert validation.ok and not validation.node_errors, validation.to_response()
    result = build_executor(registry, OutputCache()).execute(validation.prompt, "p1", {}, validation.outputs)
    assert result.success, result.error
    return result.outputs


def test_mask_workflow_runs_through_the_engine(node_env):
    picture = np.zeros((16, 16, 3), dtype=np.uint8)
    picture[4:12, 4:12] = (255, 0, 0)
    Image.fromarray(picture).save(node_env.folders.input_dir / "red_square.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "red_square.png"}},
        "2": {"class_type": "ImageColorToMask", "inputs": {"image": ["1", 0], "color": 0xFF0000}},
        "3": {"class_type": "SolidMask", "inputs": {"value": 0.6, "width": 16, "height": 16}},
        "4": {"class_type": "MaskComposite",
              "inputs": {"destination": ["3", 0], "source": ["2", 0], "x": 0, "y": 0, "operation": "multiply"}},
        "5": {"class_type": "ThresholdMask", "inputs": {"mask": ["4", 0], "value": 0.5}},
        "6": {"class_type": "CropMask", "inputs": {"mask": ["5", 0], "x": 2, "y": 2, "width": 12, "height": 12}},
        "7": {"class_type": "MaskToImage", "inputs": {"mask": ["6", 0]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "masks"}},
        "9": {"class_type": "MaskPreview", "inputs": {"mask": ["6", 0]}},
    }
    outputs = _execute(prompt)
    (saved,) = outputs["8"]["images"]
    (preview,) = outputs["9"]["images"]
    assert preview["type"] == "temp"
    result = np.asarray(Image.open(node_env.folders.output_dir / saved["subfolder"] / saved["filename"]))
    expected = np.zeros((12, 12), dtype=np.uint8)
    expected[2:10, 2:10] = 255  # the red square, cropped by 2 pixels
    assert np.array_equal(result[..., 0], expected)


def test_workflow_validation_rejects_out_of_range_values(node_env):
    from tests.nodes.conftest import validation_errors

    errors = validation_errors({
        "1": {"class_type": "SolidMask", "inputs": {"value": 1.5, "width": 0, "height": 8}},
        "2": {"class_type": "MaskComposite",
              "inputs": {"destination": ["1", 0], "source": ["1", 0], "x": 0, "y": 0, "operation": "divide"}},
    })
    assert {error["extra_info"]["input_name"] for error in errors["1"]} == {"value", "width"}
    assert {error["extra_info"]["input_name"] for error in errors["2"]} == {"operation"}
