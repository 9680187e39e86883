"""HiDream-I1 through the nodes: its files as ComfyUI users have them (the transformer through UNETLoader, CLIP-L,
CLIP-G, T5 and Llama 3.1 through QuadrupleCLIPLoader in any order, FLUX's VAE through VAELoader) give
HiDreamImagePipeline's image for the same weights, prompts and seed, with classifier-free guidance; its text
encoding is the pipeline's; CLIPTextEncodeHiDream, ModelSamplingSD3, a diffusers folder and a peft LoRA; wrong files
are refused by name; the shipped workflow runs."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from diffusion.encoders import llama_tokenizer
from diffusion.families.hidream import demo as tiny_hidream
from nodes.conditioning import CLIPTextEncode
from nodes.flux import EmptySD3LatentImage
from nodes.hidream import CLIPTextEncodeHiDream
from nodes.latent import VAEDecode
from nodes.loaders import CLIPLoader, DiffusersLoader, LoraLoaderModelOnly, QuadrupleCLIPLoader, UNETLoader, VAELoader
from nodes.sampling import KSampler
from nodes.sd3 import ModelSamplingSD3
from tests.nodes.family_workflows import run_workflow

TOLERANCE = 1e-4
PROMPT = "a red fox in fresh snow, morning light"
NEGATIVE = "blurry"
SEED, SIZE, STEPS, CFG = 5, 64, 3, 4.0
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
ENCODER_FILES = (tiny_hidream.DEMO_HIDREAM_LLAMA, tiny_hidream.DEMO_HIDREAM_T5, tiny_hidream.DEMO_HIDREAM_CLIP_G,
                 tiny_hidream.DEMO_HIDREAM_CLIP_L)  # any order


@pytest.fixture(scope="session")
def hidream_models(tiny_models_dir):
    return tiny_hidream.make_hidream_demo_models(tiny_models_dir)


@pytest.fixture
def hidream(node_env, hidream_models):
    (model,) = UNETLoader().load_unet(tiny_hidream.DEMO_HIDREAM_TRANSFORMER, "default")
    (clip,) = QuadrupleCLIPLoader().load_clip(*ENCODER_FILES)
    (vae,) = VAELoader().load_vae(tiny_hidream.DEMO_HIDREAM_VAE)
    return model, clip, vae


@pytest.fixture(scope="session")
def hidream_pipeline(hidream_models):
    pipeline = hidream_models.pipeline()
    pipeline.default_sample_size = SIZE // pipeline.vae_scale_factor  # the pipeline scales every size to this area
    return pipeline


def _image(model, clip, vae, steps=STEPS, sampler="euler", scheduler="diffusers"):
    positive = CLIPTextEncode().encode(clip, PROMPT)[0]
    negative = CLIPTextEncode().encode(clip, NEGATIVE)[0]
    (latent,) = EmptySD3LatentImage().generate(SIZE, SIZE, 1)
    (samples,) = KSampler().sample(model, SEED, steps, CFG, sampler, scheduler, positive, negative, latent)
    return VAEDecode().decode(vae, samples)[0].numpy()


def _expected(pipeline, **options):
    return pipeline(PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                    guidance_scale=CFG, generator=torch.Generator("cpu").manual_seed(SEED), output_type="np",
                    **options).images


def test_txt2img_matches_hidream_pipeline(hidream, hidream_pipeline):
    image = _image(*hidream)
    assert image.shape == (1, SIZE, SIZE, 3)
    assert np.abs(image - _expected(hidream_pipeline)).max() <= TOLERANCE


def test_text_encoding_matches_the_pipeline(hidream, hidream_pipeline):
    ((t5_states, options),) = CLIPTextEncode().encode(hidream[1], PROMPT)[0]
    t5, _, llama, _, pooled, _ = hidream_pipeline.encode_prompt(
        prompt=PROMPT, prompt_2=PROMPT, prompt_3=PROMPT, prompt_4=PROMPT, device=torch.device("cpu"),
        do_classifier_free_guidance=False)
    assert torch.allclose(t5_states, t5.float(), atol=1e-5)
    assert torch.allclose(options["pooled_output"], pooled.float(), atol=1e-5)
    # ComfyUI's layout: [1, layers, tokens, width]; the pipeline's: [layers, 1, tokens, width]
    assert options["conditioning_llama3"].shape == (1, 4, 128, tiny_hidream.LLAMA_WIDTH)
    assert torch.allclose(options["conditioning_llama3"], llama.movedim(1, 0).float(), atol=1e-5)


def test_clip_text_encode_hidream_gives_each_encoder_its_text(hidream, hidream_pipeline):
    texts = {"clip_l": "a fox", "clip_g": "snow", "t5xxl": "morning light", "llama": "a red fox in fresh snow"}
    ((t5_states, options),) = CLIPTextEncodeHiDream().encode(hidream[1], **texts)[0]
    t5, _, llama, _, pooled, _ = hidream_pipeline.encode_prompt(
        prompt=texts["clip_l"], prompt_2=texts["clip_g"], prompt_3=texts["t5xxl"], prompt_4=texts["llama"],
        device=torch.device("cpu"), do_classifier_free_guidance=False)
    assert torch.allclose(t5_states, t5.float(), atol=1e-5)
    assert torch.allclose(options["pooled_output"], pooled.float(), atol=1e-5)
    assert torch.allclose(options["conditioning_llama3"], llama.movedim(1, 0).float(), atol=1e-5)


def test_model_sampling_sd3_sets_the_shift(hidream, hidream_pipeline):
    from diffusers import FlowMatchEulerDiscreteScheduler

    model, clip, vae = hidream
    (shifted,) = ModelSamplingSD3().patch(model, 6.0)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(hidream_pipeline.scheduler.config, shift=6.0)
    pipeline = type(hidream_pipeline)(**{**hidream_pipeline.components, "scheduler": scheduler})
    pipeline.default_sample_size = hidream_pipeline.default_sample_size
    pipeline.set_progress_bar_config(disable=True)
    assert np.abs(_image(shifted, clip, vae) - _expected(pipeline)).max() <= TOLERANCE


def test_comfyuis_samplers_run(hidream):
    """ComfyUI's HiDream templates sample with lcm and uni_pc through the sigma core."""
    for sampler, scheduler in (("lcm", "normal"), ("uni_pc", "simple")):
        image = _image(*hidream, steps=2, sampler=sampler, scheduler=scheduler)
        assert image.shape == (1, SIZE, SIZE, 3) and np.isfinite(image).all()


