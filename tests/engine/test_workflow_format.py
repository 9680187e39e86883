"""Tests for engine.workflow_format: editor (LiteGraph) workflows to the API format.

The node classes below are test-only stand-ins with the same INPUT_TYPES shape as ComfyUI's nodes; the
converter never runs them. Small graphs are built with the `node`/`link_in` helpers; realistic editor
files live in tests/engine/fixtures/.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from engine.registry import NodeRegistry
from engine.workflow_format import WorkflowFormatError, editor_to_api, is_editor_format, to_api_format

FIXTURES = Path(__file__).parent / "fixtures"

CHECKPOINTS = ["v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors"]
LORAS = ["detail_tweaker.safetensors"]
SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m"]
SCHEDULERS = ["normal", "karras", "simple"]
INPUT_FILES = ["example.png", "mask.png"]


# ---------------------------------------------------------------------------------------------------------
# Test-only node classes
# ---------------------------------------------------------------------------------------------------------

class _Stub:
    FUNCTION = "run"
    CATEGORY = "testing"

    def run(self, **kwargs: Any) -> tuple:
        raise AssertionError("the converter never runs nodes")


class CheckpointLoaderSimple(_Stub):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (CHECKPOINTS, {"tooltip": "The checkpoint to load."})}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")


class LoraLoader(_Stub):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "clip": ("CLIP",),
            "lora_name": (LORAS,),
            "strength_model": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}),
            "strength_clip": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}),
        }}

    RETURN_TYPES = ("MODEL", "CLIP")


class CLIPTextEncode(_Stub):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True, "dynamicPrompts": True}), "clip": ("CLIP",)}}

    RETURN_TYPES = ("CONDITIONING",)


class EmptyLatentImage(_Stub):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 512, "min": 16, "max": 16384, "step": 8}),
            "height": ("INT", {"default": 512, "min": 16, "max": 16384, "step": 8}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
        }}

    RETURN_TYPES = ("LATENT",)


class KSampler(_Stub):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
            "sampler_name": (SAMPLERS,),
            "scheduler": (SCHEDULERS,),
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            "latent_image": ("LATENT",),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
        }}

    RETURN_TYPES = ("LATENT",)


class VAEDecode(_Stub):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "vae": ("VAE",)}}

    RETURN_TYPES = ("IMAGE",)


class SaveImage(_Stub):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True


class PreviewImage(_Stub):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True


class LoadImage(_Stub):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (INPUT_FILES, {"image_upload": True})}}

    RETURN_TYPES = ("IMAGE", "MASK")


class LoadImageMask(_Stub):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (INPUT_FILES, {"image_upload": True}),
                             "channel": (["alpha", "red", "green", "blue"],)}}

    RETURN_TYPES = ("MASK",)


class LoadImageFrame(_Stub):
    """An upload node with an optional widget after the upload button."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (INPUT_FILES, {"image_upload": True})},
                "optional": {"frame": ("INT", {"default": 0, "min": 0})}}

    RETURN_TYPES = ("IMAGE",)


class ImageInvert(_Stub):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)


class ImageBlend(_Stub):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image1": ("IMAGE",),
            "image2": ("IMAGE",),
            "blend_factor": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
            "blend_mode": (["normal", "multiply", "screen"],),
        }}

    RETURN_TYPES = ("IMAGE",)


class MaskToImage(_Stub):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",)}}

    RETURN_TYPES = ("IMAGE",)


class ComboWithControl(_Stub):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"choice": (["a", "b", "c"], {"control_after_generate": True}),
                             "count": ("INT", {"default": 1})}}

    RETURN_TYPES = ("STRING",)


class MixedInputs(_Stub):
    """forceInput, optional widgets, a widget without default and a hidden input."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"value": ("INT", {"forceInput": True}), "scale": ("FLOAT", {"default": 1.0})},
            "optional": {"offset": ("INT", {"default": 0}), "label": ("STRING", {"multiline": False})},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("INT",)


class TagList(_Stub):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tags": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("STRING",)


class Reroute(_Stub):
    """A backend node that happens to be named like the editor-only Reroute."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)}}

    RETURN_TYPES = ("*",)


CLASSES = [CheckpointLoaderSimple, LoraLoader, CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode, SaveImage,
           PreviewImage, LoadImage, LoadImageMask, LoadImageFrame, ImageInvert, ImageBlend, MaskToImage,
           ComboWithControl, MixedInputs, TagList]
DISPLAY_NAMES = {
    "CheckpointLoaderSimple": "Load Checkpoint",
    "LoraLoader": "Load LoRA",
    "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "EmptyLatentImage": "Empty Latent Image",
    "VAEDecode": "VAE Decode",
    "SaveImage": "Save Image",
    "PreviewImage": "Preview Image",
    "LoadImage": "Load Image",
    "ImageInvert": "Invert Image",
}


@pytest.fixture
def registry() -> NodeRegistry:
    reg = NodeRegistry()
    reg.register_mappings({cls.__name__: cls for cls in CLASSES}, DISPLAY_NAMES)
    return reg


def load_fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


# ---------------------------------------------------------------------------------------------------------
# Builders for small editor graphs
# ---------------------------------------------------------------------------------------------------------

def node(node_id: int, node_type: str, inputs: list | None = None, outputs: list | None = None,
         widgets: Any = None, mode: int = 0, title: str | None = None) -> dict:
    entry: dict[str, Any] = {"id": node_id, "type": node_type, "pos": [0, 0], "size": [200, 100], "flags": {},
                             "mode": mode, "inputs": inputs or [],
                             "outputs": [{"name": t, "type": t, "links": []} for t in (outputs or [])],
                             "properties": {}}
    if widgets is not None:
        entry["widgets_values"] = widgets
    if title is not None:
        entry["title"] = title
    return entry


def link_in(name: str, slot_type: str, link: int | None, widget: bool = False) -> dict:
    entry: dict[str, Any] = {"name": name, "type": slot_type, "link": link}
    if widget:
        entry["widget"] = {"name": name}
    return entry


def graph(nodes: list[dict], links: list | None = None, **extra: Any) -> dict:
    return {"last_node_id": 0, "last_link_id": 0, "nodes": nodes, "links": links or [], "groups": [],
            "config": {}, "extra": {}, "version": 0.4, **extra}


