"""The old loaders (CheckpointLoader with a yaml config, HypernetworkLoader): their contracts against ComfyUI's
(nodes.py, comfy_extras/nodes_hypernetwork.py), what a config changes (v-prediction, CLIP layer) and refuses, a
tiny hypernetwork file in A1111's layout read as ComfyUI reads it and changing attention as the maths say, and a
workflow with both through the engine."""
import shutil

import pytest
import torch
import torch.nn.functional as F

import nodes
from diffusion import hypernetwork as hn
from diffusion.families.sd.demo import DEMO_CHECKPOINT
from nodes import old_loaders as ol
from nodes.conditioning import CLIPSetLastLayer, CLIPTextEncode
from nodes.environment import Folders, NodeEnvironment, use_environment
from tests.nodes.family_workflows import run_workflow
from tests.nodes.test_model_merging import contract

SD_CONFIG = """model:
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    {parameterization}
    scale_factor: 0.18215
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
      params:
        layer: "hidden"
        layer_idx: -2
"""
CONFIGS = {
    "v1-inference_clip_skip_2.yaml": SD_CONFIG.format(parameterization=""),
    "v2-inference-v.yaml": SD_CONFIG.format(parameterization='parameterization: "v"'),
    "x4-upscaling.yaml": "model:\n  target: ldm.models.diffusion.ddpm.LatentUpscaleDiffusion\n  params: {}\n",
    "broken.yaml": "model: [unclosed\n",
}
HYPERNETWORK = "tiny-hypernetwork.pt"


def test_contracts_are_comfyuis(own_env):
    with use_environment(own_env):
        loader, hyper = nodes.NODE_CLASS_MAPPINGS["CheckpointLoader"], nodes.NODE_CLASS_MAPPINGS["HypernetworkLoader"]
        assert contract(loader) == ("advanced/loaders", ("MODEL", "CLIP", "VAE"), None, [
            ("config_name", sorted(CONFIGS)), ("ckpt_name", [DEMO_CHECKPOINT])])
        assert contract(hyper) == ("loaders", ("MODEL",), None, [
            ("model", "MODEL"), ("hypernetwork_name", [HYPERNETWORK]), ("strength", ("FLOAT", 1.0, -10.0, 10.0, 0.01))])
        for node_class in (loader, hyper):
            assert node_class.DESCRIPTION and all(
                options.get("tooltip") for _, options in node_class.INPUT_TYPES()["required"].values())
    assert loader.DEPRECATED is True and not getattr(hyper, "DEPRECATED", False)
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS["CheckpointLoader"] == "Load Checkpoint With Config (DEPRECATED)"
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS["HypernetworkLoader"] == "HypernetworkLoader"
    assert set(ol.NODE_CLASS_MAPPINGS) == {"CheckpointLoader", "HypernetworkLoader"}


def _mlp_tensors(width: int, generator: torch.Generator, layer_norm: bool) -> dict[str, torch.Tensor]:
    """A1111's HypernetworkModule state dict for layer structure [1, 2, 1]: Linear, (ReLU), (LayerNorm), Linear,
    (LayerNorm), numbered as its nn.Sequential numbers them."""
    hidden = 2 * width
    tensors = {"linear.0.weight": torch.randn(hidden, width, generator=generator) * 0.2,
               "linear.0.bias": torch.randn(hidden, generator=generator) * 0.1}
    last = "linear.2" if not layer_norm else "linear.3"
    if layer_norm:
        tensors.update({"linear.2.weight": 1 + 0.1 * torch.randn(hidden, generator=generator),
                        "linear.2.bias": 0.1 * torch.randn(hidden, generator=generator)})
    tensors.update({f"{last}.weight": torch.randn(width, hidden, generator=generator) * 0.2,
                    f"{last}.bias": torch.randn(width, generator=generator) * 0.1})
    if layer_norm:
        tensors.update({"linear.4.weight": 1 + 0.1 * torch.randn(width, generator=generator),
                        "linear.4.bias": 0.1 * torch.randn(width, generator=generator)})
    return tensors


