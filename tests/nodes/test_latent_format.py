"""ComfyUI's LATENT convention and its `.latent` files.

- LATENT holds the VAE's raw latents; each family's latent format (`diffusion.latent_format`) maps them to the
  sampling space and back with ComfyUI's numbers, an all-zero latent left at zero, on every sampling path
  (the sigma core, the diffusers loop, AddNoise, inpainting concat images, previews, training).
- SaveLatent and LoadLatent: their contracts against ComfyUI's (nodes.py), a round trip, files written by real
  ComfyUI (tests/data/comfy_reference) loaded, the old scaled format, and ComfyUI's reference workflows run with
  their own SaveLatent node, whose file matches the one ComfyUI wrote.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import nodes
from app.runtime import build_executor
from diffusion.components import DiffusionModel
from diffusion.latent_format import IDENTITY, LatentFormat
from diffusion.sampling import custom, editing
from diffusion.sampling.model_sampling import DiscreteFlowModelSampling
from diffusion.sampling.preview import LatentPreview
from engine.cache import OutputCache
from engine.registry import NodeRegistry
from engine.validation import validate_prompt
from nodes.latent import VAEDecode, VAEEncode
from nodes.latent_files import LoadLatent, SaveLatent

REFERENCE = Path(__file__).parents[1] / "data" / "comfy_reference"
REFERENCE_CASE = "img2img06__euler__normal"

# node: (category, RETURN_TYPES, the required inputs in order: link type, combo, or (STRING, default)), read off
# ComfyUI's nodes.py
COMFYUI_CONTRACTS = {
    "SaveLatent": ("_for_testing", (), [("samples", "LATENT"), ("filename_prefix", ("STRING", "latents/ComfyUI"))]),
    "LoadLatent": ("_for_testing", ("LATENT",), [("latent", "COMBO")]),
}

# ComfyUI's comfy/latent_formats.py: (scale_factor, shift_factor, RGB bias) per family
COMFYUI_FORMATS = {
    "sd": (0.18215, 0.0, None), "sdxl": (0.13025, 0.0, (0.1084, -0.0175, -0.0011)),
    "sd3": (1.5305, 0.0609, (0.2394, 0.2135, 0.1925)), "flux": (0.3611, 0.1159, (-0.0329, -0.0718, -0.0851)),
}


def _contract(node_class: type) -> tuple:
    inputs = []
    for name, (kind, *rest) in node_class.INPUT_TYPES()["required"].items():
        options = rest[0] if rest else {}
        if isinstance(kind, list):
            inputs.append((name, "COMBO"))
        elif kind == "STRING":
            inputs.append((name, (kind, options["default"])))
        else:
            inputs.append((name, kind))
    return node_class.CATEGORY, node_class.RETURN_TYPES, inputs


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(node_env, name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert _contract(node_class) == COMFYUI_CONTRACTS[name]
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == name  # ComfyUI names neither
    assert node_class.DESCRIPTION and callable(getattr(node_class(), node_class.FUNCTION))
    assert all(options.get("tooltip") for _, options in node_class.INPUT_TYPES()["required"].values())
    assert getattr(node_class, "RETURN_NAMES", None) is None
    assert SaveLatent.OUTPUT_NODE and SaveLatent.INPUT_TYPES()["hidden"] == {"prompt": "PROMPT",
                                                                               "extra_pnginfo": "EXTRA_PNGINFO"}


# -- the latent formats ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(COMFYUI_FORMATS))
def test_each_family_has_comfyuis_latent_format(family):
    from diffusion import registry

    latent_format = registry.family(family).sampling.latent_format
    scale, shift, bias = COMFYUI_FORMATS[family]
    assert (latent_format.scale_factor, latent_format.shift_factor, latent_format.rgb_bias) == (scale, shift, bias)
    assert len(latent_format.rgb_factors) == (16 if shift else 4)
    assert registry.family("unclip").sampling.latent_format == IDENTITY  # MoVQ latents are sampled unscaled


def test_process_in_and_out_are_comfyuis_maps():
    sd3 = LatentFormat(1.5305, 0.0609)
    raw = torch.tensor([[[[1.0, -2.0]]]])
    assert torch.allclose(sd3.process_in(raw), torch.tensor([[[[(1.0 - 0.0609) * 1.5305, (-2.0 - 0.0609) * 1.5305]]]]))
    assert torch.allclose(sd3.process_out(sd3.process_in(raw)), raw, atol=1e-6)
    assert torch.equal(LatentFormat(0.18215).process_in(raw), raw * 0.18215)
    assert torch.equal(LatentFormat(0.18215).process_out(raw), raw / 0.18215)
    empty = torch.zeros(1, 16, 2, 2)  # ComfyUI leaves the empty latent image unshifted
    assert torch.equal(sd3.sampling_input(empty), empty)
    assert torch.equal(sd3.sampling_input(raw), sd3.process_in(raw))


def test_empty_latents_are_fitted_to_the_formats_channels_and_downscale():
    """EmptyLatentImage's 4 channels at 8x, as ComfyUI's samplers take them: 16 channels at the same size for SD3,
    the format's channels at 16x for Qwen-Image 2.1 and FLUX.2 (rounded sides); a latent that is not empty, or
    already has the format's channels, stays as it is."""
    from diffusion import registry

    empty = torch.zeros(2, 4, 13, 8)
    fitted = {name: registry.family(name).sampling.latent_format.fitted_empty(empty)
              for name in ("sd3", "qwenimage21", "flux2")}
    assert {name: tuple(latent.shape) for name, latent in fitted.items()} == {
        "sd3": (2, 16, 13, 8), "qwenimage21": (2, 64, 6, 4), "flux2": (2, 128, 6, 4)}
    assert not any(latent.any() for latent in fitted.values())
    qwen21 = registry.family("qwenimage21").sampling.latent_format
    noisy = torch.ones(1, 4, 8, 8)
    own = torch.zeros(1, 64, 8, 8)
    assert qwen21.fitted_empty(noisy) is noisy and qwen21.fitted_empty(own) is own


