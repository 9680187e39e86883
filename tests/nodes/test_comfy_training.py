"""ComfyUI's training nodes (nodes/comfy_training.py): their contracts against ComfyUI's (`COMFYUI_CONTRACTS`, read
off comfy_extras/nodes_train.py), LoRA training from LATENT + CONDITIONING on the tiny SD1 model, the LORA_MODEL
through LoraModelLoader and through a saved file and LoraLoader, the loss graph, the folder loaders, and an API
workflow through the engine."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import nodes
from app.runtime import build_executor
from diffusion.families.sd.demo import DEMO_CHECKPOINT
from diffusion.lora import lora_applied
from engine.cache import OutputCache
from engine.registry import NodeRegistry
from engine.validation import validate_prompt
from nodes import comfy_training as ct
from nodes.conditioning import CLIPTextEncode
from nodes.environment import Folders, NodeEnvironment, use_environment
from nodes.latent import VAEEncode
from nodes.loaders import CheckpointLoaderSimple, LoraLoader
from tests.nodes.conftest import validation_errors

SEED_MAX = 0xFFFFFFFFFFFFFFFF
RESIZE = ("resize_method", ["None", "Stretch", "Crop", "Pad"])

# node: (category, RETURN_TYPES, RETURN_NAMES or None, the inputs in order (required, then optional): link type,
# combo choices (None: a list of files or folders), (BOOLEAN, default) or (INT/FLOAT, default, min, max, step))
COMFYUI_CONTRACTS: dict[str, tuple[str, tuple, tuple | None, list]] = {
    "TrainLoraNode": ("training", ("MODEL", "LORA_MODEL", "LOSS_MAP", "INT"), ("model_with_lora", "lora", "loss",
                                                                               "steps"), [
        ("model", "MODEL"), ("latents", "LATENT"), ("positive", "CONDITIONING"),
        ("batch_size", ("INT", 1, 1, 10000, 1)), ("grad_accumulation_steps", ("INT", 1, 1, 1024, 1)),
        ("steps", ("INT", 16, 1, 100000, None)), ("learning_rate", ("FLOAT", 0.0005, 0.0000001, 1.0, 0.000001)),
        ("rank", ("INT", 8, 1, 128, None)), ("optimizer", ["AdamW", "Adam", "SGD", "RMSprop"]),
        ("loss_function", ["MSE", "L1", "Huber", "SmoothL1"]), ("seed", ("INT", 0, 0, SEED_MAX, None)),
        ("training_dtype", ["bf16", "fp32"]), ("lora_dtype", ["bf16", "fp32"]),
        ("algorithm", ["LoRA", "LoHa", "LoKr", "OFT"]), ("gradient_checkpointing", ("BOOLEAN", True)),
        ("existing_lora", None)]),
    "LoraModelLoader": ("loaders", ("MODEL",), None, [
        ("model", "MODEL"), ("lora", "LORA_MODEL"), ("strength_model", ("FLOAT", 1.0, -100.0, 100.0, 0.01))]),
    "SaveLoRANode": ("loaders", (), None, [("lora", "LORA_MODEL"), ("prefix", "STRING"), ("steps", "INT")]),
    "LossGraphNode": ("training", (), None, [("loss", "LOSS_MAP"), ("filename_prefix", "STRING")]),
    "LoadImageSetFromFolderNode": ("loaders", ("IMAGE",), None, [("folder", None), RESIZE]),
    "LoadImageTextSetFromFolderNode": ("loaders", ("IMAGE", "CONDITIONING"), None, [
        ("folder", None), ("clip", "CLIP"), RESIZE, ("width", ("INT", -1, -1, 10000, 1)),
        ("height", ("INT", -1, -1, 10000, 1))]),
}
DEFAULTS = {"prefix": "loras/ComfyUI_trained_lora", "filename_prefix": "loss_graph"}
DISPLAY_NAMES = {"TrainLoraNode": "Train LoRA", "SaveLoRANode": "Save LoRA Weights",
                 "LoraModelLoader": "Load LoRA Model", "LoadImageSetFromFolderNode": "Load Image Dataset from Folder",
                 "LoadImageTextSetFromFolderNode": "Load Image and Text Dataset from Folder",
                 "LossGraphNode": "Plot Loss Graph"}
TRAIN = dict(batch_size=2, grad_accumulation_steps=1, steps=16, learning_rate=0.1, rank=4, optimizer="AdamW",
             loss_function="MSE", seed=3, training_dtype="fp32", lora_dtype="fp32", algorithm="LoRA",
             gradient_checkpointing=False, existing_lora="[None]")


def _contract(node_class: type) -> tuple[str, tuple, tuple | None, list]:
    inputs = []
    sections = node_class.INPUT_TYPES()
    for name, (kind, options) in {**sections["required"], **sections.get("optional", {})}.items():
        if isinstance(kind, list):
            inputs.append((name, None if name in ("folder", "existing_lora") else kind))
        elif kind in ("INT", "FLOAT") and "default" in options:
            inputs.append((name, (kind, options["default"], options["min"], options["max"], options.get("step"))))
        elif kind == "BOOLEAN":
            inputs.append((name, (kind, options["default"])))
        else:
            inputs.append((name, kind))
    return node_class.CATEGORY, node_class.RETURN_TYPES, getattr(node_class, "RETURN_NAMES", None), inputs


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_models_dir, shared_model_manager):
    """The tiny checkpoints (linked) with loras and input folders of their own."""
    base = tmp_path_factory.mktemp("comfy_training")
    folders = Folders.under(base)
    folders.models_dir.mkdir()
    (folders.models_dir / "checkpoints").symlink_to(tiny_models_dir / "checkpoints", target_is_directory=True)
    folders.create()
    return NodeEnvironment(folders, torch.device("cpu"), torch.float32, shared_model_manager)


@pytest.fixture(autouse=True)
def current_env(env):
    with use_environment(env):
        yield env


@pytest.fixture(scope="module")
def models(env):
    with use_environment(env):
        return CheckpointLoaderSimple().load_checkpoint(DEMO_CHECKPOINT)


def _pattern(seed: int, size=(64, 64)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((1, size[1] // 8, size[0] // 8, 3), generator=generator).repeat_interleave(8, 1) \
        .repeat_interleave(8, 2)


@pytest.fixture(scope="module")
def batch(env, models):
    """LATENT of two 64x64 images and one conditioning per image."""
    model, clip, vae = models
    with use_environment(env):
        (latents,) = VAEEncode().encode(vae, torch.cat([_pattern(1), _pattern(2)]))
        positive = CLIPTextEncode().encode(clip, "a red square")[0] + CLIPTextEncode().encode(clip, "a blue dot")[0]
    return latents, positive


@pytest.fixture(scope="module")
def trained(env, models, batch):
    with use_environment(env):
        return ct.TrainLoraNode().train(models[0], *batch, **TRAIN)


def _fixed_loss(model, latents, positive) -> float:
    """Mean epsilon-prediction error of the model (its LoRAs applied) over 8 fixed noisings of the batch."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(dict(model.scheduler_config))
    clean = model.latent_format.process_in(latents["samples"])
    embeddings = torch.cat([entry[0] for entry in positive])
    generator = torch.Generator().manual_seed(99)
    total = 0.0
    with torch.no_grad(), lora_applied(model.network, "unet", model.loras) as unet:
        for _ in range(8):
            noise = torch.randn(clean.shape, generator=generator)
            timesteps = torch.randint(0, 1000, (len(clean),), generator=generator)
            prediction = unet(scheduler.add_noise(clean, noise, timesteps), timesteps,
                              encoder_hidden_states=embeddings).sample
            total += float(torch.nn.functional.mse_loss(prediction, noise))
    return total / 8


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert _contract(node_class) == COMFYUI_CONTRACTS[name]
    sections = node_class.INPUT_TYPES()
    for input_name, (_, options) in {**sections["required"], **sections.get("optional", {})}.items():
        assert options.get("tooltip"), input_name
        if input_name in DEFAULTS:
            assert options["default"] == DEFAULTS[input_name]
    assert node_class.DESCRIPTION and nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == DISPLAY_NAMES[name]


