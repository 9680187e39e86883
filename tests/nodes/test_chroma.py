"""Chroma through the nodes: its files through UNETLoader, CLIPLoader (type chroma) and VAELoader encode the prompt
as ComfyUI does (unpadded, nothing masked; with T5TokenizerOptions' padding) and give ChromaPipeline's image for
those embeddings, the same weights and seed (cfg as true classifier-free guidance); its original file layout
converts to the same model, other files are refused by name, and the shipped workflow runs."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from diffusion.families.chroma import demo as tiny_chroma
from diffusion.families.flux import demo as tiny_flux
from nodes.conditioning import CLIPTextEncode
from nodes.flux import EmptySD3LatentImage
from nodes.latent import VAEDecode
from nodes.loaders import CLIPLoader, UNETLoader, VAELoader
from nodes.sampling import KSampler
from tests.nodes.conftest import own_storage
from tests.nodes.family_workflows import run_workflow

TOLERANCE = 1e-4
PROMPT = "a lighthouse on a cliff at sunset"
SEED, SIZE, STEPS = 7, 32, 4
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture(scope="session")
def chroma_models(tiny_models_dir):
    tiny_chroma.make_chroma_demo_models(tiny_models_dir)
    return tiny_models_dir


@pytest.fixture
def chroma(node_env, chroma_models):
    (model,) = UNETLoader().load_unet(tiny_chroma.DEMO_CHROMA_TRANSFORMER, "default")
    (clip,) = CLIPLoader().load_clip(tiny_chroma.DEMO_CHROMA_T5, "chroma")
    (vae,) = VAELoader().load_vae(tiny_chroma.DEMO_CHROMA_VAE)
    return model, clip, vae


@pytest.fixture(scope="session")
def chroma_pipeline(chroma_models):
    from diffusers import AutoencoderKL, ChromaPipeline, FlowMatchEulerDiscreteScheduler
    from transformers import T5EncoderModel, T5TokenizerFast

    from diffusion.families.chroma.loading import build_chroma_transformer, config
    from diffusion.files import read_safetensors

    folder = chroma_models / "diffusers" / tiny_flux.DEMO_FLUX_DIFFUSERS
    transformer = build_chroma_transformer(read_safetensors(
        chroma_models / "diffusion_models" / tiny_chroma.DEMO_CHROMA_TRANSFORMER, "unet_name"), "unet_name")
    pipeline = ChromaPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**config()["scheduler"]),
        vae=AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True),
        text_encoder=T5EncoderModel.from_pretrained(folder, subfolder="text_encoder_2", local_files_only=True),
        tokenizer=T5TokenizerFast.from_pretrained(folder, subfolder="tokenizer_2", local_files_only=True),
        transformer=transformer)
    own_storage(pipeline.transformer, pipeline.vae, pipeline.text_encoder)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _image(model, clip, vae, cfg, negative="", scheduler="diffusers"):
    positive = CLIPTextEncode().encode(clip, PROMPT)[0]
    negative = CLIPTextEncode().encode(clip, negative)[0]
    (latent,) = EmptySD3LatentImage().generate(SIZE, SIZE, 1)
    (samples,) = KSampler().sample(model, SEED, STEPS, cfg, "euler", scheduler, positive, negative, latent)
    return VAEDecode().decode(vae, samples)[0].numpy()


def _pipeline_image(pipeline, clip, cfg, negative="") -> np.ndarray:
    """ChromaPipeline's image for our CLIP's embeddings of the prompt and negative, nothing masked."""
    ((embeddings, _),) = CLIPTextEncode().encode(clip, PROMPT)[0]
    ((negative_embeddings, _),) = CLIPTextEncode().encode(clip, negative)[0]
    return pipeline(
        prompt_embeds=embeddings, prompt_attention_mask=torch.ones(1, embeddings.shape[1]),
        negative_prompt_embeds=negative_embeddings,
        negative_prompt_attention_mask=torch.ones(1, negative_embeddings.shape[1]), height=SIZE, width=SIZE,
        num_inference_steps=STEPS, guidance_scale=cfg, generator=torch.Generator("cpu").manual_seed(SEED),
        output_type="np").images


@pytest.mark.parametrize("cfg, negative", [(1.0, ""), (4.0, "blurry, low quality")])
def test_txt2img_matches_chroma_pipeline(chroma, chroma_pipeline, cfg, negative):
    model, clip, vae = chroma
    image = _image(model, clip, vae, cfg, negative)
    assert image.shape == (1, SIZE, SIZE, 3)
    assert np.abs(image - _pipeline_image(chroma_pipeline, clip, cfg, negative)).max() <= TOLERANCE


def test_the_prompt_is_encoded_unpadded_as_comfyui_does(chroma, chroma_pipeline):
    """ComfyUI's Chroma CLIP: the prompt's tokens and end token, no padding and no mask; their hidden states are
    those ChromaPipeline's T5 gives the prompt's tokens under its padding mask."""
    _, clip, _ = chroma
    tokenizer = clip.t5_tokenizer
    assert [token for token, _ in clip.tokenize(PROMPT)["t5xxl"][0]] == tokenizer(PROMPT).input_ids
    ((embeddings, options),) = CLIPTextEncode().encode(clip, PROMPT)[0]
    assert options == {} and embeddings.shape[1] == len(tokenizer(PROMPT).input_ids)
    padded, mask = chroma_pipeline._get_t5_prompt_embeds(PROMPT, max_sequence_length=512, device="cpu")
    assert int(mask.sum()) == embeddings.shape[1] + 1  # the pipeline attends one padding token more
    assert torch.allclose(embeddings, padded[:, :embeddings.shape[1]].float(), atol=1e-5)


@pytest.mark.parametrize("min_padding", [1, 0])
def test_t5_tokenizer_options_encode_as_comfyui(chroma, chroma_pipeline, min_padding):
    """Chroma's ComfyUI workflows set T5TokenizerOptions (min_padding 1 or 0): the prompt's tokens and end token,
    then that padding, through T5 unmasked, the transformer seeing all of them; the image is ChromaPipeline's for
    those embeddings with nothing masked."""
    from nodes.text_encoders import T5TokenizerOptions

    model, clip, vae = chroma
    (options_clip,) = T5TokenizerOptions().set_options(clip, min_padding, 0)
    tokenizer = clip.t5_tokenizer
    ids = [token for token, _ in options_clip.tokenize(PROMPT)["t5xxl"][0]]
    assert ids == tokenizer(PROMPT).input_ids + [tokenizer.pad_token_id] * min_padding
    ((embeddings, options),) = CLIPTextEncode().encode(options_clip, PROMPT)[0]
    assert "attention_mask" not in options
    with torch.no_grad():
        expected = chroma_pipeline.text_encoder(torch.tensor([ids]))[0]
    assert torch.allclose(embeddings, expected.float(), atol=1e-5)
    negative = "blurry, low quality"
    image = _image(model, options_clip, vae, 4.0, negative)
    assert np.abs(image - _pipeline_image(chroma_pipeline, options_clip, 4.0, negative)).max() <= TOLERANCE


def test_original_layout_file_is_the_same_model(node_env, chroma, chroma_models):
    """Chroma's released files use FLUX's original block names and the approximator's own: converted to the same
    transformer."""

    model = chroma[0]
    state = model.network.state_dict()
    approximator = {key.replace(".linear_1.", ".in_layer.").replace(".linear_2.", ".out_layer.")
                    .replace("norms.0.weight", "norms.0.scale").replace("norms.1.weight", "norms.1.scale"): value
                    for key, value in state.items() if key.startswith("distilled_guidance_layer.")}
    modulated = {key: value for key, value in state.items() if not key.startswith("distilled_guidance_layer.")}
    original = {"model.diffusion_model." + key: value
                for key, value in {**_diffusers_to_bfl_without_modulation(modulated), **approximator}.items()}
    path = node_env.folders.model_dir("diffusion_models") / "chroma-original.safetensors"
    save_file({key: value.contiguous() for key, value in original.items()}, str(path))
    try:
        (loaded,) = UNETLoader().load_unet(path.name, "default")
        assert loaded.family == "chroma"
        converted = loaded.network.state_dict()
        assert converted.keys() == state.keys() and all(torch.equal(converted[key], state[key]) for key in state)
    finally:
        path.unlink()


def _diffusers_to_bfl_without_modulation(state):
    """FLUX's inverse conversion for a transformer without per-block modulation or time/text embedders."""
    from diffusion.families.flux.demo import bfl_layout

    padded = dict(state)
    blocks = {key.split(".")[1] for key in state if key.startswith("transformer_blocks.")}
    singles = {key.split(".")[1] for key in state if key.startswith("single_transformer_blocks.")}
    width = state["x_embedder.weight"].shape[0]
    for index in blocks:  # placeholders for the modulation FLUX's inverse expects, dropped again below
        for name in ("norm1.linear", "norm1_context.linear"):
            padded[f"transformer_blocks.{index}.{name}.weight"] = torch.zeros(1, width)
            padded[f"transformer_blocks.{index}.{name}.bias"] = torch.zeros(1)
    for index in singles:
        padded[f"single_transformer_blocks.{index}.norm.linear.weight"] = torch.zeros(1, width)
        padded[f"single_transformer_blocks.{index}.norm.linear.bias"] = torch.zeros(1)
    return {key: value for key, value in bfl_layout(padded).items()
            if ".img_mod." not in key and ".txt_mod." not in key and ".modulation." not in key}