def api(class_type: str, inputs: dict, title: str | None = None) -> dict:
    return {"class_type": class_type, "inputs": inputs, "_meta": {"title": title or DISPLAY_NAMES.get(class_type,
                                                                                                      class_type)}}


# ---------------------------------------------------------------------------------------------------------
# Realistic editor files
# ---------------------------------------------------------------------------------------------------------

def test_default_txt2img_workflow(registry):
    assert editor_to_api(load_fixture("txt2img_default.json"), registry) == {
        "3": api("KSampler", {"seed": 156680208700286, "steps": 20, "cfg": 8, "sampler_name": "euler",
                              "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0],
                              "negative": ["7", 0], "latent_image": ["5", 0]}),
        "4": api("CheckpointLoaderSimple", {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}),
        "5": api("EmptyLatentImage", {"width": 512, "height": 512, "batch_size": 1}),
        "6": api("CLIPTextEncode", {"text": "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,",
                                    "clip": ["4", 1]}),
        "7": api("CLIPTextEncode", {"text": "text, watermark", "clip": ["4", 1]}),
        "8": api("VAEDecode", {"samples": ["3", 0], "vae": ["4", 2]}),
        "9": api("SaveImage", {"filename_prefix": "ComfyUI", "images": ["8", 0]}),
    }


def test_modern_workflow_with_editor_only_nodes(registry):
    """Newer editor file: every widget has a socket, a bypassed LoRA, two reroutes, a primitive seed, notes,
    a muted preview, groups and native reroutes in `extra`."""
    assert editor_to_api(load_fixture("txt2img_modern.json"), registry) == {
        "4": api("CheckpointLoaderSimple", {"ckpt_name": "sd_xl_base_1.0.safetensors"}),
        "6": api("CLIPTextEncode", {"text": "a photo of a cat wearing a tiny hat", "clip": ["4", 1]},
                 "Positive Prompt"),
        "7": api("CLIPTextEncode", {"text": "blurry, low quality", "clip": ["4", 1]}, "Negative Prompt"),
        "5": api("EmptyLatentImage", {"width": 1024, "height": 1024, "batch_size": 1}),
        "3": api("KSampler", {"seed": 42, "steps": 25, "cfg": 6.5, "sampler_name": "dpmpp_2m",
                              "scheduler": "karras", "denoise": 1, "model": ["4", 0], "positive": ["6", 0],
                              "negative": ["7", 0], "latent_image": ["5", 0]}),
        "8": api("VAEDecode", {"samples": ["3", 0], "vae": ["4", 2]}),
        "9": api("SaveImage", {"filename_prefix": "cats/cat", "images": ["8", 0]}),
    }


def test_subgraph_workflow_with_two_instances_and_a_nested_subgraph(registry):
    def text_to_image(prefix: str, text: str, seed: int, steps: int) -> dict:
        return {
            f"{prefix}:1": api("CLIPTextEncode", {"text": text, "clip": ["4", 1]}),
            f"{prefix}:2:1": api("CLIPTextEncode", {"text": "blurry, watermark, text", "clip": ["4", 1]}),
            f"{prefix}:3": api("EmptyLatentImage", {"width": 768, "height": 512, "batch_size": 1}),
            f"{prefix}:4": api("KSampler", {
                "seed": seed, "steps": steps, "cfg": 7, "sampler_name": "euler_ancestral", "scheduler": "normal",
                "denoise": 1, "model": ["4", 0], "positive": [f"{prefix}:1", 0], "negative": [f"{prefix}:2:1", 0],
                "latent_image": [f"{prefix}:3", 0]}),
            f"{prefix}:5": api("VAEDecode", {"samples": [f"{prefix}:4", 0], "vae": ["4", 2]}),
        }

    assert editor_to_api(load_fixture("txt2img_subgraph.json"), registry) == {
        "4": api("CheckpointLoaderSimple", {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}),
        # steps of the first instance come from the PrimitiveNode wired to its input, not its widgets_values
        **text_to_image("10", "a castle on a hill at sunset", seed=7, steps=30),
        "9": api("SaveImage", {"filename_prefix": "castle", "images": ["10:5", 0]}),
        **text_to_image("11", "a misty lake at dawn", seed=8, steps=20),
        "13": api("SaveImage", {"filename_prefix": "lake", "images": ["11:5", 0]}),
    }


def test_conversion_does_not_modify_the_workflow(registry):
    workflow = load_fixture("txt2img_subgraph.json")
    before = copy.deepcopy(workflow)
    editor_to_api(workflow, registry)
    assert workflow == before


# ---------------------------------------------------------------------------------------------------------
# Format detection and the entry points
# ---------------------------------------------------------------------------------------------------------

API_PROMPT = {
    "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "2": {"class_type": "TagList", "inputs": {"tags": {"__value__": ["a", "b"]}}},
}


def test_is_editor_format():
    assert is_editor_format(load_fixture("txt2img_default.json"))
    assert is_editor_format({"nodes": [], "links": []})
    assert is_editor_format({"version": 0.4, "links": []})  # broken editor file: reported by editor_to_api
    assert not is_editor_format(API_PROMPT)
    assert not is_editor_format({"nodes": {"class_type": "SaveImage", "inputs": {}}})  # an API node named "nodes"
    assert not is_editor_format({})
    assert not is_editor_format(["nodes"])  # type: ignore[arg-type]


def test_to_api_format_returns_a_copy_of_an_api_prompt(registry):
    result = to_api_format(API_PROMPT, registry)
    assert result == API_PROMPT
    result["1"]["inputs"]["width"] = 128
    assert API_PROMPT["1"]["inputs"]["width"] == 64


def test_to_api_format_converts_editor_files(registry):
    workflow = load_fixture("txt2img_default.json")
    assert to_api_format(workflow, registry) == editor_to_api(workflow, registry)


@pytest.mark.parametrize("bad", [None, [], "nodes", 3])
def test_a_workflow_that_is_not_an_object_is_rejected(registry, bad):
    with pytest.raises(WorkflowFormatError, match="JSON object"):
        to_api_format(bad, registry)
    with pytest.raises(WorkflowFormatError, match="JSON object"):
        editor_to_api(bad, registry)


# ---------------------------------------------------------------------------------------------------------
# Widget values
# ---------------------------------------------------------------------------------------------------------

