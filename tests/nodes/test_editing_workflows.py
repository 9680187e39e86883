"""The shipped editing and cascade workflows (workflows/*.json) run end to end through the engine on the tiny
models; a batch edit encodes its instruction once and writes one image per input; a refiner hand-off over
KSamplerAdvanced steps equals one uninterrupted run."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nodes
from diffusion.families.sd.demo import DEMO_CHECKPOINT, PIX2PIX_CHECKPOINT
from engine.cache import OutputCache
from engine.executor import Executor
from engine.registry import NodeRegistry
from engine.validation import validate_prompt
from nodes.latent import EmptyLatentImage
from nodes.loaders import CheckpointLoaderSimple
from nodes.sampling import KSampler, KSamplerAdvanced
from tests.nodes.test_inpaint import _box_mask, _gradient
from tests.nodes.test_parity import _encode

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
STEP_INPUTS = {"KSampler": 4, "KSamplerDualCFG": 3}


def _shrunk(prompt: dict) -> dict:
    """Small sizes and few steps; the graphs, node types and other settings stay as shipped."""
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "EmptyLatentImage":
            inputs.update(width=64, height=64)
        if node["class_type"] == "ImageScale":
            inputs.update(width=96, height=96)
        if node["class_type"] in STEP_INPUTS:
            inputs["steps"] = min(inputs["steps"], STEP_INPUTS[node["class_type"]])
        if node["class_type"] == "KSamplerAdvanced":
            inputs.update(steps=5, start_at_step=min(inputs["start_at_step"], 3),
                          end_at_step=3 if inputs["end_at_step"] < inputs["steps"] else inputs["end_at_step"])
    return prompt


def _run(name: str) -> tuple[dict, list[dict]]:
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    prompt = _shrunk(json.loads((WORKFLOWS / f"{name}.json").read_text()))
    validation = validate_prompt(prompt, registry)
    assert validation.ok and not validation.node_errors, validation.to_response()
    result = Executor(registry, OutputCache()).execute(validation.prompt, "p1", {}, validation.outputs)
    assert result.success, result.error
    return prompt, [entry for output in result.outputs.values() for entry in output["images"]]


@pytest.fixture
def edit_inputs(node_env, editing_models):
    """example.png with example_mask.png, and an edit_batch/ folder of three images (one grey, one larger)."""
    input_dir = node_env.folders.input_dir
    _gradient().save(input_dir / "example.png")
    _box_mask().save(input_dir / "example_mask.png")
    batch = input_dir / "edit_batch"
    batch.mkdir()
    _gradient().save(batch / "a.png")
    _gradient().convert("L").save(batch / "b.png")
    _gradient(80).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(batch / "c.jpg")
    return node_env


@pytest.mark.parametrize("name, size", [
    ("inpaint_model", (64, 64)), ("inpaint_noise_mask", (64, 64)), ("instruct_pix2pix", (64, 64)),
    ("hires_fix", (96, 96)), ("hires_fix_pixel", (96, 96)), ("refiner_handoff", (64, 64)),
])
def test_shipped_editing_workflow_runs(edit_inputs, name, size):
    _, saved = _run(name)
    (entry,) = saved
    png = Image.open(edit_inputs.folders.output_dir / entry["subfolder"] / entry["filename"])
    assert png.size == size
    assert json.loads(png.text["prompt"])["1"]["class_type"] == "CheckpointLoaderSimple"


def test_noise_mask_workflow_keeps_unmasked_pixels(edit_inputs):
    """Pasting the repainted image back through the mask leaves every unmasked pixel as it was."""
    _, (entry,) = _run("inpaint_noise_mask")
    result = np.asarray(Image.open(edit_inputs.folders.output_dir / entry["subfolder"] / entry["filename"]))
    source = np.asarray(_gradient())
    grown_box = np.zeros((64, 64), dtype=bool)
    grown_box[8 - 4:40 + 4, 16 - 4:48 + 4] = True
    assert np.array_equal(result[~grown_box], source[~grown_box])
    assert not np.array_equal(result[8:40, 16:48], source[8:40, 16:48])


def test_batch_edit_encodes_the_instruction_once_and_writes_one_image_per_input(edit_inputs):
    (_, clip, _) = CheckpointLoaderSimple().load_checkpoint(PIX2PIX_CHECKPOINT)
    calls = []
    hook = clip.text_encoder.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        prompt, saved = _run("instruct_pix2pix_batch")
    finally:
        hook.remove()
    assert len(calls) == 2  # the instruction and the negative prompt, each encoded once for the whole batch
    assert len(saved) == 3 and all(entry["subfolder"] == "instruct_pix2pix_batch" for entry in saved)
    images = [np.asarray(Image.open(edit_inputs.folders.output_dir / e["subfolder"] / e["filename"])) for e in saved]
    assert all(image.shape == (64, 64, 3) for image in images)
    assert not np.array_equal(images[0], images[2])


@pytest.mark.parametrize("masked", [False, True])
def test_refiner_handoff_equals_one_uninterrupted_run(node_env, masked):
    """Base steps 0-4 with leftover noise, then the rest without new noise, is the same as one 6-step run; with a
    noise mask too (the kept region is noised to the hand-off step)."""
    model, clip, _ = CheckpointLoaderSimple().load_checkpoint(DEMO_CHECKPOINT)
    positive, negative = _encode(clip, "a lighthouse"), _encode(clip, "")
    (latent,) = EmptyLatentImage().generate(64, 64, 1)
    if masked:
        mask = torch.zeros(1, 64, 64)
        mask[:, 16:48, 8:32] = 1
        latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)), "noise_mask": mask}
    common = dict(noise_seed=7, steps=6, cfg=7.0, sampler_name="euler", scheduler="diffusers", positive=positive,
                  negative=negative)
    (base,) = KSamplerAdvanced().sample(model, add_noise="enable", latent_image=latent, start_at_step=0,
                                        end_at_step=4, return_with_leftover_noise="enable", **common)
    (refined,) = KSamplerAdvanced().sample(model, add_noise="disable", latent_image=base, start_at_step=4,
                                           end_at_step=10000, return_with_leftover_noise="disable", **common)
    (whole,) = KSampler().sample(model, 7, 6, 7.0, "euler", "diffusers", positive, negative, latent)
    assert torch.allclose(refined["samples"], whole["samples"], atol=1e-5)
