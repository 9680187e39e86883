"""Fixtures for node tests: the tiny SD1 models loaded through the nodes, and the matching diffusers pipeline."""
from __future__ import annotations

import pytest


def own_storage(*modules) -> None:
    """Give every weight its own allocation: tensors memory-mapped from safetensors sit at arbitrary offsets,
    and CPU kernels round differently (1e-7) for differently aligned weights. The model manager does the same."""
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            tensor.data = tensor.data.clone()


def dequantized_gguf(path) -> dict:
    """A GGUF file's tensors with the quantized ones dequantized (float32), by diffusers' dequantizers."""
    from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

    from diffusion.gguf import read_gguf
    from diffusion.quantized import is_quantized

    return {key: dequantize_gguf_tensor(value).float() if is_quantized(value) else value.float()
            for key, value in read_gguf(path, "unet_name").items()}


def validation_errors(prompt: dict) -> dict[str, list[dict]]:
    """The engine's validation errors per node of an API prompt of built-in nodes, every node checked as a
    target (what POST /prompt answers with a 400)."""
    import nodes
    from engine.registry import NodeRegistry
    from engine.validation import validate_prompt

    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    result = validate_prompt(prompt, registry, partial_execution_targets=list(prompt))
    return {node_id: entry["errors"] for node_id, entry in result.to_response()["node_errors"].items()}


@pytest.fixture(scope="session")
def sd_pipeline(tiny_models_dir):
    """diffusers' StableDiffusionPipeline on the tiny SD1 diffusers folder (the reference for parity tests)."""
    from diffusers import StableDiffusionPipeline

    from diffusion.families.sd.demo import DEMO_DIFFUSERS

    pipeline = StableDiffusionPipeline.from_pretrained(
        tiny_models_dir / "diffusers" / DEMO_DIFFUSERS, local_files_only=True, safety_checker=None)
    own_storage(pipeline.unet, pipeline.vae, pipeline.text_encoder)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture
def sd1(node_env):
    """(MODEL, CLIP, VAE) of the tiny SD1 single-file checkpoint, through CheckpointLoaderSimple."""
    from diffusion.families.sd.demo import DEMO_CHECKPOINT
    from nodes.loaders import CheckpointLoaderSimple

    return CheckpointLoaderSimple().load_checkpoint(DEMO_CHECKPOINT)


@pytest.fixture(scope="session")
def pipeline_scheduler_config(tiny_models_dir):
    """The scheduler config saved in the tiny diffusers folder (what the pipeline was built with)."""
    from diffusers import PNDMScheduler

    from diffusion.families.sd.demo import DEMO_DIFFUSERS

    folder = tiny_models_dir / "diffusers" / DEMO_DIFFUSERS
    return dict(PNDMScheduler.load_config(folder, subfolder="scheduler"))


@pytest.fixture(scope="session")
def flux2_models(tiny_models_dir):
    """The tiny FLUX.2 [klein] and [dev] files in the shared tiny models folder."""
    from diffusion.families.flux2.demo import make_flux2_demo_models

    return make_flux2_demo_models(tiny_models_dir)


@pytest.fixture(scope="session")
def editing_models(tiny_models_dir):
    """The tiny inpainting (9-channel) and InstructPix2Pix (8-channel) models, written into the shared models
    folder (single-file checkpoints and diffusers folders)."""
    from diffusion.families.sd import demo as tiny

    tiny.make_editing_models(tiny_models_dir)
    return tiny_models_dir


def _editing_pipeline(models_dir, pipeline_class_name, folder_name):
    import diffusers

    pipeline = getattr(diffusers, pipeline_class_name).from_pretrained(
        models_dir / "diffusers" / folder_name, local_files_only=True, safety_checker=None)
    own_storage(pipeline.unet, pipeline.vae, pipeline.text_encoder)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="session")
def inpaint_pipeline(editing_models):
    """diffusers' StableDiffusionInpaintPipeline on the tiny 9-channel diffusers folder."""
    from diffusion.families.sd.demo import INPAINTING_DIFFUSERS

    return _editing_pipeline(editing_models, "StableDiffusionInpaintPipeline", INPAINTING_DIFFUSERS)


@pytest.fixture(scope="session")
def pix2pix_pipeline(editing_models):
    """diffusers' StableDiffusionInstructPix2PixPipeline on the tiny 8-channel diffusers folder."""
    from diffusion.families.sd.demo import PIX2PIX_DIFFUSERS

    return _editing_pipeline(editing_models, "StableDiffusionInstructPix2PixPipeline", PIX2PIX_DIFFUSERS)
