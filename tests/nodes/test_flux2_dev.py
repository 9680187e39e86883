"""FLUX.2 [dev] through the nodes: its Mistral text encoder file as ComfyUI ships it (tekken.json inside) read by
CLIPLoader type flux2 with ComfyUI's prompt format, only the layers FLUX.2 reads built (the same hidden states as the
whole model's), and the guidance-distilled transformer giving Flux2Pipeline's image for the same prompt embeddings,
guidance and seed; wrong files are refused by name; the shipped workflow runs."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from diffusion.encoders import tekken
from diffusion.families.flux2 import demo as tiny_flux2
from nodes.conditioning import CLIPTextEncode
from nodes.custom_sampling import BasicGuider, KSamplerSelect, RandomNoise, SamplerCustomAdvanced
from nodes.flux import FluxGuidance
from nodes.flux2 import EmptyFlux2LatentImage, Flux2Scheduler
from nodes.latent import VAEDecode
from nodes.loaders import CLIPLoader, UNETLoader, VAELoader
from nodes.sampling import KSampler
from tests.nodes.family_workflows import run_workflow

TOLERANCE = 1e-4
PROMPT = "a lighthouse on a cliff at dusk"
SEED, SIZE, STEPS, GUIDANCE = 4, 64, 3, 3.5
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
SYSTEM_PROMPT = ("You are an AI that reasons about image descriptions. You give structured responses focusing on "
                 "object relationships, object\nattribution and actions without speculation.")


@pytest.fixture
def flux2_dev(node_env, flux2_models):
    (model,) = UNETLoader().load_unet(tiny_flux2.DEMO_FLUX2_DEV_TRANSFORMER, "default")
    (clip,) = CLIPLoader().load_clip(tiny_flux2.DEMO_FLUX2_MISTRAL, "flux2")
    (vae,) = VAELoader().load_vae(tiny_flux2.DEMO_FLUX2_VAE)
    return model, clip, vae


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False).input_ids


def test_prompt_tokens_follow_comfyuis_format(flux2_dev):
    """`<s>`, BFL's system prompt, the prompt as an instruction; no padding (ComfyUI's FLUX.2 [dev] tokenizer)."""
    clip = flux2_dev[1]
    tokens = clip.tokenize(PROMPT)
    assert list(tokens) == ["mistral3_24b"]
    ids = [token for token, weight in tokens["mistral3_24b"][0]]
    special = dict(zip(tekken.MISTRAL_SPECIAL_TOKENS, range(len(tekken.MISTRAL_SPECIAL_TOKENS))))
    tokenizer = tekken.tekken_tokenizer(tekken.tiny_tekken_json(), "test")
    assert ids == ([special["<s>"], special["[SYSTEM_PROMPT]"]] + _ids(tokenizer, SYSTEM_PROMPT)
                   + [special["[/SYSTEM_PROMPT]"], special["[INST]"]] + _ids(tokenizer, PROMPT) + [special["[/INST]"]])
    assert _ids(tokenizer, "ab") == [tekken.SPECIAL_TOKEN_COUNT + ord("a"), tekken.SPECIAL_TOKEN_COUNT + ord("b")]


def test_text_encoding_is_the_whole_models_layers_10_20_30(flux2_dev, flux2_models):
    """Only 30 of the file's 32 layers are built, without the final norm: the hidden states FLUX.2 reads are the
    whole model's (as Flux2Pipeline takes them from Mistral)."""
    clip = flux2_dev[1]
    ((embeddings, _),) = CLIPTextEncode().encode(clip, PROMPT)[0]
    ids = torch.tensor([[token for token, _ in clip.tokenize(PROMPT)["mistral3_24b"][0]]])
    with torch.no_grad():
        states = flux2_models.mistral(input_ids=ids, output_hidden_states=True).hidden_states
    expected = torch.stack([states[layer] for layer in (10, 20, 30)], dim=2).reshape(1, ids.shape[1], -1)
    assert embeddings.shape == (1, ids.shape[1], 3 * tiny_flux2.TEXT_WIDTH)
    assert torch.allclose(embeddings, expected, atol=1e-5)
    built = clip.model.get()
    assert len(built.layers) == 30 and isinstance(built.norm, torch.nn.Identity)


