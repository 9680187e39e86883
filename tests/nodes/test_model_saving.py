"""The saving nodes (CheckpointSave, ModelSave, VAESave, LoraSave): their contracts against ComfyUI's (read off
comfy_extras/nodes_model_merging.py and nodes_lora_extract.py), exact round trips of SD1, SD2 (v-prediction) and
SDXL base/refiner checkpoints in the original layout, a saved merge loading back through CheckpointLoaderSimple and
rendering the same image, ComfyUI's file names and metadata, the output-folder rule, LoRA extraction by SVD, and a
saving workflow run through the engine."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import nodes
from app.runtime import build_executor
from diffusion import loading
from diffusion.families.sd import demo as tiny
from diffusion.families.sd.demo import DEMO_CHECKPOINT, DEMO_LORA
from diffusion.families.sdxl import demo as sdxl_tiny
from diffusion.lora_extraction import low_rank
from diffusion.merging import effective_state_dict
from engine.cache import OutputCache
from engine.registry import NodeRegistry
from engine.validation import validate_prompt
from nodes import model_saving as ms
from nodes.conditioning import CLIPTextEncode
from nodes.environment import Folders, NodeEnvironment, use_environment
from nodes.latent import EmptyLatentImage, VAEDecode
from nodes.loaders import CheckpointLoaderSimple, LoraLoader, LoraLoaderModelOnly
from nodes.model_merging import ModelMergeSimple, ModelMergeSubtract
from nodes.sampling import KSampler
from tests.nodes.test_model_merging import contract

MERGING = "advanced/model_merging"
COMFYUI_CONTRACTS = {
    "CheckpointSave": (MERGING, (), None, [("model", "MODEL"), ("clip", "CLIP"), ("vae", "VAE"),
                                           ("filename_prefix", "STRING")]),
    "ModelSave": (MERGING, (), None, [("model", "MODEL"), ("filename_prefix", "STRING")]),
    "VAESave": (MERGING, (), None, [("vae", "VAE"), ("filename_prefix", "STRING")]),
    "LoraSave": ("_for_testing", (), None, [
        ("filename_prefix", "STRING"), ("rank", ("INT", 8, 1, 4096, 1)), ("lora_type", ["standard", "full_diff"]),
        ("bias_diff", ("BOOLEAN", True))]),
}
DEFAULT_PREFIXES = {"CheckpointSave": "checkpoints/ComfyUI", "ModelSave": "diffusion_models/ComfyUI",
                    "VAESave": "vae/ComfyUI_vae", "LoraSave": "loras/ComfyUI_extracted_lora"}
DISPLAY_NAMES = {"CheckpointSave": "Save Checkpoint", "ModelSave": "ModelSave", "VAESave": "VAESave",
                 "LoraSave": "Extract and Save Lora"}
PROMPT = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO_CHECKPOINT}}}
WORKFLOW = {"workflow": {"nodes": [], "links": [], "version": 0.4}}


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert node_class is ms.NODE_CLASS_MAPPINGS[name]
    assert contract(node_class) == COMFYUI_CONTRACTS[name]
    inputs = node_class.INPUT_TYPES()
    assert inputs["required"]["filename_prefix"][1]["default"] == DEFAULT_PREFIXES[name]
    assert node_class.OUTPUT_NODE and node_class.DESCRIPTION and callable(getattr(node_class(), node_class.FUNCTION))
    assert all(options.get("tooltip") for group in ("required", "optional")
               for _, options in inputs.get(group, {}).values())
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == DISPLAY_NAMES[name]
    if name == "LoraSave":
        assert [(key, kind) for key, (kind, _) in inputs["optional"].items()] == [("model_diff", "MODEL"),
                                                                                 ("text_encoder_diff", "CLIP")]
    else:
        assert inputs["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


def test_every_node_is_in_the_table():
    assert set(ms.NODE_CLASS_MAPPINGS) == set(COMFYUI_CONTRACTS)


def _metadata(path: Path) -> dict:
    with safe_open(str(path), "pt") as handle:
        return handle.metadata() or {}


def test_sd1_checkpoint_round_trip_names_and_metadata(node_env, sd1, tiny_models_dir):
    output = node_env.folders.output_dir
    assert ms.CheckpointSave().save(*sd1, "checkpoints/ComfyUI", prompt=PROMPT, extra_pnginfo=WORKFLOW) == {}
    ms.CheckpointSave().save(*sd1, "checkpoints/ComfyUI")
    first, second = (output / "checkpoints" / f"ComfyUI_{counter:05}_.safetensors" for counter in (1, 2))
    assert first.is_file() and second.is_file()
    assert not list((output / "checkpoints").glob(".*"))  # no temporary file left
    original, saved = load_file(str(tiny_models_dir / "checkpoints" / DEMO_CHECKPOINT)), load_file(str(first))
    assert set(saved) == set(original)
    assert all(torch.equal(saved[key], original[key]) for key in original)
    metadata = _metadata(first)
    assert json.loads(metadata["prompt"]) == PROMPT and json.loads(metadata["workflow"]) == WORKFLOW["workflow"]
    assert metadata["modelspec.predict_key"] == "epsilon" and "modelspec.architecture" not in metadata
    assert _metadata(second)["prompt"] == ""


def test_a_prefix_out_of_the_output_folder_is_refused(node_env, sd1):
    with pytest.raises(ValueError, match="filename_prefix"):
        ms.VAESave().save(sd1[2], "../outside/vae")


@pytest.fixture
def own_models(tmp_path, shared_model_manager):
    """A models folder of this test's own, for files written here and loaded back."""
    folders = Folders(tmp_path / "models", tmp_path / "input", tmp_path / "output", tmp_path / "temp",
                      tmp_path / "user")
    folders.create()
    return NodeEnvironment(folders, torch.device("cpu"), torch.float32, shared_model_manager)