def test_loaded_models_carry_their_familys_format(sd1):
    model, _, vae = sd1
    assert model.latent_format.scale_factor == 0.18215 == vae.scaling_factor


def test_vae_encodes_and_decodes_raw_latents(sd1):
    _, _, vae = sd1
    pixels = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    (latent,) = VAEEncode().encode(vae, pixels)
    with torch.inference_mode():
        raw = vae.autoencoder.encode(pixels.movedim(-1, 1) * 2.0 - 1.0).latent_dist.mode()
        decoded = vae.autoencoder.decode(latent["samples"], return_dict=False)[0]
    assert torch.equal(latent["samples"], raw)
    assert torch.equal(VAEDecode().decode(vae, latent)[0], (decoded / 2 + 0.5).clamp(0, 1).movedim(1, -1))


# -- sampling paths ---------------------------------------------------------------------------------------------------


class _ShiftedSampling:
    """A stand-in family with a shifted latent format (as SD3's and FLUX's)."""

    latent_format = LatentFormat(2.0, 0.5)


def _flow_model() -> DiffusionModel:
    return DiffusionModel(network=None, scheduler_config={}, name="stand-in", family="sd3",
                          sampling=_ShiftedSampling(), schedule_override=DiscreteFlowModelSampling())


def test_add_noise_noises_in_model_space_as_comfyui():
    """ComfyUI's AddNoise: process_in, noise_scaling (flow: sigma * noise + (1 - sigma) * x), process_out."""
    model = _flow_model()
    raw = torch.full((1, 1, 1, 2), 1.5)
    noise = torch.tensor([[[[1.0, -1.0]]]])
    source = SimpleNamespace(generate=lambda latent: noise)
    noisy = custom.add_noise(model, source, torch.tensor([0.75, 0.25]), {"samples": raw})
    level = 0.5  # |0.75 - 0.25|
    in_model_space = (1.5 - 0.5) * 2.0
    expected = (level * noise + (1 - level) * in_model_space) / 2.0 + 0.5
    assert torch.allclose(noisy, expected)
    empty = custom.add_noise(model, source, torch.tensor([0.75, 0.25]), {"samples": torch.zeros(1, 1, 1, 2)})
    assert torch.allclose(empty, (level * noise) / 2.0 + 0.5)  # the empty latent is not shifted going in


