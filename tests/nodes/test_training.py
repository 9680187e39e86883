"""LoRA training nodes on the tiny SD1 model and a generated dataset of coloured shapes with captions.

One seeded training run is shared by the tests that inspect its result (loss, file, loaders, base untouched);
the others train for a few steps each."""
import dataclasses
import importlib.util
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open

import nodes
from app.runtime import build_executor
from diffusion.families.sd.demo import DEMO_CHECKPOINT
from engine.cache import OutputCache
from engine.interrupt import ExecutionInterrupted, InterruptFlag
from engine.progress import NodeRunContext, bind_node_context
from engine.registry import NodeRegistry
from engine.validation import validate_prompt
from nodes.environment import Folders, NodeEnvironment, use_environment
from nodes.loaders import CheckpointLoaderSimple, LoraLoader
from nodes.training import LoadImageDataset, PlotLoss, TrainLoRA, resume_state_path
from tests.nodes.test_lora import _image
from tests.nodes.test_parity import PROMPT, SEED, TOLERANCE, _reference_scheduler
from training.trainer import (
    LoraTrainer,
    TrainingSettings,
    _Sampler,
    available_optimizers,
)

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "train_lora.json"
COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60), "yellow": (230, 210, 40)}
TRAINED_STEPS = 30
DEFAULTS = dict(rank=8, alpha=8.0, learning_rate=2e-3, steps=TRAINED_STEPS, batch_size=2, gradient_accumulation=1,
                optimizer="AdamW", lr_scheduler="constant", warmup_steps=0, train_text_encoder=False,
                min_snr_gamma=0.0, gradient_checkpointing=False, seed=0, save_every=0, output_name="shapes",
                resume=False)