@pytest.mark.parametrize("kind", ["sd2-v", "sdxl", "sdxl-refiner"])
def test_sd2_and_sdxl_checkpoints_round_trip(own_models, kind):
    build = {"sd2-v": lambda: (tiny.build_tiny_components("sd2", 3, v_prediction=True), tiny),
             "sdxl": lambda: (sdxl_tiny.build_tiny_sdxl(10), sdxl_tiny),
             "sdxl-refiner": lambda: (sdxl_tiny.build_tiny_sdxl(11, refiner=True), sdxl_tiny)}[kind]
    components, family = build()
    path = family.write_checkpoint(components, own_models.folders.model_dir("checkpoints") / f"{kind}.safetensors")
    with use_environment(own_models):
        model, clip, vae = CheckpointLoaderSimple().load_checkpoint(path.name)
        ms.CheckpointSave().save(model, clip, vae, kind)
    saved_path = own_models.folders.output_dir / f"{kind}_00001_.safetensors"
    original, saved = load_file(str(path)), load_file(str(saved_path))
    assert set(saved) == set(original)
    assert all(torch.equal(saved[key], original[key]) for key in original)
    metadata = _metadata(saved_path)
    if kind == "sd2-v":
        assert "v_pred" in saved and metadata["modelspec.predict_key"] == "v"
    else:
        architecture = "stable-diffusion-xl-v1-" + ("refiner" if kind == "sdxl-refiner" else "base")
        assert metadata["modelspec.architecture"] == architecture
        assert metadata["modelspec.title"] == f"{kind} 1" and metadata["modelspec.implementation"] == "sgm"


def _render(model, clip, vae):
    positive = CLIPTextEncode().encode(clip, "a knight")[0]
    negative = CLIPTextEncode().encode(clip, "")[0]
    (latent,) = EmptyLatentImage().generate(64, 64, 1)
    (samples,) = KSampler().sample(model, 3, 2, 7.0, "euler", "normal", positive, negative, latent)
    return VAEDecode().decode(vae, samples)[0]


def test_a_saved_merge_with_loras_loads_back_and_renders_the_same(node_env, sd1, own_models):
    model, clip, vae = sd1
    lora_model, lora_clip = LoraLoader().load_lora(model, clip, DEMO_LORA, 0.8, 0.6)
    (merged,) = ModelMergeSimple().merge(lora_model, model, 0.5)
    expected = _render(merged, lora_clip, vae)
    ms.CheckpointSave().save(merged, lora_clip, vae, "checkpoints/merged")
    saved = node_env.folders.output_dir / "checkpoints" / "merged_00001_.safetensors"
    shutil.copy(saved, own_models.folders.model_dir("checkpoints") / saved.name)
    with use_environment(own_models):
        image = _render(*CheckpointLoaderSimple().load_checkpoint(saved.name))
    assert (image - expected).abs().max() <= 2e-4
    assert (image - _render(model, clip, vae)).abs().max() > 0.01  # the merge and LoRAs are in the file


