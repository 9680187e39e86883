"""SD3 through the nodes, proven equal to diffusers' StableDiffusion3Pipeline (and its img2img pipeline) on the
tiny SD3: with and without T5, flow-matching samplers, the timestep shift, TripleCLIPLoader and a transformer LoRA.
Images are 32x32 (4x4 latents, 2x2 patches)."""
import json
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch

from diffusion.families.sd3 import demo as sd3_tiny
from diffusion.families.sd3.sampling import Sd3Sampling
from diffusion.families.sd3.text_encoding import Sd3Clip
from diffusion.sampling import loop
from nodes.conditioning import CLIPTextEncode
from nodes.flux import EmptySD3LatentImage
from nodes.latent import VAEDecode
from nodes.loaders import DiffusersLoader, LoraLoader, TripleCLIPLoader
from nodes.sampling import KSampler, KSamplerAdvanced
from nodes.sd3 import CLIPTextEncodeSD3, ModelSamplingSD3
from tests.nodes.conftest import own_storage

TOLERANCE = 1e-4
PROMPT = "a photo of an astronaut riding a horse on mars"
NEGATIVE = "blurry"
SEED = 2024
SIZE = 32
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
SCHEDULER_CONFIGS: dict[int, dict] = {}  # pipeline id -> the scheduler config saved in its folder


@pytest.fixture(scope="session")
def sd3_models(tiny_models_dir):
    sd3_tiny.make_sd3_demo_models(tiny_models_dir)
    return tiny_models_dir


def _pipeline(models_dir, folder, class_name="StableDiffusion3Pipeline"):
    parts = {} if folder == sd3_tiny.DEMO_DIFFUSERS else {"text_encoder_3": None, "tokenizer_3": None}
    pipeline = getattr(diffusers, class_name).from_pretrained(models_dir / "diffusers" / folder,
                                                              local_files_only=True, **parts)
    own_storage(*[module for module in (pipeline.transformer, pipeline.vae, pipeline.text_encoder,
                                        pipeline.text_encoder_2, pipeline.text_encoder_3) if module is not None])
    pipeline.set_progress_bar_config(disable=True)
    SCHEDULER_CONFIGS[id(pipeline)] = dict(pipeline.scheduler.config)
    return pipeline


@pytest.fixture(scope="session")
def sd3_pipelines(sd3_models):
    folders = (sd3_tiny.DEMO_DIFFUSERS, sd3_tiny.DEMO_DIFFUSERS_NO_T5)
    return {folder: _pipeline(sd3_models, folder) for folder in folders}


@pytest.fixture
def sd3(node_env, sd3_models):
    return DiffusersLoader().load_checkpoint(sd3_tiny.DEMO_DIFFUSERS)


def _generator():
    return torch.Generator("cpu").manual_seed(SEED)


def _latent(batch=1):
    return EmptySD3LatentImage().generate(SIZE, SIZE, batch)[0]


def _image(model, clip, vae, steps=4, cfg=5.0, sampler_name="euler", scheduler="diffusers"):
    positive = CLIPTextEncode().encode(clip, PROMPT)[0]
    negative = CLIPTextEncode().encode(clip, NEGATIVE)[0]
    (samples,) = KSampler().sample(model, SEED, steps, cfg, sampler_name, scheduler, positive, negative, _latent())
    return VAEDecode().decode(vae, samples)[0]


def _scheduler(pipeline, class_name="FlowMatchEulerDiscreteScheduler", **options):
    """A scheduler built from the config the pipeline was saved with (tests replace pipeline.scheduler)."""
    return getattr(diffusers, class_name).from_config(SCHEDULER_CONFIGS[id(pipeline)], **options)


def _expected(pipeline, steps=4, cfg=5.0, scheduler=None, **call):
    pipeline.scheduler = scheduler or _scheduler(pipeline)
    return pipeline(call.pop("prompt", PROMPT), negative_prompt=NEGATIVE, num_inference_steps=steps,
                    guidance_scale=cfg, height=SIZE, width=SIZE, generator=_generator(), output_type="np",
                    **call).images


@pytest.mark.parametrize("folder", [sd3_tiny.DEMO_DIFFUSERS, sd3_tiny.DEMO_DIFFUSERS_NO_T5])
def test_txt2img_matches_sd3_pipeline_with_and_without_t5(node_env, sd3_pipelines, folder):
    model, clip, vae = DiffusersLoader().load_checkpoint(folder)
    assert isinstance(model.sampling, Sd3Sampling) and isinstance(clip, Sd3Clip)
    assert (clip.t5 is None) is (folder == sd3_tiny.DEMO_DIFFUSERS_NO_T5)
    assert vae.scaling_factor == pytest.approx(1.5305) and vae.shift_factor == pytest.approx(0.0609)
    image = _image(model, clip, vae)
    assert image.shape == (1, SIZE, SIZE, 3)
    assert np.abs(image.numpy() - _expected(sd3_pipelines[folder])).max() <= TOLERANCE


