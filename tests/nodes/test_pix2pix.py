"""InstructPix2Pix: 8-channel models are detected, and InstructPixToPixConditioning + KSamplerDualCFG give
diffusers' StableDiffusionInstructPix2PixPipeline pixels (guidance_scale, image_guidance_scale); a batch of
images is edited with the instruction encoded once."""
import numpy as np
import pytest
import torch

from diffusion.families.sd.demo import PIX2PIX_CHECKPOINT, PIX2PIX_DIFFUSERS
from diffusion.sampling.editing import INSTRUCT_PIX2PIX, model_variant
from nodes.image import LoadImage
from nodes.inpaint import InstructPixToPixConditioning, KSamplerDualCFG
from nodes.latent import VAEDecode
from nodes.loaders import CheckpointLoaderSimple, DiffusersLoader
from nodes.sampling import KSampler
from tests.nodes.test_inpaint import _gradient
from tests.nodes.test_parity import SEED, TOLERANCE, _encode, _reference_scheduler

INSTRUCTION = "turn the sky into a sunset"


@pytest.fixture
def pix2pix_model(editing_models, node_env):
    return CheckpointLoaderSimple().load_checkpoint(PIX2PIX_CHECKPOINT)


def test_eight_channel_checkpoint_and_folder_are_detected(pix2pix_model):
    from_folder = DiffusersLoader().load_checkpoint(PIX2PIX_DIFFUSERS)
    for model, _, _ in (pix2pix_model, from_folder):
        assert model.network.config.in_channels == 8 and model_variant(model) == INSTRUCT_PIX2PIX
    single_file, folder = pix2pix_model[0].network.state_dict(), from_folder[0].network.state_dict()
    assert all(torch.equal(single_file[key], folder[key]) for key in folder)


@pytest.mark.parametrize("sampler_name, steps, cfg, image_cfg, size", [
    ("euler_ancestral", 5, 7.5, 1.5, 64),
    ("euler", 4, 5.0, 1.2, 64),
    ("ddim", 4, 3.0, 2.0, 70),  # a side that is not a multiple of 8: resized down to 64, as diffusers does
])
def test_dual_guidance_matches_instruct_pix2pix_pipeline(pix2pix_model, pix2pix_pipeline, node_env, sampler_name,
                                                          steps, cfg, image_cfg, size):
    model, clip, vae = pix2pix_model
    source = _gradient(size)
    source.save(node_env.folders.input_dir / "source.png")
    (pixels, _) = LoadImage().load_image("source.png")
    positive, negative, latent = InstructPixToPixConditioning().encode(
        _encode(clip, INSTRUCTION), _encode(clip, ""), vae, pixels)
    (samples,) = KSamplerDualCFG().sample(model, SEED, steps, cfg, image_cfg, sampler_name, "diffusers", positive,
                                          negative, latent)
    (result,) = VAEDecode().decode(vae, samples)

    pipeline = pix2pix_pipeline
    pipeline.scheduler = _reference_scheduler(pipeline.scheduler.config, sampler_name, "normal")
    expected = pipeline(INSTRUCTION, image=source, num_inference_steps=steps, guidance_scale=cfg,
                        image_guidance_scale=image_cfg, negative_prompt="",
                        generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    difference = np.abs(result.numpy() - expected).max()
    print(f"InstructPix2Pix {sampler_name} {size}px: max abs diff {difference:.2e}")
    assert result.shape == (1, 64, 64, 3)
    assert difference <= TOLERANCE


def test_plain_ksampler_guides_by_text_with_the_image_in_both(pix2pix_model, node_env):
    """KSampler (two-way guidance, ComfyUI's behaviour with this conditioning) differs from dual guidance but
    still sees the image: without the image the result changes."""
    model, clip, vae = pix2pix_model
    pixels = torch.from_numpy(np.asarray(_gradient(), dtype=np.float32) / 255).unsqueeze(0)
    positive, negative, latent = InstructPixToPixConditioning().encode(
        _encode(clip, INSTRUCTION), _encode(clip, ""), vae, pixels)
    args = (SEED, 3, 7.5, "euler", "diffusers")
    (two_way,) = KSampler().sample(model, *args, positive, negative, latent)
    (dual,) = KSamplerDualCFG().sample(model, SEED, 3, 7.5, 1.5, "euler", "diffusers", positive, negative, latent)
    (no_image,) = KSampler().sample(model, *args, _encode(clip, INSTRUCTION), _encode(clip, ""), latent)
    assert not torch.allclose(two_way["samples"], dual["samples"], atol=1e-3)
    assert not torch.allclose(two_way["samples"], no_image["samples"], atol=1e-3)