def convert_one(registry: NodeRegistry, node_type: str, widgets: Any, inputs: list | None = None) -> dict:
    return editor_to_api(graph([node(1, node_type, inputs=inputs, widgets=widgets)]), registry)["1"]["inputs"]


KSAMPLER_LINKS_MISSING = {"seed": 5, "steps": 30, "cfg": 4.5, "sampler_name": "euler", "scheduler": "karras",
                          "denoise": 0.5}


@pytest.mark.parametrize("widgets", [
    [5, "randomize", 30, 4.5, "euler", "karras", 0.5],
    [5, "fixed", 30, 4.5, "euler", "karras", 0.5],
    [5, "increment", 30, 4.5, "euler", "karras", 0.5],
    [5, 30, 4.5, "euler", "karras", 0.5],  # an editor that does not store the control value
], ids=["randomize", "fixed", "increment", "no-control-value"])
def test_control_after_generate_value_is_skipped(registry, widgets):
    assert convert_one(registry, "KSampler", widgets) == KSAMPLER_LINKS_MISSING


def test_combo_with_control_after_generate_skips_control_and_filter(registry):
    assert convert_one(registry, "ComboWithControl", ["b", "increment", "", 3]) == {"choice": "b", "count": 3}
    assert convert_one(registry, "ComboWithControl", ["c", 4]) == {"choice": "c", "count": 4}


@pytest.mark.parametrize("node_type, widgets, expected", [
    ("LoadImage", ["mask.png", "image"], {"image": "mask.png"}),
    ("LoadImage", ["mask.png"], {"image": "mask.png"}),
    ("LoadImageMask", ["mask.png", "red", "image"], {"image": "mask.png", "channel": "red"}),
    ("LoadImageMask", ["mask.png", "red"], {"image": "mask.png", "channel": "red"}),
    ("LoadImageFrame", ["mask.png", "image", 3], {"image": "mask.png", "frame": 3}),
    ("LoadImageFrame", ["mask.png", 3], {"image": "mask.png", "frame": 3}),
], ids=["old-load", "new-load", "old-mask", "new-mask", "old-optional-after-upload", "new-optional"])
def test_upload_button_value_of_older_editors_is_skipped(registry, node_type, widgets, expected):
    assert convert_one(registry, node_type, widgets) == expected


def test_widget_values_as_a_dict(registry):
    widgets = {"seed": 9, "control_after_generate": "fixed", "steps": 12, "cfg": 3.0, "sampler_name": "dpmpp_2m",
               "scheduler": "simple", "denoise": 0.75, "not_an_input": 1}
    assert convert_one(registry, "KSampler", widgets) == {
        "seed": 9, "steps": 12, "cfg": 3.0, "sampler_name": "dpmpp_2m", "scheduler": "simple", "denoise": 0.75}


def test_missing_widget_values_get_the_declared_defaults(registry):
    # no widgets_values at all, and a list shorter than the widgets (a node that gained widgets since)
    assert convert_one(registry, "KSampler", None) == {
        "seed": 0, "steps": 20, "cfg": 8.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}
    assert convert_one(registry, "KSampler", [11, "fixed", 25]) == {
        "seed": 11, "steps": 25, "cfg": 8.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}


def test_extra_widget_values_are_ignored(registry):
    assert convert_one(registry, "EmptyLatentImage", [640, 480, 2, "added by a front-end extension"]) == {
        "width": 640, "height": 480, "batch_size": 2}


def test_force_input_and_hidden_inputs_take_no_widget_value(registry):
    inputs = convert_one(registry, "MixedInputs", [2.5, 7, "hello"])
    assert inputs == {"scale": 2.5, "offset": 7, "label": "hello"}
    # a widget without a default and without a stored value is left for validation to report
    assert convert_one(registry, "MixedInputs", [2.5]) == {"scale": 2.5, "offset": 0}


def test_list_widget_values_are_boxed_so_they_are_not_links(registry):
    assert convert_one(registry, "TagList", [["1", 0]]) == {"tags": {"__value__": ["1", 0]}}


def test_widget_converted_to_an_input_takes_the_linked_value(registry):
    nodes = [
        node(1, "MixedInputs", widgets=[1.0, 0, "x"], outputs=["INT"]),
        node(2, "EmptyLatentImage", inputs=[link_in("width", "INT", 2, widget=True)], widgets=[512, 256, 1]),
    ]
    result = editor_to_api(graph(nodes, [[2, 1, 0, 2, 0, "INT"]]), registry)
    assert result["2"]["inputs"] == {"width": ["1", 0], "height": 256, "batch_size": 1}


# ---------------------------------------------------------------------------------------------------------
# Links, titles and unknown node types
# ---------------------------------------------------------------------------------------------------------

def test_links_in_object_form(registry):
    nodes = [node(1, "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"]),
             node(2, "MaskToImage", inputs=[link_in("mask", "MASK", 7)], outputs=["IMAGE"])]
    links = [{"id": 7, "origin_id": 1, "origin_slot": 1, "target_id": 2, "target_slot": 0, "type": "MASK"}]
    assert editor_to_api(graph(nodes, links), registry)["2"]["inputs"] == {"mask": ["1", 1]}


def test_deleted_link_holes_are_ignored(registry):
    nodes = [node(1, "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"]),
             node(2, "ImageInvert", inputs=[link_in("image", "IMAGE", 2)], outputs=["IMAGE"])]
    assert editor_to_api(graph(nodes, [None, [2, 1, 0, 2, 0, "IMAGE"]]), registry)["2"]["inputs"] == {
        "image": ["1", 0]}


def test_a_workflow_without_links(registry):
    workflow = {"nodes": [node(1, "LoadImage", widgets=["example.png"])], "version": 0.4}
    assert editor_to_api(workflow, registry) == {"1": api("LoadImage", {"image": "example.png"})}


def test_titles(registry):
    nodes = [node(1, "LoadImage", widgets=["example.png"], title="Reference"),
             node(2, "LoadImage", widgets=["example.png"]),
             node(3, "MaskToImage")]
    result = editor_to_api(graph(nodes), registry)
    assert [result[i]["_meta"]["title"] for i in "123"] == ["Reference", "Load Image", "MaskToImage"]


