"""The DALL-E 2 style prior + decoder cascade (Kandinsky 2.2) through the nodes: parity with diffusers'
KandinskyV22PriorPipeline, KandinskyV22Pipeline and its img2img pipeline (the decoder sampler's default
`diffusers` scheduler), the decoder under the sigma core (ComfyUI's samplers and schedulers), image embeddings
from images and their mixing, loader errors, and the shipped cascade workflows run by the engine."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nodes
from app.runtime import build_executor
from diffusion.families.unclip import demo as tiny_kandinsky
from diffusion.families.unclip.text_encoding import embeds_conditioning
from engine.cache import OutputCache
from engine.registry import NodeRegistry
from engine.validation import validate_prompt
from nodes.clip_vision import CLIPVisionEncode
from nodes.custom_sampling import KSamplerSelect, SamplerCustom
from nodes.image import LoadImage
from nodes.latent import EmptyLatentImage, VAEDecode, VAEEncode
from nodes.loaders import DiffusersLoader
from nodes.sampling import KSampler
from nodes.unclip import (
    ImageEmbedsMix,
    PriorEncode,
    UnCLIPDecoderLoader,
    UnCLIPDecoderSampler,
    UnCLIPPriorLoader,
)
from tests.nodes.conftest import own_storage

TOLERANCE = 1e-4
PROMPT = "a lighthouse on a cliff above a stormy sea"
SIZE = 64
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture(scope="session")
def kandinsky_models(tiny_models_dir):
    return tiny_kandinsky.make_kandinsky_demo_models(tiny_models_dir)


@pytest.fixture(scope="session")
def pipelines(kandinsky_models, tiny_models_dir):
    """(KandinskyV22PriorPipeline, KandinskyV22Pipeline) on the tiny folders: the references."""
    from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline

    folder = tiny_models_dir / "diffusers"
    prior = KandinskyV22PriorPipeline.from_pretrained(folder / tiny_kandinsky.DEMO_PRIOR, local_files_only=True)
    decoder = KandinskyV22Pipeline.from_pretrained(folder / tiny_kandinsky.DEMO_DECODER, local_files_only=True)
    own_storage(prior.prior, prior.text_encoder, prior.image_encoder, decoder.unet, decoder.movq)
    for pipeline in (prior, decoder):
        pipeline.set_progress_bar_config(disable=True)
    return prior, decoder


@pytest.fixture
def cascade(node_env, kandinsky_models):
    prior, clip_vision = UnCLIPPriorLoader().load_prior(tiny_kandinsky.DEMO_PRIOR)
    decoder, movq = UnCLIPDecoderLoader().load_decoder(tiny_kandinsky.DEMO_DECODER)
    return prior, clip_vision, decoder, movq


def _generator(seed):
    return torch.Generator("cpu").manual_seed(seed)


@pytest.mark.parametrize("negative_text", ["", "low quality, blurry"])
def test_prior_encode_matches_prior_pipeline(cascade, pipelines, negative_text):
    embeds, negative = PriorEncode().encode(cascade[0], PROMPT, negative_text, 5, 6, 4.0)
    expected = pipelines[0](PROMPT, negative_prompt=negative_text or None, num_inference_steps=6, guidance_scale=4.0,
                            generator=_generator(5))
    assert embeds.shape == (1, tiny_kandinsky.EMBEDDING_DIM)
    assert (embeds - expected.image_embeds).abs().max() <= TOLERANCE
    assert (negative - expected.negative_image_embeds).abs().max() <= TOLERANCE


def test_prior_then_decoder_matches_the_two_pipelines(cascade, pipelines):
    prior, _, decoder, movq = cascade
    embeds, negative = PriorEncode().encode(prior, PROMPT, "", 5, 6, 4.0)
    (latent,) = EmptyLatentImage().generate(SIZE, SIZE, 1)
    (samples,) = UnCLIPDecoderSampler().sample(decoder, 3, 5, 4.0, "ddpm", "diffusers", embeds, negative, latent)
    (image,) = VAEDecode().decode(movq, samples)

    prior_output = pipelines[0](PROMPT, num_inference_steps=6, guidance_scale=4.0, generator=_generator(5))
    expected = pipelines[1](image_embeds=prior_output.image_embeds,
                            negative_image_embeds=prior_output.negative_image_embeds, height=SIZE, width=SIZE,
                            num_inference_steps=5, guidance_scale=4.0, generator=_generator(3), output_type="np").images
    assert image.shape == (1, SIZE, SIZE, 3)
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE


def test_second_pass_matches_img2img_pipeline(node_env, cascade, pipelines):
    from diffusers import KandinskyV22Img2ImgPipeline

    prior, _, decoder, movq = cascade
    embeds, negative = PriorEncode().encode(prior, PROMPT, "", 5, 4, 4.0)
    gradient = np.linspace(0, 255, SIZE, dtype=np.float32)
    picture = Image.fromarray(np.stack([np.add.outer(gradient, gradient) / 2, np.outer(gradient, np.ones(SIZE)),
                                        np.full((SIZE, SIZE), 90.0)], axis=-1).astype(np.uint8))
    picture.save(node_env.folders.input_dir / "gradient.png")
    (pixels, _) = LoadImage().load_image("gradient.png")
    (latent,) = VAEEncode().encode(movq, pixels)
    (samples,) = UnCLIPDecoderSampler().sample(decoder, 9, 3, 4.0, "ddpm", "diffusers", embeds, negative, latent,
                                               0.6)
    (image,) = VAEDecode().decode(movq, samples)

    img2img = KandinskyV22Img2ImgPipeline(**pipelines[1].components)
    img2img.set_progress_bar_config(disable=True)
    expected = img2img(image=picture, image_embeds=embeds, negative_image_embeds=negative, height=SIZE, width=SIZE,
                       num_inference_steps=5, strength=0.6, guidance_scale=4.0, generator=_generator(9),
                       output_type="np").images
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE


def test_decoder_sampler_defaults_are_the_pipelines_sampling():
    required = UnCLIPDecoderSampler.INPUT_TYPES()["required"]
    assert required["sampler_name"][1]["default"] == "ddpm" and "ddpm" in required["sampler_name"][0]
    assert required["scheduler"][1]["default"] == "diffusers"
    assert {"normal", "karras", "diffusers"} <= set(required["scheduler"][0])


def test_decoder_under_the_sigma_core_is_the_pipeline_with_ddim(cascade, pipelines):
    """The decoder's network hooks under the sigma core's denoiser: ComfyUI's ddim (Euler in sigma) over the
    sigmas of DDIMScheduler's timesteps is deterministic DDIM, so it gives KandinskyV22Pipeline's image with a
    DDIMScheduler. The pipeline starts from noise x sqrt(alphas_cumprod) of the first timestep, ComfyUI (below
    the model's largest sigma) from noise x sigma: the pipeline is handed noise prescaled to start there."""
    from diffusers import DDIMScheduler

    prior, _, decoder, movq = cascade
    embeds, negative = PriorEncode().encode(prior, PROMPT, "", 5, 4, 4.0)
    pipeline = pipelines[1]
    scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    scheduler.set_timesteps(4)
    table = decoder.model_sampling.sigmas
    sigmas = torch.cat([table[scheduler.timesteps], torch.zeros(1)])
    (latent,) = EmptyLatentImage().generate(SIZE, SIZE, 1)
    (ddim,) = KSamplerSelect().get_sampler("ddim")
    (samples, _) = SamplerCustom().sample(decoder, True, 3, 4.0, embeds_conditioning(embeds),
                                          embeds_conditioning(negative), ddim, sigmas, latent)
    (image,) = VAEDecode().decode(movq, samples)

    noise = torch.randn(latent["samples"].shape, generator=_generator(3))
    first = sigmas[0]
    original = pipeline.scheduler
    pipeline.scheduler = scheduler
    try:
        expected = pipeline(image_embeds=embeds, negative_image_embeds=negative, height=SIZE, width=SIZE,
                            num_inference_steps=4, guidance_scale=4.0, latents=noise * first / (first ** 2 + 1) ** 0.5,
                            output_type="np").images
    finally:
        pipeline.scheduler = original
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE


@pytest.mark.parametrize("sampler_name, scheduler", [("euler", "karras"), ("ddpm", "normal"), ("dpmpp_2m", "simple")])
def test_decoder_sampler_runs_comfyuis_samplers(cascade, sampler_name, scheduler):
    prior, _, decoder, _ = cascade
    embeds, negative = PriorEncode().encode(prior, PROMPT, "", 5, 4, 4.0)
    (latent,) = EmptyLatentImage().generate(SIZE, SIZE, 1)

    def sampled(seed, denoise=1.0, start=latent):
        (samples,) = UnCLIPDecoderSampler().sample(decoder, seed, 3, 4.0, sampler_name, scheduler, embeds, negative,
                                                   start, denoise)
        return samples

    first = sampled(3)["samples"]
    assert first.shape == latent["samples"].shape and torch.isfinite(first).all()
    assert torch.equal(sampled(3)["samples"], first)
    assert (sampled(4)["samples"] - first).abs().max() > 1e-3
    (pipeline_sampling,) = UnCLIPDecoderSampler().sample(decoder, 3, 3, 4.0, "ddpm", "diffusers", embeds, negative,
                                                         latent)
    assert (pipeline_sampling["samples"] - first).abs().max() > 1e-3  # not the diffusers loop
    second_pass = sampled(5, 0.5, {"samples": first})["samples"]
    assert torch.isfinite(second_pass).all() and (second_pass - first).abs().max() > 1e-4
    assert torch.equal(sampled(5, 0.0, {"samples": first})["samples"], first)


def test_decoder_sampler_refuses_diffusers_only_samplers_elsewhere(cascade):
    prior, _, decoder, _ = cascade
    embeds, negative = PriorEncode().encode(prior, PROMPT, "", 5, 2, 4.0)
    (latent,) = EmptyLatentImage().generate(SIZE, SIZE, 1)
    with pytest.raises(ValueError, match="sampler_name: 'pndm' runs only with scheduler 'diffusers'"):
        UnCLIPDecoderSampler().sample(decoder, 0, 2, 4.0, "pndm", "normal", embeds, negative, latent)
    facts = {"model": {"family": "unclip"}}  # what validation knows of the loader's output
    assert UnCLIPDecoderSampler.VALIDATE_INPUTS(facts, sampler_name="pndm", scheduler="normal").startswith(
        "sampler_name: 'pndm' runs only with scheduler 'diffusers'")
    assert UnCLIPDecoderSampler.VALIDATE_INPUTS(facts, sampler_name="pndm", scheduler="diffusers") is True


def test_image_embeds_and_mixing_match_prior_interpolate(cascade, pipelines):
    prior, clip_vision, _, _ = cascade
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8))
    pixels = torch.from_numpy(np.asarray(picture).astype(np.float32) / 255)[None]
    (image_embeds,) = CLIPVisionEncode().encode(clip_vision, pixels)
    text_embeds, _ = PriorEncode().encode(prior, PROMPT, "", 5, 6, 4.0)
    (mixed,) = ImageEmbedsMix().mix(text_embeds, image_embeds, 0.3)
    expected = pipelines[0].interpolate([PROMPT, picture], [0.7, 0.3], num_inference_steps=6, guidance_scale=4.0,
                                        generator=_generator(5)).image_embeds
    assert (mixed - expected).abs().max() <= TOLERANCE
    assert torch.equal(ImageEmbedsMix().mix(text_embeds, image_embeds, 0.0)[0], text_embeds)