def hypernetwork_file(layer_norm: bool = False, activate_output: bool = False) -> dict:
    generator = torch.Generator().manual_seed(4)
    data: dict = {width: [_mlp_tensors(width, generator, layer_norm), _mlp_tensors(width, generator, layer_norm)]
                  for width in (32, 64)}  # the tiny SD1 UNet's attention widths (64 is also its text width)
    data.update({"activation_func": "relu", "is_layer_norm": layer_norm, "use_dropout": True,
                 "activate_output": activate_output, "last_layer_dropout": False, "layer_structure": [1, 2, 1],
                 "name": "tiny", "step": 10})
    return data


@pytest.fixture
def own_env(tmp_path, tiny_models_dir, shared_model_manager):
    """A models folder with the tiny SD1 checkpoint, the configs above and a tiny hypernetwork."""
    folders = Folders(tmp_path / "models", tmp_path / "input", tmp_path / "output", tmp_path / "temp",
                      tmp_path / "user")
    folders.create()
    shutil.copy(tiny_models_dir / "checkpoints" / DEMO_CHECKPOINT, folders.model_dir("checkpoints"))
    (folders.models_dir / "configs").mkdir(exist_ok=True)
    for name, text in CONFIGS.items():
        (folders.models_dir / "configs" / name).write_text(text)
    (folders.models_dir / "hypernetworks").mkdir(exist_ok=True)
    torch.save(hypernetwork_file(), folders.models_dir / "hypernetworks" / HYPERNETWORK)
    return NodeEnvironment(folders, torch.device("cpu"), torch.float32, shared_model_manager)


def test_a_config_sets_v_prediction_and_the_clip_layer(own_env):
    with use_environment(own_env):
        model, clip, _ = ol.CheckpointLoader().load_checkpoint("v2-inference-v.yaml", DEMO_CHECKPOINT)
        plain_model, plain_clip, _ = nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]().load_checkpoint(
            DEMO_CHECKPOINT)
        skip_model, _, _ = ol.CheckpointLoader().load_checkpoint("v1-inference_clip_skip_2.yaml", DEMO_CHECKPOINT)
        (expected,) = CLIPSetLastLayer().set_last_layer(plain_clip, -2)
        encoded, reference, last_layer = (CLIPTextEncode().encode(text_encoder, "a cat")[0][0][0]
                                          for text_encoder in (clip, expected, plain_clip))
    assert model.prediction_type == "v_prediction" and plain_model.prediction_type == "epsilon"
    assert skip_model is plain_model and model.network is plain_model.network  # nothing else changes, nothing copied
    assert torch.equal(encoded, reference)
    assert not torch.equal(encoded, last_layer)


@pytest.mark.parametrize("config, message", [("x4-upscaling.yaml", "LatentUpscaleDiffusion model, which"),
                                             ("broken.yaml", "not an original model config")])
def test_configs_of_other_models_are_refused(own_env, config, message):
    with use_environment(own_env), pytest.raises(ValueError, match=f"config_name: {config}.*{message}"):
        ol.CheckpointLoader().load_checkpoint(config, DEMO_CHECKPOINT)


@pytest.mark.parametrize("layer_norm, activate_output, kinds", [
    (False, False, ["Linear", "ReLU", "Linear"]),
    (False, True, ["Linear", "ReLU", "Linear", "ReLU"]),
    # with layer norms ComfyUI's "last layer" is the last LayerNorm, so the activation follows every Linear
    (True, False, ["Linear", "ReLU", "LayerNorm", "Linear", "ReLU", "LayerNorm"]),
])
def test_mlps_are_read_as_comfyui_reads_them(layer_norm, activate_output, kinds):
    networks = hn.read_hypernetwork(hypernetwork_file(layer_norm, activate_output))
    assert sorted(networks) == [32, 64]
    key_mlp = networks[64][0]
    assert [type(layer).__name__ for layer in key_mlp] == kinds
    tensors = hypernetwork_file(layer_norm, activate_output)[64][0]
    x = torch.randn(3, 64)
    hidden = F.relu(x @ tensors["linear.0.weight"].T + tensors["linear.0.bias"])
    if layer_norm:
        hidden = F.layer_norm(hidden, (128,), tensors["linear.2.weight"], tensors["linear.2.bias"])
    last = "linear.3" if layer_norm else "linear.2"
    out = hidden @ tensors[f"{last}.weight"].T + tensors[f"{last}.bias"]
    if layer_norm:
        out = F.layer_norm(F.relu(out), (64,), tensors["linear.4.weight"], tensors["linear.4.bias"])
    elif activate_output:
        out = F.relu(out)
    assert torch.allclose(key_mlp(x), out, atol=1e-6)