def test_every_node_is_in_the_table():
    assert set(ct.NODE_CLASS_MAPPINGS) == set(COMFYUI_CONTRACTS)


def test_combo_defaults_and_files_are_comfyuis(env):
    required = ct.TrainLoraNode.INPUT_TYPES()["required"]
    assert required["existing_lora"][0][-1] == "[None]" and required["existing_lora"][1]["default"] == "[None]"
    assert [required[name][1]["default"] for name in ("optimizer", "loss_function", "training_dtype", "lora_dtype",
                                                      "algorithm")] == ["AdamW", "MSE", "bf16", "bf16", "LoRA"]
    assert ct.SaveLoRANode.INPUT_TYPES()["optional"]["steps"][1]["forceInput"] is True


def test_training_lowers_the_loss_on_a_fixed_batch(trained, models, batch):
    model_with_lora, lora, loss, steps = trained
    assert steps == TRAIN["steps"] and len(loss["loss"]) == TRAIN["steps"]
    before, after = _fixed_loss(models[0], *batch), _fixed_loss(model_with_lora, *batch)
    print(f"fixed-batch loss {before:.4f} -> {after:.4f}")
    assert after < before * 0.97
    assert not models[0].loras  # the input model is unchanged


def test_lora_model_is_comfyuis_layout(trained, models):
    lora = trained[1]
    layers = {key.rsplit(".", 2)[0] if key.endswith(".weight") else key.rsplit(".", 1)[0] for key in lora}
    assert "diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q" in layers
    assert "diffusion_model.output_blocks.3.1.transformer_blocks.0.attn2.to_out.0" in layers
    for layer in layers:
        assert {f"{layer}.lora_up.weight", f"{layer}.lora_down.weight", f"{layer}.alpha"} <= set(lora)
        assert float(lora[f"{layer}.alpha"]) == 1.0 and lora[f"{layer}.lora_down.weight"].shape[0] == TRAIN["rank"]
    assert {tensor.dtype for tensor in lora.values()} == {torch.float32}


