"""Qwen-Image 2.1 through the nodes: its files as ComfyUI users have them (the transformer with fused SwiGLU weights
through UNETLoader, the VAE in ComfyUI's layout through VAELoader, Qwen3-VL through CLIPLoader type qwen_image) give
QwenImage21Pipeline's image for the same weights and seed, with and without a negative prompt of another length;
TextEncodeQwenImage21 encodes as the pipeline does and makes the empty latent; ComfyUI's sampling (a fixed shift of
0.69) and its 8x empty latents work; other files are refused by name; a diffusers folder loads; the shipped workflow
runs."""
import json
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from diffusion.families.qwenimage21 import demo as tiny_qwen21
from diffusion.families.qwenimage21.loading import config
from diffusion.families.qwenimage21.text_encoding import IMAGE_SLOTS, image_processor, tiny_tokenizer
from diffusion.sampling.flow import CAPTION_LENGTH
from diffusion.sampling.model_sampling import flux_shift_time
from nodes.custom_sampling import BasicScheduler
from nodes.latent import EmptyLatentImage, VAEDecode, VAEEncode
from nodes.loaders import CLIPLoader, UNETLoader, VAELoader
from nodes.qwen_image import TextEncodeQwenImage21
from nodes.sampling import KSampler
from tests.nodes.conftest import own_storage
from tests.nodes.family_workflows import run_workflow

TOLERANCE = 1e-4
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
NEGATIVE = "blurry"
SEED, SIZE, STEPS = 5, 64, 3
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
# Qwen's chat template for messages of text parts (what QwenImage21Pipeline renders to count the system turn)
CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for part in message['content'] %}"
                 "{{ part['text'] }}{% endfor %}<|im_end|>\n{% endfor %}")


def qwen3_vl_processor(tokenizer, vision):
    """transformers' Qwen3VLProcessor for the tiny models, its image processor set as the CLIP sets it (its video
    processor needs torchvision, which this machine lacks: the processor is built without one, for images)."""
    from transformers import Qwen3VLProcessor
    from transformers.processing_utils import ProcessorMixin

    check = ProcessorMixin.check_argument_for_proper_class

    def without_video(self, name, argument):
        return None if name == "video_processor" and argument is None else check(self, name, argument)

    with mock.patch.object(ProcessorMixin, "check_argument_for_proper_class", without_video):
        return Qwen3VLProcessor(image_processor=image_processor(vision), tokenizer=tokenizer, video_processor=None,
                                chat_template=CHAT_TEMPLATE)


@pytest.fixture(scope="session")
def qwen21_models(tiny_models_dir):
    return tiny_qwen21.make_qwen_image21_demo_models(tiny_models_dir)


@pytest.fixture
def qwen21(node_env, qwen21_models):
    (model,) = UNETLoader().load_unet(tiny_qwen21.DEMO_QWEN_IMAGE21_TRANSFORMER, "default")
    (clip,) = CLIPLoader().load_clip(tiny_qwen21.DEMO_QWEN_IMAGE21_TEXT_ENCODER, "qwen_image")
    (vae,) = VAELoader().load_vae(tiny_qwen21.DEMO_QWEN_IMAGE21_VAE)
    return model, clip, vae


@pytest.fixture(scope="session")
def qwen21_pipeline(qwen21_models):
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImage21Pipeline

    pipeline = QwenImage21Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**{key: value for key, value in config()["scheduler"].items()
                                                     if not key.startswith("_")}),
        vae=qwen21_models.vae, text_encoder=qwen21_models.text_encoder,
        processor=qwen3_vl_processor(tiny_tokenizer(), qwen21_models.text_encoder.config.vision_config),
        transformer=qwen21_models.transformer)
    own_storage(pipeline.transformer, pipeline.vae, pipeline.text_encoder)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _image(model, clip, vae, cfg=1.0, negative=NEGATIVE, scheduler="diffusers"):
    positive, negative, latent = TextEncodeQwenImage21().encode(clip, PROMPT, negative, SIZE)
    (samples,) = KSampler().sample(model, SEED, STEPS, cfg, "euler", scheduler, positive, negative, latent)
    return VAEDecode().decode(vae, samples)[0].numpy()


