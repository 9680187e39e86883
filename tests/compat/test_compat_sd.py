"""ComfyUI's CLIP and VAE APIs on our values, and `comfy.sd`, `comfy.clip_vision`, `comfy.controlnet` over our loaders:
each checked against what our nodes compute (the same tensors) and against ComfyUI's contracts (token layout, word
ids, crop, tile units), and a node pack written against them loading and running through the engine."""
import textwrap

import folder_paths
import pytest
import torch
from comfy import clip_vision as comfy_clip_vision
from comfy import controlnet as comfy_controlnet
from comfy import sd as comfy_sd
from comfy import utils as comfy_utils
from PIL import Image
from safetensors.torch import save_file

from app.runtime import build_executor, build_registry, load_custom_nodes
from app.settings import Settings
from diffusion.families.flux import demo as flux_demo
from diffusion.families.sd.demo import DEMO_CHECKPOINT, DEMO_LORA
from diffusion.families.sd3 import demo as sd3_demo
from engine.cache import OutputCache
from engine.validation import validate_prompt
from nodes.clip_vision import CLIPVisionEncode, CLIPVisionLoader
from nodes.conditioning import CLIPSetLastLayer, CLIPTextEncode
from nodes.latent import VAEDecode, VAEDecodeTiled, VAEEncode, VAEEncodeTiled
from nodes.loaders import CheckpointLoaderSimple, DualCLIPLoader, LoraLoader, UNETLoader

PROMPT = "a (red:1.3) cat, sitting on a mat"
CLIP_VISION_FILE = "compat-sd-clip-vision.safetensors"


@pytest.fixture
def sd1(node_env):
    """(MODEL, CLIP, VAE) of the tiny SD1 checkpoint, through CheckpointLoaderSimple."""
    return CheckpointLoaderSimple().load_checkpoint(DEMO_CHECKPOINT)


def _same_conditioning(actual, expected):
    assert len(actual) == len(expected)
    for (embeddings, options), (want_embeddings, want_options) in zip(actual, expected):
        assert torch.equal(embeddings, want_embeddings)
        assert options.keys() == want_options.keys()
        assert all(torch.equal(options[key], value) if torch.is_tensor(value) else options[key] == value
                   for key, value in want_options.items())


# --- CLIP ----------------------------------------------------------------------------------------------------

def test_tokenize_gives_comfyuis_weighted_chunks(sd1):
    clip = sd1[1]
    tokenizer = clip.tokenizer
    tokens = clip.tokenize(PROMPT)
    assert list(tokens) == ["l"]  # SD1's CLIP-L, ComfyUI's key
    (chunk,) = tokens["l"]
    assert len(chunk) == 77 and all(len(entry) == 2 for entry in chunk)
    words = [("a", 1.0), ("red", 1.3), ("cat,", 1.0), ("sitting", 1.0), ("on", 1.0), ("a", 1.0), ("mat", 1.0)]
    ids = [tokenizer(word, add_special_tokens=False)["input_ids"] for word, _ in words]
    body = [(token, weight) for (_, weight), word_ids in zip(words, ids) for token in word_ids]
    assert chunk[0] == (tokenizer.bos_token_id, 1.0)
    assert chunk[1:len(body) + 1] == body
    assert chunk[len(body) + 1] == (tokenizer.eos_token_id, 1.0)
    assert set(chunk[len(body) + 2:]) == {(tokenizer.pad_token_id, 1.0)}
    # return_word_ids: ComfyUI numbers the prompt's words from 1; start, end and padding are word 0
    (with_ids,) = clip.tokenize(PROMPT, return_word_ids=True)["l"]
    assert [entry[:2] for entry in with_ids] == chunk
    expected_ids = [0] + [index + 1 for index, word_ids in enumerate(ids) for _ in word_ids]
    assert [entry[2] for entry in with_ids] == expected_ids + [0] * (77 - len(expected_ids))