@pytest.mark.parametrize("sampler_name, scheduler, reference", [
    ("heun", "normal", ("FlowMatchHeunDiscreteScheduler", {})),
    ("euler", "karras", ("FlowMatchEulerDiscreteScheduler", {"use_karras_sigmas": True})),
    ("euler", "exponential", ("FlowMatchEulerDiscreteScheduler", {"use_exponential_sigmas": True})),
])
def test_flow_samplers_match(sd3, sd3_pipelines, sampler_name, scheduler, reference):
    """The diffusers loop's flow samplers and spacings (KSampler's `diffusers` scheduler is "normal")."""
    pipeline = sd3_pipelines[sd3_tiny.DEMO_DIFFUSERS]
    model, clip, vae = sd3
    positive = CLIPTextEncode().encode(clip, PROMPT)[0]
    negative = CLIPTextEncode().encode(clip, NEGATIVE)[0]
    samples = loop.sample(model, SEED, 5.0, sampler_name, scheduler, positive, negative, _latent()["samples"],
                          loop.SamplingRange.from_denoise(3, 1.0))
    (image,) = VAEDecode().decode(vae, {"samples": samples})
    expected = _expected(pipeline, steps=3, scheduler=_scheduler(pipeline, reference[0], **reference[1]))
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE


def test_non_flow_samplers_are_refused_clearly(sd3):
    with pytest.raises(ValueError, match="sampler_name: 'dpmpp_2m' is not available for SD3 models"):
        _image(*sd3, steps=1, sampler_name="dpmpp_2m", scheduler="diffusers")


def test_model_sampling_sd3_shift_matches_the_scheduler_shift(sd3, sd3_pipelines):
    model, clip, vae = sd3
    (shifted,) = ModelSamplingSD3().patch(model, 1.5)
    assert model.scheduler_config["shift"] == 3.0 and shifted.scheduler_config["shift"] == 1.5
    image = _image(shifted, clip, vae)
    pipeline = sd3_pipelines[sd3_tiny.DEMO_DIFFUSERS]
    expected = _expected(pipeline, scheduler=_scheduler(pipeline, shift=1.5))
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE
    assert np.abs(_image(model, clip, vae).numpy() - expected).max() > TOLERANCE


def test_model_sampling_sd3_refuses_other_families(sd1):
    with pytest.raises(ValueError, match="model: ModelSamplingSD3 needs an SD3 or HiDream model"):
        ModelSamplingSD3().patch(sd1[0], 2.0)


def test_turbo_preset_four_steps_cfg_one(sd3, sd3_pipelines):
    """SD3.5 Turbo: 4 steps without classifier-free guidance (the negative prompt is not used)."""
    image = _image(*sd3, steps=4, cfg=1.0)
    assert np.abs(image.numpy() - _expected(sd3_pipelines[sd3_tiny.DEMO_DIFFUSERS], cfg=1.0)).max() <= TOLERANCE


def test_clip_text_encode_sd3_three_prompts(sd3, sd3_pipelines):
    model, clip, vae = sd3
    positive = CLIPTextEncodeSD3().encode(clip, "an astronaut", "a horse", PROMPT, "none")[0]
    negative = CLIPTextEncodeSD3().encode(clip, NEGATIVE, NEGATIVE, NEGATIVE, "none")[0]
    (samples,) = KSampler().sample(model, SEED, 3, 4.0, "euler", "diffusers", positive, negative, _latent())
    image = VAEDecode().decode(vae, samples)[0]
    expected = _expected(sd3_pipelines[sd3_tiny.DEMO_DIFFUSERS], steps=3, cfg=4.0, prompt="an astronaut",
                         prompt_2="a horse", prompt_3=PROMPT)
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE


def test_triple_clip_loader_reads_the_separate_encoder_files(sd3):
    files = [f"tiny-sd3-{part}.safetensors" for part in ("t5xxl", "clip_g", "clip_l")]
    (clip,) = TripleCLIPLoader().load_clip(*files)
    assert clip.t5 is not None
    ours, theirs = clip.encode_prompt(PROMPT)[0], sd3[1].encode_prompt(PROMPT)[0]
    assert torch.allclose(ours[0], theirs[0], atol=1e-6)
    assert torch.allclose(ours[1]["pooled_output"], theirs[1]["pooled_output"], atol=1e-6)


