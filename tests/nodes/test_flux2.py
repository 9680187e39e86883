"""FLUX.2 [klein] through the nodes: its files as ComfyUI users have them (the transformer in BFL's layout through
UNETLoader, Qwen3 through CLIPLoader type flux2, the batch-norm VAE through VAELoader) give Flux2KleinPipeline's
image for the same weights and seed, with and without classifier-free guidance; ComfyUI's custom-sampler route
(Flux2Scheduler, SamplerCustomAdvanced) gives the same; LATENT is ComfyUI's FLUX.2 space (128 channels, 1/16 of
the side); other files are refused by name; the shipped workflow runs."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion.components import PatchedVae
from diffusion.families.flux2 import demo as tiny_flux2
from diffusion.families.flux2.sampling import empirical_mu, schedule
from diffusion.families.flux2.text_encoding import tiny_tokenizer
from nodes.conditioning import CLIPTextEncode
from nodes.custom_sampling import CFGGuider, KSamplerSelect, RandomNoise, SamplerCustomAdvanced
from nodes.flux2 import EmptyFlux2LatentImage, Flux2Scheduler
from nodes.latent import VAEDecode, VAEEncode
from nodes.loaders import CLIPLoader, UNETLoader, VAELoader
from nodes.sampling import KSampler
from tests.nodes.conftest import own_storage
from tests.nodes.family_workflows import run_workflow

TOLERANCE = 1e-4
PROMPT = "a lighthouse on a cliff at dusk"
SEED, SIZE, STEPS = 4, 64, 3
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture
def flux2(node_env, flux2_models):
    (model,) = UNETLoader().load_unet(tiny_flux2.DEMO_FLUX2_TRANSFORMER, "default")
    (clip,) = CLIPLoader().load_clip(tiny_flux2.DEMO_FLUX2_TEXT_ENCODER, "flux2")
    (vae,) = VAELoader().load_vae(tiny_flux2.DEMO_FLUX2_VAE)
    return model, clip, vae


@pytest.fixture(scope="session")
def flux2_pipeline(flux2_models):
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline

    from diffusion.families.flux2.loading import config

    pipeline = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**{k: v for k, v in config()["scheduler"].items()
                                                     if not k.startswith("_")}),
        vae=flux2_models.vae, text_encoder=flux2_models.text_encoder, tokenizer=tiny_tokenizer(),
        transformer=flux2_models.transformer)
    own_storage(pipeline.transformer, pipeline.vae, pipeline.text_encoder)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _image(model, clip, vae, cfg):
    positive = CLIPTextEncode().encode(clip, PROMPT)[0]
    negative = CLIPTextEncode().encode(clip, "")[0]
    (latent,) = EmptyFlux2LatentImage().generate(SIZE, SIZE, 1)
    (samples,) = KSampler().sample(model, SEED, STEPS, cfg, "euler", "diffusers", positive, negative, latent)
    return VAEDecode().decode(vae, samples)[0].numpy()


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_txt2img_matches_flux2_klein_pipeline(flux2, flux2_pipeline, cfg):
    image = _image(*flux2, cfg)
    expected = flux2_pipeline(prompt=PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=cfg,
                              generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    assert image.shape == (1, SIZE, SIZE, 3)
    assert np.abs(image - expected).max() <= TOLERANCE


def test_text_encoding_matches_the_pipeline(flux2, flux2_pipeline):
    ((embeddings, _),) = CLIPTextEncode().encode(flux2[1], PROMPT)[0]
    expected, _ = flux2_pipeline.encode_prompt(prompt=PROMPT, device=torch.device("cpu"))
    assert embeddings.shape == expected.shape == (1, 512, 3 * tiny_flux2.TEXT_WIDTH)
    assert torch.allclose(embeddings, expected.float(), atol=1e-5)


def test_custom_sampler_route_with_flux2_scheduler_gives_the_same_image(flux2, flux2_pipeline):
    """ComfyUI's FLUX.2 templates: Flux2Scheduler's sigmas are the pipeline's, and euler over them through
    SamplerCustomAdvanced is the pipeline's Euler."""
    model, clip, vae = flux2
    (sigmas,) = Flux2Scheduler().get_sigmas(STEPS, SIZE, SIZE)
    flux2_pipeline.scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / STEPS, STEPS),
                                           mu=empirical_mu((SIZE // 16) ** 2, STEPS))
    assert torch.allclose(sigmas, flux2_pipeline.scheduler.sigmas.float(), atol=1e-6)
    positive = CLIPTextEncode().encode(clip, PROMPT)[0]
    negative = CLIPTextEncode().encode(clip, "")[0]
    (guider,) = CFGGuider().get_guider(model, positive, negative, 1.0)
    (latent,) = EmptyFlux2LatentImage().generate(SIZE, SIZE, 1)
    output, _ = SamplerCustomAdvanced().sample(RandomNoise().get_noise(SEED)[0], guider,
                                               KSamplerSelect().get_sampler("euler")[0], sigmas, latent)
    image = VAEDecode().decode(vae, output)[0].numpy()
    assert np.abs(image - _image(model, clip, vae, 1.0)).max() <= TOLERANCE
    assert torch.allclose(schedule(STEPS, SIZE, SIZE), sigmas)


def test_latents_are_comfyuis_flux2_space(flux2, flux2_models):
    vae = flux2[2]
    assert isinstance(vae, PatchedVae) and vae.downscale == 16 and vae.latent_channels == 128
    assert EmptyFlux2LatentImage().generate(1024, 512, 2)[0]["samples"].shape == (2, 128, 32, 64)
    pixels = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(0))
    (latent,) = VAEEncode().encode(vae, pixels)
    raw = flux2_models.vae.encode(pixels.movedim(-1, 1) * 2 - 1).latent_dist.mode()
    patches = raw.view(1, 32, SIZE // 16, 2, SIZE // 16, 2).permute(0, 1, 3, 5, 2, 4).reshape(
        1, 128, SIZE // 16, SIZE // 16)
    norm = flux2_models.vae.bn
    expected = (patches - norm.running_mean.view(1, -1, 1, 1)) / torch.sqrt(norm.running_var.view(1, -1, 1, 1)
                                                                             + norm.eps)
    assert latent["samples"].shape == (1, 128, SIZE // 16, SIZE // 16)
    assert torch.allclose(latent["samples"], expected, atol=1e-5)
    decoded = VAEDecode().decode(vae, latent)[0]
    assert torch.allclose(decoded, (flux2_models.vae.decode(raw).sample / 2 + 0.5).clamp(0, 1).movedim(1, -1),
                          atol=1e-5)


def test_files_of_other_kinds_are_refused_by_name(node_env, flux2_models, tiny_models_dir):
    from diffusion.families.flux import demo as tiny_flux

    tiny_flux.make_flux_demo_models(tiny_models_dir)
    with pytest.raises(ValueError, match="clip_name: type flux2 runs FLUX.2 \\[klein\\] with its Qwen3 text encoder, "
                                         "or FLUX.2 \\[dev\\] .*; tiny-flux-t5.safetensors holds a T5 text encoder"):
        CLIPLoader().load_clip(tiny_flux.DEMO_FLUX_T5, "flux2")
    (model,) = UNETLoader().load_unet(tiny_flux2.DEMO_FLUX2_TRANSFORMER, "default")
    assert model.family == "flux2"
    (flux1,) = UNETLoader().load_unet(tiny_flux.DEMO_FLUX_TRANSFORMER, "default")
    assert flux1.family == "flux"
    (flux1_vae,) = VAELoader().load_vae(tiny_flux.DEMO_FLUX_VAE)
    assert not isinstance(flux1_vae, PatchedVae)


def test_shipped_flux2_klein_workflow_runs(node_env, flux2_models):
    (image,) = run_workflow(node_env, json.loads((WORKFLOWS / "flux2_klein_txt2img.json").read_text()), SIZE)
    assert image.size == (SIZE, SIZE)


def test_peft_lora_matches_load_lora_weights(node_env, flux2, flux2_pipeline):
    from safetensors.torch import save_file

    from nodes.loaders import LoraLoaderModelOnly

    generator = torch.Generator().manual_seed(12)
    state = {}
    for name, module in flux2[0].network.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith((".attn.to_q", ".attn.add_v_proj", ".attn.to_out")):
            state[f"transformer.{name}.lora_A.weight"] = torch.randn(4, module.in_features, generator=generator) * 0.3
            state[f"transformer.{name}.lora_B.weight"] = torch.randn(module.out_features, 4, generator=generator) * 0.3
    path = node_env.folders.model_dir("loras") / "tiny-flux2-lora.safetensors"
    save_file(state, str(path))
    try:
        model, clip, vae = flux2
        (patched,) = LoraLoaderModelOnly().load_lora_model_only(model, path.name, 0.7)
        image = _image(patched, clip, vae, 1.0)
        flux2_pipeline.load_lora_weights(dict(state), adapter_name="tiny")
        flux2_pipeline.set_adapters(["tiny"], [0.7])
        expected = flux2_pipeline(prompt=PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                                  guidance_scale=1.0, generator=torch.Generator("cpu").manual_seed(SEED),
                                  output_type="np").images
        assert np.abs(image - expected).max() <= TOLERANCE
        assert np.abs(image - _image(model, clip, vae, 1.0)).max() > 1e-3
    finally:
        flux2_pipeline.unload_lora_weights()
        path.unlink()


def test_diffusers_folder_gives_the_same_image(node_env, flux2, flux2_pipeline):
    import shutil

    from diffusion import loading

    folder = node_env.folders.model_dir("diffusers") / "tiny-flux2-klein"
    flux2_pipeline.save_pretrained(folder)
    try:
        model, clip, vae = loading.load_diffusers(node_env.models, folder)
        assert clip.format.key == "qwen3_4b" and isinstance(vae, PatchedVae)
        assert np.abs(_image(model, clip, vae, 1.0) - _image(*flux2, 1.0)).max() <= TOLERANCE
    finally:
        shutil.rmtree(folder)


def test_reference_image_edit_matches_the_pipelines_image_input(flux2, flux2_pipeline):
    """FLUX.2's editing: a ReferenceLatent of the VAE-encoded image is the pipeline's condition image (its tokens
    at frame 10); two references are numbered 10 and 20."""
    from PIL import Image

    from nodes.conditioning_ops import ConditioningZeroOut, ReferenceLatent

    model, clip, vae = flux2
    generator = torch.Generator().manual_seed(31)
    pictures = [(torch.rand(SIZE, SIZE, 3, generator=generator) * 255).round().to(torch.uint8) for _ in range(2)]
    references = [VAEEncode().encode(vae, (picture.float() / 255)[None])[0] for picture in pictures]

    def edited(count):
        (positive,) = CLIPTextEncode().encode(clip, PROMPT)
        for reference in references[:count]:
            (positive,) = ReferenceLatent().append(positive, reference)
        (negative,) = ConditioningZeroOut().zero_out(positive)
        (latent,) = EmptyFlux2LatentImage().generate(SIZE, SIZE, 1)
        (samples,) = KSampler().sample(model, SEED, STEPS, 1.0, "euler", "diffusers", positive, negative, latent)
        return VAEDecode().decode(vae, samples)[0].numpy()

    for count in (1, 2):
        expected = flux2_pipeline(prompt=PROMPT, image=[Image.fromarray(p.numpy()) for p in pictures[:count]],
                                  height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=1.0,
                                  generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
        assert np.abs(edited(count) - expected).max() <= TOLERANCE
    assert np.abs(edited(1) - _image(model, clip, vae, 1.0)).max() > 1e-3


def test_shipped_flux2_klein_edit_workflow_edits_the_loaded_image(node_env, flux2_models):
    """Modelled on ComfyUI's Klein editing template: the loaded image, scaled and encoded, given to the prompt as a
    reference latent. It runs end to end, small (the scale to a megapixel replaced by one to the test size)."""
    from PIL import Image

    prompt = json.loads((WORKFLOWS / "flux2_klein_edit.json").read_text())
    assert prompt["8"]["class_type"] == "ReferenceLatent" and prompt["14"]["inputs"]["positive"] == ["8", 0]
    Image.new("RGB", (40, 24), (200, 120, 40)).save(node_env.folders.input_dir / "example.png")
    prompt["5"] = {"class_type": "ImageScale", "inputs": {"image": ["4", 0], "upscale_method": "bilinear",
                                                          "width": SIZE, "height": SIZE, "crop": "center"}}
    (image,) = run_workflow(node_env, prompt, SIZE)
    assert image.size == (SIZE, SIZE)