def test_unknown_node_type_is_kept_with_its_links_only(registry):
    nodes = [node(1, "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"]),
             node(2, "SomePluginUpscale", inputs=[link_in("image", "IMAGE", 1),
                                                  link_in("scale", "FLOAT", None, widget=True)],
                  widgets=[2.0, "lanczos"], outputs=["IMAGE"])]
    assert editor_to_api(graph(nodes, [[1, 1, 0, 2, 0, "IMAGE"]]), registry)["2"] == api(
        "SomePluginUpscale", {"image": ["1", 0]})


def test_node_ids_may_be_strings(registry):
    nodes = [node("a", "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"]),  # type: ignore[arg-type]
             node("b", "ImageInvert", inputs=[link_in("image", "IMAGE", 1)])]  # type: ignore[arg-type]
    assert editor_to_api(graph(nodes, [[1, "a", 0, "b", 0, "IMAGE"]]), registry)["b"]["inputs"] == {
        "image": ["a", 0]}


# ---------------------------------------------------------------------------------------------------------
# Editor-only nodes
# ---------------------------------------------------------------------------------------------------------

def reroute(node_id: int, link: int | None, mode: int = 0) -> dict:
    return node(node_id, "Reroute", inputs=[{"name": "", "type": "*", "link": link}], outputs=["*"], mode=mode)


def test_reroute_chain_resolves_to_the_real_source(registry):
    nodes = [node(1, "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"]),
             reroute(2, 1), reroute(3, 2), reroute(4, 3),
             node(5, "MaskToImage", inputs=[link_in("mask", "MASK", 4)])]
    links = [[1, 1, 1, 2, 0, "*"], [2, 2, 0, 3, 0, "*"], [3, 3, 0, 4, 0, "*"], [4, 4, 0, 5, 0, "MASK"]]
    assert editor_to_api(graph(nodes, links), registry) == {
        "1": api("LoadImage", {"image": "example.png"}),
        "5": api("MaskToImage", {"mask": ["1", 1]}),
    }


def test_unconnected_reroute_leaves_the_input_unset(registry):
    nodes = [reroute(2, None), node(5, "MaskToImage", inputs=[link_in("mask", "MASK", 4)])]
    assert editor_to_api(graph(nodes, [[4, 2, 0, 5, 0, "MASK"]]), registry)["5"]["inputs"] == {}


def test_a_cycle_of_reroutes_is_an_error(registry):
    nodes = [reroute(2, 2), reroute(3, 1), node(5, "MaskToImage", inputs=[link_in("mask", "MASK", 3)])]
    links = [[1, 2, 0, 3, 0, "*"], [2, 3, 0, 2, 0, "*"], [3, 3, 0, 5, 0, "MASK"]]
    with pytest.raises(WorkflowFormatError, match=r"node [23] \(Reroute\).*cycle"):
        editor_to_api(graph(nodes, links), registry)


def test_primitive_node_value_reaches_every_target(registry):
    primitive = node(1, "PrimitiveNode", widgets=[768, "fixed"], title="Size")
    primitive["outputs"] = [{"name": "INT", "type": "INT", "widget": {"name": "width"}, "links": [1, 2, 3]}]
    nodes = [primitive,
             node(2, "EmptyLatentImage", inputs=[link_in("width", "INT", 1, widget=True),
                                                 link_in("height", "INT", 2, widget=True)], widgets=[512, 512, 1]),
             reroute(3, 3),
             node(4, "EmptyLatentImage", inputs=[link_in("width", "INT", 4, widget=True)], widgets=[64, 64, 4])]
    links = [[1, 1, 0, 2, 0, "INT"], [2, 1, 0, 2, 1, "INT"], [3, 1, 0, 3, 0, "INT"], [4, 3, 0, 4, 0, "INT"]]
    assert editor_to_api(graph(nodes, links), registry) == {
        "2": api("EmptyLatentImage", {"width": 768, "height": 768, "batch_size": 1}),
        "4": api("EmptyLatentImage", {"width": 768, "height": 64, "batch_size": 4}),
    }


def test_primitive_node_with_widget_values_as_a_dict(registry):
    nodes = [node(1, "PrimitiveNode", widgets={"width": 320}, outputs=["INT"]),
             node(2, "EmptyLatentImage", inputs=[link_in("width", "INT", 1, widget=True)], widgets=[64, 64, 1])]
    assert editor_to_api(graph(nodes, [[1, 1, 0, 2, 0, "INT"]]), registry)["2"]["inputs"]["width"] == 320


def test_primitive_node_without_a_value_leaves_the_widget_value(registry):
    nodes = [node(1, "PrimitiveNode", outputs=["INT"]),
             node(2, "EmptyLatentImage", inputs=[link_in("width", "INT", 1, widget=True)], widgets=[64, 64, 1])]
    assert editor_to_api(graph(nodes, [[1, 1, 0, 2, 0, "INT"]]), registry)["2"]["inputs"]["width"] == 64


def test_primitive_list_value_is_boxed(registry):
    nodes = [node(1, "PrimitiveNode", widgets=[["x", 1]], outputs=["STRING"]),
             node(2, "TagList", inputs=[link_in("tags", "STRING", 1, widget=True)], widgets=["old"])]
    assert editor_to_api(graph(nodes, [[1, 1, 0, 2, 0, "STRING"]]), registry)["2"]["inputs"] == {
        "tags": {"__value__": ["x", 1]}}


@pytest.mark.parametrize("note_type", ["Note", "MarkdownNote", "Label (rgthree)", "Fast Groups Bypasser (rgthree)"])
def test_annotation_nodes_are_dropped(registry, note_type):
    nodes = [node(1, note_type, widgets=["remember the seed"], outputs=["*"]),
             node(2, "ImageInvert", inputs=[link_in("image", "IMAGE", 1)])]
    assert editor_to_api(graph(nodes, [[1, 1, 0, 2, 0, "*"]]), registry) == {"2": api("ImageInvert", {})}


def test_a_registered_node_named_like_an_editor_only_node_is_a_real_node(registry):
    registry.register("Reroute", Reroute)
    nodes = [node(1, "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"]),
             node(2, "Reroute", inputs=[link_in("value", "*", 1)], outputs=["*"]),
             node(3, "ImageInvert", inputs=[link_in("image", "IMAGE", 2)])]
    result = editor_to_api(graph(nodes, [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 3, 0, "IMAGE"]]), registry)
    assert result["2"] == api("Reroute", {"value": ["1", 0]})
    assert result["3"]["inputs"] == {"image": ["2", 0]}