def test_lora_dtype_and_seed_decide_the_weights(env, models, batch):
    quick = {**TRAIN, "steps": 1, "lora_dtype": "bf16"}
    first = ct.TrainLoraNode().train(models[0], *batch, **quick)[1]
    again = ct.TrainLoraNode().train(models[0], *batch, **quick)[1]
    other = ct.TrainLoraNode().train(models[0], *batch, **{**quick, "seed": 4})[1]
    assert {tensor.dtype for tensor in first.values()} == {torch.bfloat16}
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert any(not torch.equal(first[key], other[key]) for key in first)


def test_lora_model_loader_matches_lora_loader_on_the_saved_file(env, trained, models, batch):
    model, clip, _ = models
    lora = trained[1]
    result = ct.SaveLoRANode().save(lora, "loras/ComfyUI_trained_lora", 16)
    written = env.folders.output_dir / "loras" / "ComfyUI_trained_lora_16_steps_00001_.safetensors"
    assert result["ui"]["text"] == ["loras/ComfyUI_trained_lora_16_steps_00001_.safetensors"]
    assert written.is_file() and not [path for path in written.parent.iterdir() if path.name.startswith(".")]
    file_state = load_file(written)
    assert set(file_state) == set(lora) and all(torch.equal(file_state[key], lora[key]) for key in lora)
    ct.SaveLoRANode().save(lora, "loras/ComfyUI_trained_lora")
    assert (written.parent / "ComfyUI_trained_lora_00001_.safetensors").is_file()

    (env.folders.model_dir("loras") / "trained.safetensors").write_bytes(written.read_bytes())
    from_file = LoraLoader().load_lora(model, clip, "trained.safetensors", 0.7, 0.0)[0]
    (from_dict,) = ct.LoraModelLoader().load_lora_model(model, lora, 0.7)
    assert ct.LoraModelLoader().load_lora_model(model, lora, 0.0)[0] is model
    ours, theirs = _fixed_loss(from_dict, *batch), _fixed_loss(from_file, *batch)
    assert ours == pytest.approx(theirs, rel=1e-6) and ours != pytest.approx(_fixed_loss(model, *batch), rel=1e-4)
    assert _fixed_loss(trained[0], *batch) == pytest.approx(
        _fixed_loss(ct.LoraModelLoader().load_lora_model(model, lora, 1.0)[0], *batch), rel=1e-6)


def test_existing_lora_continues_and_counts_its_steps(env, trained, models, batch):
    lora = trained[1]
    path = env.folders.model_dir("loras") / "run_12_steps_00001_.safetensors"
    from safetensors.torch import save_file

    save_file(lora, str(path))
    assert "run_12_steps_00001_.safetensors" in ct.TrainLoraNode.INPUT_TYPES()["required"]["existing_lora"][0]
    _, continued, _, steps = ct.TrainLoraNode().train(
        models[0], *batch, **{**TRAIN, "steps": 1, "learning_rate": 1e-7, "optimizer": "SGD",
                              "existing_lora": "run_12_steps_00001_.safetensors"})
    assert steps == 13 and set(continued) == set(lora)
    assert all(torch.allclose(continued[key], lora[key], atol=1e-5) for key in lora)