def test_clip_only_conditioning_runs_on_a_model_loaded_with_t5(sd3, sd3_pipelines):
    """Without T5 the sampler appends diffusers' zero tokens, so a CLIP without T5 drives any SD3 transformer."""
    model, clip, vae = sd3
    image = _image(model, clip.without_t5(), vae)
    expected = _expected(sd3_pipelines[sd3_tiny.DEMO_DIFFUSERS_NO_T5])
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE


def test_ksampler_advanced_split_equals_one_run(sd3):
    model, clip, vae = sd3
    positive, negative = CLIPTextEncode().encode(clip, PROMPT)[0], CLIPTextEncode().encode(clip, NEGATIVE)[0]
    (whole,) = KSampler().sample(model, SEED, 4, 5.0, "euler", "diffusers", positive, negative, _latent())
    (first,) = KSamplerAdvanced().sample(model, "enable", SEED, 4, 5.0, "euler", "diffusers", positive, negative,
                                         _latent(), 0, 2, "enable")
    (second,) = KSamplerAdvanced().sample(model, "disable", SEED, 4, 5.0, "euler", "diffusers", positive, negative,
                                          first, 2, 10000, "disable")
    assert torch.allclose(whole["samples"], second["samples"], atol=1e-5)


def test_img2img_denoise_matches_the_img2img_pipeline(sd3, sd3_models):
    model, clip, vae = sd3
    latent = {"samples": torch.randn(1, 16, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(3))}
    positive, negative = CLIPTextEncode().encode(clip, PROMPT)[0], CLIPTextEncode().encode(clip, NEGATIVE)[0]
    (samples,) = KSampler().sample(model, SEED, 3, 5.0, "euler", "diffusers", positive, negative, latent, 0.5)
    image = VAEDecode().decode(vae, samples)[0]
    pipeline = _pipeline(sd3_models, sd3_tiny.DEMO_DIFFUSERS, "StableDiffusion3Img2ImgPipeline")
    # 16-channel images are latents to the pipeline, in model space (LATENT holds raw ones)
    expected = pipeline(PROMPT, negative_prompt=NEGATIVE, image=model.latent_format.process_in(latent["samples"]),
                        strength=0.5,
                        num_inference_steps=6, guidance_scale=5.0, generator=_generator(), output_type="np").images
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_transformer_lora_matches_load_lora_weights(sd3, sd3_pipelines, sd3_models, strength):
    model, clip, vae = sd3
    lora_model, lora_clip = LoraLoader().load_lora(model, clip, sd3_tiny.DEMO_LORA, strength, 1.0)
    assert len(lora_model.loras) == 1 and lora_clip is clip  # the file patches the transformer only
    image = _image(lora_model, lora_clip, vae, steps=3)
    pipeline = sd3_pipelines[sd3_tiny.DEMO_DIFFUSERS]
    pipeline.load_lora_weights(str(sd3_models / "loras" / sd3_tiny.DEMO_LORA), adapter_name="tiny")
    try:
        pipeline.set_adapters(["tiny"], adapter_weights=[strength])
        expected = _expected(pipeline, steps=3)
    finally:
        pipeline.unload_lora_weights()
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE
    assert np.abs(_image(model, clip, vae, steps=3).numpy() - expected).max() > TOLERANCE


def test_lora_on_transformer_and_both_clips_matches_load_lora_weights(sd3, sd3_pipelines, sd3_models):
    model, clip, vae = sd3
    lora_model, lora_clip = LoraLoader().load_lora(model, clip, sd3_tiny.DEMO_LORA_ALL, 0.8, 0.5)
    assert len(lora_model.loras) == 1 and len(lora_clip.loras) == 1
    image = _image(lora_model, lora_clip, vae, steps=3)
    pipeline = sd3_pipelines[sd3_tiny.DEMO_DIFFUSERS]
    pipeline.load_lora_weights(str(sd3_models / "loras" / sd3_tiny.DEMO_LORA_ALL), adapter_name="tiny")
    try:
        pipeline.set_adapters(["tiny"], adapter_weights=[
            {"transformer": 0.8, "text_encoder": 0.5, "text_encoder_2": 0.5}])
        expected = _expected(pipeline, steps=3)
    finally:
        pipeline.unload_lora_weights()
    assert np.abs(image.numpy() - expected).max() <= TOLERANCE
    clip_only = _image(model, lora_clip, vae, steps=3)
    assert np.abs(clip_only.numpy() - _image(model, clip, vae, steps=3).numpy()).max() > TOLERANCE


