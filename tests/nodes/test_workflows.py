"""The shipped API-format workflows (workflows/*.json) run end to end through the engine on the tiny models.

Sizes and step counts are shrunk for speed; the graphs, node types and settings are otherwise as shipped."""
import json
from pathlib import Path

import pytest
from PIL import Image

import nodes
from app.runtime import build_executor
from engine.cache import OutputCache
from engine.registry import NodeRegistry
from engine.validation import validate_prompt

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def _shrunk(prompt: dict) -> dict:
    for node in prompt.values():
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=64, height=64)
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = min(node["inputs"]["steps"], 4)
    return prompt


@pytest.mark.parametrize("name", ["txt2img", "img2img", "lora", "hires_fix"])
def test_shipped_workflow_runs(node_env, name):
    Image.new("RGB", (64, 64), (200, 120, 40)).save(node_env.folders.input_dir / "example.png")
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    prompt = _shrunk(json.loads((WORKFLOWS / f"{name}.json").read_text()))
    validation = validate_prompt(prompt, registry)
    assert validation.ok and not validation.node_errors, validation.to_response()
    result = build_executor(registry, OutputCache()).execute(validation.prompt, "p1", {}, validation.outputs)
    assert result.success, result.error
    (saved,) = [entry for output in result.outputs.values() for entry in output["images"]]
    png = Image.open(node_env.folders.output_dir / saved["subfolder"] / saved["filename"])
    assert png.size == ((96, 96) if name == "hires_fix" else (64, 64))
    assert json.loads(png.text["prompt"])["1" if name != "txt2img" else "4"]["class_type"] == "CheckpointLoaderSimple"
