"""FLUX through the nodes: parity with diffusers' FluxPipeline (with and without LoRAs, stacked), the single-file
loaders giving the same model as the diffusers folder, family detection errors, and the shipped workflows."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import nodes
from diffusion.families.flux import demo as tiny_flux
from diffusion.families.flux import loading as flux_loading
from engine.cache import OutputCache
from engine.executor import Executor
from engine.registry import NodeRegistry
from engine.validation import validate_prompt
from nodes.conditioning import CLIPSetLastLayer, CLIPTextEncode
from nodes.flux import CLIPTextEncodeFlux, EmptyFluxLatentImage, EmptySD3LatentImage, FluxGuidance
from nodes.latent import VAEDecode, VAEEncode
from nodes.loaders import (
    CheckpointLoaderSimple,
    DiffusersLoader,
    DualCLIPLoader,
    LoraLoader,
    LoraLoaderModelOnly,
    UNETLoader,
    VAELoader,
)
from nodes.sampling import KSampler, KSamplerAdvanced
from tests.nodes.conftest import dequantized_gguf, own_storage, validation_errors

TOLERANCE = 1e-4
PROMPT = "a photo of an astronaut riding a horse on mars"
SEED = 1234
SIZE = 32
STEPS = 4
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture(scope="session")
def flux_models(tiny_models_dir):
    """The tiny FLUX models (diffusers folder, single files, two LoRAs) in the shared tiny models folder."""
    return tiny_flux.make_flux_demo_models(tiny_models_dir)


@pytest.fixture(scope="session")
def flux_pipeline(flux_models, tiny_models_dir):
    from diffusers import FluxPipeline

    pipeline = FluxPipeline.from_pretrained(tiny_models_dir / "diffusers" / tiny_flux.DEMO_FLUX_DIFFUSERS,
                                            local_files_only=True)
    own_storage(pipeline.transformer, pipeline.vae, pipeline.text_encoder, pipeline.text_encoder_2)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture
def flux(node_env, flux_models):
    return DiffusersLoader().load_checkpoint(tiny_flux.DEMO_FLUX_DIFFUSERS)


def _image(model, clip, vae, cfg=1.0, guidance=3.5, negative_text="", steps=STEPS):
    positive = FluxGuidance().append(CLIPTextEncode().encode(clip, PROMPT)[0], guidance)[0]
    negative = CLIPTextEncode().encode(clip, negative_text)[0]
    (latent,) = EmptySD3LatentImage().generate(SIZE, SIZE, 1)
    (samples,) = KSampler().sample(model, SEED, steps, cfg, "euler", "diffusers", positive, negative, latent)
    return VAEDecode().decode(vae, samples)[0].numpy()


def _lora_image_difference(model, reference, clip, vae) -> float:
    """How far apart the images of two MODELs are with the demo LoRA applied to each (strength 0.8)."""
    lora = (tiny_flux.DEMO_FLUX_LORA, 0.8)
    return np.abs(_image(LoraLoaderModelOnly().load_lora_model_only(model, *lora)[0], clip, vae)
                  - _image(LoraLoaderModelOnly().load_lora_model_only(reference, *lora)[0], clip, vae)).max()


def _reference(pipeline, **options):
    return pipeline(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                    guidance_scale=options.pop("guidance", 3.5), generator=torch.Generator("cpu").manual_seed(SEED),
                    output_type="np", **options).images


def test_txt2img_matches_flux_pipeline(flux, flux_pipeline):
    image = _image(*flux)
    assert image.shape == (1, SIZE, SIZE, 3)
    assert np.abs(image - _reference(flux_pipeline)).max() <= TOLERANCE
    other_guidance = _image(*flux, guidance=1.5)
    assert np.abs(other_guidance - _reference(flux_pipeline, guidance=1.5)).max() <= TOLERANCE
    assert np.abs(other_guidance - image).max() > 1e-3


def test_cfg_above_one_is_flux_true_cfg(flux, flux_pipeline):
    image = _image(*flux, cfg=2.5, negative_text="blurry")
    expected = _reference(flux_pipeline, negative_prompt="blurry", true_cfg_scale=2.5)
    assert np.abs(image - expected).max() <= TOLERANCE


def test_denoise_matches_flux_img2img_pipeline_strength(flux, flux_pipeline):
    from diffusers import FluxImg2ImgPipeline

    model, clip, vae = flux
    ramp = torch.linspace(0, 1, SIZE)
    pixels = torch.stack([ramp[None, :].expand(SIZE, SIZE), ramp[:, None].expand(SIZE, SIZE),
                          torch.full((SIZE, SIZE), 0.4)], dim=-1)[None]
    (latent,) = VAEEncode().encode(vae, pixels)
    positive = FluxGuidance().append(CLIPTextEncode().encode(clip, PROMPT)[0], 3.5)[0]
    (samples,) = KSampler().sample(model, SEED, 3, 1.0, "euler", "diffusers", positive, positive, latent, 0.6)
    image = VAEDecode().decode(vae, samples)[0].numpy()
    img2img = FluxImg2ImgPipeline(**flux_pipeline.components)
    img2img.set_progress_bar_config(disable=True)
    # 16-channel images are latents to the pipeline, in model space (LATENT holds raw ones)
    expected = img2img(PROMPT, image=model.latent_format.process_in(latent["samples"]), strength=0.6, height=SIZE,
                       width=SIZE, num_inference_steps=5,
                       guidance_scale=3.5, generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    assert np.abs(image - expected).max() <= TOLERANCE


def test_single_files_give_the_diffusers_folder_model(node_env, flux, flux_pipeline):
    (model,) = UNETLoader().load_unet(tiny_flux.DEMO_FLUX_TRANSFORMER)
    (clip,) = DualCLIPLoader().load_clip(tiny_flux.DEMO_FLUX_T5, tiny_flux.DEMO_FLUX_CLIP_L, "flux")
    (vae,) = VAELoader().load_vae(tiny_flux.DEMO_FLUX_VAE)
    statistics = flux_loading.config()["vae"]
    assert vae.scaling_factor == statistics["scaling_factor"] and vae.shift_factor == statistics["shift_factor"]
    assert np.abs(_image(model, clip, vae) - _reference(flux_pipeline)).max() <= TOLERANCE


def test_t5_file_with_t5s_real_vocabulary_uses_t5s_tokenizer(node_env, flux, flux_pipeline):
    """A T5 file with T5-XXL's 32,128 embedding rows (as ComfyUI's t5xxl files) tokenizes with T5 v1.1's own
    tokenizer, shipped with the project: the image is FluxPipeline's with that tokenizer and encoder."""
    from diffusers import FluxPipeline
    from transformers import T5Config, T5EncoderModel

    from diffusion.encoders.t5 import t5_tokenizer

    torch.manual_seed(7)
    t5 = T5EncoderModel(T5Config(
        vocab_size=32_128, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4, relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)).eval()
    state = {key: value for key, value in t5.state_dict().items() if key != "encoder.embed_tokens.weight"}
    save_file(state, str(node_env.folders.model_dir("text_encoders") / "t5xxl-layout.safetensors"))
    model, _, vae = flux
    (clip,) = DualCLIPLoader().load_clip("t5xxl-layout.safetensors", tiny_flux.DEMO_FLUX_CLIP_L, "flux")
    pipeline = FluxPipeline(**{**flux_pipeline.components, "text_encoder_2": t5, "tokenizer_2": t5_tokenizer()})
    pipeline.set_progress_bar_config(disable=True)
    assert np.abs(_image(model, clip, vae) - _reference(pipeline)).max() <= TOLERANCE