def test_single_file_checkpoint_with_text_encoders(node_env, sd3_pipelines):
    """An original-layout SD3 file (MMDiT keys, CLIP-L/CLIP-G/T5 under text_encoders.*) through
    CheckpointLoaderSimple: the family is detected and the image equals the pipeline's."""
    from nodes.loaders import CheckpointLoaderSimple

    model, clip, vae = CheckpointLoaderSimple().load_checkpoint(sd3_tiny.DEMO_CHECKPOINT)
    assert isinstance(model.sampling, Sd3Sampling) and clip.t5 is not None and vae.shift_factor == 0.0609
    image = _image(model, clip, vae)
    assert np.abs(image.numpy() - _expected(sd3_pipelines[sd3_tiny.DEMO_DIFFUSERS])).max() <= TOLERANCE


def test_real_size_sd3_checkpoints_get_the_sd3_vae_config(node_env, sd3_pipelines, monkeypatch):
    """diffusers guesses a VAE's default image size from the kind of checkpoint, and knows none for the real
    SD3 / SD3.5 files it recognises (the tiny file passes for SD1): the family gives its own (1024), so a file
    diffusers takes for SD3.5 Large loads instead of failing on the guess."""
    from diffusers.loaders import single_file_utils

    from nodes.loaders import CheckpointLoaderSimple

    monkeypatch.setattr(single_file_utils, "infer_diffusers_model_type", lambda checkpoint: "sd35_large")
    with pytest.raises(KeyError):  # what an SD3.5 Large file met before
        single_file_utils.set_image_size({})
    _, _, vae = CheckpointLoaderSimple().load_checkpoint(sd3_tiny.DEMO_CHECKPOINT)
    assert vae.autoencoder.config.sample_size == 1024


def test_sd1_conditioning_is_refused_by_an_sd3_model(sd3, sd1):
    conditioning = CLIPTextEncode().encode(sd1[1], PROMPT)[0]
    with pytest.raises(ValueError, match="conditioning: pooled text embedding of 64 values, but this SD3 model "
                                         "takes 80"):
        KSampler().sample(sd3[0], SEED, 1, 5.0, "euler", "diffusers", conditioning, conditioning, _latent())


@pytest.mark.parametrize("name", ["sd3_txt2img", "sd3_turbo", "sd3_triple_clip"])
def test_shipped_sd3_workflows_run(node_env, sd3_models, name):
    from tests.nodes.family_workflows import run_workflow

    prompt = json.loads((WORKFLOWS / f"{name}.json").read_text())
    images = run_workflow(node_env, prompt, size=SIZE)
    assert [image.size for image in images] == [(SIZE, SIZE)]


def test_empty_padding_none_gives_no_tokens_for_empty_texts(sd3):
    clip = sd3[1]
    (as_pipeline,) = CLIPTextEncodeSD3().encode(clip, "", "", "", "empty_prompt")
    plain = clip.encode_prompt("")  # diffusers' encoding of an empty prompt
    assert torch.equal(as_pipeline[0][0], plain[0][0])
    (none,) = CLIPTextEncodeSD3().encode(clip, "", "", "", "none")
    t5 = clip.t5.get() if hasattr(clip.t5, "get") else clip.t5
    with torch.inference_mode():
        end_token = t5(torch.tensor([[clip.t5_tokenizer.eos_token_id]]))[0].float()
    assert torch.allclose(none[0][0], end_token, atol=1e-6)  # T5's end token alone, no CLIP part
    assert not none[0][1]["pooled_output"].any() and none[0][1]["pooled_output"].shape == plain[0][1]["pooled_output"].shape
    (without_t5,) = CLIPTextEncodeSD3().encode(clip.without_t5(), "", "", "", "none")
    assert without_t5[0][0].shape[1] == 77 and not without_t5[0][0].any()
    (one_empty,) = CLIPTextEncodeSD3().encode(clip, "a fox", "", "a fox", "none")  # read side by side: padded
    assert torch.equal(one_empty[0][0], CLIPTextEncodeSD3().encode(clip, "a fox", "", "a fox", "empty_prompt")[0][0][0])
    (samples,) = KSampler().sample(sd3[0], SEED, 2, 4.0, "euler", "diffusers",
                                   CLIPTextEncodeSD3().encode(clip, "a fox", "a fox", "a fox", "none")[0], none,
                                   _latent())
    assert torch.isfinite(samples["samples"]).all()