def test_get_node_reads_the_set_node_of_the_same_name(registry):
    nodes = [node(1, "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"]),
             node(2, "SetNode", inputs=[link_in("IMAGE", "IMAGE", 1)], outputs=["*"], widgets=["source"]),
             node(3, "SetNode", inputs=[link_in("MASK", "MASK", 2)], outputs=["*"], widgets=["mask"]),
             node(4, "GetNode", outputs=["IMAGE"], widgets=["source"]),
             node(5, "ImageInvert", inputs=[link_in("image", "IMAGE", 3)])]
    links = [[1, 1, 0, 2, 0, "IMAGE"], [2, 1, 1, 3, 0, "MASK"], [3, 4, 0, 5, 0, "IMAGE"]]
    assert editor_to_api(graph(nodes, links), registry) == {
        "1": api("LoadImage", {"image": "example.png"}),
        "5": api("ImageInvert", {"image": ["1", 0]}),
    }


def test_get_node_without_set_node_is_an_error(registry):
    nodes = [node(4, "GetNode", outputs=["IMAGE"], widgets=["nowhere"]),
             node(5, "ImageInvert", inputs=[link_in("image", "IMAGE", 3)])]
    with pytest.raises(WorkflowFormatError, match=r"node 4 \(GetNode\): no SetNode named 'nowhere'"):
        editor_to_api(graph(nodes, [[3, 4, 0, 5, 0, "IMAGE"]]), registry)


# ---------------------------------------------------------------------------------------------------------
# Muted and bypassed nodes
# ---------------------------------------------------------------------------------------------------------

def image_chain(middle_mode: int) -> dict:
    """LoadImage -> ImageInvert (mode) -> SaveImage, plus an EmptyLatentImage fed by the middle node's
    output into a widget socket to show what happens to widget inputs."""
    nodes = [node(1, "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"]),
             node(2, "ImageInvert", inputs=[link_in("image", "IMAGE", 1)], outputs=["IMAGE"], mode=middle_mode),
             node(3, "SaveImage", inputs=[link_in("images", "IMAGE", 2),
                                          link_in("filename_prefix", "STRING", 3, widget=True)], widgets=["out"])]
    links = [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 2, 0, 3, 1, "STRING"]]
    return graph(nodes, links)


def test_muted_node_is_removed_and_inputs_linked_to_it_are_dropped(registry):
    assert editor_to_api(image_chain(2), registry) == {
        "1": api("LoadImage", {"image": "example.png"}),
        "3": api("SaveImage", {}),  # widget value of the linked widget input goes too, as in the editor
    }


def test_other_modes_run_normally(registry):
    assert set(editor_to_api(image_chain(1), registry)) == {"1", "2", "3"}


def test_bypassed_node_is_rewired_to_its_matching_input(registry):
    result = editor_to_api(image_chain(4), registry)
    # images (IMAGE) passes to the inverted node's IMAGE input; filename_prefix wants STRING: no match, so
    # the widget keeps its own value
    assert result == {
        "1": api("LoadImage", {"image": "example.png"}),
        "3": api("SaveImage", {"filename_prefix": "out", "images": ["1", 0]}),
    }


def test_chain_of_bypassed_nodes(registry):
    nodes = [node(1, "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"]),
             node(2, "ImageInvert", inputs=[link_in("image", "IMAGE", 1)], outputs=["IMAGE"], mode=4),
             reroute(3, 2),
             node(4, "ImageInvert", inputs=[link_in("image", "IMAGE", 3)], outputs=["IMAGE"], mode=4),
             node(5, "PreviewImage", inputs=[link_in("images", "IMAGE", 4)])]
    links = [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "*"], [3, 3, 0, 4, 0, "IMAGE"], [4, 4, 0, 5, 0, "IMAGE"]]
    assert editor_to_api(graph(nodes, links), registry)["5"]["inputs"] == {"images": ["1", 0]}


def test_bypass_prefers_the_same_slot_then_the_first_matching_type(registry):
    nodes = [node(1, "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"]),
             node(2, "LoadImage", widgets=["mask.png"], outputs=["IMAGE", "MASK"]),
             node(3, "CheckpointLoaderSimple", widgets=[CHECKPOINTS[0]], outputs=["MODEL", "CLIP", "VAE"]),
             node(4, "LoraLoader", inputs=[link_in("model", "MODEL", 1), link_in("clip", "CLIP", 2)],
                  outputs=["MODEL", "CLIP"], mode=4),
             node(5, "ImageBlend", inputs=[link_in("image1", "IMAGE", 3), link_in("image2", "IMAGE", 4)],
                  outputs=["IMAGE"], mode=4),
             node(6, "KSampler", inputs=[link_in("model", "MODEL", 5)], widgets=[1, "fixed", 2, 3.0, "euler",
                                                                              "normal", 1.0]),
             node(7, "CLIPTextEncode", inputs=[link_in("clip", "CLIP", 6)], widgets=["x"]),
             node(8, "PreviewImage", inputs=[link_in("images", "IMAGE", 7)])]
    links = [[1, 3, 0, 4, 0, "MODEL"], [2, 3, 1, 4, 1, "CLIP"], [3, 1, 0, 5, 0, "IMAGE"], [4, 2, 0, 5, 1, "IMAGE"],
             [5, 4, 0, 6, 0, "MODEL"], [6, 4, 1, 7, 0, "CLIP"], [7, 5, 0, 8, 0, "IMAGE"]]
    result = editor_to_api(graph(nodes, links), registry)
    assert result["6"]["inputs"]["model"] == ["3", 0]
    assert result["7"]["inputs"]["clip"] == ["3", 1]
    assert result["8"]["inputs"] == {"images": ["1", 0]}
    assert "4" not in result and "5" not in result


def test_bypass_picks_an_input_of_the_wanted_type_at_another_slot(registry):
    nodes = [node(1, "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"]),
             node(2, "SomePlugin", inputs=[link_in("mask", "MASK", 1), link_in("image", "IMAGE", 2)],
                  outputs=["IMAGE", "MASK"], mode=4),
             node(3, "MaskToImage", inputs=[link_in("mask", "MASK", 3)]),
             node(4, "ImageInvert", inputs=[link_in("image", "IMAGE", 4)])]
    links = [[1, 1, 1, 2, 0, "MASK"], [2, 1, 0, 2, 1, "IMAGE"], [3, 2, 1, 3, 0, "MASK"], [4, 2, 0, 4, 0, "IMAGE"]]
    result = editor_to_api(graph(nodes, links), registry)
    assert result["3"]["inputs"] == {"mask": ["1", 1]}
    assert result["4"]["inputs"] == {"image": ["1", 0]}