def test_schnell_style_model_without_guidance_embedding_matches(node_env, tiny_models_dir):
    from diffusers import FluxPipeline

    folder = tiny_models_dir / "diffusers" / "tiny-flux-schnell"
    if not folder.exists():
        models = tiny_flux.build_tiny_flux(seed=5, guidance_embeds=False)
        tiny_flux.write_flux_diffusers_folder(models, folder, tiny_flux.SCHNELL_SCHEDULER)
    model, clip, vae = DiffusersLoader().load_checkpoint("tiny-flux-schnell")
    assert not model.network.config.guidance_embeds
    pipeline = FluxPipeline.from_pretrained(folder, local_files_only=True)
    own_storage(pipeline.transformer, pipeline.vae, pipeline.text_encoder, pipeline.text_encoder_2)
    pipeline.set_progress_bar_config(disable=True)
    image = _image(model, clip, vae, guidance=7.0)
    assert np.abs(image - _reference(pipeline, guidance=0.0)).max() <= TOLERANCE


def test_clip_text_encode_flux_and_empty_latents(flux):
    _, clip, _ = flux
    (both,) = CLIPTextEncodeFlux().encode(clip, PROMPT, PROMPT, 2.0)
    (plain,) = CLIPTextEncode().encode(clip, PROMPT)
    assert torch.equal(both[0][0], plain[0][0]) and both[0][1]["guidance"] == 2.0
    (split,) = CLIPTextEncodeFlux().encode(clip, PROMPT, "a red barn", 2.0)
    assert torch.equal(split[0][1]["pooled_output"], plain[0][1]["pooled_output"])
    assert not torch.equal(split[0][0], plain[0][0])
    (same_clip,) = CLIPSetLastLayer().set_last_layer(clip, -2)
    assert torch.equal(CLIPTextEncode().encode(same_clip, PROMPT)[0][0][0], plain[0][0])
    assert EmptyFluxLatentImage().generate(48, 32, 2)[0]["samples"].shape == (2, 16, 4, 6)
    errors = validation_errors({"1": {"class_type": "EmptyFluxLatentImage",
                                      "inputs": {"width": 40, "height": 32, "batch_size": 1}}})
    assert [(error["extra_info"]["input_name"], error["message"]) for error in errors["1"]] == [
        ("width", "Value 40 is not a multiple of 16")]


def test_kohya_lora_matches_load_lora_weights(flux, flux_pipeline, tiny_models_dir):
    model, clip, vae = flux
    image = _image(*LoraLoader().load_lora(model, clip, tiny_flux.DEMO_FLUX_LORA, 0.8, 0.6), vae)
    flux_pipeline.load_lora_weights(str(tiny_models_dir / "loras" / tiny_flux.DEMO_FLUX_LORA), adapter_name="realism")
    try:
        flux_pipeline.set_adapters(["realism"], [{"transformer": 0.8, "text_encoder": 0.6}])
        expected = _reference(flux_pipeline)
    finally:
        flux_pipeline.unload_lora_weights()
    assert np.abs(image - expected).max() <= TOLERANCE
    assert np.abs(image - _image(*flux)).max() > 1e-2


