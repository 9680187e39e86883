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


def _sentencepiece_model() -> bytes:
    """A small Gemma-style SentencePiece model: BPE with byte fallback, Gemma's special pieces at ids 0-3 and its
    normalizer settings (no dummy prefix, whitespace kept, no normalization rule)."""
    import io

    import sentencepiece

    corpus = ["A photo of a cat sitting on a windowsill in the morning light.",
              "Ein Foto von einer Katze. Une photo d'un chat. 12345 lighthouse at dusk"] * 20
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=320, model_type="bpe", byte_fallback=True,
        split_digits=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
        bos_piece="<bos>", unk_piece="<unk>", add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", num_threads=1, minloglevel=2)
    return model.getvalue()


def test_gemma_file_carrying_its_sentencepiece_model_tokenizes_as_comfyui(node_env):
    """ComfyUI's Gemma 2 files hold their tokenizer as `spiece_model`: tokens are SentencePiece's own, `<bos>`
    first and no end token (ComfyUI's Gemma tokenizer), and the encoding is Gemma's second-to-last layer."""
    import sentencepiece
    from safetensors.torch import save_file
    from transformers import Gemma2Config, Gemma2Model

    proto = _sentencepiece_model()
    torch.manual_seed(3)
    gemma = Gemma2Model(Gemma2Config(
        vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=3, head_dim=256,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024)).eval()
    state = {f"model.{key}": value for key, value in gemma.state_dict().items()}
    state["spiece_model"] = torch.frombuffer(bytearray(proto), dtype=torch.uint8)
    save_file(state, str(node_env.folders.model_dir("text_encoders") / "gemma-with-spiece.safetensors"))
    (clip,) = CLIPLoader().load_clip("gemma-with-spiece.safetensors", "lumina2")
    text = "A cat at dusk, 12345 photos"
    ids = [token for token, _ in clip.tokenize(text)["gemma2_2b"][0]]
    assert ids == sentencepiece.SentencePieceProcessor(model_proto=proto, add_bos=True).encode(text)
    assert ids[0] == 2 and ids[-1] != 1
    ((embeddings, _),) = CLIPTextEncode().encode(clip, text)[0]
    with torch.no_grad():
        expected = gemma(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-2]
    assert torch.allclose(embeddings, expected, atol=1e-5)
    del state["spiece_model"]
    save_file(state, str(node_env.folders.model_dir("text_encoders") / "gemma-without-spiece.safetensors"))
    with pytest.raises(ValueError, match="clip_name: a Gemma 2 encoder with 320 tokens needs its own tokenizer, and "
                                         "this file does not carry it"):
        CLIPLoader().load_clip("gemma-without-spiece.safetensors", "lumina2")


def test_shipped_lumina2_workflow_runs(node_env, lumina2_models):
    (image,) = run_workflow(node_env, json.loads((WORKFLOWS / "lumina2_txt2img.json").read_text()), SIZE)
    assert image.size == (SIZE, SIZE)
