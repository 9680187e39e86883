"""Packs that import what real ComfyUI node packs import (tests/compat/packs/) load through the plugin loader and
their nodes run end to end, with our own nodes around them."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from app.runtime import build_executor, build_registry, load_custom_nodes
from app.settings import Settings
from diffusion.families.sd.demo import DEMO_CHECKPOINT, DEMO_LORA
from engine.cache import OutputCache
from engine.validation import validate_prompt
from nodes.clip_vision import CLIPVisionEncode, CLIPVisionLoader

PACKS = Path(__file__).parent / "packs"
CLIP_VISION_FILE = "pack-like-clip-vision.safetensors"


@pytest.fixture
def clip_vision_file(tiny_models_dir):
    """A tiny CLIP ViT with projection in ComfyUI's clip_vision layout."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(7)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, patch_size=4,
        image_size=16, projection_dim=24, hidden_act="gelu")).eval()
    (tiny_models_dir / "clip_vision").mkdir(exist_ok=True)
    save_file({key: value.contiguous() for key, value in model.state_dict().items()},
              str(tiny_models_dir / "clip_vision" / CLIP_VISION_FILE))


def load_packs(node_env, tmp_path, *names: str):
    """A registry with the built-in nodes and the named packs, loaded as a user's custom_nodes folder would be."""
    plugins = tmp_path / "custom_nodes"
    for name in names:
        shutil.copytree(PACKS / name, plugins / name, ignore=shutil.ignore_patterns("__pycache__"))
    folders = node_env.folders
    settings = Settings(folders.models_dir, folders.input_dir, folders.output_dir, folders.temp_dir,
                        folders.user_dir, cache_size=10, cpu=True, threads=1, custom_nodes_dirs=(plugins,))
    registry = build_registry()
    records = load_custom_nodes(settings, registry)
    for record in records:
        assert record.status == "loaded", record.error
    return registry


def run(registry, prompt: dict) -> dict:
    validation = validate_prompt(prompt, registry)
    assert validation.ok and not validation.node_errors, validation.to_response()
    result = build_executor(registry, OutputCache()).execute(validation.prompt, "p1", {}, validation.outputs)
    assert result.success, result.error
    return result


def test_ipadapter_plus_like_pack(node_env, tmp_path, clip_vision_file):
    ipadapter_folder = node_env.folders.models_dir / "ipadapter"
    ipadapter_folder.mkdir(exist_ok=True)
    (ipadapter_folder / "ip-adapter_sd15.safetensors").write_bytes(b"x")
    registry = load_packs(node_env, tmp_path, "ipadapter_plus_like")
    image = torch.rand(1, 24, 20, 3, generator=torch.Generator().manual_seed(3))
    prompt = {
        "1": {"class_type": "LikeIPAdapterFiles", "inputs": {}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO_CHECKPOINT}},
        "3": {"class_type": "LikeLoraLoader", "inputs": {"model": ["2", 0], "clip": ["2", 1],
                                                         "lora_name": DEMO_LORA, "strength": 0.5}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 1], "text": "a cat"}},
        "5": {"class_type": "LikeConditioningStrength", "inputs": {"conditioning": ["4", 0], "strength": 0.25}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {
            "model": ["3", 0], "positive": ["5", 0], "negative": ["4", 0], "latent_image": ["6", 0], "seed": 1,
            "steps": 1, "cfg": 2.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": "ipa"}},
    }
    result = run(registry, prompt)
    assert result.outputs["1"]["files"] == ["ip-adapter_sd15.safetensors"]  # the folder the pack registered
    cond = torch.ones(1, 2, 3)
    (strengthened,) = registry.get("LikeConditioningStrength")().apply([[cond, {"pooled_output": None}]], 0.25)
    assert strengthened[0][0] is cond and strengthened[0][1] == {"pooled_output": None, "strength": 0.25}

    output, pixels = registry.get("LikeClipVisionEmbeds")().encode(CLIP_VISION_FILE, image)
    (reference,) = CLIPVisionEncode().encode(CLIPVisionLoader().load_clip(CLIP_VISION_FILE)[0], image, "center")
    assert torch.equal(output["image_embeds"], reference.image_embeds)
    assert pixels.shape == (1, 8, 8, 3)


def test_ipadapter_plus_like_attention_patches_run_in_sampling(node_env, tmp_path, clip_vision_file):
    """The pack's attn2 replacements, written into model_options as IPAdapter writes them, change the image with a
    weight and leave it as it was without one."""
    import safetensors.torch

    registry = load_packs(node_env, tmp_path, "ipadapter_plus_like")
    node_env.folders.input_dir.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.new("RGB", (24, 20), (200, 30, 60)).save(node_env.folders.input_dir / "reference.png")

    def sampled(weight: float | None) -> torch.Tensor:
        model = ["2", 0] if weight is None else ["9", 0]
        prompt = {
            "1": {"class_type": "LoadImage", "inputs": {"image": "reference.png"}},
            "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO_CHECKPOINT}},
            "3": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_VISION_FILE}},
            "4": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["3", 0], "image": ["1", 0],
                                                               "crop": "center"}},
            "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 1], "text": "a cat"}},
            "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "7": {"class_type": "KSampler", "inputs": {
                "model": model, "positive": ["5", 0], "negative": ["5", 0], "latent_image": ["6", 0], "seed": 1,
                "steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
            "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": "ipa_apply"}},
        }
        if weight is not None:
            prompt["9"] = {"class_type": "LikeIPAdapterApply", "inputs": {
                "model": ["2", 0], "clip_vision_output": ["4", 0], "weight": weight}}
        entry = run(registry, prompt).outputs["8"]["latents"][0]
        return safetensors.torch.load_file(node_env.folders.output_dir / entry["subfolder"] / entry["filename"])[
            "latent_tensor"]

    plain = sampled(None)
    torch.testing.assert_close(sampled(0.0), plain)
    assert not torch.allclose(sampled(0.8), plain, atol=1e-3)