def _expected(pipeline, **options):
    return pipeline(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, output_type="np",
                    generator=torch.Generator("cpu").manual_seed(SEED), **options).images[..., :3]


def test_txt2img_matches_qwen_image21_pipeline(qwen21, qwen21_pipeline):
    image = _image(*qwen21)
    assert image.shape == (1, SIZE, SIZE, 3)
    assert np.abs(image - _expected(qwen21_pipeline)).max() <= TOLERANCE


def test_cfg_with_a_negative_of_another_length_matches_true_cfg(qwen21, qwen21_pipeline):
    image = _image(*qwen21, cfg=4.0)
    expected = _expected(qwen21_pipeline, negative_prompt=NEGATIVE, true_cfg_scale=4.0)
    assert np.abs(image - expected).max() <= TOLERANCE
    assert np.abs(image - _image(*qwen21)).max() > 1e-3


def test_text_encoding_drops_the_system_turn_as_the_pipeline_does(qwen21, qwen21_pipeline):
    clip = qwen21[1]
    positive, negative, latent = TextEncodeQwenImage21().encode(clip, PROMPT, "", 0)
    ((embeddings, options),) = positive
    expected, mask, image_slots = qwen21_pipeline.encode_prompt(PROMPT, device=torch.device("cpu"))
    assert embeddings.shape == expected.shape and options[CAPTION_LENGTH] == embeddings.shape[1]
    assert torch.allclose(embeddings, expected.float(), atol=1e-5) and mask is None and not image_slots.any()
    ((empty, _),) = negative  # an empty negative is encoded as a space, as the pipeline encodes it
    assert torch.allclose(empty, qwen21_pipeline.encode_prompt("", device=torch.device("cpu"))[0].float(), atol=1e-5)
    # resolution 0 is 1024 pixels: 64 latent pixels of 16 at 64 channels
    assert latent["samples"].shape == (1, 64, 64, 64) and not latent["samples"].any()
    own = "<|im_start|>system\nDraw.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    ((own_embeddings, _),) = TextEncodeQwenImage21().encode(clip, own, "", 32)[0]
    assert own_embeddings.shape[1] == len(clip.tokenizer("<|im_start|>user\nhi<|im_end|>\n").input_ids)