def test_two_stacked_loras_match_two_adapters(flux, flux_pipeline, tiny_models_dir):
    model, clip, vae = flux
    model, clip = LoraLoader().load_lora(model, clip, tiny_flux.DEMO_FLUX_LORA, 0.7, 1.0)
    (model,) = LoraLoaderModelOnly().load_lora_model_only(model, tiny_flux.DEMO_FLUX_PEFT_LORA, 0.5)
    image = _image(model, clip, vae)
    loras = tiny_models_dir / "loras"
    flux_pipeline.load_lora_weights(str(loras / tiny_flux.DEMO_FLUX_LORA), adapter_name="realism")
    flux_pipeline.load_lora_weights(str(loras / tiny_flux.DEMO_FLUX_PEFT_LORA), adapter_name="style")
    try:
        flux_pipeline.set_adapters(["realism", "style"], [{"transformer": 0.7, "text_encoder": 1.0}, 0.5])
        expected = _reference(flux_pipeline)
    finally:
        flux_pipeline.unload_lora_weights()
    assert np.abs(image - expected).max() <= TOLERANCE


def test_lora_leaves_the_cached_base_untouched(flux):
    model, clip, vae = flux
    before = {key: value.clone() for key, value in model.network.state_dict().items()}
    base = _image(model, clip, vae, steps=2)
    _image(*LoraLoader().load_lora(model, clip, tiny_flux.DEMO_FLUX_LORA, 1.0, 1.0), vae, steps=2)
    assert np.array_equal(_image(model, clip, vae, steps=2), base)
    after = model.network.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[key], before[key]) for key in after)


def test_advanced_sampler_split_matches_one_pass(flux):
    model, clip, vae = flux
    positive = FluxGuidance().append(CLIPTextEncode().encode(clip, PROMPT)[0], 3.5)[0]
    (latent,) = EmptySD3LatentImage().generate(SIZE, SIZE, 1)
    whole = KSampler().sample(model, SEED, STEPS, 1.0, "euler", "diffusers", positive, positive, latent)[0]
    sampler = KSamplerAdvanced()
    first = sampler.sample(model, "enable", SEED, STEPS, 1.0, "euler", "diffusers", positive, positive, latent, 0, 2,
                           "enable")[0]
    second = sampler.sample(model, "disable", SEED, STEPS, 1.0, "euler", "diffusers", positive, positive, first, 2,
                            STEPS, "disable")[0]
    assert torch.allclose(second["samples"], whole["samples"], atol=1e-5)
    clean = sampler.sample(model, "enable", SEED, STEPS, 1.0, "euler", "diffusers", positive, positive, latent, 0, 2,
                           "disable")[0]
    assert torch.isfinite(clean["samples"]).all() and not torch.allclose(clean["samples"], first["samples"])


def test_unsupported_sampler_is_a_clear_error(flux):
    model, clip, _ = flux
    positive = CLIPTextEncode().encode(clip, PROMPT)[0]
    (latent,) = EmptySD3LatentImage().generate(SIZE, SIZE, 1)
    with pytest.raises(ValueError, match="sampler_name: 'dpmpp_2m' is not available for FLUX"):
        KSampler().sample(model, SEED, 2, 1.0, "dpmpp_2m", "diffusers", positive, positive, latent)


def test_family_detection_errors_name_what_was_found(node_env, flux_models, sd1):
    from diffusion.families.sd.demo import DEMO_CHECKPOINT

    unet_folder = node_env.folders.model_dir("diffusion_models")
    sd_unet = {key: value.contiguous() for key, value in sd1[0].network.state_dict().items()}
    save_file(sd_unet, str(unet_folder / "sd-unet.safetensors"))
    with pytest.raises(ValueError, match="unet_name: this file holds a UNet .* not a transformer UNETLoader runs "
                                         r"\(FLUX.2, Chroma, FLUX, "):
        UNETLoader().load_unet("sd-unet.safetensors")
    with pytest.raises(ValueError, match="type flux needs one CLIP-L and one T5 encoder file; found clip_name1: clip, "
                                         "clip_name2: clip"):
        DualCLIPLoader().load_clip(tiny_flux.DEMO_FLUX_CLIP_L, tiny_flux.DEMO_FLUX_CLIP_L, "flux")
    with pytest.raises(ValueError, match="bare diffusers/transformer model"):
        from diffusion.families.sd.detection import detect_version

        detect_version(flux_models.transformer.state_dict())
    from diffusion.families.sd.detection import UNET

    tiny_bfl = {"double_blocks.0.img_attn.qkv.weight": torch.zeros(192, 64), "img_in.weight": torch.zeros(64, 64)}
    save_file(tiny_bfl, str(unet_folder / "tiny-bfl.safetensors"))
    with pytest.raises(ValueError, match="unet_name: FLUX transformer tensors incomplete or mis-shaped"):
        UNETLoader().load_unet("tiny-bfl.safetensors")
    all_in_one = node_env.folders.model_dir("checkpoints") / "flux-all-in-one.safetensors"
    save_file({UNET + key: value for key, value in tiny_bfl.items()}, str(all_in_one))
    with pytest.raises(ValueError, match="ckpt_name: .*a FLUX transformer \\(load it with UNETLoader\\)"):
        CheckpointLoaderSimple().load_checkpoint("flux-all-in-one.safetensors")
    for path in (unet_folder / "sd-unet.safetensors", unet_folder / "tiny-bfl.safetensors", all_in_one):
        path.unlink()
    assert DEMO_CHECKPOINT  # the SD1 checkpoint stays loadable beside the FLUX files