def test_rgthree_like_pack(node_env, tmp_path):
    registry = load_packs(node_env, tmp_path, "rgthree_like")
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO_CHECKPOINT}},
        "2": {"class_type": "Like KSampler Config (rgthree)", "inputs": {
            "steps_total": 2, "cfg": 3.0, "sampler_name": "dpmpp_2m", "scheduler": "karras"}},
        "3": {"class_type": "Like Seed (rgthree)", "inputs": {"seed": 77}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a cat"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "Like Latent Double (rgthree)", "inputs": {"samples": ["5", 0]}},
        "7": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["4", 0], "negative": ["4", 0], "latent_image": ["6", 0],
            "seed": ["3", 0], "steps": ["2", 0], "cfg": ["2", 1], "sampler_name": ["2", 2],
            "scheduler": ["2", 3], "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "Like Any Switch (rgthree)", "inputs": {"any_02": ["8", 0]}},
        "10": {"class_type": "Like Image Comparer (rgthree)", "inputs": {"image_a": ["9", 0], "image_b": ["8", 0]}},
        "11": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["4", 0], "negative": ["4", 0], "latent_image": ["6", 0],
            "seed": 77, "steps": 2, "cfg": 3.0, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1.0}},
        "12": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": "linked"}},
        "13": {"class_type": "SaveLatent", "inputs": {"samples": ["11", 0], "filename_prefix": "typed"}},
    }
    result = run(registry, prompt)
    compared = result.outputs["10"]
    assert len(compared["a_images"]) == 2 and len(compared["b_images"]) == 2  # the doubled batch, both sides
    # a PreviewImage subclass saves as ComfyUI's does: the given prefix and the preview's own suffix, in temp
    assert compared["a_images"][0]["filename"].startswith("rgthree.compare._temp_")
    assert {entry["type"] for entry in compared["a_images"] + compared["b_images"]} == {"temp"}
    import safetensors.torch

    entries = [result.outputs[node]["latents"][0] for node in ("12", "13")]
    linked, typed = (safetensors.torch.load_file(node_env.folders.output_dir / entry["subfolder"] / entry["filename"])[
        "latent_tensor"] for entry in entries)
    torch.testing.assert_close(linked, typed)  # the config's combo outputs drove KSampler as typed values do