def _pipeline(flux2_models):
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2Pipeline

    from diffusion.families.flux2.loading import config

    pipeline = Flux2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**{k: v for k, v in config()["scheduler"].items()
                                                     if not k.startswith("_")}),
        vae=flux2_models.vae, text_encoder=None, tokenizer=None, transformer=flux2_models.dev_transformer)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_txt2img_matches_flux2_pipeline(flux2_dev, flux2_models):
    model, clip, vae = flux2_dev
    positive = FluxGuidance().append(CLIPTextEncode().encode(clip, PROMPT)[0], GUIDANCE)[0]
    (latent,) = EmptyFlux2LatentImage().generate(SIZE, SIZE, 1)
    (samples,) = KSampler().sample(model, SEED, STEPS, 1.0, "euler", "diffusers", positive, positive, latent)
    image = VAEDecode().decode(vae, samples)[0].numpy()
    expected = _pipeline(flux2_models)(
        prompt_embeds=positive[0][0], height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
        generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    assert np.abs(image - expected).max() <= TOLERANCE
    # ComfyUI's FLUX.2 [dev] template route: FluxGuidance, BasicGuider, Flux2Scheduler, SamplerCustomAdvanced
    (guider,) = BasicGuider().get_guider(model, positive)
    (sigmas,) = Flux2Scheduler().get_sigmas(STEPS, SIZE, SIZE)
    output, _ = SamplerCustomAdvanced().sample(RandomNoise().get_noise(SEED)[0], guider,
                                               KSamplerSelect().get_sampler("euler")[0], sigmas, latent)
    assert np.abs(VAEDecode().decode(vae, output)[0].numpy() - image).max() <= TOLERANCE


def test_flux2_pipeline_folder_gives_the_single_files_image(node_env, flux2_dev, flux2_models):
    """A diffusers Flux2Pipeline folder: Mistral3ForConditionalGeneration (language model and vision tower) with
    the same language weights, the tokenizer saved beside it."""
    import shutil

    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, PixtralVisionConfig

    from diffusion import loading

    mistral = flux2_models.mistral
    torch.manual_seed(0)
    encoder = Mistral3ForConditionalGeneration(Mistral3Config(
        text_config=mistral.config, vision_config=PixtralVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, head_dim=16,
            image_size=64, patch_size=16))).eval()
    encoder.model.language_model.load_state_dict(mistral.model.state_dict())
    pipeline = _pipeline(flux2_models)
    pipeline.register_modules(text_encoder=encoder,
                              tokenizer=tekken.tekken_tokenizer(tekken.tiny_tekken_json(), "test"))
    folder = node_env.folders.model_dir("diffusers") / "tiny-flux2-dev"
    pipeline.save_pretrained(folder)
    try:
        model, clip, vae = loading.load_diffusers(node_env.models, folder)
        assert clip.format.key == "mistral3_24b" and model.network.config.guidance_embeds
        assert clip.tokenize(PROMPT) == flux2_dev[1].tokenize(PROMPT)
        images = []
        for parts in ((model, clip, vae), flux2_dev):
            positive = FluxGuidance().append(CLIPTextEncode().encode(parts[1], PROMPT)[0], GUIDANCE)[0]
            (latent,) = EmptyFlux2LatentImage().generate(SIZE, SIZE, 1)
            (samples,) = KSampler().sample(parts[0], SEED, 2, 1.0, "euler", "diffusers", positive, positive, latent)
            images.append(VAEDecode().decode(parts[2], samples)[0].numpy())
        assert np.abs(images[0] - images[1]).max() <= TOLERANCE
    finally:
        shutil.rmtree(folder)


def test_mistral_files_without_what_flux2_needs_are_refused(node_env, flux2_models):
    folder = node_env.folders.model_dir("text_encoders")
    state = tiny_flux2.mistral_file(flux2_models.mistral)
    save_file({key: value for key, value in state.items() if key != tekken.TEKKEN_TENSOR},
              str(folder / "mistral-no-tokenizer.safetensors"))
    with pytest.raises(ValueError, match=r"clip_name: type flux2 runs FLUX.2 \[klein\] with its Qwen3 text encoder, "
                                         r"or FLUX.2 \[dev\] with Mistral Small 3 carrying its tokenizer"):
        CLIPLoader().load_clip("mistral-no-tokenizer.safetensors", "flux2")
    short = {key: value for key, value in state.items()
             if not key.startswith("model.layers.") or int(key.split(".")[2]) < 20}
    save_file(short, str(folder / "mistral-20-layers.safetensors"))
    (clip,) = CLIPLoader().load_clip("mistral-20-layers.safetensors", "flux2")
    with pytest.raises(ValueError, match="clip_name: its Mistral has 20 layers; FLUX.2 \\[dev\\] reads the output of "
                                         "layer 30"):
        CLIPTextEncode().encode(clip, PROMPT)
    old = dict(state, tekken_model=torch.frombuffer(bytearray(json.dumps(
        {"config": {"pattern": tekken.PATTERN}, "vocab": []}).encode()), dtype=torch.uint8))
    save_file(old, str(folder / "mistral-old-tekken.safetensors"))
    with pytest.raises(ValueError, match="clip_name: the file's tekken_model is not a usable tekken.json .*lists no "
                                         "special tokens"):
        CLIPLoader().load_clip("mistral-old-tekken.safetensors", "flux2")
    with pytest.raises(ValueError, match="tiny-flux2-mistral.safetensors holds a Mistral text encoder \\(FLUX.2 "
                                         "\\[dev\\]'s: load it with CLIPLoader type flux2\\)"):
        CLIPLoader().load_clip(tiny_flux2.DEMO_FLUX2_MISTRAL, "lumina2")


def test_shipped_flux2_dev_workflow_runs(node_env, flux2_models):
    (image,) = run_workflow(node_env, json.loads((WORKFLOWS / "flux2_dev_txt2img.json").read_text()), SIZE)
    assert image.size == (SIZE, SIZE)