def test_vae_and_diffusion_model_files(node_env, sd1, tiny_models_dir):
    model, _, vae = sd1
    ms.VAESave().save(vae, "vae/ComfyUI_vae")
    ms.ModelSave().save(model, "diffusion_models/ComfyUI")
    original = load_file(str(tiny_models_dir / "checkpoints" / DEMO_CHECKPOINT))
    vae_path = node_env.folders.output_dir / "vae" / "ComfyUI_vae_00001_.safetensors"
    vae_file = load_file(str(vae_path))
    assert vae_file.keys() == {key.removeprefix("first_stage_model.") for key in original
                               if key.startswith("first_stage_model.")}
    reloaded = loading.load_vae(node_env.models, vae_path)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(reloaded.decode(latent), vae.decode(latent))
    unet = load_file(str(node_env.folders.output_dir / "diffusion_models" / "ComfyUI_00001_.safetensors"))
    assert unet.keys() == {key for key in original if key.startswith("model.diffusion_model.")}


def test_an_unsupported_family_is_refused_by_name(sd1):
    import dataclasses

    model, clip, vae = sd1
    with pytest.raises(ValueError, match="model: saving .* not supported"):
        ms.CheckpointSave().save(dataclasses.replace(model, family="sd3"), clip, vae, "x")


def test_low_rank_factors_are_comfyuis_clamped_svd():
    difference = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    up, down = low_rank(difference, 3)
    u, s, vh = torch.linalg.svd(difference)
    expected_up, expected_down = u[:, :3] * s[:3], vh[:3]
    limit = torch.quantile(torch.cat([expected_up.flatten(), expected_down.flatten()]), 0.99)
    assert torch.allclose(up, expected_up.clamp(-limit, limit), atol=1e-6)
    assert torch.allclose(down, expected_down.clamp(-limit, limit), atol=1e-6)
    conv_up, conv_down = low_rank(torch.randn(4, 3, 3, 3), 2)
    assert conv_up.shape == (4, 2, 1, 1) and conv_down.shape == (2, 3, 3, 3)


def test_an_extracted_lora_loads_back_as_its_factors(node_env, sd1, own_models):
    """At full rank the factors are the whole SVD, less ComfyUI's outlier clamp (so even a full-rank LoRA differs
    from the difference by the clamped 1%, as ComfyUI's does); LoraLoader applies exactly up @ down."""
    model, _, _ = sd1
    (tuned,) = LoraLoaderModelOnly().load_lora_model_only(model, DEMO_LORA, 1.0)
    (difference,) = ModelMergeSubtract().merge(tuned, model, 1.0)
    ms.LoraSave().save("loras/extracted", 4096, "standard", False, model_diff=difference)
    path = node_env.folders.output_dir / "loras" / "extracted_00001_.safetensors"
    lora = load_file(str(path))
    assert lora and all(key.startswith("lora_unet_") for key in lora)
    assert not any(key.endswith((".diff", ".diff_b")) for key in lora)
    shutil.copy(path, own_models.folders.model_dir("loras") / path.name)
    with use_environment(own_models):
        (extracted,) = LoraLoaderModelOnly().load_lora_model_only(model, path.name, 1.0)
    rebuilt = effective_state_dict(extracted.network, "unet", extracted.loras)
    base, differences = model.network.state_dict(), difference.network.state_dict()
    for key in ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight", "conv_in.weight",
                "up_blocks.2.attentions.1.transformer_blocks.0.attn2.to_v.weight"):
        kohya = "lora_unet_" + key.removesuffix(".weight").replace(".", "_")
        up, down = lora[f"{kohya}.lora_up.weight"].float(), lora[f"{kohya}.lora_down.weight"].float()
        assert down.shape[0] == min(differences[key].shape[:2]) and f"{kohya}.alpha" not in lora
        expected_up, expected_down = low_rank(differences[key], 4096)
        assert torch.allclose(up, expected_up.half().float()) and torch.allclose(down, expected_down.half().float())
        product = (up.flatten(1) @ down.flatten(1)).reshape(base[key].shape)
        assert torch.allclose(rebuilt[key] - base[key], product, atol=1e-5), key