def test_bad_inputs_are_named(env, models, batch):
    latents, positive = batch
    train = ct.TrainLoraNode().train
    with pytest.raises(ValueError, match="positive: 3 conditionings for 2 latents"):
        train(models[0], latents, positive + positive[:1], **TRAIN)
    with pytest.raises(ValueError, match="algorithm: 'LoHa'"):
        train(models[0], latents, positive, **{**TRAIN, "algorithm": "LoHa"})
    with pytest.raises(ValueError, match="optimizer: unknown 'Lion'"):
        train(models[0], latents, positive, **{**TRAIN, "optimizer": "Lion"})
    with pytest.raises(ValueError, match="latents: expected"):
        train(models[0], {"samples": torch.zeros(2, 3, 8, 8)}, positive, **TRAIN)
    with pytest.raises(ValueError, match="model: LoRA training supports Stable Diffusion 1.x/2.x"):
        train(dataclasses.replace(models[0], family="sdxl"), latents, positive, **TRAIN)
    with pytest.raises(ValueError, match="lora: expected a LORA_MODEL"):
        ct.LoraModelLoader().load_lora_model(models[0], {}, 1.0)
    with pytest.raises(ValueError, match="lora: .*matches no layers"):
        ct.LoraModelLoader().load_lora_model(models[0], {"diffusion_model.nothing.lora_up.weight": torch.zeros(4, 2),
                                                         "diffusion_model.nothing.lora_down.weight": torch.zeros(2, 4)},
                                             1.0)


def test_one_conditioning_serves_every_latent(env, models, batch):
    latents, positive = batch
    _, _, loss, _ = ct.TrainLoraNode().train(models[0], latents, positive[:1], **{**TRAIN, "steps": 2})
    assert len(loss["loss"]) == 2


def test_v_prediction_sd2_trains(env):
    model, clip, vae = CheckpointLoaderSimple().load_checkpoint("tiny-sd2-v.safetensors")
    assert model.prediction_type == "v_prediction"
    (latents,) = VAEEncode().encode(vae, _pattern(5))
    (positive,) = CLIPTextEncode().encode(clip, "a thing")
    _, lora, loss, _ = ct.TrainLoraNode().train(model, latents, positive, **{**TRAIN, "steps": 2})
    assert len(loss["loss"]) == 2 and all(np.isfinite(loss["loss"]))
    assert ct.LoraModelLoader().load_lora_model(model, lora, 1.0)[0].loras


def test_gradient_accumulation_records_every_micro_batch(env, models, batch):
    _, _, loss, steps = ct.TrainLoraNode().train(models[0], *batch, **{
        **TRAIN, "steps": 2, "grad_accumulation_steps": 2, "batch_size": 1, "loss_function": "Huber",
        "optimizer": "RMSprop", "gradient_checkpointing": True})
    assert steps == 2 and len(loss["loss"]) == 4  # ComfyUI's LOSS_MAP: one entry per micro-batch


def test_loss_graph_is_written_to_temp(env):
    result = ct.LossGraphNode().plot_loss({"loss": [1.0, 0.7, 0.5, 0.45]}, "loss_graph")
    (entry,) = result["ui"]["images"]
    assert entry["type"] == "temp" and entry["filename"].startswith("loss_graph")
    image = Image.open(env.folders.temp_dir / entry["subfolder"] / entry["filename"])
    assert image.size == (840, 520)
    with pytest.raises(ValueError, match="loss:"):
        ct.LossGraphNode().plot_loss({"loss": []}, "loss_graph")


def _write_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 8), (255, 0, 0)).save(folder / "a.png")
    gradient = Image.linear_gradient("L").convert("RGB").resize((24, 12))
    gradient.save(folder / "b.png")
    (folder / "a.txt").write_text(" a red thing \n")
    (folder / "notes.md").write_text("not an image")
    (folder / "2_cats").mkdir(exist_ok=True)
    Image.new("RGB", (16, 8), (0, 0, 255)).save(folder / "2_cats" / "c.png")
    (folder / "2_cats" / "c.txt").write_text("a blue cat")


def _pixels(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)