def test_loaders_name_the_pipeline_they_found(node_env, kandinsky_models):
    with pytest.raises(ValueError, match="prior_name: tiny-kandinsky-decoder holds a KandinskyV22Pipeline, not a "
                                         "KandinskyV22PriorPipeline"):
        UnCLIPPriorLoader().load_prior(tiny_kandinsky.DEMO_DECODER)
    with pytest.raises(ValueError, match="decoder_name: tiny-sd1 holds a StableDiffusionPipeline"):
        UnCLIPDecoderLoader().load_decoder("tiny-sd1")
    with pytest.raises(ValueError, match="model_path: tiny-kandinsky-prior .*KandinskyV22PriorPipeline; load it with "
                                         "UnCLIPPriorLoader"):
        DiffusersLoader().load_checkpoint(tiny_kandinsky.DEMO_PRIOR)
    decoder, _ = UnCLIPDecoderLoader().load_decoder(tiny_kandinsky.DEMO_DECODER)
    text = [[torch.zeros(1, 77, 32), {}]]
    with pytest.raises(ValueError, match="positive: an unCLIP decoder is conditioned on image embeddings"):
        KSampler().sample(decoder, 0, 2, 4.0, "ddpm", "normal", text, text, EmptyLatentImage().generate(SIZE, SIZE)[0])
    with pytest.raises(ValueError, match="image_embeds: widths 32 and 8 differ"):
        ImageEmbedsMix().mix(torch.zeros(1, 32), torch.zeros(1, 8), 0.5)