def test_comfyui_schedule_and_empty_latent_image(qwen21):
    """KSampler's schedulers shift by ComfyUI's fixed 0.69 (FLUX's exponential shift); EmptyLatentImage's 4-channel
    latent at 8x is taken as the 64-channel latent at 16x of the same picture size."""
    model, clip, vae = qwen21
    (sigmas,) = BasicScheduler().get_sigmas(model, "simple", 4, 1.0)
    expected = flux_shift_time(config()["comfy_shift"], torch.tensor([1.0, 0.75, 0.5, 0.25]))
    assert torch.allclose(sigmas[:-1], expected.to(sigmas.dtype), atol=1e-4) and sigmas[-1] == 0
    positive, negative, _ = TextEncodeQwenImage21().encode(clip, PROMPT, "", SIZE)
    (latent,) = EmptyLatentImage().generate(SIZE, SIZE, 1)
    (samples,) = KSampler().sample(model, SEED, 2, 1.0, "euler", "simple", positive, negative, latent)
    assert samples["samples"].shape == (1, 64, SIZE // 16, SIZE // 16)
    assert VAEDecode().decode(vae, samples)[0].shape == (1, SIZE, SIZE, 3)


def test_vae_encodes_images_opaque_as_the_pipeline_does(qwen21, qwen21_pipeline):
    vae = qwen21[2]
    image = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(3))
    (latent,) = VAEEncode().encode(vae, image)
    assert latent["samples"].shape == (1, 64, SIZE // 16, SIZE // 16)
    rgba = torch.cat([image, torch.ones_like(image[..., :1])], dim=-1).movedim(-1, 1)[:, :, None] * 2 - 1
    expected = qwen21_pipeline.vae.encode(rgba).latent_dist.mode()[:, :, 0]
    assert torch.allclose(latent["samples"], expected, atol=1e-5)


def test_files_of_other_kinds_are_refused_by_name(qwen21_models, node_env):
    folders = node_env.folders
    misplaced = [(folders.model_dir("diffusion_models") / tiny_qwen21.DEMO_QWEN_IMAGE21_TRANSFORMER,
                  folders.model_dir("text_encoders") / "misplaced-transformer.safetensors"),
                 (folders.model_dir("text_encoders") / tiny_qwen21.DEMO_QWEN_IMAGE21_TEXT_ENCODER,
                  folders.model_dir("diffusion_models") / "misplaced-qwen3-vl.safetensors")]
    try:
        for source, target in misplaced:
            shutil.copyfile(source, target)
        with pytest.raises(ValueError, match="misplaced-transformer.safetensors holds a Qwen-Image 2.1 transformer "
                                             r"\(load it with UNETLoader\)"):
            CLIPLoader().load_clip("misplaced-transformer.safetensors", "qwen_image")
        with pytest.raises(ValueError, match="a Qwen3-VL text encoder"):
            UNETLoader().load_unet("misplaced-qwen3-vl.safetensors", "default")
    finally:
        for _, target in misplaced:
            target.unlink(missing_ok=True)
    (model,) = UNETLoader().load_unet(tiny_qwen21.DEMO_QWEN_IMAGE21_TRANSFORMER, "default")
    assert model.family == "qwenimage21"


def test_text_encode_node_refuses_other_clips(qwen21, node_env, tiny_models_dir):
    from diffusion.families.qwenimage import demo as tiny_qwen

    tiny_qwen.make_qwen_image_demo_models(tiny_models_dir)
    (other,) = CLIPLoader().load_clip(tiny_qwen.DEMO_QWEN_IMAGE_TEXT_ENCODER, "qwen_image")
    with pytest.raises(ValueError, match="clip: TextEncodeQwenImage21 needs Qwen-Image 2.1's CLIP"):
        TextEncodeQwenImage21().encode(other, PROMPT, "", SIZE)


EDIT_PROMPT = "make the sky stormy"


def _picture(height, width, seed):
    """An IMAGE of 8-bit values (what both engines' image processors see alike)."""
    pixels = torch.randint(0, 256, (1, height, width, 3), generator=torch.Generator().manual_seed(seed))
    return pixels.float() / 255


def _as_pil(image):
    from PIL import Image

    return Image.fromarray((image[0] * 255).round().to(torch.uint8).numpy())


def _edited(model, clip, vae, pictures, cfg=1.0, negative="", resolution=SIZE, scheduler="diffusers"):
    positive, negative, latent = TextEncodeQwenImage21().encode(
        clip, EDIT_PROMPT, negative, resolution, vae, **{f"images.image_{index}": picture
                                                         for index, picture in enumerate(pictures, 1)})
    (samples,) = KSampler().sample(model, SEED, STEPS, cfg, "euler", scheduler, positive, negative, latent)
    return VAEDecode().decode(vae, samples)[0].numpy(), positive, latent


def test_edit_with_a_reference_matches_the_pipeline(qwen21, qwen21_pipeline):
    """A reference image at the resolution's size: Qwen3-VL reads it before the prompt, its latent takes its
    tokens' place in the transformer's sequence, the latent to sample is its size."""
    picture = _picture(SIZE, SIZE, 1)
    image, positive, latent = _edited(*qwen21, [picture])
    ((embeddings, options),) = positive
    assert latent["samples"].shape == (1, 64, SIZE // 16, SIZE // 16) and len(options[IMAGE_SLOTS]) == 1
    expected = qwen21_pipeline(EDIT_PROMPT, image=[_as_pil(picture)], height=SIZE, width=SIZE, output_resolution=SIZE,
                               num_inference_steps=STEPS, output_type="np",
                               generator=torch.Generator("cpu").manual_seed(SEED)).images[..., :3]
    assert np.abs(image - expected).max() <= TOLERANCE
    assert np.abs(image - _image(*qwen21)).max() > 1e-3


def test_edit_with_two_references_and_true_cfg_matches_the_pipeline(qwen21, qwen21_pipeline):
    """Two references of other aspect ratios (each kept at its size: about the resolution's area, sides multiples
    of 32; large enough that Qwen3-VL's processor keeps it too), a negative prompt of another length: each text
    encoded with both images, as the pipeline does."""
    side = 96
    pictures = [_picture(side, side, 2), _picture(64, 128, 3)]
    image, positive, latent = _edited(*qwen21, pictures, cfg=3.0, negative="dull, flat light", resolution=side)
    ((_, options),) = positive
    assert len(options[IMAGE_SLOTS]) == 2 and latent["samples"].shape[-2:] == (side // 16, side // 16)
    expected = qwen21_pipeline(EDIT_PROMPT, image=[_as_pil(picture) for picture in pictures],
                               negative_prompt="dull, flat light", true_cfg_scale=3.0, height=side, width=side,
                               output_resolution=side, num_inference_steps=STEPS, output_type="np",
                               generator=torch.Generator("cpu").manual_seed(SEED)).images[..., :3]
    assert np.abs(image - expected).max() <= TOLERANCE


def test_references_are_resized_to_the_resolution_and_without_a_vae_stay_in_the_text(qwen21):
    model, clip, vae = qwen21
    picture = _picture(100, 200, 4)  # 2:1, resized to about 96x96's area: 128x64 (0: its own size rounded)
    positive, _, latent = TextEncodeQwenImage21().encode(clip, EDIT_PROMPT, "", 96, vae,
                                                         **{"images.image_1": picture})
    assert latent["samples"].shape == (1, 64, 64 // 16, 128 // 16)
    ((with_references, options),) = positive
    _, _, own_size = TextEncodeQwenImage21().encode(clip, EDIT_PROMPT, "", 0, **{"images.image_1": picture})
    assert own_size["samples"].shape == (1, 64, 96 // 16, 192 // 16)
    ((kept, kept_options),) = TextEncodeQwenImage21().encode(clip, EDIT_PROMPT, "", 96,
                                                             **{"images.image_1": picture})[0]
    image_tokens = (128 // 32) * (64 // 32)  # one Qwen3-VL token per 32x32 pixels
    assert kept.shape[1] == with_references.shape[1] + image_tokens and IMAGE_SLOTS not in kept_options
    assert "reference_latents" in options and "reference_latents" not in kept_options


def test_diffusers_folder_gives_the_same_image(node_env, qwen21, qwen21_models):
    from diffusion import loading

    folder = node_env.folders.model_dir("diffusers") / "tiny-qwen-image-2.1"
    try:
        for part, module in (("transformer", qwen21_models.transformer), ("vae", qwen21_models.vae),
                             ("text_encoder", qwen21_models.text_encoder)):
            module.save_pretrained(folder / part)
        tiny_tokenizer().save_pretrained(folder / "processor")
        (folder / "scheduler").mkdir()
        (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(config()["scheduler"]))
        (folder / "model_index.json").write_text(json.dumps({"_class_name": "QwenImage21Pipeline"}))
        model, clip, vae = loading.load_diffusers(node_env.models, folder)
        assert np.abs(_image(model, clip, vae) - _image(*qwen21)).max() <= TOLERANCE
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_shipped_qwen_image21_workflow_runs(node_env, qwen21_models):
    (image,) = run_workflow(node_env, json.loads((WORKFLOWS / "qwen_image_2_1_txt2img.json").read_text()), SIZE)
    assert image.size == (SIZE, SIZE)


def test_shipped_qwen_image21_edit_workflow_edits_the_loaded_image(node_env, qwen21_models):
    """Modelled on ComfyUI's Qwen-Image 2.1 edit template: QwenImage21Cache on the model, the loaded image as
    reference 1 of TextEncodeQwenImage21 with the VAE, sampled at the latent it gives."""
    from PIL import Image

    Image.new("RGB", (80, 40), (200, 120, 40)).save(node_env.folders.input_dir / "example.png")
    prompt = json.loads((WORKFLOWS / "qwen_image_2_1_edit.json").read_text())
    assert prompt["6"]["inputs"]["latent_image"] == ["5", 2] and prompt["6"]["inputs"]["model"] == ["9", 0]
    (image,) = run_workflow(node_env, prompt, SIZE)
    assert image.size == (96, 32)  # about 64x64's area at the loaded image's 2:1, sides multiples of 32


@pytest.mark.parametrize("dtype, tolerance", [("default", 1e-6), ("int8", 1e-4), ("int4", 2e-3)])
def test_prefix_cache_keeps_the_image(qwen21, dtype, tolerance, monkeypatch):
    """QwenImage21Cache: after the first step each call reads the prompt's and references' keys and values from the
    cache (the image's tokens only are computed) and gives the image computed without it (measured: identical; the
    int8 and int4 caches' rounding moves it by 5e-6 and 1.2e-4 here); the negative, another prefix, has its own
    entry; off gives the model unchanged."""
    from diffusion.families.qwenimage21 import sampling as qwen21_sampling
    from nodes.qwen_image import QwenImage21Cache

    model, clip, vae = qwen21
    modes = []
    lookup = qwen21_sampling.PrefixCache.lookup

    def counted(self, prefix, blocks):
        cache, mode = lookup(self, prefix, blocks)
        modes.append(mode)
        return cache, mode

    monkeypatch.setattr(qwen21_sampling.PrefixCache, "lookup", counted)
    picture = _picture(SIZE, SIZE, 5)
    expected, _, _ = _edited(model, clip, vae, [picture], cfg=2.0, negative="dull", scheduler="simple")
    assert modes == []
    (cached,) = QwenImage21Cache().apply(model, "auto", dtype)
    image, _, _ = _edited(cached, clip, vae, [picture], cfg=2.0, negative="dull", scheduler="simple")
    assert modes == ["extract", "extract"] + ["cached"] * 2 * (STEPS - 1)
    difference = np.abs(image - expected).max()
    assert difference <= tolerance and (difference > 0) == (dtype != "default")  # rounded only when quantized
    (off,) = QwenImage21Cache().apply(model, "off", dtype)
    assert off.sampling.prefix_cache is None


def test_prefix_cache_stores_int4_and_int8_per_token_and_head():
    from diffusion.families.qwenimage21.sampling import LayerCache

    keys = torch.randn(1, 5, 2, 8, generator=torch.Generator().manual_seed(0))
    values = keys.flip(-1)
    for bits, error in ((8, 0.5 / 127), (4, 0.5 / 7)):
        cache = LayerCache(bits, "cpu")
        cache.store(keys, values)
        assert cache.stored[0][0].dtype == torch.int8 and cache.stored[0][0].shape[-1] == 8 * bits // 8
        top = keys.abs().amax(-1, keepdim=True)
        restored_keys, restored_values = cache.get()
        assert restored_keys.dtype == keys.dtype
        assert ((restored_keys - keys).abs() <= error * top + 1e-6).all()
        assert ((restored_values - values).abs() <= error * top + 1e-6).all()  # the same magnitudes, flipped


def test_cache_node_refuses_other_models(node_env, tiny_models_dir):
    from diffusion.families.qwenimage import demo as tiny_qwen
    from nodes.qwen_image import QwenImage21Cache

    tiny_qwen.make_qwen_image_demo_models(tiny_models_dir)
    (other,) = UNETLoader().load_unet(tiny_qwen.DEMO_QWEN_IMAGE_TRANSFORMER, "default")
    with pytest.raises(ValueError, match="model: QwenImage21Cache needs a Qwen-Image 2.1 model"):
        QwenImage21Cache().apply(other)


def test_peft_lora_matches_load_lora_weights(node_env, qwen21, qwen21_pipeline):
    from safetensors.torch import save_file

    from nodes.loaders import LoraLoaderModelOnly

    generator = torch.Generator().manual_seed(12)
    state = {}
    for name, module in qwen21[0].network.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith((".attn.to_q", ".img_mlp.out")):
            state[f"transformer.{name}.lora_A.weight"] = torch.randn(4, module.in_features, generator=generator) * 0.3
            state[f"transformer.{name}.lora_B.weight"] = torch.randn(module.out_features, 4, generator=generator) * 0.3
    path = node_env.folders.model_dir("loras") / "tiny-qwen-image-2.1-lora.safetensors"
    save_file(state, str(path))
    try:
        model, clip, vae = qwen21
        (patched,) = LoraLoaderModelOnly().load_lora_model_only(model, path.name, 0.7)
        image = _image(patched, clip, vae)
        qwen21_pipeline.load_lora_weights(dict(state), adapter_name="tiny")
        qwen21_pipeline.set_adapters(["tiny"], [0.7])
        assert np.abs(image - _expected(qwen21_pipeline)).max() <= TOLERANCE
        assert np.abs(image - _image(model, clip, vae)).max() > 1e-3
    finally:
        qwen21_pipeline.unload_lora_weights()
        path.unlink()

