"""Running a shipped API-format workflow through the engine, shrunk for speed (image size, step counts), for the
model-family workflow tests (SDXL, SD3)."""
from __future__ import annotations

from typing import Any

from PIL import Image

import nodes
from app.runtime import build_executor
from engine.cache import OutputCache
from engine.registry import NodeRegistry
from engine.validation import validate_prompt

EMPTY_LATENTS = ("EmptyLatentImage", "EmptySD3LatentImage", "EmptyFlux2LatentImage")
MAX_STEPS = 4


def shrunk(prompt: dict[str, Any], size: int) -> dict[str, Any]:
    """Images (TextEncodeQwenImage21's latent and ImageScale's too) of `size` pixels and at most 4 steps
    (BasicScheduler's too); KSamplerAdvanced
    start/end steps scaled alike; FLUX.2's scheduler for that size and 2 steps."""
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] in EMPTY_LATENTS:
            inputs.update(width=size, height=size)
        if node["class_type"] == "TextEncodeQwenImage21":
            inputs.update(resolution=size)
        if node["class_type"] == "ImageScale":
            inputs.update(width=size, height=size)
        if node["class_type"] == "BasicScheduler":
            inputs.update(steps=min(inputs["steps"], MAX_STEPS))
        if node["class_type"] == "Flux2Scheduler":
            inputs.update(width=size, height=size, steps=min(inputs["steps"], 2))
        if node["class_type"] in ("KSampler", "KSamplerAdvanced") and inputs["steps"] > MAX_STEPS:
            scale = MAX_STEPS / inputs["steps"]
            inputs["steps"] = MAX_STEPS
            for key in ("start_at_step", "end_at_step"):
                if key in inputs:
                    inputs[key] = min(round(inputs[key] * scale), 10000)
    return prompt


def run_workflow(node_env, prompt: dict[str, Any], size: int = 64) -> list[Image.Image]:
    """Validate and execute `prompt` (shrunk) with the built-in nodes; the saved images."""
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    validation = validate_prompt(shrunk(prompt, size), registry)
    assert validation.ok and not validation.node_errors, validation.to_response()
    result = build_executor(registry, OutputCache()).execute(validation.prompt, "p1", {}, validation.outputs)
    assert result.success, result.error
    saved = [entry for output in result.outputs.values() for entry in output["images"]]
    return [Image.open(node_env.folders.output_dir / entry["subfolder"] / entry["filename"]) for entry in saved]