def test_unsupported_activation_is_refused():
    with pytest.raises(ValueError, match="unsupported activation 'gelu2'"):
        hn.read_hypernetwork({**hypernetwork_file(), "activation_func": "gelu2"})


def test_the_hypernetwork_changes_key_and_value_inputs(own_env):
    strength = 0.7
    with use_environment(own_env):
        model, _, _ = nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]().load_checkpoint(DEMO_CHECKPOINT)
        (patched,) = ol.HypernetworkLoader().load_hypernetwork(model, HYPERNETWORK, strength)
    networks = hn.read_hypernetwork(hypernetwork_file())
    block_name = "down_blocks.2.attentions.0.transformer_blocks.0"
    original_block, patched_block = (network.get_submodule(block_name) for network in (model.network, patched.network))
    assert patched_block.attn1.to_k.weight.data_ptr() == original_block.attn1.to_k.weight.data_ptr()  # shared
    generator = torch.Generator().manual_seed(0)
    hidden, text = torch.randn(2, 16, 64, generator=generator), torch.randn(2, 7, 64, generator=generator)
    with torch.no_grad():
        for name, context in (("attn1", hidden), ("attn2", text)):
            attention = getattr(original_block, name)
            key_mlp, value_mlp = networks[64]
            key = attention.to_k(context + key_mlp(context) * strength)
            value = attention.to_v(value_mlp(context) * strength + context)
            query = attention.to_q(hidden)
            heads = attention.heads

            def split(tensor):
                return tensor.view(2, -1, heads, tensor.shape[-1] // heads).transpose(1, 2)

            attended = torch.softmax(split(query) @ split(key).transpose(-1, -2) * attention.scale, -1) @ split(value)
            expected = attention.to_out[0](attended.transpose(1, 2).reshape(2, -1, query.shape[-1]))
            encoder = None if name == "attn1" else text
            assert torch.allclose(getattr(patched_block, name)(hidden, encoder_hidden_states=encoder), expected,
                                  atol=1e-5), name
            unpatched = attention(hidden, encoder_hidden_states=encoder)
            assert not torch.allclose(unpatched, expected, atol=1e-3)  # the loaded model is unchanged


def test_strength_zero_computes_as_the_model(own_env):
    with use_environment(own_env):
        model, _, _ = nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]().load_checkpoint(DEMO_CHECKPOINT)
        (patched,) = ol.HypernetworkLoader().load_hypernetwork(model, HYPERNETWORK, 0.0)
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    text = torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model.network(sample, 500, encoder_hidden_states=text).sample
        assert torch.allclose(patched.network(sample, 500, encoder_hidden_states=text).sample, expected, atol=1e-5)


def test_checkpoint_with_config_and_hypernetwork_run_as_a_workflow(own_env):
    prompt = {
        "1": {"class_type": "CheckpointLoader", "inputs": {"config_name": "v1-inference_clip_skip_2.yaml",
                                                           "ckpt_name": DEMO_CHECKPOINT}},
        "2": {"class_type": "HypernetworkLoader", "inputs": {"model": ["1", 0], "hypernetwork_name": HYPERNETWORK,
                                                             "strength": 0.8}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a knight", "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "seed": 1, "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"filename_prefix": "hyper", "images": ["7", 0]}},
    }
    with use_environment(own_env):
        images = run_workflow(own_env, prompt)
    assert len(images) == 1 and images[0].size == (64, 64)