def test_encode_from_tokens_equals_clip_text_encode(sd1):
    clip = sd1[1]
    ((expected, options),), = CLIPTextEncode().encode(clip, PROMPT)
    tokens = clip.tokenize(PROMPT)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    assert torch.equal(cond, expected) and torch.equal(pooled, options["pooled_output"])
    assert torch.equal(clip.encode_from_tokens(tokens), expected)
    assert torch.equal(clip.encode(PROMPT), expected)
    as_dict = clip.encode_from_tokens(tokens, return_dict=True)
    assert as_dict.keys() == {"cond", "pooled_output"} and torch.equal(as_dict["cond"], expected)
    # word ids change nothing, and an edited weight is the emphasis syntax's
    assert torch.equal(clip.encode_from_tokens(clip.tokenize(PROMPT, return_word_ids=True)), expected)
    (chunk,) = clip.tokenize("a red cat, sitting on a mat")["l"]
    red = clip.tokenizer("red", add_special_tokens=False)["input_ids"]
    edited = [(token, 1.3 if token in red else weight) for token, weight in chunk]
    assert torch.equal(clip.encode_from_tokens({"l": [edited]}), expected)
    with pytest.raises(RuntimeError, match="unprojected.*not supported by nodeflow"):
        clip.encode_from_tokens(tokens, return_pooled="unprojected")
    with pytest.raises(ValueError, match="no 'l' entry"):
        clip.encode_from_tokens({"g": chunk})


def test_encode_from_tokens_scheduled_is_clip_text_encodes_conditioning(sd1):
    clip = sd1[1]
    (expected,) = CLIPTextEncode().encode(clip, PROMPT)
    scheduled = clip.encode_from_tokens_scheduled(clip.tokenize(PROMPT))
    _same_conditioning(scheduled, expected)
    long = " ".join(["cat"] * 100)  # two 77-token chunks, as ComfyUI splits it
    (long_expected,) = CLIPTextEncode().encode(clip, long)
    long_tokens = clip.tokenize(long)
    long_scheduled = clip.encode_from_tokens_scheduled(long_tokens)
    assert len(long_tokens["l"]) > 1 and long_scheduled[0][0].shape[1] == 77 * len(long_tokens["l"])
    _same_conditioning(long_scheduled, long_expected)
    guided = clip.encode_from_tokens_scheduled(clip.tokenize(PROMPT), add_dict={"guidance": 3.5})
    assert guided[0][1]["guidance"] == 3.5 and torch.equal(guided[0][0], expected[0][0])


def test_clone_and_clip_layer_as_clip_set_last_layer(sd1):
    clip = sd1[1]
    (skipped,) = CLIPSetLastLayer().set_last_layer(clip, -2)
    (expected,) = CLIPTextEncode().encode(skipped, PROMPT)
    (unskipped,) = CLIPTextEncode().encode(clip, PROMPT)
    clone = clip.clone()
    assert clone is not clip and clone.text_encoder is clip.text_encoder
    assert clone.clip_layer(-2) is None
    _same_conditioning(clone.encode_from_tokens_scheduled(clone.tokenize(PROMPT)), expected)
    assert not torch.equal(expected[0][0], unskipped[0][0])
    _same_conditioning(clip.encode_from_tokens_scheduled(clip.tokenize(PROMPT)), unskipped)  # the original stays
    with pytest.raises(ValueError, match="stop_at_clip_layer: -99"):
        clone.clip_layer(-99)


def test_get_sd_and_the_names_we_cannot_answer(sd1):
    clip = sd1[1]
    state = clip.get_sd()
    key = "clip_l.transformer.text_model.embeddings.token_embedding.weight"
    assert torch.equal(state[key], clip.text_encoder.get_input_embeddings().weight)
    assert all(name.startswith("clip_l.transformer.text_model.") for name in state)
    for name in ("patcher", "load_model"):
        assert not hasattr(clip, name)
        with pytest.raises(AttributeError, match=f"clip.{name}: not supported by nodeflow"):
            getattr(clip, name)
    assert set(clip.cond_stage_model.state_dict()) == set(state)  # what LoRA key maps read
    with pytest.raises(AttributeError, match="clip.cond_stage_model.clip_layer: not supported by nodeflow"):
        clip.cond_stage_model.clip_layer  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        clip.no_such_name  # noqa: B018


# --- VAE -----------------------------------------------------------------------------------------------------