def test_inpainting_concat_image_goes_in_through_the_latent_format():
    """ComfyUI's concat_cond: a concat_latent_image is process_latent_in'd; the LATENT source is taken in too."""
    latent_format = LatentFormat(2.0, 0.5)
    raw = torch.full((1, 4, 2, 2), 1.5)
    edit = editing.EditInputs(editing.INPAINT, latent_format.sampling_input(raw), torch.ones(1, 1, 2, 2),
                              latent_format=latent_format)
    concat = edit.concat({"concat_latent_image": raw, "concat_mask": torch.ones(1, 1, 2, 2)})
    assert torch.equal(concat[:, 0], torch.ones(1, 2, 2))
    assert torch.allclose(concat[:, 1:], torch.full((1, 4, 2, 2), 2.0))


def test_prepared_edit_inputs_hold_the_source_in_model_space(sd1):
    model = sd1[0]
    raw = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    edit = editing.EditInputs.prepare(model, {"samples": raw, "noise_mask": torch.ones(1, 1, 16, 16)})
    assert torch.equal(edit.source, raw * 0.18215)


def test_previews_use_the_formats_rgb_factors_and_bias():
    from diffusion.families.sdxl.sampling import SdxlSampling

    latent_format = SdxlSampling.latent_format
    image = LatentPreview(torch.zeros(1, 4, 1, 1), latent_format).to_image()
    expected = [round((bias + 1.0) / 2.0 * 255) for bias in latent_format.rgb_bias]
    assert list(image.getpixel((0, 0))) == expected


@pytest.mark.parametrize("scheduler", ["normal", "diffusers"])
@pytest.mark.parametrize("masked", [False, True])
def test_samplers_apply_the_latent_format_in_and_out(sd1, scheduler, masked):
    """KSampler over the sigma core and over the diffusers loop, img2img with and without a noise mask: sampling
    raw latents with SD's format is sampling the scaled latents with no format, then unscaling (a 0-step run hands
    the raw input back)."""
    from diffusion.families.sd.sampling import SdSampling
    from diffusion.sampling.ksampler import ksample
    from nodes.conditioning import CLIPTextEncode

    model, clip, vae = sd1
    unscaled = dataclasses.replace(model, sampling=type("Unscaled", (SdSampling,), {"latent_format": IDENTITY})())
    positive = CLIPTextEncode().encode(clip, "a lighthouse")[0]
    raw = vae.encode(torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(2)))
    extra = {"noise_mask": torch.ones(1, 1, 32, 32).tril()} if masked else {}
    assert torch.equal(ksample(model, 1, 2, 5.0, "euler", scheduler, positive, positive, {"samples": raw, **extra},
                               denoise=0.0), raw)
    out = ksample(model, 1, 3, 5.0, "euler", scheduler, positive, positive, {"samples": raw, **extra}, denoise=0.5)
    in_model_space = ksample(unscaled, 1, 3, 5.0, "euler", scheduler, positive, positive,
                             {"samples": raw * 0.18215, **extra}, denoise=0.5)
    assert torch.allclose(out, in_model_space / 0.18215, atol=1e-5)


# -- .latent files ----------------------------------------------------------------------------------------------------