def test_bypass_without_matching_input_drops_the_input(registry):
    nodes = [node(1, "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"]),
             node(2, "MaskToImage", inputs=[link_in("mask", "MASK", 1)], outputs=["IMAGE"], mode=4),
             node(3, "ImageInvert", inputs=[link_in("image", "IMAGE", 2)])]
    links = [[1, 1, 1, 2, 0, "MASK"], [2, 2, 0, 3, 0, "IMAGE"]]
    assert editor_to_api(graph(nodes, links), registry)["3"] == api("ImageInvert", {})


def test_bypass_for_an_input_of_any_type_uses_the_same_slot(registry):
    nodes = [node(1, "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"]),
             node(2, "ImageInvert", inputs=[link_in("image", "IMAGE", 1)], outputs=["IMAGE", "STRING"], mode=4),
             node(3, "AnyDisplay", inputs=[link_in("first", "*", 2), link_in("second", "*", 3)])]
    links = [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "*"], [3, 2, 1, 3, 1, "*"]]
    # the second output has no input at its slot: the first input stands in
    assert editor_to_api(graph(nodes, links), registry)["3"]["inputs"] == {"first": ["1", 0], "second": ["1", 0]}


def test_bypass_through_an_input_of_any_type(registry):
    nodes = [node(1, "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"]),
             node(2, "PassAnything", inputs=[link_in("value", "*", 1)], outputs=["IMAGE"], mode=4),
             node(3, "ImageInvert", inputs=[link_in("image", "IMAGE", 2)])]
    links = [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]]
    assert editor_to_api(graph(nodes, links), registry)["3"]["inputs"] == {"image": ["1", 0]}


def test_bypassed_node_without_inputs_feeds_nothing(registry):
    nodes = [node(1, "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"], mode=4),
             node(3, "ImageInvert", inputs=[link_in("image", "IMAGE", 2)])]
    assert editor_to_api(graph(nodes, [[2, 1, 0, 3, 0, "IMAGE"]]), registry) == {"3": api("ImageInvert", {})}


def test_bypassed_node_fed_by_a_muted_node(registry):
    nodes = [node(1, "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"], mode=2),
             node(2, "ImageInvert", inputs=[link_in("image", "IMAGE", 1)], outputs=["IMAGE"], mode=4),
             node(3, "ImageInvert", inputs=[link_in("image", "IMAGE", 2)])]
    links = [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]]
    assert editor_to_api(graph(nodes, links), registry) == {"3": api("ImageInvert", {})}


# ---------------------------------------------------------------------------------------------------------
# Subgraphs
# ---------------------------------------------------------------------------------------------------------

INVERT_ID = "3f9a7c1e-2b4d-4e6f-8a0b-1c2d3e4f5a6b"


def invert_subgraph(inner_nodes: list | None = None, links: list | None = None,
                    inputs: list | None = None, outputs: list | None = None, sg_id: str = INVERT_ID) -> dict:
    """A subgraph definition; by default: image -> ImageInvert -> ImageInvert -> image, plus a passthrough
    of its second input to its second output."""
    return {
        "id": sg_id, "version": 1, "name": "Double invert", "revision": 0, "config": {},
        "state": {"lastGroupId": 0, "lastNodeId": 2, "lastLinkId": 4, "lastRerouteId": 0},
        "inputNode": {"id": -10, "bounding": [0, 0, 100, 100]}, "outputNode": {"id": -20, "bounding": [0, 0, 100, 100]},
        "inputs": inputs if inputs is not None else [
            {"id": "i1", "name": "image", "type": "IMAGE", "linkIds": [1]},
            {"id": "i2", "name": "mask", "type": "MASK", "linkIds": [4]}],
        "outputs": outputs if outputs is not None else [
            {"id": "o1", "name": "IMAGE", "type": "IMAGE", "linkIds": [3]},
            {"id": "o2", "name": "MASK", "type": "MASK", "linkIds": [4]}],
        "widgets": [], "groups": [],
        "nodes": inner_nodes if inner_nodes is not None else [
            node(1, "ImageInvert", inputs=[link_in("image", "IMAGE", 1)], outputs=["IMAGE"]),
            node(2, "ImageInvert", inputs=[link_in("image", "IMAGE", 2)], outputs=["IMAGE"])],
        "links": links if links is not None else [
            {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "IMAGE"},
            {"id": 2, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "IMAGE"},
            {"id": 3, "origin_id": 2, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"},
            {"id": 4, "origin_id": -10, "origin_slot": 1, "target_id": -20, "target_slot": 1, "type": "MASK"}],
        "extra": {},
    }


def invert_workflow(instance_mode: int = 0, definitions: list | None = None) -> dict:
    nodes = [node(1, "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"]),
             node(2, INVERT_ID, inputs=[link_in("image", "IMAGE", 1), link_in("mask", "MASK", 2)],
                  outputs=["IMAGE", "MASK"], mode=instance_mode),
             node(3, "PreviewImage", inputs=[link_in("images", "IMAGE", 3)]),
             node(4, "MaskToImage", inputs=[link_in("mask", "MASK", 4)])]
    links = [[1, 1, 0, 2, 0, "IMAGE"], [2, 1, 1, 2, 1, "MASK"], [3, 2, 0, 3, 0, "IMAGE"], [4, 2, 1, 4, 0, "MASK"]]
    return graph(nodes, links, definitions={"subgraphs": definitions or [invert_subgraph()]})


def test_subgraph_is_expanded_with_prefixed_ids(registry):
    assert editor_to_api(invert_workflow(), registry) == {
        "1": api("LoadImage", {"image": "example.png"}),
        "2:1": api("ImageInvert", {"image": ["1", 0]}),
        "2:2": api("ImageInvert", {"image": ["2:1", 0]}),
        "3": api("PreviewImage", {"images": ["2:2", 0]}),
        "4": api("MaskToImage", {"mask": ["1", 1]}),  # subgraph input wired straight to its output
    }