def test_an_image_to_edit_is_refused_not_ignored(hidream):
    """HiDream-E1's ComfyUI workflows show the model the image through InstructPixToPixConditioning: not supported
    here yet, so sampling says so instead of making a text-to-image picture."""
    from nodes.inpaint import InstructPixToPixConditioning

    model, clip, vae = hidream
    text = CLIPTextEncode().encode(clip, PROMPT)[0]
    positive, negative, latent = InstructPixToPixConditioning().encode(text, text, vae,
                                                                       torch.rand(1, SIZE, SIZE, 3))
    with pytest.raises(ValueError, match="from InstructPixToPixConditioning: HiDream-E1's editing"):
        KSampler().sample(model, 1, 2, 1.0, "euler", "simple", positive, negative, latent)


def test_diffusers_folder_gives_the_same_image(node_env, hidream, hidream_models):
    model, clip, vae = DiffusersLoader().load_checkpoint(tiny_hidream.DEMO_HIDREAM_DIFFUSERS)
    assert model.family == "hidream"
    assert np.abs(_image(model, clip, vae) - _image(*hidream)).max() <= TOLERANCE


def test_peft_lora_matches_load_lora_weights(node_env, hidream, hidream_pipeline):
    from peft import LoraConfig, get_peft_model_state_dict

    model, clip, vae = hidream
    transformer = hidream_pipeline.transformer
    torch.manual_seed(3)
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out"],
                                       init_lora_weights=False))
    try:
        state = {f"transformer.{key}": value.detach().clone()
                 for key, value in get_peft_model_state_dict(transformer).items()}
        expected = _expected(hidream_pipeline)
    finally:
        transformer.unload_lora()  # the shared tiny transformer is left as it was
    save_file(state, str(node_env.folders.model_dir("loras") / "hidream-peft.safetensors"))
    (patched,) = LoraLoaderModelOnly().load_lora_model_only(model, "hidream-peft.safetensors", 1.0)
    image = _image(patched, clip, vae)
    assert np.abs(image - expected).max() <= TOLERANCE
    assert np.abs(image - _image(model, clip, vae)).max() > TOLERANCE


def test_text_encoder_files_are_checked_by_name(node_env, hidream_models):
    with pytest.raises(ValueError, match=r"HiDream takes at most one each of CLIP-L, CLIP-G, T5-XXL and Llama 3.1 8B "
                                         r"Instruct \(all four: QuadrupleCLIPLoader\); found clip_name2: t5xxl, "
                                         "clip_name3: t5xxl, clip_name4: clip_l, clip_name1: llama"):
        QuadrupleCLIPLoader().load_clip(tiny_hidream.DEMO_HIDREAM_LLAMA, tiny_hidream.DEMO_HIDREAM_T5,
                                        tiny_hidream.DEMO_HIDREAM_T5, tiny_hidream.DEMO_HIDREAM_CLIP_L)
    with pytest.raises(ValueError, match="tiny-hidream-llama3.safetensors holds a Llama 3 text encoder \\(HiDream's: "
                                         "load it with QuadrupleCLIPLoader\\)"):
        CLIPLoader().load_clip(tiny_hidream.DEMO_HIDREAM_LLAMA, "lumina2")