def _run_workflow(node_env, name):
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    prompt = json.loads((WORKFLOWS / f"{name}.json").read_text())
    for node in prompt.values():
        if node["class_type"] == "EmptySD3LatentImage":
            node["inputs"].update(width=SIZE, height=SIZE)
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = STEPS
    validation = validate_prompt(prompt, registry)
    assert validation.ok and not validation.node_errors, validation.to_response()
    result = Executor(registry, OutputCache()).execute(validation.prompt, "p1", {}, validation.outputs)
    assert result.success, result.error
    (saved,) = [entry for output in result.outputs.values() for entry in output["images"]]
    return np.asarray(Image.open(node_env.folders.output_dir / saved["subfolder"] / saved["filename"]))


@pytest.mark.parametrize("name", ["flux_txt2img", "flux_realism_lora"])
def test_shipped_flux_workflows_run(node_env, flux_models, name):
    pixels = _run_workflow(node_env, name)
    assert pixels.shape == (SIZE, SIZE, 3)


def test_shipped_kontext_edit_workflow_edits_the_loaded_image(node_env, flux_models):
    """Modelled on ComfyUI's Kontext template: the image scaled to a Kontext size, encoded, given to the prompt as a
    reference latent and used as the starting latent. It runs end to end, small (a 32x32 scale in place of the
    Kontext one)."""
    prompt = json.loads((WORKFLOWS / "flux_kontext_edit.json").read_text())
    assert prompt["8"]["class_type"] == "ReferenceLatent" and prompt["11"]["inputs"]["latent_image"] == ["6", 0]
    Image.new("RGB", (40, 24), (200, 120, 40)).save(node_env.folders.input_dir / "example.png")
    prompt["5"] = {"class_type": "ImageScale", "inputs": {"image": ["4", 0], "upscale_method": "bilinear",
                                                          "width": SIZE, "height": SIZE, "crop": "center"}}
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    prompt["11"]["inputs"]["steps"] = 2
    validation = validate_prompt(prompt, registry)
    assert validation.ok, validation.to_response()
    result = Executor(registry, OutputCache()).execute(validation.prompt, "p1", {}, validation.outputs)
    assert result.success, result.error
    (saved,) = result.outputs["13"]["images"]
    assert Image.open(node_env.folders.output_dir / saved["filename"]).size == (SIZE, SIZE)


def test_shipped_fill_workflow_repaints_inside_the_mask(node_env, flux_models):
    """Modelled on ComfyUI's FLUX.1 Fill template: the image's transparent part is the mask, InpaintModelConditioning
    gives the model the masked image and the mask (and the latent its noise mask), DifferentialDiffusion on the
    model. It runs end to end, small."""
    prompt = json.loads((WORKFLOWS / "flux_fill_inpaint.json").read_text())
    image = Image.new("RGBA", (SIZE, SIZE), (200, 120, 40, 255))
    for x in range(8, 24):
        for y in range(8, 24):
            image.putpixel((x, y), (200, 120, 40, 0))
    image.save(node_env.folders.input_dir / "example.png")
    prompt["10"]["inputs"]["steps"] = 2
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    validation = validate_prompt(prompt, registry)
    assert validation.ok, validation.to_response()
    result = Executor(registry, OutputCache()).execute(validation.prompt, "p1", {}, validation.outputs)
    assert result.success, result.error
    (saved,) = result.outputs["12"]["images"]
    assert Image.open(node_env.folders.output_dir / saved["filename"]).size == (SIZE, SIZE)


def test_realism_workflow_applies_its_lora(node_env, flux_models):
    plain = json.loads((WORKFLOWS / "flux_txt2img.json").read_text())
    with_lora = json.loads((WORKFLOWS / "flux_realism_lora.json").read_text())
    assert with_lora["11"]["class_type"] == "LoraLoader"
    assert with_lora["8"]["inputs"]["model"] == ["11", 0] and with_lora["4"]["inputs"]["clip"] == ["11", 1]
    assert plain["8"]["inputs"]["cfg"] == 1.0 and plain["5"]["class_type"] == "FluxGuidance"


def test_bfl_layout_converts_back_at_any_width(flux_models):
    from diffusion.families.flux.loading import bfl_to_diffusers

    state = flux_models.transformer.state_dict()
    converted = bfl_to_diffusers({"model.diffusion_model." + key: value
                                  for key, value in tiny_flux.bfl_layout(state).items()})
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[key], state[key]) for key in state)


def test_full_width_bfl_layout_file_is_rebuilt_with_flux1_config():
    """A FLUX.1-width transformer in BFL's original layout (one block of each kind, as shapes only: meta tensors)
    goes through our converter and the shape-read config back to the same architecture, with the names and shapes
    diffusers' own converter (FLUX.1's width only) gives."""
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from diffusion.families.flux.loading import bfl_to_diffusers, build_flux_transformer

    config = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=128,
                  num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                  axes_dims_rope=(16, 56, 56))
    with torch.device("meta"):
        original = FluxTransformer2DModel(**config)
    bfl = {"model.diffusion_model." + key: value for key, value in tiny_flux.bfl_layout(original.state_dict()).items()}
    rebuilt = build_flux_transformer(bfl, "unet_name")
    assert {key: value.shape for key, value in rebuilt.state_dict().items()} == \
        {key: value.shape for key, value in original.state_dict().items()}
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(bfl))
    assert {key: value.shape for key, value in bfl_to_diffusers(bfl).items()} == \
        {key: value.shape for key, value in theirs.items()}
    assert all(rebuilt.config[key] == value or tuple(rebuilt.config[key]) == value for key, value in config.items())