def test_muted_subgraph_instance_removes_its_nodes(registry):
    assert editor_to_api(invert_workflow(instance_mode=2), registry) == {
        "1": api("LoadImage", {"image": "example.png"}),
        "3": api("PreviewImage", {}),
        "4": api("MaskToImage", {}),
    }


def test_bypassed_subgraph_instance_passes_its_inputs_through(registry):
    assert editor_to_api(invert_workflow(instance_mode=4), registry) == {
        "1": api("LoadImage", {"image": "example.png"}),
        "3": api("PreviewImage", {"images": ["1", 0]}),
        "4": api("MaskToImage", {"mask": ["1", 1]}),
    }


def test_muted_and_bypassed_nodes_inside_a_subgraph(registry):
    definition = invert_subgraph()
    definition["nodes"][0]["mode"] = 4
    assert editor_to_api(invert_workflow(definitions=[definition]), registry)["2:2"]["inputs"] == {
        "image": ["1", 0]}
    definition["nodes"][0]["mode"] = 2
    result = editor_to_api(invert_workflow(definitions=[definition]), registry)
    assert "2:1" not in result and result["2:2"]["inputs"] == {}


def test_subgraph_output_without_inner_link_leaves_the_input_unset(registry):
    definition = invert_subgraph()
    definition["outputs"][0]["linkIds"] = []
    assert editor_to_api(invert_workflow(definitions=[definition]), registry)["3"]["inputs"] == {}


SEED_ID = "7e1b2c3d-4f5a-4b6c-8d7e-9f0a1b2c3d4e"


def seed_subgraph() -> dict:
    """Promoted widgets: text -> CLIPTextEncode.text, seed -> KSampler.seed, latent -> a link input."""
    sampler_inputs = [link_in("seed", "INT", 2, widget=True), link_in("latent_image", "LATENT", 3)]
    return invert_subgraph(
        sg_id=SEED_ID,
        inputs=[{"id": "t", "name": "text", "type": "STRING", "linkIds": [1]},
                {"id": "s", "name": "seed", "type": "INT", "linkIds": [2]},
                {"id": "l", "name": "latent", "type": "LATENT", "linkIds": [3]},
                {"id": "n", "name": "steps", "type": "INT", "linkIds": [4]}],
        outputs=[{"id": "o", "name": "LATENT", "type": "LATENT", "linkIds": [5]}],
        inner_nodes=[node(1, "CLIPTextEncode", inputs=[link_in("text", "STRING", 1, widget=True)], widgets=["inner"]),
                     node(2, "KSampler", inputs=sampler_inputs + [link_in("steps", "INT", 4, widget=True)],
                          outputs=["LATENT"], widgets=[1, "fixed", 10, 5.0, "euler", "normal", 1.0])],
        links=[{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "STRING"},
               {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 2, "target_slot": 0, "type": "INT"},
               {"id": 3, "origin_id": -10, "origin_slot": 2, "target_id": 2, "target_slot": 1, "type": "LATENT"},
               {"id": 4, "origin_id": -10, "origin_slot": 3, "target_id": 2, "target_slot": 2, "type": "INT"},
               {"id": 5, "origin_id": 2, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "LATENT"}],
    )


def seed_workflow(widgets: Any) -> dict:
    instance = node(5, SEED_ID, inputs=[link_in("text", "STRING", None, widget=True),
                                        link_in("seed", "INT", None, widget=True),
                                        link_in("latent", "LATENT", None),
                                        link_in("steps", "INT", None, widget=True)],
                    outputs=["LATENT"], widgets=widgets)
    return graph([instance], definitions={"subgraphs": [seed_subgraph()]})


@pytest.mark.parametrize("widgets", [
    ["outer text", 99, 33],
    ["outer text", 99, "randomize", 33],  # older editors stored the seed's control value too
    {"text": "outer text", "seed": 99, "steps": 33},
], ids=["list", "list-with-control", "dict"])
def test_promoted_widget_values_come_from_the_instance(registry, widgets):
    result = editor_to_api(seed_workflow(widgets), registry)
    assert result["5:1"]["inputs"] == {"text": "outer text"}
    assert result["5:2"]["inputs"] == {"seed": 99, "steps": 33, "cfg": 5.0, "sampler_name": "euler",
                                       "scheduler": "normal", "denoise": 1.0}


def test_promoted_widgets_without_stored_values_keep_the_inner_values(registry):
    result = editor_to_api(seed_workflow(None), registry)
    assert result["5:1"]["inputs"] == {"text": "inner"}
    assert result["5:2"]["inputs"]["seed"] == 1
    assert "latent_image" not in result["5:2"]["inputs"]