def test_essentials_like_pack(node_env, tmp_path):
    registry = load_packs(node_env, tmp_path, "essentials_like")
    source = torch.rand(1, 40, 80, 3, generator=torch.Generator().manual_seed(4))
    image, width, height = registry.get("LikeImageResize+")().execute(source, 32, 32, "bilinear")
    assert (width, height) == (32, 16) and image.shape == (1, 16, 32, 3)

    def sampling(class_type: str, **inputs) -> dict:
        return {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO_CHECKPOINT}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a cat"}},
            "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
            "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "5": {"class_type": class_type, "inputs": {"model": ["1", 0], "latent_image": ["4", 0], **inputs}},
            "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": class_type[:6]}},
        }

    def saved(result) -> torch.Tensor:
        import safetensors.torch

        entry = result.outputs["6"]["latents"][0]
        return safetensors.torch.load_file(node_env.folders.output_dir / entry["subfolder"] / entry["filename"])[
            "latent_tensor"]

    common = {"positive": ["2", 0], "negative": ["3", 0], "steps": 2, "cfg": 4.0, "sampler_name": "euler",
              "scheduler": "normal"}
    injected = saved(run(registry, sampling("LikeNoiseInjectionSampler+", noise_seed=8, variation_seed=9,
                                            variation_strength=0.0, **common)))
    plain = saved(run(registry, sampling("KSampler", seed=8, denoise=1.0, **common)))
    torch.testing.assert_close(injected, plain)  # no variation: KSampler's result for the seed
    varied = saved(run(registry, sampling("LikeNoiseInjectionSampler+", noise_seed=8, variation_seed=9,
                                          variation_strength=0.5, **common)))
    assert not torch.allclose(varied, plain)
    helper = saved(run(registry, sampling("LikeSamplerSelectHelper+", conditioning=["2", 0], seed=3, steps=2)))
    custom = {"1": sampling("KSampler", seed=0, denoise=1.0, **common)["1"],
              "2": sampling("KSampler", seed=0, denoise=1.0, **common)["2"],
              "4": sampling("KSampler", seed=0, denoise=1.0, **common)["4"],
              "g": {"class_type": "BasicGuider", "inputs": {"model": ["1", 0], "conditioning": ["2", 0]}},
              "s": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "simple", "steps": 2,
                                                               "denoise": 1.0}},
              "k": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
              "n": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
              "5": {"class_type": "SamplerCustomAdvanced", "inputs": {
                  "noise": ["n", 0], "guider": ["g", 0], "sampler": ["k", 0], "sigmas": ["s", 0],
                  "latent_image": ["4", 0]}},
              "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "custom"}}}
    torch.testing.assert_close(helper, saved(run(registry, custom)))


def test_kjnodes_like_pack(node_env, tmp_path):
    registry = load_packs(node_env, tmp_path, "kjnodes_like")
    assert registry.get("LikeImageBatchMulti").RETURN_NAMES == ("images",)  # a V3 node listed in the classic mapping
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 16, "batch_size": 2, "color": 0xFFFFFF}},
        "3": {"class_type": "LikeImageBatchMulti", "inputs": {"image_1": ["1", 0], "image_2": ["2", 0]}},
        "4": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 8, "height": 8}},
        "5": {"class_type": "LikeGrowMaskWithBlur", "inputs": {"mask": ["4", 0], "expand": 1, "blur_radius": 0.0}},
        "6": {"class_type": "LikeCompositeMasked", "inputs": {"destination": ["1", 0], "source": ["2", 0],
                                                              "mask": ["5", 1], "x": 4}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }
    result = run(registry, prompt)
    assert len(result.outputs["7"]["images"]) == 3  # one black image and two white ones resized to it
    from PIL import Image

    entry = result.outputs["8"]["images"][0]
    with Image.open(node_env.folders.temp_dir / entry["subfolder"] / entry["filename"]) as pasted:
        pixels = torch.tensor(list(pasted.convert("L").getdata()), dtype=torch.float32).reshape(8, 16)
    # the inverted (all ones) mask, resized to the 32x16 white source, pastes it from x = 4, cut at the edge
    assert pixels[:, :4].max() == 0 and pixels[:, 4:].min() == 255
    grown, inverted = registry.get("LikeGrowMaskWithBlur")().expand_mask(
        torch.tensor([[0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 0]]), 1, 0.0)
    assert grown[0].tolist() == [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0]]
    torch.testing.assert_close(inverted, 1.0 - grown)