def test_bias_and_full_diffs_are_written_as_comfyui_writes_them(node_env, sd1):
    model, _, _ = sd1
    (tuned,) = LoraLoaderModelOnly().load_lora_model_only(model, DEMO_LORA, 1.0)
    (difference,) = ModelMergeSubtract().merge(tuned, model, 1.0)
    ms.LoraSave().save("with_bias", 2, "standard", True, model_diff=difference)
    ms.LoraSave().save("full", 2, "full_diff", False, model_diff=difference)
    assert ms.LoraSave().save("nothing", 2, "standard", True) == {}
    output = node_env.folders.output_dir
    with_bias = load_file(str(output / "with_bias_00001_.safetensors"))
    assert with_bias["lora_unet_conv_in.lora_down.weight"].shape[0] == 2
    assert "lora_unet_conv_in.diff_b" in with_bias and "lora_unet_conv_norm_out.diff" in with_bias
    full = load_file(str(output / "full_00001_.safetensors"))
    key = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    assert torch.equal(full["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.diff"],
                       difference.network.state_dict()[key].half())
    assert not (output / "nothing_00001_.safetensors").exists()


def test_saving_workflow_runs_through_the_engine(node_env):
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO_CHECKPOINT}},
        "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": DEMO_LORA,
                                                     "strength_model": 1.0, "strength_clip": 1.0}},
        "3": {"class_type": "ModelMergeSubtract", "inputs": {"model1": ["2", 0], "model2": ["1", 0],
                                                             "multiplier": 1.0}},
        "4": {"class_type": "LoraSave", "inputs": {"filename_prefix": "loras/ComfyUI_extracted_lora", "rank": 8,
                                                   "lora_type": "standard", "bias_diff": True, "model_diff": ["3", 0]}},
        "5": {"class_type": "CheckpointSave", "inputs": {"model": ["2", 0], "clip": ["2", 1], "vae": ["1", 2],
                                                         "filename_prefix": "checkpoints/ComfyUI"}},
        "6": {"class_type": "VAESave", "inputs": {"vae": ["1", 2], "filename_prefix": "vae/ComfyUI_vae"}},
        "7": {"class_type": "ModelSave", "inputs": {"model": ["3", 0], "filename_prefix": "diffusion_models/ComfyUI"}},
    }
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    validation = validate_prompt(prompt, registry)
    assert validation.ok and not validation.node_errors, validation.to_response()
    result = build_executor(registry, OutputCache()).execute(validation.prompt, "p1", {"extra_pnginfo": WORKFLOW},
                                                             validation.outputs)
    assert result.success, result.error
    output = node_env.folders.output_dir
    for written in ("loras/ComfyUI_extracted_lora_00001_", "checkpoints/ComfyUI_00001_", "vae/ComfyUI_vae_00001_",
                    "diffusion_models/ComfyUI_00001_"):
        assert (output / f"{written}.safetensors").is_file(), written
    metadata = _metadata(output / "checkpoints" / "ComfyUI_00001_.safetensors")
    assert json.loads(metadata["prompt"]) == prompt and json.loads(metadata["workflow"]) == WORKFLOW["workflow"]


def test_flux_transformer_and_vae_files_round_trip(own_models):
    from diffusion.families.flux import demo as flux_tiny
    from nodes.loaders import UNETLoader, VAELoader

    models_dir = own_models.folders.models_dir
    flux_tiny.write_flux_single_files(flux_tiny.build_tiny_flux(3), models_dir)
    with use_environment(own_models):
        (model,) = UNETLoader().load_unet(flux_tiny.DEMO_FLUX_TRANSFORMER)
        (vae,) = VAELoader().load_vae(flux_tiny.DEMO_FLUX_VAE)
        ms.ModelSave().save(model, "diffusion_models/flux")
        ms.VAESave().save(vae, "vae/flux")
    output = own_models.folders.output_dir
    for saved, original in (("diffusion_models/flux", f"diffusion_models/{flux_tiny.DEMO_FLUX_TRANSFORMER}"),
                            ("vae/flux", f"vae/{flux_tiny.DEMO_FLUX_VAE}")):
        written = load_file(str(output / f"{saved}_00001_.safetensors"))
        expected = load_file(str(models_dir / original))
        assert written.keys() == expected.keys()
        assert all(torch.equal(written[key], expected[key]) for key in expected), saved
    assert "modelspec.predict_key" not in _metadata(output / "diffusion_models" / "flux_00001_.safetensors")