def test_gguf_transformer_stays_quantized_and_gives_its_weights_image(node_env, flux, flux_models):
    """A GGUF transformer in BFL's layout (as ComfyUI-GGUF's files are) through UNETLoader: its linear layers keep
    the Q8_0 blocks (dequantized when called) and the image is that of the same weights dequantized; a LoRA
    applies."""
    from diffusion.families.flux.loading import bfl_to_diffusers
    from diffusion.gguf import write_gguf
    from diffusion.quantized import QuantizedLinear

    folder = node_env.folders.model_dir("diffusion_models")
    write_gguf(tiny_flux.bfl_layout(flux_models.transformer.state_dict()), folder / "tiny-flux-Q8_0.gguf", "flux")
    assert "tiny-flux-Q8_0.gguf" in UNETLoader.INPUT_TYPES()["required"]["unet_name"][0]
    (model,) = UNETLoader().load_unet("tiny-flux-Q8_0.gguf")
    quantized = [module for module in model.network.modules() if isinstance(module, QuantizedLinear)]
    assert len(quantized) > 10 and all(module.weight.dtype == torch.uint8 for module in quantized)
    reference = dequantized_gguf(folder / "tiny-flux-Q8_0.gguf")
    save_file({key: value.contiguous() for key, value in bfl_to_diffusers(reference).items()},
              str(folder / "tiny-flux-dequantized.safetensors"))
    (plain,) = UNETLoader().load_unet("tiny-flux-dequantized.safetensors")
    _, clip, vae = flux
    image = _image(model, clip, vae)
    assert np.abs(image - _image(plain, clip, vae)).max() <= TOLERANCE
    assert np.abs(image - _image(flux[0], clip, vae)).max() < 0.05  # Q8_0 is close to the original weights
    save_file(tiny_flux.peft_flux_lora(flux_models), str(node_env.folders.model_dir("loras") / "gguf-lora.safetensors"))
    (with_lora,) = LoraLoaderModelOnly().load_lora_model_only(model, "gguf-lora.safetensors", 1.0)
    (plain_lora,) = LoraLoaderModelOnly().load_lora_model_only(plain, "gguf-lora.safetensors", 1.0)
    assert np.abs(_image(with_lora, clip, vae) - _image(plain_lora, clip, vae)).max() <= TOLERANCE


@pytest.mark.parametrize("weight_dtype, storage", [("fp8_e4m3fn", torch.float8_e4m3fn),
                                                   ("fp8_e4m3fn_fast", torch.float8_e4m3fn),
                                                   ("fp8_e5m2", torch.float8_e5m2)])
def test_fp8_weight_dtype_stores_weights_in_fp8(node_env, flux, weight_dtype, storage):
    """UNETLoader's weight_dtype as ComfyUI offers it: the layers keep fp8 weights and compute in the model's
    precision, so the image is that of the model with those weights rounded to fp8."""
    assert weight_dtype in UNETLoader.INPUT_TYPES()["required"]["weight_dtype"][0]
    (model,) = UNETLoader().load_unet(tiny_flux.DEMO_FLUX_TRANSFORMER, weight_dtype)
    stored = model.network.state_dict()
    assert model.network.dtype == torch.float32  # the compute precision (the tests' engine runs fp32)
    assert stored["transformer_blocks.0.attn.to_q.weight"].dtype == storage
    assert sum(value.dtype == storage for value in stored.values()) > len(stored) // 2
    save_file({key: value.float().contiguous() for key, value in stored.items()},
              str(node_env.folders.model_dir("diffusion_models") / "tiny-flux-rounded.safetensors"))
    (reference,) = UNETLoader().load_unet("tiny-flux-rounded.safetensors")
    _, clip, vae = flux
    image = _image(model, clip, vae)
    assert np.abs(image - _image(reference, clip, vae)).max() <= TOLERANCE
    assert np.abs(image - _image(flux[0], clip, vae)).max() > TOLERANCE  # the rounding shows
    assert _lora_image_difference(model, reference, clip, vae) <= TOLERANCE
    (default,) = UNETLoader().load_unet(tiny_flux.DEMO_FLUX_TRANSFORMER, "default")
    assert default.network.state_dict()["transformer_blocks.0.attn.to_q.weight"].dtype == torch.float32


def test_all_in_one_checkpoint_in_comfyuis_layout_is_the_split_files_model(node_env, flux, flux_models):
    """A FLUX checkpoint as ComfyUI saves and ships them (BFL transformer under model.diffusion_model., the VAE
    under vae., CLIP-L and T5 under text_encoders.) loads through CheckpointLoaderSimple and gives the image of
    the same weights loaded from the diffusers folder; without its text encoders its CLIP is None, as ComfyUI's."""
    from diffusion.families import ldm_export

    models = flux_models
    state = {"model.diffusion_model." + key: value
             for key, value in tiny_flux.bfl_layout(models.transformer.state_dict()).items()}
    state.update(ldm_export.vae_to_ldm(models.vae.state_dict(), models.vae.config, prefix="vae."))
    state.update({"text_encoders.clip_l.transformer." + key: value
                  for key, value in models.text_encoder.state_dict().items() if not key.endswith("position_ids")})
    folder = node_env.folders.model_dir("checkpoints")
    save_file({key: value.contiguous() for key, value in state.items()}, str(folder / "flux-no-te.safetensors"))
    state.update({"text_encoders.t5xxl.transformer." + key: value
                  for key, value in models.text_encoder_2.state_dict().items()
                  if key != "encoder.embed_tokens.weight"})  # tied to shared.weight, saved once as ComfyUI does
    save_file({key: value.contiguous() for key, value in state.items()}, str(folder / "flux-aio.safetensors"))
    try:
        model, clip, vae = CheckpointLoaderSimple().load_checkpoint("flux-aio.safetensors")
        assert model.family == "flux" and model.network.config.guidance_embeds
        assert np.abs(_image(model, clip, vae) - _image(*flux)).max() <= TOLERANCE
        _, no_clip, _ = CheckpointLoaderSimple().load_checkpoint("flux-no-te.safetensors")
        assert no_clip is None
    finally:
        (folder / "flux-aio.safetensors").unlink()
        (folder / "flux-no-te.safetensors").unlink()


