"""Checkpoint, diffusers and VAE loading: the converted weights are the generator's, detection works, files are
loaded once, and bad files give clear errors naming the input."""
import pytest
import torch
from safetensors.torch import save_file

from diffusion import files, ldm
from diffusion.families import ldm_export
from diffusion.families.sd import demo as tiny
from diffusion.families.sd import detection
from diffusion.families.sd import loading as checkpoint
from diffusion.loading import load_vae
from nodes.loaders import CheckpointLoaderSimple, DiffusersLoader, VAELoader


def _same_weights(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    a, b = first.state_dict(), second.state_dict()
    return set(a) == set(b) and all(torch.equal(a[key], b[key]) for key in a)


def test_checkpoint_and_diffusers_folder_load_the_same_models(node_env, sd1):
    model, clip, vae = sd1
    folder_model, folder_clip, folder_vae = DiffusersLoader().load_checkpoint("tiny-sd1")
    assert _same_weights(model.network, folder_model.network)
    assert _same_weights(vae.autoencoder, folder_vae.autoencoder)
    assert _same_weights(clip.text_encoder, folder_clip.text_encoder)
    assert clip.tokenizer.get_vocab() == folder_clip.tokenizer.get_vocab()
    assert model.prediction_type == folder_model.prediction_type == "epsilon"
    assert dict(model.scheduler_config) == dict(folder_model.scheduler_config)


def test_generator_weights_survive_the_ldm_round_trip():
    components = tiny.build_tiny_components("sd1", seed=0)
    state = tiny.ldm_state_dict(components)
    assert any(key.startswith("cond_stage_model.transformer.text_model.") for key in state)
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in state  # SD1 upsampler slot
    layout = checkpoint.inspect_checkpoint(state)
    assert _same_weights(components.unet, checkpoint.build_unet(state, layout))
    assert _same_weights(components.vae, ldm.build_vae(state, layout.vae_config))
    assert _same_weights(components.text_encoder, checkpoint.build_text_encoder(state, layout))


def test_generator_is_deterministic(tmp_path, tiny_models_dir):
    demo = tiny.make_demo_models(tmp_path)
    assert demo.checkpoint.read_bytes() == (tiny_models_dir / "checkpoints" / tiny.DEMO_CHECKPOINT).read_bytes()
    assert demo.lora.read_bytes() == (tiny_models_dir / "loras" / tiny.DEMO_LORA).read_bytes()
    assert (demo.diffusers_folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()


@pytest.mark.parametrize("name, family, prediction", [
    ("tiny-sd2.safetensors", "sd2", "epsilon"),
    ("tiny-sd2-v.safetensors", "sd2", "v_prediction"),
])
def test_sd2_family_and_prediction_type_are_detected(node_env, name, family, prediction):
    model, clip, vae = CheckpointLoaderSimple().load_checkpoint(name)
    assert model.prediction_type == prediction
    assert model.network.config.use_linear_projection and model.network.config.upcast_attention
    assert clip.tokenizer.pad_token_id == 0  # SD2 pads with "!"
    assert clip.layer_count == 2  # OpenCLIP's last layer is left out, as SD2 reads the penultimate one


def test_sd2_v_prediction_is_detected_from_weights_without_the_marker():
    state = tiny.ldm_state_dict(tiny.build_tiny_components("sd2", seed=3))
    assert detection.detect_prediction_type(state, "sd2") == "epsilon"
    state[detection.V_PREDICTION_PROBE] = torch.randn(state[detection.V_PREDICTION_PROBE].shape) * 0.2
    assert detection.detect_prediction_type(state, "sd2") == "v_prediction"
    assert detection.detect_prediction_type(state, "sd1") == "epsilon"


def test_a_file_is_loaded_once(node_env, sd1):
    again = CheckpointLoaderSimple().load_checkpoint("tiny-sd1.safetensors")
    assert all(first is second for first, second in zip(sd1, again))
    path = str((node_env.folders.model_dir("checkpoints") / "tiny-sd1.safetensors").resolve())
    assert node_env.models.loads[("checkpoint", path)] == 1


def test_standalone_vae_file(node_env, sd1):
    vae_file = node_env.folders.model_dir("vae") / "tiny-vae.safetensors"
    if not vae_file.exists():
        components = tiny.build_tiny_components("sd1", seed=0)
        save_file(ldm_export.vae_to_ldm(components.vae.state_dict(), components.vae.config, prefix=""), str(vae_file))
    (vae,) = VAELoader().load_vae("tiny-vae.safetensors")
    assert _same_weights(vae.autoencoder, sd1[2].autoencoder)
    assert vae.scaling_factor == pytest.approx(0.18215)


def test_pickled_checkpoints_are_refused(node_env, tmp_path):
    with pytest.raises(ValueError, match="ckpt_name: model.ckpt is a pickled PyTorch file"):
        files.read_safetensors(tmp_path / "model.ckpt", "ckpt_name")


def test_missing_checkpoint_names_the_input(node_env):
    with pytest.raises(ValueError, match="ckpt_name: 'nope.safetensors' not found"):
        CheckpointLoaderSimple().load_checkpoint("nope.safetensors")


@pytest.fixture
def bad_files(node_env):
    folder = node_env.folders.model_dir("checkpoints") / "bad"
    folder.mkdir(exist_ok=True)
    good = (node_env.folders.model_dir("checkpoints") / "tiny-sd1.safetensors").read_bytes()
    (folder / "garbage.safetensors").write_bytes(b"this is not a safetensors file at all")
    (folder / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    save_file({"some.random.weight": torch.zeros(2)}, str(folder / "unknown.safetensors"))
    save_file({"conditioner.embedders.0.transformer.x": torch.zeros(2)}, str(folder / "sdxl.safetensors"))
    return folder


@pytest.mark.parametrize("name, message", [
    ("bad/garbage.safetensors", "ckpt_name: garbage.safetensors is not a readable safetensors file"),
    ("bad/truncated.safetensors", "ckpt_name: truncated.safetensors is not a readable safetensors file"),
    ("bad/unknown.safetensors", "ckpt_name: unknown.safetensors: unknown checkpoint layout"),
    ("bad/sdxl.safetensors", "ckpt_name: sdxl.safetensors: this is an SDXL-style checkpoint"),
])
def test_bad_checkpoints_give_clear_errors(bad_files, name, message):
    with pytest.raises(ValueError, match=message):
        CheckpointLoaderSimple().load_checkpoint(name)


def test_a_checkpoint_with_missing_tensors_is_refused(node_env):
    state = tiny.ldm_state_dict(tiny.build_tiny_components("sd1", seed=0))
    del state["model.diffusion_model.out.2.bias"]
    with pytest.raises(ValueError, match="UNet weights incomplete"):
        checkpoint.build_unet(state, checkpoint.inspect_checkpoint(state))


def test_not_a_diffusers_folder(node_env):
    (node_env.folders.model_dir("diffusers") / "empty").mkdir(exist_ok=True)
    with pytest.raises(ValueError, match="model_path: .* is not a diffusers model folder"):
        DiffusersLoader().load_checkpoint("empty")


def test_not_a_vae(node_env):
    with pytest.raises(ValueError, match="vae_name: tiny-sd1-lora.safetensors holds a LoRA .*, not a VAE"):
        load_vae(node_env.models, node_env.folders.model_dir("loras") / "tiny-sd1-lora.safetensors", "vae_name")