def test_image_set_loader_resizes_like_comfyui(env):
    _write_folder(env.folders.input_dir / "set")
    assert "set" in ct.LoadImageSetFromFolderNode.INPUT_TYPES()["required"]["folder"][0]
    load = ct.LoadImageSetFromFolderNode().load_images
    with pytest.raises(ValueError, match="resize_method: b.png is 24x12, not 16x8"):
        load("set", "None")
    (stretched,) = load("set", "Stretch")
    assert stretched.shape == (2, 8, 16, 3) and torch.equal(stretched[0, ..., 0], torch.ones(8, 16))
    gradient = Image.linear_gradient("L").convert("RGB").resize((24, 12))
    expected = _pixels(gradient.resize((16, 8), Image.Resampling.LANCZOS))
    assert torch.allclose(stretched[1], expected)
    (padded,) = load("set", "Pad")  # ComfyUI's Pad resizes, as Stretch does
    assert torch.equal(padded, stretched)
    (cropped,) = load("set", "Crop")  # the top-left corner
    assert torch.allclose(cropped[1], _pixels(gradient.crop((0, 0, 16, 8))))
    with pytest.raises(ValueError, match="folder"):
        load("../outside", "None")


def test_image_text_set_loader_reads_captions_and_kohya_repeats(env, models):
    _write_folder(env.folders.input_dir / "captioned")
    clip = models[1]
    images, conditioning = ct.LoadImageTextSetFromFolderNode().load_images("captioned", clip, "Stretch", 32, 16)
    assert images.shape == (4, 16, 32, 3)  # a, b, then 2_cats/c twice
    assert torch.allclose(images[2, ..., 2], torch.ones(16, 32)) and torch.equal(images[2], images[3])
    assert len(conditioning) == 4
    wide, _ = ct.LoadImageTextSetFromFolderNode().load_images("captioned", clip, "Stretch", 32, -1)
    assert wide.shape == (4, 8, 32, 3)  # the height unset: the first image's
    for entry, caption in zip(conditioning, ["a red thing", "", "a blue cat", "a blue cat"]):
        assert torch.equal(entry[0], clip.encode_prompt(caption)[0][0])


def _run(prompt: dict) -> dict:
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    validation = validate_prompt(prompt, registry)
    assert validation.ok and not validation.node_errors, validation.to_response()
    result = build_executor(registry, OutputCache()).execute(validation.prompt, "p1", {}, validation.outputs)
    assert result.success, result.error
    return result.outputs


def _workflow(algorithm: str = "LoRA") -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO_CHECKPOINT}},
        "2": {"class_type": "LoadImageTextSetFromFolderNode",
              "inputs": {"folder": "flow", "clip": ["1", 1], "resize_method": "Stretch", "width": 64, "height": 64}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "TrainLoraNode", "inputs": {
            "model": ["1", 0], "latents": ["3", 0], "positive": ["2", 1], "batch_size": 1,
            "grad_accumulation_steps": 1, "steps": 2, "learning_rate": 0.0005, "rank": 2, "optimizer": "AdamW",
            "loss_function": "MSE", "seed": 0, "training_dtype": "bf16", "lora_dtype": "bf16",
            "algorithm": algorithm, "gradient_checkpointing": True, "existing_lora": "[None]"}},
        "5": {"class_type": "SaveLoRANode", "inputs": {"lora": ["4", 1], "prefix": "loras/ComfyUI_trained_lora",
                                                       "steps": ["4", 3]}},
        "6": {"class_type": "LossGraphNode", "inputs": {"loss": ["4", 2], "filename_prefix": "loss_graph"}},
        "7": {"class_type": "LoraModelLoader", "inputs": {"model": ["1", 0], "lora": ["4", 1],
                                                          "strength_model": 1.0}},
        "8": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red thing", "clip": ["1", 1]}},
        "9": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "10": {"class_type": "KSampler", "inputs": {
            "model": ["7", 0], "seed": 1, "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0, "positive": ["8", 0], "negative": ["8", 0], "latent_image": ["9", 0]}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "trained"}},
    }


def test_api_workflow_trains_saves_plots_and_samples(env):
    _write_folder(env.folders.input_dir / "flow")
    outputs = _run(_workflow())
    saved = env.folders.output_dir / "loras"
    assert any(path.name.startswith("ComfyUI_trained_lora_2_steps_") for path in saved.iterdir())
    assert outputs["6"]["images"][0]["type"] == "temp"
    assert (env.folders.output_dir / outputs["12"]["images"][0]["filename"]).is_file()


def test_untrainable_algorithm_is_refused_at_validation(env):
    errors = validation_errors(_workflow("LoKr"))
    assert any("algorithm" in error["details"] or "algorithm" in error["message"] for error in errors["4"])