def test_kjnodes_like_v3_dynamic_sockets_and_video(node_env, tmp_path):
    registry = load_packs(node_env, tmp_path, "kjnodes_like")
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 3, "color": 0x808080}},
        "2": {"class_type": "LikeImageSharpen", "inputs": {"image": ["1", 0], "method": "unsharp",
                                                           "method.strength": 1.0, "method.radius": 1}},
        "3": {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 8, "height": 8}},
        "4": {"class_type": "LikeImageSharpen", "inputs": {"image": ["3", 0], "method": "none"}},
        "5": {"class_type": "LikeSaveFramesAsVideo", "inputs": {"images": ["2", 0], "fps": 12.0,
                                                                "filename_prefix": "video/kj", "format": "auto",
                                                                "codec": "auto"}},
        "6": {"class_type": "MaskToImage", "inputs": {"mask": ["4", 0]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }
    result = run(registry, prompt)
    (saved,) = result.outputs["5"]["images"]
    assert saved["type"] == "output" and saved["subfolder"] == "video" and result.outputs["5"]["animated"] == (True,)
    from nodes.video import VideoFromFile

    saved_video = VideoFromFile(node_env.folders.output_dir / "video" / saved["filename"])
    assert saved_video.get_dimensions() == (16, 8) and saved_video.get_frame_count() == 3
    assert saved_video.get_frame_rate() == 12
    # a flat image has nothing to sharpen: the frames keep their grey
    assert (saved_video.get_components().images - 0x80 / 255).abs().max() < 0.03


def test_kjnodes_like_guider_and_sampler_run_in_our_core(node_env, tmp_path):
    """The pack's CFGGuider subclass and KSAMPLER sampler, fed to SamplerCustomAdvanced, give our CFGGuider's and
    euler's latents when they change nothing, and other latents when they do."""
    registry = load_packs(node_env, tmp_path, "kjnodes_like")

    def graph(guider: dict, sampler: dict) -> dict:
        return {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO_CHECKPOINT}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": ["1", 1]}},
            "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
            "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "5": guider,
            "6": sampler,
            "7": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "karras", "steps": 3,
                                                             "denoise": 1.0}},
            "8": {"class_type": "RandomNoise", "inputs": {"noise_seed": 4}},
            "9": {"class_type": "SamplerCustomAdvanced", "inputs": {
                "noise": ["8", 0], "guider": ["5", 0], "sampler": ["6", 0], "sigmas": ["7", 0],
                "latent_image": ["4", 0]}},
            "10": {"class_type": "SaveLatent", "inputs": {"samples": ["9", 0], "filename_prefix": "kj_like"}},
        }

    conditioning = {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0]}
    ours = {"class_type": "CFGGuider", "inputs": {**conditioning, "cfg": 6.0}}
    euler = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}

    def scheduled(start: float, end: float) -> dict:
        return {"class_type": "LikeScheduledCFGGuidance",
                "inputs": {**conditioning, "cfg": 6.0, "start_percent": start, "end_percent": end}}

    def scaled(scale: float) -> dict:
        return {"class_type": "LikeSamplerEulerScaled", "inputs": {"step_scale": scale}}

    def latents(prompt: dict) -> torch.Tensor:
        import safetensors.torch

        entry = run(registry, prompt).outputs["10"]["latents"][0]
        return safetensors.torch.load_file(node_env.folders.output_dir / entry["subfolder"] / entry["filename"])[
            "latent_tensor"]

    expected = latents(graph(ours, euler))
    torch.testing.assert_close(latents(graph(scheduled(0.0, 1.0), scaled(1.0))), expected)
    assert not torch.allclose(latents(graph(scheduled(0.0, 0.4), euler)), expected)
    assert not torch.allclose(latents(graph(ours, scaled(0.8))), expected)