def test_vae_encode_and_decode_equal_the_nodes(sd1):
    vae = sd1[2]
    pixels = torch.rand(2, 37, 45, 3, generator=torch.Generator().manual_seed(1))
    latents = vae.encode(pixels)
    (expected,) = VAEEncode().encode(vae, pixels)
    assert torch.equal(latents, expected["samples"])
    # ComfyUI's crop: sides down to multiples of 8, the remainder split with the extra pixel at the end
    assert latents.shape == (2, 4, 4, 5)
    assert torch.equal(latents, vae.encode(pixels[:, 2:34, 2:42, :]))
    images = vae.decode(latents)
    (expected_images,) = VAEDecode().decode(vae, {"samples": latents})
    assert torch.equal(images, expected_images) and images.shape == (2, 32, 40, 3)


def test_vae_attributes_are_comfyuis(sd1):
    vae = sd1[2]
    config = vae.autoencoder.config
    ratio = 2 ** (len(config.block_out_channels) - 1)
    assert vae.downscale_ratio == vae.upscale_ratio == ratio == 8  # an SD VAE, as ComfyUI's
    assert vae.spacial_compression_encode() == vae.spacial_compression_decode() == 8
    assert vae.latent_channels == 4
    assert vae.first_stage_model is vae.autoencoder
    assert vae.device == torch.device("cpu") and vae.vae_dtype == torch.float32
    # three full-resolution maps of the widest block, 4 bytes each
    assert vae.memory_used_decode((1, 4, 8, 16), torch.float32) == 3 * 1 * 64 * 128 * max(config.block_out_channels) * 4
    assert vae.memory_used_encode((2, 64, 128, 3), torch.float32) == vae.activation_bytes(2, 64, 128)


def test_vae_tiled_calls_use_comfyuis_units(sd1):
    vae = sd1[2]
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    # decode_tiled counts in latent pixels: 8 latent pixels are VAEDecodeTiled's 64-pixel tiles, whose overlap is a
    # quarter of a tile (2 latent pixels)
    (expected,) = VAEDecodeTiled().decode(vae, {"samples": latents}, tile_size=64)
    assert torch.equal(vae.decode_tiled(latents, tile_x=8, tile_y=8, overlap=2), expected)
    assert not torch.equal(vae.decode_tiled(latents, tile_x=8, tile_y=8, overlap=1), expected)  # overlap followed
    assert not torch.equal(expected, vae.decode(latents))
    pixels = torch.rand(1, 128, 128, 3, generator=torch.Generator().manual_seed(3))
    (encoded,) = VAEEncodeTiled().encode(vae, pixels, tile_size=64)
    assert torch.equal(vae.encode_tiled(pixels, tile_x=64, tile_y=64, overlap=16), encoded["samples"])
    assert vae.autoencoder.use_tiling is False and vae.autoencoder.tile_overlap_factor == 0.25  # restored
    with pytest.raises(RuntimeError, match="vae.decode_tiled: tiles of 8x16 are not supported by nodeflow"):
        vae.decode_tiled(latents, tile_x=8, tile_y=16)
    with pytest.raises(ValueError, match="overlap 8 must be"):
        vae.encode_tiled(pixels, tile_x=8, tile_y=8, overlap=8)