def test_nested_subgraphs_get_nested_ids(registry):
    outer_id = "0d0e0f10-1112-4314-9516-171819202122"
    outer = invert_subgraph(
        sg_id=outer_id,
        inputs=[{"id": "i", "name": "image", "type": "IMAGE", "linkIds": [1]}],
        outputs=[{"id": "o", "name": "IMAGE", "type": "IMAGE", "linkIds": [2]}],
        inner_nodes=[node(7, INVERT_ID, inputs=[link_in("image", "IMAGE", 1), link_in("mask", "MASK", None)],
                          outputs=["IMAGE", "MASK"])],
        links=[{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 7, "target_slot": 0, "type": "IMAGE"},
               {"id": 2, "origin_id": 7, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"}])
    nodes = [node(1, "LoadImage", widgets=["example.png"], outputs=["IMAGE", "MASK"]),
             node(2, outer_id, inputs=[link_in("image", "IMAGE", 1)], outputs=["IMAGE"]),
             node(3, "PreviewImage", inputs=[link_in("images", "IMAGE", 2)])]
    workflow = graph(nodes, [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
                     definitions={"subgraphs": [outer, invert_subgraph()]})
    assert editor_to_api(workflow, registry) == {
        "1": api("LoadImage", {"image": "example.png"}),
        "2:7:1": api("ImageInvert", {"image": ["1", 0]}),
        "2:7:2": api("ImageInvert", {"image": ["2:7:1", 0]}),
        "3": api("PreviewImage", {"images": ["2:7:2", 0]}),
    }


def test_definitions_nested_inside_a_definition_are_found(registry):
    outer_id = "aa0e0f10-1112-4314-9516-171819202122"
    outer = invert_subgraph(
        sg_id=outer_id, inputs=[], outputs=[],
        inner_nodes=[node(7, INVERT_ID, inputs=[link_in("image", "IMAGE", None), link_in("mask", "MASK", None)],
                          outputs=["IMAGE", "MASK"])], links=[])
    outer["definitions"] = {"subgraphs": [invert_subgraph()]}
    workflow = graph([node(2, outer_id)], definitions={"subgraphs": [outer]})
    assert set(editor_to_api(workflow, registry)) == {"2:7:1", "2:7:2"}


def test_a_subgraph_that_contains_itself_is_an_error(registry):
    definition = invert_subgraph(inner_nodes=[node(1, INVERT_ID)], links=[], inputs=[], outputs=[])
    workflow = graph([node(2, INVERT_ID)], definitions={"subgraphs": [definition]})
    with pytest.raises(WorkflowFormatError, match="contains itself"):
        editor_to_api(workflow, registry)


# ---------------------------------------------------------------------------------------------------------
# Malformed files
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("workflow, message", [
    ({"links": [], "version": 0.4}, "no 'nodes' list"),
    ({"nodes": {"1": {}}}, "'nodes' must be a list"),
    ({"nodes": ["LoadImage"]}, r"nodes\[0\] is not an object"),
    ({"nodes": [{"type": "LoadImage"}]}, r"nodes\[0\] has no 'id'"),
    ({"nodes": [{"id": 3}]}, "node 3 has no 'type'"),
    ({"nodes": [{"id": 3, "type": "LoadImage"}, {"id": 3, "type": "LoadImage"}]}, "node id 3 is used twice"),
    ({"nodes": [{"id": 3, "type": "LoadImage", "mode": "never"}]}, r"node 3 \(LoadImage\): 'mode' must be"),
    ({"nodes": [{"id": 3, "type": "LoadImage", "inputs": {"a": 1}}]}, r"node 3 \(LoadImage\): 'inputs'"),
    ({"nodes": [{"id": 3, "type": "LoadImage", "inputs": [{"type": "IMAGE"}]}]}, r"node 3 \(LoadImage\): input"),
    ({"nodes": [], "links": {"1": []}}, "'links' must be a list"),
    ({"nodes": [], "links": [[1, 2, 0]]}, r"links\[0\] must be"),
    ({"nodes": [], "links": [[1, 2, "0", 3, 0, "IMAGE"]]}, r"links\[0\] is incomplete"),
    ({"nodes": [], "definitions": {"subgraphs": {}}}, "'definitions.subgraphs' must be a list"),
    ({"nodes": [], "definitions": {"subgraphs": [{"name": "x"}]}}, "subgraph definition has no 'id'"),
    ({"nodes": [], "definitions": {"subgraphs": [{"id": "ab12", "name": "Upscale", "nodes": [{"id": 3}]}]}},
     r"subgraph 'Upscale' \(ab12\): node 3 has no 'type'"),
], ids=["no-nodes", "nodes-dict", "node-not-object", "no-id", "no-type", "duplicate-id", "bad-mode", "bad-inputs",
        "unnamed-input", "links-dict", "short-link", "bad-slot", "definitions-dict", "definition-without-id",
        "error-inside-definition"])
def test_malformed_workflows(registry, workflow, message):
    with pytest.raises(WorkflowFormatError, match=message):
        editor_to_api(workflow, registry)


def test_link_from_a_missing_node_is_an_error(registry):
    nodes = [node(5, "ImageInvert", inputs=[link_in("image", "IMAGE", 1)])]
    with pytest.raises(WorkflowFormatError, match=r"node 5 \(ImageInvert\): input 'image' is linked \(link 1\) "
                                                  r"from node 99, which does not exist"):
        editor_to_api(graph(nodes, [[1, 99, 0, 5, 0, "IMAGE"]]), registry)


def test_input_using_an_unknown_link_is_an_error(registry):
    nodes = [node(5, "ImageInvert", inputs=[link_in("image", "IMAGE", 12)])]
    with pytest.raises(WorkflowFormatError, match=r"node 5 \(ImageInvert\): input 'image' uses link 12, which is "
                                                  r"not in the links"):
        editor_to_api(graph(nodes), registry)


def test_errors_inside_subgraphs_name_the_full_node_id(registry):
    definition = invert_subgraph()
    definition["links"] = [link for link in definition["links"] if link["id"] != 2]
    with pytest.raises(WorkflowFormatError, match=r"node 2:2 \(ImageInvert\): input 'image' uses link 2"):
        editor_to_api(invert_workflow(definitions=[definition]), registry)


def broken_subgraph(change: str) -> dict:
    definition = invert_subgraph()
    if change == "no-output":
        definition["outputs"] = definition["outputs"][:1]
    elif change == "unknown-output-link":
        definition["outputs"][0]["linkIds"] = [77]
    elif change == "output-from-missing-node":
        definition["links"][2]["origin_id"] = 42
    elif change == "no-input":
        definition["inputs"] = []
    elif change == "bad-io":
        definition["inputs"] = ["image"]
    return invert_workflow(definitions=[definition])


@pytest.mark.parametrize("change, message", [
    ("no-output", r"node 2: subgraph 'Double invert' has no output 1"),
    ("unknown-output-link", r"subgraph 'Double invert': output 0 uses link 77, which is not in its links"),
    ("output-from-missing-node", r"subgraph 'Double invert': output 0 is linked from node 42, which does not exist"),
    ("no-input", r"subgraph 'Double invert' has no input 0"),
    ("bad-io", r"subgraph .*'inputs' and 'outputs' must be lists of objects"),
])
def test_broken_subgraph_definitions(registry, change, message):
    with pytest.raises(WorkflowFormatError, match=message):
        editor_to_api(broken_subgraph(change), registry)


def test_subgraph_input_link_outside_a_subgraph_is_an_error(registry):
    nodes = [node(5, "ImageInvert", inputs=[link_in("image", "IMAGE", 1)])]
    with pytest.raises(WorkflowFormatError, match="outside any subgraph"):
        editor_to_api(graph(nodes, [[1, -10, 0, 5, 0, "IMAGE"]]), registry)


def test_legacy_group_nodes_are_reported(registry):
    workflow = graph([node(1, "workflow>upscale")], extra={"groupNodes": {"upscale": {"nodes": [], "links": []}}})
    with pytest.raises(WorkflowFormatError, match=r"node 1 \(workflow>upscale\) is a legacy group node"):
        editor_to_api(workflow, registry)
