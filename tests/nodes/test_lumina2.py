"""Lumina 2 through the nodes: its files as ComfyUI users have them (the transformer in the original layout through
UNETLoader, Gemma 2 through CLIPLoader type lumina2, FLUX's VAE) give Lumina2Pipeline's image for the same weights
and seed, with and without classifier-free guidance; CLIPTextEncodeLumina2 puts the pipeline's system prompt first;
the type lumina2 routes a Qwen3 file to Z-Image; the shipped workflow runs."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion.families.flux import demo as tiny_flux
from diffusion.families.lumina2 import demo as tiny_lumina2
from nodes.conditioning import CLIPTextEncode
from nodes.flux import EmptySD3LatentImage
from nodes.latent import VAEDecode
from nodes.loaders import CLIPLoader, UNETLoader, VAELoader
from nodes.lumina2 import CLIPTextEncodeLumina2
from nodes.sampling import KSampler
from tests.nodes.conftest import own_storage
from tests.nodes.family_workflows import run_workflow

TOLERANCE = 1e-4
PROMPT = "an origami crane on a desk"
SEED, SIZE, STEPS = 5, 32, 4
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture(scope="session")
def lumina2_models(tiny_models_dir):
    return tiny_lumina2.make_lumina2_demo_models(tiny_models_dir)


@pytest.fixture
def lumina2(node_env, lumina2_models):
    (model,) = UNETLoader().load_unet(tiny_lumina2.DEMO_LUMINA2_TRANSFORMER, "default")
    (clip,) = CLIPLoader().load_clip(tiny_lumina2.DEMO_LUMINA2_TEXT_ENCODER, "lumina2")
    (vae,) = VAELoader().load_vae(tiny_lumina2.DEMO_LUMINA2_VAE)
    return model, clip, vae


@pytest.fixture(scope="session")
def lumina2_pipeline(lumina2_models, tiny_models_dir):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, Lumina2Pipeline

    from diffusion.families.lumina2.loading import config
    from diffusion.families.lumina2.text_encoding import tiny_gemma_tokenizer

    folder = tiny_models_dir / "diffusers" / tiny_flux.DEMO_FLUX_DIFFUSERS
    pipeline = Lumina2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**{k: v for k, v in config()["scheduler"].items()
                                                     if not k.startswith("_")}),
        vae=AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True),
        text_encoder=lumina2_models.text_encoder, tokenizer=tiny_gemma_tokenizer(),
        transformer=lumina2_models.transformer)
    own_storage(pipeline.transformer, pipeline.vae, pipeline.text_encoder)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _image(model, clip, vae, cfg, negative=""):
    positive = CLIPTextEncodeLumina2().encode(clip, PROMPT, "superior")[0]
    negative = CLIPTextEncode().encode(clip, negative)[0]
    (latent,) = EmptySD3LatentImage().generate(SIZE, SIZE, 1)
    (samples,) = KSampler().sample(model, SEED, STEPS, cfg, "euler", "diffusers", positive, negative, latent)
    return VAEDecode().decode(vae, samples)[0].numpy()


@pytest.mark.parametrize("cfg, negative", [(1.0, ""), (4.0, "blurry, low quality")])
def test_txt2img_matches_lumina2_pipeline(lumina2, lumina2_pipeline, cfg, negative):
    image = _image(*lumina2, cfg, negative)
    expected = lumina2_pipeline(PROMPT, negative_prompt=negative, height=SIZE, width=SIZE,
                                num_inference_steps=STEPS, guidance_scale=cfg, cfg_normalization=False,
                                generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    assert image.shape == (1, SIZE, SIZE, 3)
    assert np.abs(image - expected).max() <= TOLERANCE


def test_original_layout_converts_to_the_same_transformer(lumina2, lumina2_models):
    state = lumina2_models.transformer.state_dict()
    converted = lumina2[0].network.state_dict()
    assert converted.keys() == state.keys() and all(torch.equal(converted[key], state[key]) for key in state)


def test_type_lumina2_takes_gemma_for_lumina2_and_qwen3_for_z_image(node_env, lumina2_models):
    from diffusion.families.zimage import demo as tiny_zimage

    tiny_zimage.make_zimage_demo_models(node_env.folders.models_dir)
    (gemma,) = CLIPLoader().load_clip(tiny_lumina2.DEMO_LUMINA2_TEXT_ENCODER, "lumina2")
    (qwen,) = CLIPLoader().load_clip(tiny_zimage.DEMO_ZIMAGE_TEXT_ENCODER, "lumina2")
    assert (gemma.family, qwen.family) == ("lumina2", "zimage")
    with pytest.raises(ValueError, match="type lumina2 needs Lumina 2's Gemma 2 file or Z-Image's Qwen3 file"):
        CLIPLoader().load_clip(tiny_flux.DEMO_FLUX_T5, "lumina2")


def test_shipped_lumina2_workflow_runs(node_env, lumina2_models):
    (image,) = run_workflow(node_env, json.loads((WORKFLOWS / "lumina2_txt2img.json").read_text()), SIZE)
    assert image.size == (SIZE, SIZE)