def write_shapes(folder: Path, size=(72, 64)) -> None:
    """8 images: a circle and a square in each of 4 colours, each with a same-name caption file."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, (colour, rgb) in enumerate(list(COLOURS.items()) * 2):
        shape = "circle" if index < 4 else "square"
        image = Image.new("RGB", size, (240, 240, 240))
        draw = ImageDraw.Draw(image)
        (draw.ellipse if shape == "circle" else draw.rectangle)((14, 10, 54, 50), fill=rgb)
        image.save(folder / f"{colour}_{shape}.png")
        (folder / f"{colour}_{shape}.txt").write_text(f"a {colour} {shape}")


@pytest.fixture(scope="module")
def training_env(tmp_path_factory, tiny_models_dir, shared_model_manager):
    """The tiny checkpoints (linked) with a loras folder of its own, and an input folder holding `shapes/`."""
    base = tmp_path_factory.mktemp("training")
    folders = Folders.under(base)
    folders.models_dir.mkdir()
    for kind in ("checkpoints", "diffusers"):
        (folders.models_dir / kind).symlink_to(tiny_models_dir / kind, target_is_directory=True)
    folders.create()
    write_shapes(folders.input_dir / "shapes")
    return NodeEnvironment(folders, torch.device("cpu"), torch.float32, shared_model_manager)


@pytest.fixture(autouse=True)
def current_training_env(training_env):
    with use_environment(training_env):
        yield training_env


def _loras(env) -> list[str]:
    return sorted(path.relative_to(env.folders.model_dir("loras")).as_posix()
                  for path in env.folders.model_dir("loras").rglob("*") if path.is_file())


def _snapshot(module) -> dict[str, tuple[torch.Tensor, bool]]:
    return {name: (tensor.detach().clone(), tensor.requires_grad) for name, tensor in module.state_dict(
        keep_vars=True).items()}


@pytest.fixture(scope="module")
def trained(training_env):
    """(model, clip, vae, dataset, lora name, loss history, base snapshots) of one seeded 30-step run."""
    with use_environment(training_env):
        model, clip, vae = CheckpointLoaderSimple().load_checkpoint(DEMO_CHECKPOINT)
        unet_before, text_before = _snapshot(model.network), _snapshot(clip.text_encoder)
        (dataset,) = LoadImageDataset().load_dataset("shapes", vae, 64, True, True, 1, "")
        output = TrainLoRA().train(model, clip, dataset, **DEFAULTS)
    lora_name, history = output["result"]
    return dict(model=model, clip=clip, vae=vae, dataset=dataset, lora_name=lora_name, history=history,
                unet_before=unet_before, text_before=text_before)


def test_dataset_reads_captions_crops_and_caches_latents(trained):
    dataset = trained["dataset"]
    assert dataset.latents.shape == (8, 4, 8, 8) and dataset.flipped_latents.shape == (8, 4, 8, 8)
    assert set(dataset.captions) == {f"a {colour} {shape}" for colour in COLOURS for shape in ("circle", "square")}
    assert not torch.equal(dataset.latents, dataset.flipped_latents)


def test_caption_widget_fills_in_and_random_crops_are_seeded(trained, training_env):
    folder = training_env.folders.input_dir / "uncaptioned"
    folder.mkdir(exist_ok=True)
    Image.new("RGB", (48, 32), (200, 20, 20)).save(folder / "wide.png")
    Image.linear_gradient("L").convert("RGB").resize((32, 80)).save(folder / "tall.png")
    (folder / "tall.txt").write_text("  a tall\n gradient ")
    load = LoadImageDataset().load_dataset
    (first,) = load("uncaptioned", trained["vae"], 32, False, False, 2, "a thing")
    (second,) = load("uncaptioned", trained["vae"], 32, False, False, 2, "a thing")
    assert first.captions == ("a tall gradient", "a thing") and first.repeats == 2
    assert first.latents.shape == (2, 4, 4, 4) and first.flipped_latents is None
    assert torch.equal(first.latents, second.latents) and first.fingerprint == second.fingerprint


def test_seeded_training_lowers_the_loss(trained):
    losses = trained["history"]["loss"]
    assert len(losses) == TRAINED_STEPS and all(np.isfinite(losses))
    first, last = statistics.mean(losses[:10]), statistics.mean(losses[-10:])
    print(f"loss: first-10 mean {first:.4f}, last-10 mean {last:.4f}")
    assert last < first * 0.97


def test_lora_file_is_kohya_with_metadata_and_nothing_else_is_left(trained, training_env):
    assert trained["lora_name"] == "shapes.safetensors"
    assert _loras(training_env) == [".shapes.training-state.pt", "shapes.safetensors"]
    with safe_open(training_env.folders.model_dir("loras") / "shapes.safetensors", "pt") as handle:
        keys, metadata = set(handle.keys()), handle.metadata()
    assert keys and all(key.startswith("lora_unet_") for key in keys)
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert metadata["ss_network_dim"] == "8" and metadata["ss_steps"] == str(TRAINED_STEPS)
    assert metadata["ss_base_model_hash"].startswith("sha256:") and len(metadata["ss_base_model_hash"]) == 71
    assert json.loads(metadata["captions_summary"])["images"] == 8
    assert json.loads(metadata["ss_tag_frequency"])["shapes"]["a red circle"] == 1
    assert "shapes" in LoadImageDataset.INPUT_TYPES()["required"]["folder"][0]
    assert LoraLoader.INPUT_TYPES()["required"]["lora_name"][0] == ["shapes.safetensors"]


def test_training_leaves_the_shared_base_model_unchanged(trained):
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module, before in ((trained["model"].network, trained["unet_before"]),
                           (trained["clip"].text_encoder, trained["text_before"])):
        after = module.state_dict(keep_vars=True)
        assert set(after) == set(before)
        for key, (tensor, requires_grad) in before.items():
            assert torch.equal(after[key], tensor) and after[key].requires_grad == requires_grad, key
        assert not any(isinstance(layer, BaseTunerLayer) for layer in module.modules())
        assert not module.training


def test_trained_lora_changes_the_output_at_strength_1_and_not_at_0(trained):
    model, clip, vae = trained["model"], trained["clip"], trained["vae"]
    base = _image(model, clip, vae, steps=2)
    strong = _image(*LoraLoader().load_lora(model, clip, trained["lora_name"], 1.0, 1.0), vae, steps=2)
    off = _image(*LoraLoader().load_lora(model, clip, trained["lora_name"], 0.0, 0.0), vae, steps=2)
    difference = (strong - base).abs().max().item()
    print(f"max pixel change at strength 1: {difference:.4f}")
    assert difference > 1e-3 and torch.equal(off, base)


def test_diffusers_load_lora_weights_reads_the_file_like_lora_loader(trained, training_env, sd_pipeline,
                                                                    pipeline_scheduler_config):
    model, clip, vae = trained["model"], trained["clip"], trained["vae"]
    ours = _image(*LoraLoader().load_lora(model, clip, trained["lora_name"], 1.0, 1.0), vae)
    path = training_env.folders.model_dir("loras") / trained["lora_name"]
    sd_pipeline.load_lora_weights(str(path), adapter_name="trained")
    try:
        sd_pipeline.scheduler = _reference_scheduler(pipeline_scheduler_config, "euler", "normal")
        expected = sd_pipeline(PROMPT, negative_prompt="", num_inference_steps=4, guidance_scale=7.5, height=64,
                               width=64, generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    finally:
        sd_pipeline.unload_lora_weights()
    assert np.abs(ours.numpy() - expected).max() <= TOLERANCE


@pytest.mark.parametrize("checkpoint, prediction", [(DEMO_CHECKPOINT, "epsilon"),
                                                    ("tiny-sd2-v.safetensors", "v_prediction")])
def test_first_loss_is_the_prediction_target_of_the_scheduler_config(trained, checkpoint, prediction, tmp_path):
    """Adapters start at zero, so step 1's loss is the base model's loss against the epsilon or v target."""
    from diffusers import DDPMScheduler

    model, clip, vae = CheckpointLoaderSimple().load_checkpoint(checkpoint)
    assert model.prediction_type == prediction
    dataset = trained["dataset"]
    settings = TrainingSettings(rank=4, alpha=4.0, learning_rate=1e-3, steps=1, batch_size=3, seed=5)
    result = LoraTrainer(model, clip, dataset, settings, tmp_path / "x.safetensors", tmp_path / ".x.pt").run()

    scheduler = DDPMScheduler.from_config(dict(model.scheduler_config))
    images, flips, timesteps, noise = _Sampler(dataset, settings, 1000).draw(0, dataset.latents.shape[1:])
    raw = torch.where(flips.view(-1, 1, 1, 1), dataset.flipped_latents[images], dataset.latents[images])
    latents = raw * 0.18215  # the dataset holds the VAE's raw latents; SD's latent format scales them
    ids = clip.tokenizer([dataset.captions[i] for i in images], max_length=77, padding="max_length",
                         truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        embeddings = clip.text_encoder(ids)[0]
        prediction_ = model.network(scheduler.add_noise(latents, noise, timesteps), timesteps, embeddings).sample
    target = noise if prediction == "epsilon" else scheduler.get_velocity(latents, noise, timesteps)
    expected = torch.nn.functional.mse_loss(prediction_, target).item()
    assert result.losses[0] == pytest.approx(expected, rel=1e-5)


def test_text_encoder_training_min_snr_and_checkpointing(trained, training_env):
    model, clip = trained["model"], trained["clip"]
    text_before = _snapshot(clip.text_encoder)
    options = dict(DEFAULTS, steps=3, batch_size=1, gradient_accumulation=2, lr_scheduler="cosine",
                   warmup_steps=1, train_text_encoder=True, min_snr_gamma=5.0)
    plain = TrainLoRA().train(model, clip, trained["dataset"], **dict(options, output_name="te/plain"))
    checkpointed = TrainLoRA().train(model, clip, trained["dataset"],
                                     **dict(options, output_name="te/checkpointed", gradient_checkpointing=True))
    assert plain["result"][0] == "te/plain.safetensors"
    assert checkpointed["result"][1]["loss"] == pytest.approx(plain["result"][1]["loss"], rel=1e-5)
    assert plain["result"][1]["learning_rate"][:2] == [0.0, pytest.approx(DEFAULTS["learning_rate"])]
    with safe_open(training_env.folders.model_dir("loras") / "te" / "plain.safetensors", "pt") as handle:
        keys = list(handle.keys())
    assert any(key.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj") for key in keys)
    for key, (tensor, requires_grad) in text_before.items():
        current = clip.text_encoder.state_dict(keep_vars=True)[key]
        assert torch.equal(current, tensor) and current.requires_grad == requires_grad
    patched_clip = LoraLoader().load_lora(model, clip, "te/plain.safetensors", 1.0, 1.0)[1]
    assert len(patched_clip.loras) == 1


def _run_with_progress(function, interrupt_at=None):
    events = []
    flag = InterruptFlag()

    def on_progress(node_id, value, total, preview):
        events.append((value, total, preview))
        if interrupt_at is not None and value >= interrupt_at:
            flag.request()

    with bind_node_context(NodeRunContext("3", "p", flag, on_progress)):
        return function(), events


def test_interrupt_keeps_the_last_checkpoint_and_resume_continues_exactly(trained, training_env):
    model, clip, dataset = trained["model"], trained["clip"], trained["dataset"]
    options = dict(DEFAULTS, steps=6, save_every=2, batch_size=1)
    loras = training_env.folders.model_dir("loras")
    with pytest.raises(ExecutionInterrupted):
        _run_with_progress(lambda: TrainLoRA().train(model, clip, dataset, **dict(options, output_name="resumed")),
                           interrupt_at=2)
    with safe_open(loras / "resumed.safetensors", "pt") as handle:
        assert handle.metadata()["ss_steps"] == "2"
    assert resume_state_path(loras / "resumed.safetensors").is_file()
    assert not [path for path in loras.rglob("*.partial")]

    (resumed, events) = _run_with_progress(
        lambda: TrainLoRA().train(model, clip, dataset, **dict(options, output_name="resumed", resume=True)))
    assert [value for value, _, _ in events] == [3, 4, 5, 6] and events[-1][1] == 6
    assert events[-1][2].loss == resumed["result"][1]["loss"][-1]
    assert events[-1][2].to_image().size == (512, 320)
    straight = TrainLoRA().train(model, clip, dataset, **dict(options, output_name="straight"))
    assert resumed["result"][1]["resumed_at"] == 2
    assert resumed["result"][1]["loss"] == pytest.approx(straight["result"][1]["loss"], rel=1e-5)
    with safe_open(loras / "resumed.safetensors", "pt") as a, safe_open(loras / "straight.safetensors", "pt") as b:
        assert a.metadata()["ss_steps"] == "6"
        for key in b.keys():
            torch.testing.assert_close(a.get_tensor(key), b.get_tensor(key), rtol=1e-5, atol=1e-7)

    with pytest.raises(ValueError, match="resume: the saved state"):
        TrainLoRA().train(model, clip, dataset, **dict(options, output_name="resumed", resume=True, rank=4))


def test_bad_inputs_fail_clearly_and_write_nothing(trained, training_env):
    model, clip, vae, dataset = trained["model"], trained["clip"], trained["vae"], trained["dataset"]
    input_dir = training_env.folders.input_dir
    (input_dir / "empty").mkdir(exist_ok=True)
    (input_dir / "broken").mkdir(exist_ok=True)
    Image.new("RGB", (64, 64)).save(input_dir / "broken" / "fine.png")
    (input_dir / "broken" / "bad.png").write_bytes(b"not an image")
    before = _loras(training_env)
    with pytest.raises(ValueError, match="^folder: 'empty' has no images"):
        LoadImageDataset().load_dataset("empty", vae, 64, True, False, 1, "")
    with pytest.raises(ValueError, match="^folder: bad.png is not a readable image"):
        LoadImageDataset().load_dataset("broken", vae, 64, True, False, 1, "")
    with pytest.raises(ValueError, match="^resolution: 60 is not a positive multiple of 8"):
        LoadImageDataset().load_dataset("shapes", vae, 60, True, False, 1, "")
    with pytest.raises(ValueError, match="^rank: must be at least 1, got 0"):
        TrainLoRA().train(model, clip, dataset, **dict(DEFAULTS, rank=0, output_name="bad"))
    sixteen_channels = dataclasses.replace(dataset, latents=torch.zeros(2, 16, 8, 8), flipped_latents=None)
    with pytest.raises(ValueError, match="^dataset: 16-channel latents"):
        TrainLoRA().train(model, clip, sixteen_channels, **dict(DEFAULTS, output_name="bad"))
    with pytest.raises(ValueError, match="^output_name: "):
        TrainLoRA().train(model, clip, dataset, **dict(DEFAULTS, output_name="../escape"))
    assert _loras(training_env) == before


def test_plot_loss_draws_the_curve(trained):
    (image,) = PlotLoss().plot(trained["history"], 400, 240)
    assert image.shape == (1, 240, 400, 3) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.01
    with pytest.raises(ValueError, match="^loss_history"):
        PlotLoss().plot([1.0, 2.0])


def test_optimizer_choices_are_the_installed_ones():
    assert available_optimizers()[0] == "AdamW"
    assert ("Prodigy" in available_optimizers()) == (importlib.util.find_spec("prodigyopt") is not None)
    assert ("AdamW8bit" in available_optimizers()) == (importlib.util.find_spec("bitsandbytes") is not None)
    assert TrainLoRA.INPUT_TYPES()["required"]["optimizer"][0] == available_optimizers()


def test_shipped_training_workflow_runs(training_env):
    write_shapes(training_env.folders.input_dir / "training_images")
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    prompt = json.loads(WORKFLOW.read_text())
    prompt["2"]["inputs"]["resolution"] = 64
    prompt["3"]["inputs"].update(steps=4, save_every=2, output_name="workflow_lora", resume=False)
    prompt["9"]["inputs"].update(width=64, height=64)
    prompt["10"]["inputs"]["steps"] = 2
    validation = validate_prompt(prompt, registry)
    assert validation.ok and not validation.node_errors, validation.to_response()
    result = build_executor(registry, OutputCache()).execute(validation.prompt, "p1", {}, validation.outputs)
    assert result.success, result.error
    assert (training_env.folders.model_dir("loras") / "workflow_lora.safetensors").is_file()
    saved = [entry for output in result.outputs.values() for entry in output.get("images", [])]
    sizes = sorted(Image.open(training_env.folders.output_dir / s["subfolder"] / s["filename"]).size for s in saved)
    assert sizes == [(64, 64), (512, 320)]
    assert result.outputs["3"]["text"][0].startswith("workflow_lora.safetensors: 4 steps")