def test_save_latent_writes_comfyuis_file_and_load_latent_reads_it_back(node_env):
    samples = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    prompt = {"1": {"class_type": "SaveLatent", "inputs": {"filename_prefix": "latents/ComfyUI"}}}
    workflow = {"nodes": [], "links": []}
    ui = SaveLatent().save({"samples": samples}, "latents/ComfyUI", prompt, {"workflow": workflow})["ui"]
    assert ui == {"latents": [{"filename": "ComfyUI_00001_.latent", "subfolder": "latents", "type": "output"}]}
    written = node_env.folders.output_dir / "latents" / "ComfyUI_00001_.latent"
    with safe_open(str(written), "pt") as handle:
        assert sorted(handle.keys()) == ["latent_format_version_0", "latent_tensor"]
        assert handle.metadata() == {"prompt": json.dumps(prompt), "workflow": json.dumps(workflow)}
        assert handle.get_tensor("latent_format_version_0").shape == (0,)
    again = SaveLatent().save({"samples": samples}, "latents/ComfyUI")["ui"]["latents"][0]["filename"]
    assert again == "ComfyUI_00002_.latent"  # never replaces a file
    assert sorted(path.name for path in written.parent.iterdir()) == ["ComfyUI_00001_.latent", again]

    shutil.copy(written, node_env.folders.input_dir / "saved.latent")
    assert "saved.latent" in LoadLatent.INPUT_TYPES()["required"]["latent"][0]
    (loaded,) = LoadLatent().load("saved.latent")
    assert torch.equal(loaded["samples"], samples) and set(loaded) == {"samples"}
    (from_output,) = LoadLatent().load("latents/ComfyUI_00001_.latent [output]")
    assert torch.equal(from_output["samples"], samples)


def test_load_latent_reads_files_comfyui_wrote(node_env):
    for case in ("img2img06__euler__normal", "batch2__euler_ancestral__normal"):
        shutil.copy(REFERENCE / "cases" / f"{case}.latent", node_env.folders.input_dir)
        (loaded,) = LoadLatent().load(f"{case}.latent")
        expected = load_file(str(REFERENCE / "cases" / f"{case}.latent"))["latent_tensor"]
        assert torch.equal(loaded["samples"], expected)


def test_load_latent_unscales_the_old_format(node_env):
    """A file without the version marker holds latents scaled by 0.18215 (ComfyUI's format before raw latents)."""
    scaled = torch.tensor([[[[0.18215, -0.3643]]]])
    save_file({"latent_tensor": scaled.half()}, str(node_env.folders.input_dir / "old.latent"))
    (loaded,) = LoadLatent().load("old.latent")
    assert loaded["samples"].dtype == torch.float32
    assert torch.allclose(loaded["samples"], scaled.half().float() * (1.0 / 0.18215))


def test_load_latent_names_bad_files(node_env):
    (node_env.folders.input_dir / "broken.latent").write_bytes(b"not safetensors")
    save_file({"other": torch.zeros(1)}, str(node_env.folders.input_dir / "other.latent"))
    with pytest.raises(ValueError, match="^latent: broken.latent is not a readable"):
        LoadLatent().load("broken.latent")
    with pytest.raises(ValueError, match="^latent: other.latent holds no 'latent_tensor'"):
        LoadLatent().load("other.latent")
    assert LoadLatent.VALIDATE_INPUTS("missing.latent").startswith("Invalid latent file: latent: 'missing.latent'")
    assert LoadLatent.VALIDATE_INPUTS("../escape.latent").startswith("Invalid latent file")
    with pytest.raises(ValueError, match="^filename_prefix: .* points outside"):
        SaveLatent().save({"samples": torch.zeros(1, 4, 1, 1)}, "../outside")
    with pytest.raises(ValueError, match="^samples: expected a LATENT"):
        SaveLatent().save({"other": 1}, "x")


# -- workflows through the engine -------------------------------------------------------------------------------------