def _run_workflow(node_env, name, shrink):
    Image.new("RGB", (SIZE, SIZE), (200, 120, 40)).save(node_env.folders.input_dir / "example.png")
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    prompt = json.loads((WORKFLOWS / f"{name}.json").read_text())
    for node in prompt.values():
        shrink(node["class_type"], node["inputs"])
    validation = validate_prompt(prompt, registry)
    assert validation.ok and not validation.node_errors, validation.to_response()
    result = build_executor(registry, OutputCache()).execute(validation.prompt, "p1", {}, validation.outputs)
    assert result.success, result.error
    (saved,) = [entry for output in result.outputs.values() for entry in output["images"]]
    return Image.open(node_env.folders.output_dir / saved["subfolder"] / saved["filename"])


def _shrink(class_type, inputs):
    if class_type == "EmptyLatentImage":
        inputs.update(width=SIZE, height=SIZE)
    if class_type == "ImageScale":
        inputs.update(width=2 * SIZE, height=2 * SIZE)
    if class_type in ("PriorEncode", "UnCLIPDecoderSampler"):
        inputs["steps"] = 4


def test_cascade_workflow_decodes_small_then_refines_large(node_env, kandinsky_models):
    workflow = json.loads((WORKFLOWS / "unclip_cascade.json").read_text())
    samplers = [node for node in workflow.values() if node["class_type"] == "UnCLIPDecoderSampler"]
    assert [sampler["inputs"]["denoise"] for sampler in samplers] == [1.0, 0.5]
    png = _run_workflow(node_env, "unclip_cascade", _shrink)
    assert png.size == (2 * SIZE, 2 * SIZE)
    assert json.loads(png.text["prompt"])["3"]["class_type"] == "PriorEncode"


def test_image_mix_workflow_runs(node_env, kandinsky_models):
    assert _run_workflow(node_env, "unclip_image_mix", _shrink).size == (SIZE, SIZE)
