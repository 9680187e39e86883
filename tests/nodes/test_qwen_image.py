"""Qwen-Image through the nodes: its files as ComfyUI users have them (the transformer through UNETLoader, the
Wan-layout VAE through VAELoader, Qwen2.5-VL through CLIPLoader type qwen_image) give QwenImagePipeline's image for
the same weights and seed; captions of different lengths in one call are masked as the pipeline masks padding;
other files are refused by name; a diffusers folder loads; the shipped workflow runs."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion.components import FrameVae
from diffusion.families.flux import demo as tiny_flux
from diffusion.families.qwenimage import demo as tiny_qwen
from diffusion.families.qwenimage.sampling import QWEN_IMAGE_SAMPLING
from diffusion.families.qwenimage.text_encoding import settings, template_end, tiny_tokenizer
from diffusion.sampling.flow import CAPTION_LENGTH
from nodes.conditioning import CLIPTextEncode
from nodes.flux import EmptySD3LatentImage
from nodes.latent import VAEDecode, VAEEncode
from nodes.loaders import CLIPLoader, UNETLoader, VAELoader
from nodes.sampling import KSampler
from tests.nodes.conftest import own_storage
from tests.nodes.family_workflows import run_workflow

TOLERANCE = 1e-4
PROMPT = "a red fox in fresh snow, morning light"
SEED, SIZE, STEPS = 5, 64, 3
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture(scope="session")
def qwen_models(tiny_models_dir):
    return tiny_qwen.make_qwen_image_demo_models(tiny_models_dir)


@pytest.fixture
def qwen_image(node_env, qwen_models):
    (model,) = UNETLoader().load_unet(tiny_qwen.DEMO_QWEN_IMAGE_TRANSFORMER, "default")
    (clip,) = CLIPLoader().load_clip(tiny_qwen.DEMO_QWEN_IMAGE_TEXT_ENCODER, "qwen_image")
    (vae,) = VAELoader().load_vae(tiny_qwen.DEMO_QWEN_IMAGE_VAE)
    return model, clip, vae


@pytest.fixture(scope="session")
def qwen_pipeline(qwen_models):
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

    from diffusion.families.qwenimage.loading import config

    pipeline = QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**{k: v for k, v in config()["scheduler"].items()
                                                     if not k.startswith("_")}),
        vae=qwen_models.vae, text_encoder=qwen_models.text_encoder, tokenizer=tiny_tokenizer(),
        transformer=qwen_models.transformer)
    # the pipeline drops the system turn by a count of Qwen's real tokens (34); the tiny tokenizer's count differs
    prefix = settings()["prompt_template"].split("{}")[0]
    pipeline.prompt_template_encode_start_idx = len(pipeline.tokenizer(prefix).input_ids)
    own_storage(pipeline.transformer, pipeline.vae, pipeline.text_encoder)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _image(model, clip, vae, cfg=1.0, negative=""):
    positive = CLIPTextEncode().encode(clip, PROMPT)[0]
    negative = CLIPTextEncode().encode(clip, negative)[0]
    (latent,) = EmptySD3LatentImage().generate(SIZE, SIZE, 1)
    (samples,) = KSampler().sample(model, SEED, STEPS, cfg, "euler", "diffusers", positive, negative, latent)
    return VAEDecode().decode(vae, samples)[0].numpy()


def test_txt2img_matches_qwen_image_pipeline(qwen_image, qwen_pipeline):
    image = _image(*qwen_image)
    expected = qwen_pipeline(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, true_cfg_scale=1.0,
                             generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    assert image.shape == (1, SIZE, SIZE, 3)
    assert np.abs(image - expected).max() <= TOLERANCE


def test_text_encoding_drops_the_template_as_comfyui_does(qwen_image, qwen_pipeline):
    clip = qwen_image[1]
    ((embeddings, options),) = CLIPTextEncode().encode(clip, PROMPT)[0]
    expected, mask = qwen_pipeline.encode_prompt(PROMPT, device=torch.device("cpu"))
    assert embeddings.shape == expected.shape and options[CAPTION_LENGTH] == embeddings.shape[1]
    assert torch.allclose(embeddings, expected.float(), atol=1e-5) and (mask is None or bool(mask.all()))
    tokens = clip.tokenize(PROMPT)["qwen25_7b"][0]
    ids = [token for token, _ in tokens]
    assert ids[template_end(ids, clip.tokenizer):] == clip.tokenizer(
        PROMPT + "<|im_end|>\n<|im_start|>assistant\n").input_ids
    # a prompt that is a whole template of the user's own is encoded as it is, its system turn dropped alike
    own = "<|im_start|>system\nDraw.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    ((own_embeddings, _),) = CLIPTextEncode().encode(clip, own)[0]
    assert own_embeddings.shape[1] == len(clip.tokenizer("hi<|im_end|>\n").input_ids)


def test_captions_of_different_lengths_are_masked_like_padding(qwen_image):
    """Two rows in one call, the shorter caption repeated to the longer's length and masked past its own end,
    give what each row gives alone."""
    model = qwen_image[0]
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 16, 4, 6, generator=generator)
    short, long = torch.randn(1, 3, 256, generator=generator), torch.randn(1, 6, 256, generator=generator)
    time = torch.tensor(0.6)
    together = QWEN_IMAGE_SAMPLING.network_output(
        model.network, latents, time, torch.cat([short.repeat(1, 2, 1), long]),
        {CAPTION_LENGTH: [3, 6]})
    alone = [QWEN_IMAGE_SAMPLING.network_output(model.network, latents[i:i + 1], time, caption, {})
             for i, caption in enumerate((short, long))]
    assert torch.allclose(together, torch.cat(alone), atol=1e-5)


def test_vae_keeps_image_shapes(qwen_image, qwen_pipeline):
    vae = qwen_image[2]
    assert isinstance(vae, FrameVae) and vae.downscale == 8 and vae.latent_channels == 16
    pixels = torch.rand(2, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(0))
    (latent,) = VAEEncode().encode(vae, pixels)
    assert latent["samples"].shape == (2, 16, SIZE // 8, SIZE // 8)
    frames = pixels.movedim(-1, 1).unsqueeze(2) * 2 - 1
    expected = qwen_pipeline.vae.encode(frames).latent_dist.mode()[:, :, 0]
    assert torch.allclose(latent["samples"], expected, atol=1e-5)
    decoded = VAEDecode().decode(vae, latent)[0]
    assert torch.equal(decoded, VAEDecode().decode(vae, {"samples": latent["samples"].unsqueeze(2)})[0])
    tiled = vae.decode(latent["samples"], force_tiling=True, tile_size=32)  # diffusers' tiles, a quarter overlap
    assert not vae.autoencoder.use_tiling and vae.autoencoder.tile_sample_min_height == 256  # restored
    vae.autoencoder.enable_tiling(32, 32, 24, 24)
    try:
        with torch.inference_mode():
            expected = vae.autoencoder.decode(latent["samples"].unsqueeze(2)).sample[:, :, 0]
    finally:
        vae.autoencoder.disable_tiling()
        vae.autoencoder.tile_sample_min_height = vae.autoencoder.tile_sample_min_width = 256
        vae.autoencoder.tile_sample_stride_height = vae.autoencoder.tile_sample_stride_width = 192
    assert torch.allclose(tiled, (expected / 2 + 0.5).clamp(0, 1).movedim(1, -1), atol=1e-6)
    assert (tiled - decoded).abs().max() > 1e-3  # tiled indeed


def test_files_of_other_kinds_are_refused_by_name(qwen_models, node_env, tiny_models_dir):
    tiny_flux.make_flux_demo_models(tiny_models_dir)
    with pytest.raises(ValueError, match="clip_name: type qwen_image runs Qwen-Image, whose text encoder is "
                                         "Qwen2.5-VL; tiny-flux-t5.safetensors holds a T5 text encoder"):
        CLIPLoader().load_clip(tiny_flux.DEMO_FLUX_T5, "qwen_image")
    (model,) = UNETLoader().load_unet(tiny_qwen.DEMO_QWEN_IMAGE_TRANSFORMER, "default")
    assert model.family == "qwenimage"


def test_diffusers_folder_gives_the_same_image(node_env, qwen_image, qwen_pipeline, tmp_path):
    from diffusion import loading

    folder = node_env.folders.model_dir("diffusers") / "tiny-qwen-image"
    qwen_pipeline.save_pretrained(folder)
    try:
        model, clip, vae = loading.load_diffusers(node_env.models, folder)
        image = _image(model, clip, vae)
        assert np.abs(image - _image(*qwen_image)).max() <= TOLERANCE
    finally:
        import shutil

        shutil.rmtree(folder)


def test_shipped_qwen_image_workflow_runs(node_env, qwen_models):
    (image,) = run_workflow(node_env, json.loads((WORKFLOWS / "qwen_image_txt2img.json").read_text()), SIZE)
    assert image.size == (SIZE, SIZE)


def test_peft_lora_matches_load_lora_weights(node_env, qwen_image, qwen_pipeline):
    from safetensors.torch import save_file

    from nodes.loaders import LoraLoaderModelOnly

    generator = torch.Generator().manual_seed(12)
    state = {}
    for name, module in qwen_image[0].network.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith((".attn.to_q", ".attn.add_v_proj")):
            state[f"transformer.{name}.lora_A.weight"] = torch.randn(4, module.in_features, generator=generator) * 0.3
            state[f"transformer.{name}.lora_B.weight"] = torch.randn(module.out_features, 4, generator=generator) * 0.3
    path = node_env.folders.model_dir("loras") / "tiny-qwen-image-lora.safetensors"
    save_file(state, str(path))
    try:
        model, clip, vae = qwen_image
        (patched,) = LoraLoaderModelOnly().load_lora_model_only(model, path.name, 0.7)
        image = _image(patched, clip, vae)
        qwen_pipeline.load_lora_weights(dict(state), adapter_name="tiny")
        qwen_pipeline.set_adapters(["tiny"], [0.7])
        expected = qwen_pipeline(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, true_cfg_scale=1.0,
                                 generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
        assert np.abs(image - expected).max() <= TOLERANCE
        assert np.abs(image - _image(model, clip, vae)).max() > 1e-3
    finally:
        qwen_pipeline.unload_lora_weights()
        path.unlink()


EDIT_SIZE = 64  # the reference images' size: both engines then resize nothing (see the fixture below)


@pytest.fixture
def edit_pipelines(qwen_models, qwen_pipeline, monkeypatch):
    """QwenImageEditPipeline and QwenImageEditPlusPipeline on the tiny models, their image sizes (a megapixel for
    the VAE, 384x384 for Qwen2.5-VL in Plus) and the nodes' set to the test image's size, so that neither engine
    resizes (their filters differ: PIL's Lanczos there, area averaging in ComfyUI's nodes)."""
    from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit, pipeline_qwenimage_edit_plus
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    from diffusion.families.qwenimage.text_encoding import EDIT_TEMPLATE, image_processor
    from nodes import qwen_image as qwen_nodes

    area = EDIT_SIZE * EDIT_SIZE
    monkeypatch.setattr(qwen_nodes, "REFERENCE_AREA", area)
    monkeypatch.setattr(qwen_nodes, "VISION_AREA", area)
    monkeypatch.setattr(pipeline_qwenimage_edit, "calculate_dimensions", lambda _, ratio: (EDIT_SIZE, EDIT_SIZE, None))
    monkeypatch.setattr(pipeline_qwenimage_edit_plus, "CONDITION_IMAGE_SIZE", area)
    monkeypatch.setattr(pipeline_qwenimage_edit_plus, "VAE_IMAGE_SIZE", area)
    # the processor's video part needs torchvision, which does not install beside this torch; images need none of it
    monkeypatch.setattr(ProcessorMixin, "check_argument_for_proper_class", lambda self, name, argument: None)
    processor = Qwen2VLProcessor(image_processor=image_processor(qwen_models.text_encoder.config.vision_config),
                                 tokenizer=qwen_pipeline.tokenizer)
    parts = dict(scheduler=qwen_pipeline.scheduler, vae=qwen_models.vae, text_encoder=qwen_models.text_encoder,
                 tokenizer=qwen_pipeline.tokenizer, processor=processor, transformer=qwen_models.transformer)
    pipelines = QwenImageEditPipeline(**parts), QwenImageEditPlusPipeline(**parts)
    prefix = len(qwen_pipeline.tokenizer(EDIT_TEMPLATE.split("<|vision_start|>")[0]).input_ids)  # real Qwen: 64
    for pipeline in pipelines:
        pipeline.prompt_template_encode_start_idx = prefix
        pipeline.set_progress_bar_config(disable=True)
    return pipelines


def _pictures(count):
    from PIL import Image

    generator = torch.Generator().manual_seed(21)
    arrays = [(torch.rand(EDIT_SIZE, EDIT_SIZE, 3, generator=generator) * 255).round().to(torch.uint8)
              for _ in range(count)]
    return [Image.fromarray(array.numpy()) for array in arrays], [(array.float() / 255)[None] for array in arrays]


def _edited(model, positive, vae):
    from nodes.conditioning_ops import ConditioningZeroOut

    negative = ConditioningZeroOut().zero_out(positive)[0]
    (latent,) = EmptySD3LatentImage().generate(EDIT_SIZE, EDIT_SIZE, 1)
    (samples,) = KSampler().sample(model, SEED, STEPS, 1.0, "euler", "diffusers", positive, negative, latent)
    return VAEDecode().decode(vae, samples)[0].numpy()


EDIT = "make the sky purple"


def test_edit_matches_qwen_image_edit_pipeline(qwen_image, edit_pipelines):
    from nodes.qwen_image import TextEncodeQwenImageEdit

    model, clip, vae = qwen_image
    (picture,), (image,) = _pictures(1)
    (positive,) = TextEncodeQwenImageEdit().encode(clip, EDIT, vae, image)
    ((_, options),) = positive
    assert [reference.shape for reference in options["reference_latents"]] == [(1, 16, EDIT_SIZE // 8,
                                                                                EDIT_SIZE // 8)]
    expected = edit_pipelines[0](image=picture, prompt=EDIT, height=EDIT_SIZE, width=EDIT_SIZE,
                                 num_inference_steps=STEPS, true_cfg_scale=1.0,
                                 generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    image = _edited(model, positive, vae)
    assert np.abs(image - expected).max() <= TOLERANCE
    without_reference = _edited(model, TextEncodeQwenImageEdit().encode(clip, EDIT, None, image=None)[0], vae)
    assert np.abs(image - without_reference).max() > 1e-3  # the image and its latent do take part


def test_edit_plus_with_two_pictures_matches_qwen_image_edit_plus_pipeline(qwen_image, edit_pipelines):
    from nodes.qwen_image import TextEncodeQwenImageEditPlus

    model, clip, vae = qwen_image
    pictures, images = _pictures(2)
    (positive,) = TextEncodeQwenImageEditPlus().encode(clip, "put the cat of picture 2 in picture 1", vae, *images)
    assert len(positive[0][1]["reference_latents"]) == 2
    expected = edit_pipelines[1](image=pictures, prompt="put the cat of picture 2 in picture 1", height=EDIT_SIZE,
                                 width=EDIT_SIZE, num_inference_steps=STEPS, true_cfg_scale=1.0,
                                 generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    assert np.abs(_edited(model, positive, vae) - expected).max() <= TOLERANCE


def test_edit_nodes_refuse_other_clips_and_scale_to_their_area(node_env, qwen_models, tiny_models_dir):
    from nodes.qwen_image import TextEncodeQwenImageEdit, scaled_to_area

    tiny_flux.make_flux_demo_models(tiny_models_dir)
    (t5,) = CLIPLoader().load_clip(tiny_flux.DEMO_FLUX_T5, "chroma")
    with pytest.raises(ValueError, match="clip: TextEncodeQwenImageEdit needs Qwen-Image's CLIP"):
        TextEncodeQwenImageEdit().encode(t5, EDIT)
    assert scaled_to_area(torch.rand(1, 500, 1000, 3), 1024 * 1024).shape == (1, 724, 1448, 3)
    assert scaled_to_area(torch.rand(1, 500, 1000, 3), 1024 * 1024, multiple=8).shape == (1, 728, 1448, 3)


def test_shipped_qwen_image_edit_workflow_edits_the_loaded_image(node_env, qwen_models, monkeypatch):
    """Modelled on ComfyUI's Qwen-Image-Edit template: the image scaled to a megapixel, encoded as the starting
    latent, and given with the instruction (and with the empty negative) to TextEncodeQwenImageEdit; CFGNorm on the
    model. It runs end to end, small (the scale to a megapixel replaced by one to the test size)."""
    from PIL import Image

    from nodes import qwen_image as qwen_nodes

    monkeypatch.setattr(qwen_nodes, "REFERENCE_AREA", SIZE * SIZE)
    prompt = json.loads((WORKFLOWS / "qwen_image_edit.json").read_text())
    assert prompt["7"]["class_type"] == "TextEncodeQwenImageEdit" and prompt["11"]["inputs"]["latent_image"] == [
        "6", 0]
    Image.new("RGB", (40, 24), (200, 120, 40)).save(node_env.folders.input_dir / "example.png")
    prompt["5"] = {"class_type": "ImageScale", "inputs": {"image": ["4", 0], "upscale_method": "bilinear",
                                                          "width": SIZE, "height": SIZE, "crop": "center"}}
    (image,) = run_workflow(node_env, prompt, SIZE)
    assert image.size == (SIZE, SIZE)


def test_fp8_scaled_text_encoder_file_loads(node_env, qwen_image, tiny_models_dir):
    """ComfyUI's Qwen-Image template loads `qwen_2.5_vl_7b_fp8_scaled.safetensors`: the language model's linear
    weights in fp8, each with its scale. It encodes as the full-precision file nearly does."""
    from safetensors.torch import load_file, save_file

    folder = tiny_models_dir / "text_encoders"
    state = load_file(str(folder / tiny_qwen.DEMO_QWEN_IMAGE_TEXT_ENCODER))
    scaled = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for key, value in state.items():
        if key.startswith("model.layers.") and key.endswith("proj.weight"):
            scale = value.abs().max() / 448
            scaled[key] = (value / scale).to(torch.float8_e4m3fn)
            scaled[key.replace(".weight", ".scale_weight")] = scale
        else:
            scaled[key] = value
    save_file(scaled, str(folder / "tiny-qwen2.5-vl-fp8-scaled.safetensors"))
    try:
        (clip,) = CLIPLoader().load_clip("tiny-qwen2.5-vl-fp8-scaled.safetensors", "qwen_image")
        ((fp8, _),) = CLIPTextEncode().encode(clip, PROMPT)[0]
        ((full, _),) = CLIPTextEncode().encode(qwen_image[1], PROMPT)[0]
        assert fp8.shape == full.shape and (fp8 - full).abs().max() > 0  # rounded to fp8 indeed
        assert torch.nn.functional.cosine_similarity(fp8.flatten(), full.flatten(), dim=0) > 0.99
    finally:
        (folder / "tiny-qwen2.5-vl-fp8-scaled.safetensors").unlink()


def test_edit_2511_references_at_time_zero_match_zero_cond_t(qwen_image, qwen_models, edit_pipelines):
    """Qwen-Image-Edit 2511's workflows number references "index_timestep_zero": the pipeline's transformer with
    `zero_cond_t` (the same weights) gives the same image; the shared network is left as it was."""
    from diffusers import QwenImageEditPlusPipeline, QwenImageTransformer2DModel

    from nodes.flux import FluxKontextMultiReferenceLatentMethod
    from nodes.qwen_image import TextEncodeQwenImageEditPlus

    model, clip, vae = qwen_image
    pictures, images = _pictures(1)
    (positive,) = TextEncodeQwenImageEditPlus().encode(clip, EDIT, vae, images[0])
    (positive,) = FluxKontextMultiReferenceLatentMethod().append(positive, "index_timestep_zero")
    zero_cond = QwenImageTransformer2DModel(**{**qwen_models.transformer.config, "zero_cond_t": True}).eval()
    zero_cond.load_state_dict(qwen_models.transformer.state_dict())
    pipeline = QwenImageEditPlusPipeline(**{**edit_pipelines[1].components, "transformer": zero_cond})
    pipeline.prompt_template_encode_start_idx = edit_pipelines[1].prompt_template_encode_start_idx
    pipeline.set_progress_bar_config(disable=True)
    expected = pipeline(image=pictures, prompt=EDIT, height=EDIT_SIZE, width=EDIT_SIZE, num_inference_steps=STEPS,
                        true_cfg_scale=1.0, generator=torch.Generator("cpu").manual_seed(SEED),
                        output_type="np").images
    image = _edited(model, positive, vae)
    assert np.abs(image - expected).max() <= TOLERANCE
    assert not model.network.zero_cond_t and not model.network.transformer_blocks[0].zero_cond_t
    (indexed,) = FluxKontextMultiReferenceLatentMethod().append(positive, "index")
    assert np.abs(image - _edited(model, indexed, vae)).max() > 5 * TOLERANCE  # time zero does change the result
    (offset,) = FluxKontextMultiReferenceLatentMethod().append(positive, "offset")
    with pytest.raises(ValueError, match="numbered by 'offset' are not supported by Qwen-Image"):
        _edited(model, offset, vae)


def test_qwen25_vl_is_read_on_first_encode_and_freed_by_the_policy(qwen_models, tiny_models_dir, tmp_path):
    """The 7B text encoder is the big one here: read when a prompt is first encoded, freed after CLIPTextEncode and
    after the edit node under the "always" policy, read again with identical results."""
    from diffusion.lazy_module import LazyModule
    from diffusion.manager import ModelManager
    from nodes.environment import Folders, NodeEnvironment, use_environment
    from nodes.qwen_image import TextEncodeQwenImageEdit

    folders = Folders(tiny_models_dir, tmp_path / "input", tmp_path / "output", tmp_path / "temp", tmp_path / "user")
    folders.create()
    environment = NodeEnvironment(folders, torch.device("cpu"), torch.float32,
                                  ModelManager(torch.device("cpu"), torch.float32), text_encoder_offload="always")
    with use_environment(environment):
        (clip,) = CLIPLoader().load_clip(tiny_qwen.DEMO_QWEN_IMAGE_TEXT_ENCODER, "qwen_image")
        assert isinstance(clip.model, LazyModule) and not clip.model.loaded and clip.model.loads == 0
        first = CLIPTextEncode().encode(clip, PROMPT)[0]
        assert not clip.model.loaded and clip.model.loads == 1
        TextEncodeQwenImageEdit().encode(clip, EDIT, None, _pictures(1)[1][0])
        assert not clip.model.loaded and clip.model.loads == 2
        second = CLIPTextEncode().encode(clip, PROMPT)[0]
    assert torch.equal(first[0][0], second[0][0])