def test_absent_encoders_count_as_comfyuis_zeros(node_env, hidream_models):
    """Fewer than four files (DualCLIPLoader type hidream: CLIP-L and T5 here): CLIP-G's pooled output and Llama's
    states are zeros of the real models' sizes, as ComfyUI's; a transformer of those widths samples with them as
    HiDreamImagePipeline does with the same embeddings."""
    from diffusers import HiDreamImageTransformer2DModel

    from nodes.loaders import DualCLIPLoader

    (clip,) = DualCLIPLoader().load_clip(tiny_hidream.DEMO_HIDREAM_CLIP_L, tiny_hidream.DEMO_HIDREAM_T5, "hidream")
    ((t5_states, options),) = CLIPTextEncode().encode(clip, PROMPT)[0]
    assert set(clip.tokenize(PROMPT)) == {"l", "t5xxl"}
    pooled, llama = options["pooled_output"], options["conditioning_llama3"]
    assert pooled.shape == (1, tiny_hidream.CLIP_L_WIDTH + 1280) and not pooled[:, tiny_hidream.CLIP_L_WIDTH:].any()
    assert llama.shape == (1, 32, 1, 4096) and not llama.any()
    torch.manual_seed(12)
    transformer = HiDreamImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=128,
        num_attention_heads=1, caption_channels=[tiny_hidream.T5_WIDTH, 4096],
        text_emb_dim=tiny_hidream.CLIP_L_WIDTH + 1280, num_routed_experts=2, num_activated_experts=2,
        axes_dims_rope=(64, 32, 32), max_resolution=(128, 128), llama_layers=[0, 1]).eval()
    save_file({f"model.diffusion_model.{key}": value.contiguous() for key, value in transformer.state_dict().items()},
              str(node_env.folders.model_dir("diffusion_models") / "tiny-hidream-real-text-widths.safetensors"))
    (model,) = UNETLoader().load_unet("tiny-hidream-real-text-widths.safetensors", "default")
    (vae,) = VAELoader().load_vae(tiny_hidream.DEMO_HIDREAM_VAE)
    negative = CLIPTextEncode().encode(clip, NEGATIVE)[0]
    (latent,) = EmptySD3LatentImage().generate(SIZE, SIZE, 1)
    (samples,) = KSampler().sample(model, SEED, STEPS, CFG, "euler", "diffusers", CLIPTextEncode().encode(
        clip, PROMPT)[0], negative, latent)
    image = VAEDecode().decode(vae, samples)[0].numpy()
    pipeline = type(hidream_models.pipeline())(**{**hidream_models.pipeline().components, "transformer": transformer})
    pipeline.set_progress_bar_config(disable=True)
    pipeline.default_sample_size = SIZE // pipeline.vae_scale_factor
    ((negative_t5, negative_options),) = negative
    expected = pipeline(
        prompt_embeds_t5=t5_states, prompt_embeds_llama3=llama.movedim(1, 0), pooled_prompt_embeds=pooled,
        negative_prompt_embeds_t5=negative_t5,
        negative_prompt_embeds_llama3=negative_options["conditioning_llama3"].movedim(1, 0),
        negative_pooled_prompt_embeds=negative_options["pooled_output"], height=SIZE, width=SIZE,
        num_inference_steps=STEPS, guidance_scale=CFG, generator=torch.Generator("cpu").manual_seed(SEED),
        output_type="np").images
    assert np.abs(image - expected).max() <= TOLERANCE


def test_llama3_tokenizer_gives_llama3s_ids():
    tokenizer = llama_tokenizer.llama3_tokenizer()
    assert tokenizer("Hello world").input_ids == [128000, 9906, 1917]  # <|begin_of_text|> first
    assert tokenizer.convert_tokens_to_ids(["<|begin_of_text|>", "<|start_header_id|>", "<|eot_id|>"]) == [
        128000, 128006, 128009]
    assert len(tokenizer) == 128256
    with pytest.raises(ValueError, match="clip_name: a Llama text encoder with 1000 token embeddings"):
        llama_tokenizer.llama3_tokenizer_for_vocab(1000, "clip_name")


def test_shipped_hidream_workflow_runs(node_env, hidream_models):
    prompt = json.loads((WORKFLOWS / "hidream_i1_txt2img.json").read_text())
    assert {node["class_type"] for node in prompt.values()} >= {"QuadrupleCLIPLoader", "ModelSamplingSD3"}
    (image,) = run_workflow(node_env, prompt, SIZE)
    assert image.size == (SIZE, SIZE)