def test_wrong_files_are_refused_by_name(chroma_models, node_env):
    with pytest.raises(ValueError, match="type chroma needs a T5-XXL encoder file; .* holds a CLIP encoder"):
        CLIPLoader().load_clip(tiny_flux.DEMO_FLUX_CLIP_L, "chroma")
    (flux_model,) = UNETLoader().load_unet(tiny_flux.DEMO_FLUX_TRANSFORMER, "default")
    assert flux_model.family == "flux"  # FLUX's transformer is not taken for Chroma's


def test_shipped_chroma_workflow_runs(node_env, chroma_models):
    (image,) = run_workflow(node_env, json.loads((WORKFLOWS / "chroma_txt2img.json").read_text()), SIZE)
    assert image.size == (SIZE, SIZE)



def test_peft_lora_matches_load_lora_weights(node_env, chroma, chroma_pipeline):
    """A diffusers/peft LoRA on the transformer's attention, through LoraLoaderModelOnly, gives the pipeline's
    image with the same LoRA loaded by `load_lora_weights`."""
    from nodes.loaders import LoraLoaderModelOnly

    generator = torch.Generator().manual_seed(11)
    state = {}
    for name, module in chroma[0].network.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith((".attn.to_q", ".attn.to_v")):
            state[f"transformer.{name}.lora_A.weight"] = torch.randn(4, module.in_features, generator=generator) * 0.3
            state[f"transformer.{name}.lora_B.weight"] = torch.randn(module.out_features, 4, generator=generator) * 0.3
    path = node_env.folders.model_dir("loras") / "tiny-chroma-lora.safetensors"
    save_file(state, str(path))
    try:
        model, clip, vae = chroma
        (patched,) = LoraLoaderModelOnly().load_lora_model_only(model, path.name, 0.8)
        image = _image(patched, clip, vae, 1.0)
        chroma_pipeline.load_lora_weights(dict(state), adapter_name="tiny")
        chroma_pipeline.set_adapters(["tiny"], [0.8])
        assert np.abs(image - _pipeline_image(chroma_pipeline, clip, 1.0)).max() <= TOLERANCE
        assert np.abs(image - _image(model, clip, vae, 1.0)).max() > 1e-3
    finally:
        chroma_pipeline.unload_lora_weights()
        path.unlink()