def test_fp8_transformer_file_loads_and_samples(node_env, flux, flux_models):
    """FLUX files people download are often fp8 (float8_e4m3fn): read, upcast to the run's dtype, and sampled; the
    image stays near the full-precision one."""
    folder = node_env.folders.model_dir("diffusion_models")
    state = {key: value.to(torch.float8_e4m3fn) if value.ndim == 2 else value
             for key, value in flux_models.transformer.state_dict().items()}
    save_file(state, str(folder / "tiny-flux-fp8.safetensors"))
    try:
        (model,) = UNETLoader().load_unet("tiny-flux-fp8.safetensors", "default")
        assert model.network.x_embedder.weight.dtype == torch.float32
        _, clip, vae = flux
        image, reference = _image(model, clip, vae), _image(*flux)
        assert 0 < np.abs(image - reference).max() < 0.1
    finally:
        (folder / "tiny-flux-fp8.safetensors").unlink()


@pytest.mark.parametrize("scaled", [False, True], ids=["fp8_e4m3fn", "fp8_scaled"])
def test_fp8_transformer_file_stays_fp8_when_memory_is_tight(node_env, flux, flux_models, monkeypatch, scaled):
    """Where the upcast model would not fit (`ModelManager.keeps_fp8_weights`, ComfyUI's rule), an fp8 file in
    BFL's layout, plain or with ComfyUI's per-tensor scales, keeps its linear layers' weights in fp8: half the
    memory, and the image of the same file upcast as it loads; a LoRA applies on top."""
    from diffusion.manager import ModelManager
    from diffusion.quantized import Fp8Weight, QuantizedLinear

    folder = node_env.folders.model_dir("diffusion_models")
    bfl = tiny_flux.bfl_layout(flux_models.transformer.state_dict())
    state = {}
    for key, value in bfl.items():
        if value.ndim != 2:
            state[key] = value
        elif scaled:
            scale = value.abs().max() / 448
            state[key], state[key.removesuffix("weight") + "scale_weight"] = (value / scale).to(torch.float8_e4m3fn), \
                scale.reshape(1)
        else:
            state[key] = value.to(torch.float8_e4m3fn)
    if scaled:
        state["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    names = ("tiny-flux-fp8-upcast.safetensors", "tiny-flux-fp8-kept.safetensors")  # the same file, cached twice
    for name in names:
        save_file({key: value.contiguous() for key, value in state.items()}, str(folder / name))
    try:
        (upcast,) = UNETLoader().load_unet(names[0], "default")
        monkeypatch.setattr(ModelManager, "keeps_fp8_weights", lambda self, parameters: True)
        (model,) = UNETLoader().load_unet(names[1], "default")
        layers = [module for module in model.network.modules() if isinstance(module, QuantizedLinear)]
        assert len(layers) > 10 and all(isinstance(layer.weight, Fp8Weight) for layer in layers)
        assert all(layer.weight.format == torch.float8_e4m3fn for layer in layers)
        assert any(layer.weight.scale != 1.0 for layer in layers) == scaled
        size = sum(value.numel() * value.element_size() for value in model.network.parameters())
        assert size < 0.3 * sum(value.numel() * value.element_size() for value in upcast.network.parameters())
        _, clip, vae = flux
        assert np.abs(_image(model, clip, vae) - _image(upcast, clip, vae)).max() <= TOLERANCE
        assert _lora_image_difference(model, upcast, clip, vae) <= TOLERANCE
    finally:
        for name in names:
            (folder / name).unlink()


def test_fp8_weight_dtype_on_an_fp8_file_keeps_its_weights_as_read(node_env, flux, flux_models):
    """weight_dtype fp8_e4m3fn on a float8_e4m3fn file (as many FLUX workflows set it): the file's fp8 weights go
    into the layers as they are read, not through a copy in the engine's precision, and the image is that of the
    same values from a full-precision file stored in fp8 the usual way; a LoRA applies."""
    from diffusion.quantized import Fp8Weight, QuantizedLinear

    folder = node_env.folders.model_dir("diffusion_models")
    bfl = tiny_flux.bfl_layout(flux_models.transformer.state_dict())
    fp8 = {key: (value.to(torch.float8_e4m3fn) if value.ndim == 2 else value).contiguous()
           for key, value in bfl.items()}
    save_file(fp8, str(folder / "tiny-flux-e4m3.safetensors"))
    save_file({key: value.float().contiguous() for key, value in fp8.items()},
              str(folder / "tiny-flux-e4m3-values.safetensors"))
    try:
        (model,) = UNETLoader().load_unet("tiny-flux-e4m3.safetensors", "fp8_e4m3fn")
        (reference,) = UNETLoader().load_unet("tiny-flux-e4m3-values.safetensors", "fp8_e4m3fn")
        layers = [module for module in model.network.modules() if isinstance(module, QuantizedLinear)]
        assert len(layers) > 10 and all(isinstance(layer.weight, Fp8Weight) for layer in layers)
        assert not any(isinstance(module, QuantizedLinear) for module in reference.network.modules())
        _, clip, vae = flux
        assert np.abs(_image(model, clip, vae) - _image(reference, clip, vae)).max() <= TOLERANCE
        assert _lora_image_difference(model, reference, clip, vae) <= TOLERANCE
    finally:
        for name in ("tiny-flux-e4m3.safetensors", "tiny-flux-e4m3-values.safetensors"):
            (folder / name).unlink()


def _kontext_inputs(flux):
    from nodes.conditioning_ops import ReferenceLatent

    model, clip, vae = flux
    ramp = torch.linspace(0, 1, SIZE)
    pixels = torch.stack([ramp[None, :].expand(SIZE, SIZE), ramp[:, None].expand(SIZE, SIZE),
                          torch.full((SIZE, SIZE), 0.4)], dim=-1)[None]
    (reference,) = VAEEncode().encode(vae, pixels)
    text = FluxGuidance().append(CLIPTextEncode().encode(clip, PROMPT)[0], 2.5)[0]
    return reference, ReferenceLatent().append(text, reference)[0]


def _kontext_reference(flux, flux_pipeline, reference, **options):
    from diffusers import FluxKontextPipeline

    kontext = FluxKontextPipeline(**flux_pipeline.components)
    kontext.set_progress_bar_config(disable=True)
    # 16-channel images are latents to the pipeline, in model space (LATENT holds raw ones)
    return kontext(image=flux[0].latent_format.process_in(reference["samples"]), prompt=PROMPT, height=SIZE,
                   width=SIZE, max_area=SIZE * SIZE, num_inference_steps=STEPS, guidance_scale=2.5, _auto_resize=False,
                   generator=torch.Generator("cpu").manual_seed(SEED), output_type="np", **options).images


def test_kontext_reference_latent_matches_flux_kontext_pipeline(flux, flux_pipeline):
    model, clip, vae = flux
    reference, positive = _kontext_inputs(flux)
    (latent,) = EmptySD3LatentImage().generate(SIZE, SIZE, 1)
    (samples,) = KSampler().sample(model, SEED, STEPS, 1.0, "euler", "diffusers", positive, positive, latent)
    image = VAEDecode().decode(vae, samples)[0].numpy()
    assert np.abs(image - _kontext_reference(flux, flux_pipeline, reference)).max() <= TOLERANCE
    plain = _image(*flux, guidance=2.5)
    assert np.abs(image - plain).max() > 1e-3  # the reference changed the picture


def test_kontext_with_true_cfg_and_a_negative_without_references(flux, flux_pipeline):
    """A negative without reference latents runs in a call of its own (ComfyUI's way: the token counts differ);
    with the same reference as the positive, both share one call. Several references are numbered by the chosen
    method."""
    from nodes.flux import FluxKontextMultiReferenceLatentMethod

    model, clip, vae = flux
    reference, positive = _kontext_inputs(flux)
    negative = CLIPTextEncode().encode(clip, "blurry")[0]
    (latent,) = EmptySD3LatentImage().generate(SIZE, SIZE, 1)
    (samples,) = KSampler().sample(model, SEED, 2, 2.0, "euler", "simple", positive, negative, latent)
    assert torch.isfinite(samples["samples"]).all()
    from nodes.conditioning_ops import ReferenceLatent

    with_reference = ReferenceLatent().append(negative, reference)[0]
    (both,) = KSampler().sample(model, SEED, 2, 2.0, "euler", "simple", positive, with_reference, latent)
    assert (both["samples"] - samples["samples"]).abs().max() > 1e-4
    from diffusion.sampling.guidance import guidance_batch

    cpu = torch.device("cpu")
    assert len(guidance_batch(positive, negative, 1, 2.0, cpu, torch.float32).groups) == 2
    assert len(guidance_batch(positive, with_reference, 1, 2.0, cpu, torch.float32).groups) == 1
    indexed = FluxKontextMultiReferenceLatentMethod().append(positive, "index")[0]
    assert indexed[0][1]["reference_latents_method"] == "index"
    assert FluxKontextMultiReferenceLatentMethod().append(positive, "uxo/uno")[0][0][1][
        "reference_latents_method"] == "uxo"
    (other,) = KSampler().sample(model, SEED, 2, 1.0, "euler", "simple", indexed, indexed, latent)
    (offset,) = KSampler().sample(model, SEED, 2, 1.0, "euler", "simple", positive, positive, latent)
    # one reference: "index" numbers it 1 as "offset" does
    torch.testing.assert_close(other["samples"], offset["samples"])


def test_reference_positions_follow_comfyuis_numbering():
    from diffusion.families.flux.sampling import reference_tokens

    wide, tall = torch.zeros(1, 16, 4, 8), torch.zeros(1, 16, 8, 4)
    _, ids = reference_tokens([wide, tall], "offset", 6, 6)
    first, second = ids[:8], ids[8:]
    assert first[:, 0].unique().tolist() == [1.0] and first[:, 1].max() == 1 and first[:, 2].max() == 3
    # the second goes beside the first along the shorter side: below it (rows from 2)
    assert second[:, 0].unique().tolist() == [1.0] and second[:, 1].min() == 2 and second[:, 2].min() == 0
    _, ids = reference_tokens([wide, tall], "index", 6, 6)
    assert ids[:8, 0].unique().tolist() == [1.0] and ids[8:, 0].unique().tolist() == [2.0]
    assert ids[:, 1].min() == 0 and ids[:, 2].min() == 0
    _, ids = reference_tokens([wide, tall], "uxo", 6, 6)
    assert ids[:, 0].unique().tolist() == [0.0]
    assert (ids[:8, 1].min(), ids[:8, 2].min()) == (3, 3)  # past the 6x6 image: from patch 3
    assert (ids[8:, 1].min(), ids[8:, 2].min()) == (5, 7)  # and past the first reference


def test_flux_fill_inpainting_matches_flux_fill_pipeline(node_env, flux, flux_pipeline, monkeypatch):
    """FLUX.1 Fill through UNETLoader and InpaintModelConditioning gives FluxFillPipeline's image. The pipeline
    samples its VAE posteriors where ComfyUI (and we) take their mode: it is made to take the mode too."""
    import diffusers.pipelines.flux.pipeline_flux_fill as fill_module
    from diffusers import FluxFillPipeline

    from nodes.inpaint import InpaintModelConditioning

    original = fill_module.retrieve_latents
    monkeypatch.setattr(fill_module, "retrieve_latents",
                        lambda output, generator=None, sample_mode="sample": original(output, sample_mode="argmax"))
    _, clip, vae = flux
    (model,) = UNETLoader().load_unet(tiny_flux.DEMO_FLUX_FILL_TRANSFORMER, "default")
    ramp = torch.linspace(0, 1, SIZE)
    pixels = torch.stack([ramp[None, :].expand(SIZE, SIZE), ramp[:, None].expand(SIZE, SIZE),
                          torch.full((SIZE, SIZE), 0.4)], dim=-1)[None]
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, 8:24, 4:20] = 1.0
    text = FluxGuidance().append(CLIPTextEncode().encode(clip, PROMPT)[0], 30.0)[0]
    positive, negative, latent = InpaintModelConditioning().encode(text, text, vae, pixels, mask, False)
    (samples,) = KSampler().sample(model, SEED, STEPS, 1.0, "euler", "diffusers", positive, negative, latent)
    image = VAEDecode().decode(vae, samples)[0].numpy()

    parts = ("scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    pipeline = FluxFillPipeline(**{name: flux_pipeline.components[name] for name in parts},
                                transformer=model.network)
    pipeline.set_progress_bar_config(disable=True)
    expected = pipeline(PROMPT, image=pixels.permute(0, 3, 1, 2), mask_image=mask[:, None], height=SIZE, width=SIZE,
                        num_inference_steps=STEPS, guidance_scale=30.0, strength=1.0,
                        generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    assert np.abs(image - expected).max() <= TOLERANCE
    # the same prompt on the ordinary FLUX model is another picture: the fill channels were used
    assert np.abs(image - _image(*flux, guidance=30.0)).max() > 1e-3
    # with the mask as the latent's noise mask too (the template's way), the latents outside it stay the image's
    positive, negative, latent = InpaintModelConditioning().encode(text, text, vae, pixels, mask, True)
    (kept,) = KSampler().sample(model, SEED, 2, 1.0, "euler", "normal", positive, negative, latent)
    torch.testing.assert_close(kept["samples"][..., 3, 3], latent["samples"][..., 3, 3])
    assert (kept["samples"][..., 1:3, 1:3] - latent["samples"][..., 1:3, 1:3]).abs().max() > 1e-2


def test_flux_depth_control_matches_flux_control_pipeline(node_env, flux, flux_pipeline, monkeypatch):
    """FLUX.1 Depth/Canny (the control image's latents beside the latents, ComfyUI's InstructPixToPixConditioning)
    gives FluxControlPipeline's image; the pipeline is made to take its VAE posterior's mode, as ComfyUI does."""
    from diffusers import FluxControlPipeline
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    from nodes.inpaint import InstructPixToPixConditioning

    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mode())
    _, clip, vae = flux
    (model,) = UNETLoader().load_unet(tiny_flux.DEMO_FLUX_DEPTH_TRANSFORMER, "default")
    ramp = torch.linspace(0, 1, SIZE)
    depth = torch.stack([ramp[None, :].expand(SIZE, SIZE)] * 3, dim=-1)[None]
    text = FluxGuidance().append(CLIPTextEncode().encode(clip, PROMPT)[0], 10.0)[0]
    positive, negative, latent = InstructPixToPixConditioning().encode(text, text, vae, depth)
    (samples,) = KSampler().sample(model, SEED, STEPS, 1.0, "euler", "diffusers", positive, negative, latent)
    image = VAEDecode().decode(vae, samples)[0].numpy()

    parts = ("scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    pipeline = FluxControlPipeline(**{name: flux_pipeline.components[name] for name in parts},
                                   transformer=model.network)
    pipeline.set_progress_bar_config(disable=True)
    # a tensor control image goes to the VAE as it is: in its -1..1 range
    expected = pipeline(PROMPT, control_image=depth.permute(0, 3, 1, 2) * 2 - 1, height=SIZE, width=SIZE,
                        num_inference_steps=STEPS, guidance_scale=10.0,
                        generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    assert np.abs(image - expected).max() <= TOLERANCE
    flat = InstructPixToPixConditioning().encode(text, text, vae, torch.full_like(depth, 0.5))
    (other,) = KSampler().sample(model, SEED, STEPS, 1.0, "euler", "diffusers", flat[0], flat[1], flat[2])
    assert (other["samples"] - samples["samples"]).abs().max() > 1e-3  # the control image steers the picture