def test_vae_from_a_state_dict(sd1, node_env):
    vae = sd1[2]
    state = comfy_utils.load_torch_file(folder_paths.get_full_path("checkpoints", DEMO_CHECKPOINT))
    built = comfy_sd.VAE(sd=state)
    assert isinstance(built, comfy_sd.VAE) and built is not vae
    latents = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(built.decode(latents), vae.decode(latents))
    with pytest.raises(ValueError, match="sd: VAE state dict holds no model this engine knows .*, not a VAE"):
        comfy_sd.VAE(sd={"unrelated.weight": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="config, device and dtype are not supported"):
        comfy_sd.VAE(sd=state, device="cpu")


def test_isinstance_checks(sd1):
    model, clip, vae = sd1
    assert isinstance(clip, comfy_sd.CLIP) and not isinstance(vae, comfy_sd.CLIP)
    assert isinstance(vae, comfy_sd.VAE) and not isinstance(clip, comfy_sd.VAE) and not isinstance(model, comfy_sd.VAE)
    with pytest.raises(RuntimeError, match="comfy.sd.CLIP"):
        comfy_sd.CLIP()


# --- comfy.sd loading ----------------------------------------------------------------------------------------

def test_load_checkpoint_guess_config_is_checkpoint_loader_simple(sd1, tmp_path):
    path = folder_paths.get_full_path("checkpoints", DEMO_CHECKPOINT)
    model, clip, vae, clip_vision = comfy_sd.load_checkpoint_guess_config(
        path, output_vae=True, output_clip=True, embedding_directory=folder_paths.get_folder_paths("embeddings"))
    assert (model, clip, vae) == tuple(sd1) and clip_vision is None  # the same cached values
    assert comfy_sd.load_checkpoint_guess_config(path, output_vae=False, output_clip=False)[1:] == (None,) * 3
    outside = tmp_path / DEMO_CHECKPOINT
    outside.write_bytes(b"")
    with pytest.raises(ValueError, match="ckpt_path: .* is outside the models folder"):
        comfy_sd.load_checkpoint_guess_config(str(outside))
    with pytest.raises(ValueError, match="not found"):
        comfy_sd.load_checkpoint_guess_config(path.replace(DEMO_CHECKPOINT, "missing.safetensors"))
    with pytest.raises(RuntimeError, match=r"model_options \['dtype'\] is not supported by nodeflow"):
        comfy_sd.load_checkpoint_guess_config(path, model_options={"dtype": torch.float16})


@pytest.fixture(scope="session")
def split_files(tiny_models_dir):
    """Text encoder files (the tiny SD3's CLIP-L and CLIP-G) and a diffusion model file (the tiny FLUX's)."""
    sd3_demo.make_sd3_demo_models(tiny_models_dir)
    flux_demo.make_flux_demo_models(tiny_models_dir)
    return tiny_models_dir


def test_load_clip_and_load_diffusion_model_on_split_files(node_env, split_files):
    names = [f"tiny-sd3-{part}.safetensors" for part in ("clip_l", "clip_g")]
    clip = comfy_sd.load_clip([folder_paths.get_full_path("text_encoders", name) for name in names],
                              clip_type=comfy_sd.CLIPType.STABLE_DIFFUSION)
    (expected_clip,) = DualCLIPLoader().load_clip(*names, "sdxl")
    assert type(clip) is type(expected_clip) and clip.family == "sdxl"
    (expected,) = CLIPTextEncode().encode(expected_clip, PROMPT)
    tokens = clip.tokenize(PROMPT)
    assert sorted(tokens) == ["g", "l"] and len(tokens["g"]) == len(tokens["l"]) == 1
    _same_conditioning(clip.encode_from_tokens_scheduled(tokens), expected)
    path = folder_paths.get_full_path("diffusion_models", flux_demo.DEMO_FLUX_TRANSFORMER)
    assert comfy_sd.load_diffusion_model(path) is UNETLoader().load_unet(flux_demo.DEMO_FLUX_TRANSFORMER)[0]
    with pytest.raises(RuntimeError, match="clip_type WAN is not supported by nodeflow"):
        comfy_sd.load_clip([folder_paths.get_full_path("text_encoders", names[0])], clip_type=comfy_sd.CLIPType.WAN)


def test_sd3_and_flux_clips_answer_the_same_api(node_env, split_files):
    from nodes.flux import CLIPTextEncodeFlux
    from nodes.loaders import TripleCLIPLoader

    sd3_names = [f"tiny-sd3-{part}.safetensors" for part in ("clip_l", "clip_g", "t5xxl")]
    sd3 = comfy_sd.load_clip([folder_paths.get_full_path("text_encoders", name) for name in sd3_names],
                             clip_type=comfy_sd.CLIPType.SD3)
    (expected_sd3,) = TripleCLIPLoader().load_clip(*sd3_names)
    tokens = sd3.tokenize(PROMPT)
    assert sorted(tokens) == ["g", "l", "t5xxl"] and len(tokens["t5xxl"]) == 1
    _same_conditioning(sd3.encode_from_tokens_scheduled(tokens), CLIPTextEncode().encode(expected_sd3, PROMPT)[0])
    flux_names = [flux_demo.DEMO_FLUX_CLIP_L, flux_demo.DEMO_FLUX_T5]
    flux = comfy_sd.load_clip([folder_paths.get_full_path("text_encoders", name) for name in flux_names],
                              clip_type=comfy_sd.CLIPType.FLUX)
    (expected_flux,) = DualCLIPLoader().load_clip(*flux_names, "flux")
    tokens = flux.tokenize("a cat")
    assert sorted(tokens) == ["l", "t5xxl"] and len(tokens["l"][0]) == 77
    _same_conditioning(flux.encode_from_tokens_scheduled(tokens), CLIPTextEncode().encode(expected_flux, "a cat")[0])
    # CLIPTextEncodeFlux's way in ComfyUI: T5's tokens of another text, guidance added to the options
    tokens["t5xxl"] = flux.tokenize("a painting")["t5xxl"]
    (expected,) = CLIPTextEncodeFlux().encode(expected_flux, "a cat", "a painting", 3.5)
    _same_conditioning(flux.encode_from_tokens_scheduled(tokens, add_dict={"guidance": 3.5}), expected)
    tokens["t5xxl"] = [[(token, 1.2) for token, _ in tokens["t5xxl"][0]]]
    with pytest.raises(ValueError, match=r"weights \[1.2\] are not applied"):
        flux.encode_from_tokens(tokens)
    with pytest.raises(RuntimeError, match="return_word_ids is not supported by nodeflow for FLUX"):
        flux.tokenize("a cat", return_word_ids=True)


def test_load_lora_for_models_is_lora_loader(sd1):
    model, clip, _ = sd1
    lora = comfy_utils.load_torch_file(folder_paths.get_full_path("loras", DEMO_LORA))
    new_model, new_clip = comfy_sd.load_lora_for_models(model, clip, lora, 0.8, 0.6)
    expected_model, expected_clip = LoraLoader().load_lora(model, clip, DEMO_LORA, 0.8, 0.6)
    assert model.loras == () and clip.loras == ()  # the loaded values are unchanged
    ((patch,), (expected_patch,)) = new_model.loras, expected_model.loras
    assert patch.strength == 0.8 and patch.state_dict.keys() == expected_patch.state_dict.keys()
    assert new_clip.loras[0].strength == 0.6
    (with_lora,) = CLIPTextEncode().encode(new_clip, PROMPT)
    _same_conditioning(with_lora, CLIPTextEncode().encode(expected_clip, PROMPT)[0])
    assert not torch.equal(with_lora[0][0], CLIPTextEncode().encode(clip, PROMPT)[0][0][0])
    assert comfy_sd.load_lora_for_models(None, clip, lora, 1.0, 0.0) == (None, clip)
    with pytest.raises(ValueError, match="not a LoRA file"):
        comfy_sd.load_lora_for_models(model, clip, {"model.weight": torch.zeros(1)}, 1.0, 1.0)


# --- comfy.clip_vision and comfy.controlnet -----------------------------------------------------------------------

@pytest.fixture(scope="session")
def clip_vision_file(tiny_models_dir):
    """A tiny CLIP ViT with projection in ComfyUI's clip_vision layout (transformers' keys)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(7)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=16, patch_size=4,
        image_size=16, projection_dim=24, hidden_act="gelu")).eval()
    save_file({key: value.contiguous() for key, value in model.state_dict().items()},
              str(tiny_models_dir / "clip_vision" / CLIP_VISION_FILE))
    return model


def test_clip_vision_load_and_encode_image(node_env, clip_vision_file):
    encoder = comfy_clip_vision.load(folder_paths.get_full_path("clip_vision", CLIP_VISION_FILE))
    assert encoder is CLIPVisionLoader().load_clip(CLIP_VISION_FILE)[0]
    assert isinstance(encoder, comfy_clip_vision.ClipVisionModel)
    assert encoder.image_size == 16 and encoder.image_mean == [0.48145466, 0.4578275, 0.40821073]
    image = torch.rand(2, 24, 20, 3, generator=torch.Generator().manual_seed(5))
    output = encoder.encode_image(image)
    assert isinstance(output, comfy_clip_vision.Output)
    (expected,) = CLIPVisionEncode().encode(encoder, image, "center")
    assert all(torch.equal(output[key], getattr(expected, key))
               for key in ("image_embeds", "last_hidden_state", "penultimate_hidden_states"))
    pixels = comfy_clip_vision.clip_preprocess(image, size=16)
    assert pixels.shape == (2, 3, 16, 16)
    with torch.no_grad():
        reference = clip_vision_file(pixel_values=pixels, output_hidden_states=True)
    torch.testing.assert_close(output.image_embeds, reference.image_embeds)
    torch.testing.assert_close(output.penultimate_hidden_states, reference.hidden_states[-2])
    assert output.image_embeds.shape == (2, 24) and output.last_hidden_state.shape == (2, 17, 32)


def test_controlnet_load(node_env, tiny_models_dir, tmp_path):
    from tests.nodes.test_controlnet import tiny_controlnet

    model, _ = tiny_controlnet()
    path = tiny_models_dir / "controlnet" / "compat-sd-controlnet.safetensors"
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))
    control = comfy_controlnet.load_controlnet(str(path))
    assert isinstance(control, comfy_controlnet.ControlNet) and isinstance(control, comfy_controlnet.ControlBase)
    assert not isinstance(control, comfy_controlnet.T2IAdapter)
    loaded = control.network.state_dict()
    assert all(torch.equal(loaded[key], tensor) for key, tensor in model.state_dict().items())
    with pytest.raises(ValueError, match="outside the models folder"):
        comfy_controlnet.load_controlnet(str(tmp_path / "x.safetensors"))


# --- a node pack using them ------------------------------------------------------------------------------------

PACK = '''
import comfy.sd
import folder_paths


class PackCheckpointLoader:
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "pack"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),)}}

    def load(self, ckpt_name):
        path = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
        return comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True)[:3]


class PackTextEncode:
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "pack"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip": ("CLIP",), "text": ("STRING", {"multiline": True})}}

    def encode(self, clip, text):
        return (clip.encode_from_tokens_scheduled(clip.tokenize(text)),)


class PackDecode:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"
    CATEGORY = "pack"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae": ("VAE",), "samples": ("LATENT",)}}

    def decode(self, vae, samples):
        assert isinstance(vae, comfy.sd.VAE) and vae.spacial_compression_decode() == 8
        return (vae.decode(samples["samples"]),)


NODE_CLASS_MAPPINGS = {"PackCheckpointLoader": PackCheckpointLoader, "PackTextEncode": PackTextEncode,
                       "PackDecode": PackDecode}
'''


def test_a_pack_using_comfy_sd_renders_as_the_built_in_nodes(node_env, tmp_path):
    plugins = tmp_path / "custom_nodes"
    (plugins / "sd_pack").mkdir(parents=True)
    (plugins / "sd_pack" / "__init__.py").write_text(textwrap.dedent(PACK))
    folders = node_env.folders
    settings = Settings(folders.models_dir, folders.input_dir, folders.output_dir, folders.temp_dir,
                        folders.user_dir, cache_size=10, cpu=True, threads=1, custom_nodes_dirs=(plugins,))
    registry = build_registry()
    (record,) = load_custom_nodes(settings, registry)
    assert record.status == "loaded", record.error

    def workflow(loader: str, encoder: str, decoder: str) -> dict:
        return {"1": {"class_type": loader, "inputs": {"ckpt_name": DEMO_CHECKPOINT}},
                "2": {"class_type": encoder, "inputs": {"text": PROMPT, "clip": ["1", 1]}},
                "3": {"class_type": encoder, "inputs": {"text": "", "clip": ["1", 1]}},
                "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
                "5": {"class_type": "KSampler", "inputs": {
                    "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
                    "seed": 5, "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
                    "denoise": 1.0}},
                "6": {"class_type": decoder, "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
                "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}}

    images = []
    for prompt in (workflow("PackCheckpointLoader", "PackTextEncode", "PackDecode"),
                   workflow("CheckpointLoaderSimple", "CLIPTextEncode", "VAEDecode")):
        validation = validate_prompt(prompt, registry)
        assert validation.ok and not validation.node_errors, validation.to_response()
        result = build_executor(registry, OutputCache()).execute(validation.prompt, "p1", {}, validation.outputs)
        assert result.success, result.error
        (entry,) = result.outputs["7"]["images"]
        with Image.open(folders.temp_dir / entry["subfolder"] / entry["filename"]) as image:
            images.append(image.tobytes())  # the pixels (the PNG's metadata names the prompt's nodes)
    assert images[0] == images[1]
