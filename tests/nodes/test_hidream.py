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


def _with_exact_max_seq(network, tokens: int):
    """The same transformer with diffusers' padded length set to `tokens` (its `max_resolution` is in latent pixels,
    patches of 2x2): diffusers' own non-square path then pads nothing, which is how ComfyUI calls HiDream."""
    copy = type(network)(**{**network.config, "max_resolution": (2, 2 * tokens)}).eval()
    copy.load_state_dict(network.state_dict())
    return copy


def _inputs(network, rows: int, images=None) -> dict:
    generator = torch.Generator().manual_seed(3)
    layers, width = len(network.config.llama_layers), network.config.caption_channels[1]
    inputs = {"llama3": torch.randn(rows, layers, 5, width, generator=generator),
              "pooled": torch.randn(rows, network.config.text_emb_dim, generator=generator)}
    if images is not None:
        from diffusion.families.hidream.sampling import IMAGE_BESIDE
        from diffusion.sampling.reference_latents import PerRow

        inputs[IMAGE_BESIDE] = PerRow(images)
    return inputs


def _diffusers_velocity(network, latents, timestep, t5, inputs):
    return -network(hidden_states=latents, timesteps=timestep.expand(latents.shape[0]), encoder_hidden_states_t5=t5,
                    encoder_hidden_states_llama3=inputs["llama3"].movedim(1, 0), pooled_embeds=inputs["pooled"],
                    return_dict=False)[0]


def test_non_square_latents_go_in_unpadded_as_comfyui_calls_hidream(hidream):
    """ComfyUI's HiDream takes the patches of non-square latents as they are; diffusers' transformer pads them to
    its maximum length and the padding still draws attention. Ours is diffusers' transformer with nothing to pad."""
    from diffusion.families.hidream.sampling import HIDREAM_SAMPLING

    network = hidream[0].network
    generator = torch.Generator().manual_seed(2)
    latents = torch.randn(2, 16, 8, 12, generator=generator)
    t5 = torch.randn(2, 7, network.config.caption_channels[0], generator=generator)
    timestep, inputs = torch.tensor([500.0]), _inputs(network, 2)
    with torch.no_grad():
        ours = HIDREAM_SAMPLING.network_output(network, latents, timestep, t5, inputs)
        exact = _diffusers_velocity(_with_exact_max_seq(network, 4 * 6), latents, timestep, t5, inputs)
        padded = _diffusers_velocity(network, latents, timestep, t5, inputs)
    assert torch.allclose(ours, exact, atol=1e-5)
    assert (ours - padded).abs().max() > 1e-3  # what diffusers' padding changes


def test_hidream_e1_shows_the_image_beside_the_latents(hidream):
    """HiDream-E1's editing as ComfyUI runs it: the image (InstructPixToPixConditioning's concat_latent_image, in
    the model's sampling space) joins the latents along the width and the output is cropped back; rows without an
    image, as DualCFGGuider's negative, go through their own call."""
    from diffusion.families.hidream.sampling import HIDREAM_SAMPLING

    network = hidream[0].network
    generator = torch.Generator().manual_seed(4)
    latents = torch.randn(3, 16, 8, 8, generator=generator)
    image = torch.randn(16, 8, 8, generator=generator)
    t5 = torch.randn(3, 7, network.config.caption_channels[0], generator=generator)
    timestep = torch.tensor([700.0])
    inputs = _inputs(network, 3, [image, image, None])
    with torch.no_grad():
        ours = HIDREAM_SAMPLING.network_output(network, latents, timestep, t5, inputs)
        wide = _with_exact_max_seq(network, 4 * 8)
        beside = torch.cat([latents[:2], image.expand(2, -1, -1, -1)], dim=-1)
        with_image = _diffusers_velocity(wide, beside, timestep, t5[:2],
                                         {key: value[:2] for key, value in _inputs(network, 3).items()})[..., :8]
        without = _diffusers_velocity(network, latents[2:], timestep, t5[2:],
                                      {key: value[2:] for key, value in _inputs(network, 3).items()})
    assert torch.allclose(ours[:2], with_image, atol=1e-5)
    assert torch.allclose(ours[2:], without, atol=1e-5)


def test_hidream_e1_image_of_another_size_is_refused_by_name(hidream):
    from diffusion.families.hidream.sampling import HIDREAM_SAMPLING

    network = hidream[0].network
    latents = torch.zeros(1, 16, 8, 8)
    t5 = torch.zeros(1, 7, network.config.caption_channels[0])
    with pytest.raises(ValueError, match="concat_latent_image: an image of \\(8, 12\\) latents beside \\(8, 8\\)"):
        HIDREAM_SAMPLING.network_output(network, latents, torch.tensor([500.0]), t5,
                                        _inputs(network, 1, [torch.zeros(16, 8, 12)]))


def test_hidream_e1_workflow_edits_with_instruct_pix2pix_conditioning(hidream):
    """ComfyUI's HiDream-E1 template: InstructPixToPixConditioning gives the image to both prompts and DualCFGGuider
    guides between the text, the image and a negative without it; the picture follows the image."""
    from nodes.custom_sampling import BasicScheduler, DualCFGGuider, KSamplerSelect, RandomNoise, SamplerCustomAdvanced
    from nodes.inpaint import InstructPixToPixConditioning

    model, clip, vae = hidream
    text, negative = CLIPTextEncode().encode(clip, PROMPT)[0], CLIPTextEncode().encode(clip, NEGATIVE)[0]
    pictures = []
    for pixels in (torch.zeros(1, SIZE, SIZE, 3), torch.ones(1, SIZE, SIZE, 3)):
        positive, image_negative, latent = InstructPixToPixConditioning().encode(text, negative, vae, pixels)
        (guider,) = DualCFGGuider().get_guider(model, positive, image_negative, negative, 5.0, 2.0, "regular")
        (sigmas,) = BasicScheduler().get_sigmas(model, "normal", 2, 1.0)
        samples = SamplerCustomAdvanced().sample(RandomNoise().get_noise(SEED)[0], guider,
                                                 KSamplerSelect().get_sampler("euler")[0], sigmas, latent)[0]
        pictures.append(VAEDecode().decode(vae, samples)[0].numpy())
    assert all(np.isfinite(picture).all() for picture in pictures)
    assert np.abs(pictures[0] - pictures[1]).max() > 1e-3  # the image shown changes the picture


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


def test_shipped_hidream_e1_workflow_edits_the_loaded_image(node_env, hidream_models):
    """Modelled on ComfyUI's HiDream-E1 template: the loaded image scaled square, InstructPixToPixConditioning on
    both prompts, DualCFGGuider (5 and 2) against the plain negative, euler over BasicScheduler's sigmas."""
    from PIL import Image

    Image.new("RGB", (80, 40), (200, 120, 40)).save(node_env.folders.input_dir / "example.png")
    prompt = json.loads((WORKFLOWS / "hidream_e1_edit.json").read_text())
    assert prompt["13"]["inputs"]["latent_image"] == ["8", 2] and prompt["9"]["inputs"]["negative"] == ["7", 0]
    (image,) = run_workflow(node_env, prompt, SIZE)
    assert image.size == (SIZE, SIZE)