@pytest.fixture
def comfy_env(tmp_path):
    """ComfyUI's CPU precision (fp32, text encoders in fp16) with the reference checkpoint and source image."""
    from diffusion.manager import ModelManager
    from nodes.environment import Folders, NodeEnvironment, use_environment

    folders = Folders(tmp_path / "models", tmp_path / "input", tmp_path / "output", tmp_path / "temp",
                      tmp_path / "user")
    folders.create()
    shutil.copy(REFERENCE / "reference-sd1.safetensors", folders.models_dir / "checkpoints")
    shutil.copy(REFERENCE / "source.png", folders.input_dir)
    manager = ModelManager(torch.device("cpu"), torch.float32, encoder_dtype=torch.float16)
    with use_environment(NodeEnvironment(folders, torch.device("cpu"), torch.float32, manager)) as environment:
        yield environment


def _execute(prompt: dict) -> dict:
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    validation = validate_prompt(prompt, registry)
    assert validation.ok and not validation.node_errors, validation.to_response()
    result = build_executor(registry, OutputCache()).execute(validation.prompt, "p1", {}, validation.outputs)
    assert result.success, result.error
    return result.outputs


def test_comfyuis_workflow_saves_the_latent_file_comfyui_saved(comfy_env):
    """ComfyUI's own img2img workflow, SaveLatent included, run unchanged: the file has ComfyUI's keys and prompt
    metadata, and its latents are ComfyUI's (1e-4 relative, as the pixel-parity test holds them)."""
    prompt = json.loads((REFERENCE / "cases" / "cases.json").read_text())[REFERENCE_CASE]
    outputs = _execute(json.loads(json.dumps(prompt)))
    (entry,) = outputs["10"]["latents"]
    ours = comfy_env.folders.output_dir / entry["subfolder"] / entry["filename"]
    assert entry == {"filename": f"{REFERENCE_CASE}_00001_.latent", "subfolder": "latents", "type": "output"}
    theirs = REFERENCE / "cases" / f"{REFERENCE_CASE}.latent"
    with safe_open(str(ours), "pt") as mine, safe_open(str(theirs), "pt") as reference:
        assert sorted(mine.keys()) == sorted(reference.keys())
        # ComfyUI's executor notes each IS_CHANGED result in the prompt it was queued with; ours leaves it as sent
        theirs_prompt = {key: {name: value for name, value in node.items() if name != "is_changed"}
                         for key, node in json.loads(reference.metadata()["prompt"]).items()}
        assert json.loads(mine.metadata()["prompt"]) == theirs_prompt
        latents, expected = mine.get_tensor("latent_tensor"), reference.get_tensor("latent_tensor")
    assert latents.shape == expected.shape and latents.dtype == expected.dtype
    assert ((latents - expected).abs().max() / expected.abs().max()).item() <= 1e-4


def test_load_latent_workflow_decodes_and_resamples_comfyuis_latents(comfy_env):
    """LoadLatent of ComfyUI's file -> VAEDecode -> SaveImage, and -> KSampler (img2img) -> SaveLatent."""
    shutil.copy(REFERENCE / "cases" / f"{REFERENCE_CASE}.latent", comfy_env.folders.input_dir / "comfy.latent")
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "reference-sd1.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["1", 1]}},
        "3": {"class_type": "LoadLatent", "inputs": {"latent": "comfy.latent"}},
        "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 2]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "decoded"}},
        "6": {"class_type": "KSampler", "inputs": {
            "seed": 1, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.5,
            "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["3", 0]}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "latents/again"}},
    }
    outputs = _execute(prompt)
    assert outputs["5"]["images"][0]["filename"] == "decoded_00001_.png"
    (entry,) = outputs["7"]["latents"]
    resampled = load_file(str(comfy_env.folders.output_dir / "latents" / entry["filename"]))["latent_tensor"]
    source = load_file(str(comfy_env.folders.input_dir / "comfy.latent"))["latent_tensor"]
    assert resampled.shape == source.shape and not torch.equal(resampled, source)
    assert (resampled - source).abs().mean() < source.abs().mean()  # half denoise stays near the source
