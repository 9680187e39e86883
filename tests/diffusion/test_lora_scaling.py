"""LoRA weights as ComfyUI applies them, checked weight by weight on the tiny SD1 model through LoraLoader.

ComfyUI's rules (comfy/lora.py, comfy/weight_adapter/lora.py): a low-rank pair changes a weight by
`strength * (alpha / rank) * up @ down` with the layer's own `.alpha` (scale 1 without one; a convolution's factors
flattened to matrices and the product reshaped to the kernel), a `.diff` by `strength * diff`, a `.diff_b` the bias
by `strength * diff_b`. Layers are named kohya's way (`lora_unet_<diffusers name>`, `lora_te_text_model_...`), by
the model's LDM names (`diffusion_model.input_blocks.4.1...`, `lora_unet_input_blocks_4_1_...`, as ComfyUI's own
LoraSave writes) or CLIP's (`text_encoders.clip_l.transformer.text_model...`). Also: LoraSave's output loads back
through LoraLoader, and a workflow with such LoRAs validates and runs through the engine.
"""
from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from diffusion.lora import TEXT_ENCODER, UNET, lora_applied
from diffusion.merging import effective_state_dict, network_with
from nodes.loaders import LoraLoader, LoraLoaderModelOnly

RANK = 4
ATTENTION = "down_blocks.1.attentions.0.transformer_blocks.0"
UNET_LAYERS = (  # attention, feed-forward, projections (1x1 convolutions), resnet convolutions and linear layers
    f"{ATTENTION}.attn1.to_q", f"{ATTENTION}.attn1.to_k", f"{ATTENTION}.attn1.to_v", f"{ATTENTION}.attn1.to_out.0",
    f"{ATTENTION}.attn2.to_k", f"{ATTENTION}.ff.net.0.proj", f"{ATTENTION}.ff.net.2",
    "down_blocks.1.attentions.0.proj_in", "down_blocks.1.attentions.0.proj_out", "down_blocks.1.resnets.0.conv1",
    "down_blocks.1.resnets.0.time_emb_proj", "down_blocks.2.resnets.0.conv_shortcut",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_q",
    "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v",
)
TEXT_LAYERS = ("encoder.layers.0.self_attn.q_proj", "encoder.layers.0.self_attn.k_proj",
               "encoder.layers.0.self_attn.v_proj", "encoder.layers.0.self_attn.out_proj", "encoder.layers.1.mlp.fc1",
               "encoder.layers.1.mlp.fc2")
ALPHAS = (1.0, 2.0, 3.0, 8.0, 0.5, 6.0, 4.0)  # cycled over the layers: per-layer alphas that differ


def _kohya(component: str, layer: str) -> str:
    """kohya's key of a layer (transformers 5 names CLIP's layers without `text_model.`; kohya's keys have it)."""
    return f"lora_unet_{layer.replace('.', '_')}" if component == UNET else \
        f"lora_te_text_model_{layer.replace('.', '_')}"


def _product(up: torch.Tensor, down: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """ComfyUI's low-rank change of a weight: the factors as matrices, the product shaped as the weight."""
    return (up.flatten(1).float() @ down.flatten(1).float()).reshape(shape)


def _low_rank_lora(weights: dict[str, dict[str, torch.Tensor]], alphas: str, seed: int = 0):
    """(kohya LoRA tensors, {component: {weight key: the change at strength 1}}) for UNET_LAYERS and TEXT_LAYERS.
    `alphas`: "rank" (alpha = rank), "half" (alpha = rank / 2), "mixed" (ALPHAS cycled), "none" (no alpha keys),
    "ranks" (ranks 1..4 cycled, alpha = rank)."""
    generator = torch.Generator().manual_seed(seed)
    tensors, expected = {}, {UNET: {}, TEXT_ENCODER: {}}
    layers = [(UNET, layer) for layer in UNET_LAYERS] + [(TEXT_ENCODER, layer) for layer in TEXT_LAYERS]
    for index, (component, layer) in enumerate(layers):
        weight = weights[component][f"{layer}.weight"]
        rank = index % 4 + 1 if alphas == "ranks" else RANK
        kernel = weight.shape[2:]
        down = torch.randn(rank, weight.shape[1], *kernel, generator=generator) * 0.2
        up = torch.randn(weight.shape[0], rank, *(1 for _ in kernel), generator=generator) * 0.2
        alpha = {"rank": rank, "half": rank / 2, "mixed": ALPHAS[index % len(ALPHAS)], "none": None,
                 "ranks": rank}[alphas]
        key = _kohya(component, layer)
        tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"] = down, up
        if alpha is not None:
            tensors[f"{key}.alpha"] = torch.tensor(float(alpha))
        expected[component][f"{layer}.weight"] = (1.0 if alpha is None else alpha / rank) * _product(
            up, down, weight.shape)
    return tensors, expected


@pytest.fixture
def lora_folder(node_env):
    folder = node_env.folders.model_dir("loras") / "scaling"
    folder.mkdir(exist_ok=True)
    return folder


def _write(folder, name: str, tensors: dict[str, torch.Tensor]) -> str:
    save_file({key: tensor.contiguous() for key, tensor in tensors.items()}, str(folder / name))
    return f"{folder.name}/{name}"


def _base_weights(sd1) -> dict[str, dict[str, torch.Tensor]]:
    model, clip, _ = sd1
    return {UNET: {key: value.clone() for key, value in model.network.state_dict().items()},
            TEXT_ENCODER: {key: value.clone() for key, value in clip.text_encoder.state_dict().items()}}


def _effective(model, clip) -> dict[str, dict[str, torch.Tensor]]:
    return {UNET: effective_state_dict(model.network, UNET, model.loras),
            TEXT_ENCODER: effective_state_dict(clip.text_encoder, TEXT_ENCODER, clip.loras)}


def _assert_changes(effective, base, changes, strength, atol=1e-6):
    """Every weight is its base weight plus strength * its expected change (none for weights not listed)."""
    for component in (UNET, TEXT_ENCODER):
        assert set(effective[component]) == set(base[component])
        for key, value in base[component].items():
            change = changes[component].get(key)
            expected = value if change is None else value + strength * change
            assert torch.allclose(effective[component][key], expected, atol=atol, rtol=0), (component, key)


@pytest.mark.parametrize("alphas", ["rank", "half", "mixed", "none", "ranks"])
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_kohya_alphas_scale_every_layer_as_comfyui(sd1, lora_folder, alphas, strength):
    """The reported bug: diffusers keyed per-layer alphas of attention and text-encoder layers so that peft
    ignored them ("alpha_pattern keys did not match"), and those layers took the file's most common alpha."""
    base = _base_weights(sd1)
    tensors, changes = _low_rank_lora(base, alphas)
    name = _write(lora_folder, f"{alphas}.safetensors", tensors)
    model, clip = LoraLoader().load_lora(sd1[0], sd1[1], name, strength, strength)
    _assert_changes(_effective(model, clip), base, changes, strength)


def test_the_layers_compute_with_the_scaled_weights(sd1, lora_folder):
    """Not only the merged weights: inside the block the patched layers compute x -> (W + change) x."""
    base = _base_weights(sd1)
    tensors, changes = _low_rank_lora(base, "mixed", seed=1)
    model, clip = LoraLoader().load_lora(sd1[0], sd1[1], _write(lora_folder, "forward.safetensors", tensors), 0.7, 0.7)
    torch.manual_seed(0)
    checks = ((model.network, UNET, model.loras, f"{ATTENTION}.attn1.to_out.0"),
              (model.network, UNET, model.loras, "down_blocks.1.resnets.0.conv1"),
              (clip.text_encoder, TEXT_ENCODER, clip.loras, "encoder.layers.0.self_attn.v_proj"))
    for module, component, loras, layer in checks:
        weight = base[component][f"{layer}.weight"] + 0.7 * changes[component][f"{layer}.weight"]
        bias = base[component][f"{layer}.bias"]
        if weight.ndim == 2:
            x = torch.randn(3, weight.shape[1])
            expected = F.linear(x, weight, bias)
        else:
            x = torch.randn(1, weight.shape[1], 5, 5)
            expected = F.conv2d(x, weight, bias, padding=1)
        with torch.no_grad(), lora_applied(module, component, loras):
            output = module.get_submodule(layer)(x)
        assert torch.allclose(output, expected, atol=1e-5), layer


def _differences(base, seed: int = 2):
    """(`.diff`/`.diff_b` tensors in kohya naming, their changes): a full weight, a convolution, a norm's 1-D
    weight, biases, in the UNet and the text encoder."""
    generator = torch.Generator().manual_seed(seed)
    tensors, changes = {}, {UNET: {}, TEXT_ENCODER: {}}
    for component, key in ((UNET, f"{ATTENTION}.attn1.to_q.weight"), (UNET, "down_blocks.1.resnets.0.conv2.weight"),
                           (UNET, "down_blocks.1.resnets.0.norm1.weight"), (UNET, "down_blocks.1.resnets.0.conv2.bias"),
                           (UNET, "conv_in.bias"), (UNET, "conv_norm_out.weight"),
                           (TEXT_ENCODER, "encoder.layers.1.mlp.fc2.weight"),
                           (TEXT_ENCODER, "encoder.layers.1.mlp.fc2.bias"),
                           (TEXT_ENCODER, "encoder.layers.0.layer_norm1.weight")):
        layer, _, kind = key.rpartition(".")
        change = torch.randn(base[component][key].shape, generator=generator) * 0.1
        tensors[f"{_kohya(component, layer)}.{'diff' if kind == 'weight' else 'diff_b'}"] = change
        changes[component][key] = change
    return tensors, changes


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_whole_differences_are_added_to_weights_and_biases(sd1, lora_folder, strength):
    base = _base_weights(sd1)
    low_rank, changes = _low_rank_lora(base, "mixed", seed=3)
    differences, difference_changes = _differences(base)
    for component in (UNET, TEXT_ENCODER):  # a layer may carry a pair and a bias difference
        for key, change in difference_changes[component].items():
            changes[component][key] = changes[component].get(key, 0) + change
    name = _write(lora_folder, "diffs.safetensors", {**low_rank, **differences})
    model, clip = LoraLoader().load_lora(sd1[0], sd1[1], name, strength, strength)
    _assert_changes(_effective(model, clip), base, changes, strength)
    diff_only = _write(lora_folder, "diff_only.safetensors", differences)
    model, clip = LoraLoader().load_lora(sd1[0], sd1[1], diff_only, strength, strength)
    _assert_changes(_effective(model, clip), base, difference_changes, strength)


def test_differences_leave_the_base_weights_as_they_were(sd1, lora_folder):
    model, clip, _ = sd1
    parameters = dict(model.network.named_parameters())
    before = {key: (value.data_ptr(), value.detach().clone()) for key, value in parameters.items()}
    base = _base_weights(sd1)
    differences, _ = _differences(base)
    (patched,) = LoraLoaderModelOnly().load_lora_model_only(
        model, _write(lora_folder, "restore.safetensors", differences), 1.0)
    key = "down_blocks.1.resnets.0.norm1.weight"
    with lora_applied(patched.network, UNET, patched.loras):
        assert not torch.equal(parameters[key], before[key][1])
    with torch.inference_mode(), lora_applied(patched.network, UNET, patched.loras):  # as sampling enters it
        pass
    for name, parameter in model.network.named_parameters():
        assert parameter is parameters[name]
        assert parameter.data_ptr() == before[name][0] and torch.equal(parameter, before[name][1]), name


def _ldm_lora(base):
    """ComfyUI's own layouts: LDM names (dotted, as its LoraSave writes, and kohya-style), CLIP names with
    `text_model.`, peft's lora_A/lora_B names with an alpha; (tensors, changes)."""
    generator = torch.Generator().manual_seed(4)
    tensors, changes = {}, {UNET: {}, TEXT_ENCODER: {}}
    pairs = (  # (file key, component, our layer, factor names, alpha)
        ("diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q", UNET, f"{ATTENTION}.attn1.to_q",
         ("lora_up", "lora_down"), None),
        ("diffusion_model.input_blocks.4.0.in_layers.2", UNET, "down_blocks.1.resnets.0.conv1",
         ("lora_up", "lora_down"), 2.0),
        ("diffusion_model.output_blocks.3.1.proj_out", UNET, "up_blocks.1.attentions.0.proj_out",
         ("lora_B", "lora_A"), 8.0),
        ("lora_unet_middle_block_1_transformer_blocks_0_ff_net_2", UNET,
         "mid_block.attentions.0.transformer_blocks.0.ff.net.2", ("lora_up", "lora_down"), 1.0),
        ("text_encoders.clip_l.transformer.text_model.encoder.layers.1.self_attn.k_proj", TEXT_ENCODER,
         "encoder.layers.1.self_attn.k_proj", ("lora_up", "lora_down"), 3.0),
    )
    for key, component, layer, (up_name, down_name), alpha in pairs:
        weight = base[component][f"{layer}.weight"]
        kernel = weight.shape[2:]
        down = torch.randn(RANK, weight.shape[1], *kernel, generator=generator) * 0.2
        up = torch.randn(weight.shape[0], RANK, *(1 for _ in kernel), generator=generator) * 0.2
        tensors[f"{key}.{up_name}.weight"], tensors[f"{key}.{down_name}.weight"] = up, down
        if alpha is not None:
            tensors[f"{key}.alpha"] = torch.tensor(alpha)
        changes[component][f"{layer}.weight"] = (1.0 if alpha is None else alpha / RANK) * _product(
            up, down, weight.shape)
    for key, component, target in (("diffusion_model.out.0.diff", UNET, "conv_norm_out.weight"),
                                   ("diffusion_model.time_embed.0.diff_b", UNET, "time_embedding.linear_1.bias"),
                                   ("diffusion_model.input_blocks.4.1.proj_in.diff_b", UNET,
                                    "down_blocks.1.attentions.0.proj_in.bias"),
                                   ("text_encoders.clip_l.transformer.text_model.final_layer_norm.diff",
                                    TEXT_ENCODER, "final_layer_norm.weight")):
        change = torch.randn(base[component][target].shape, generator=generator) * 0.1
        tensors[key], changes[component][target] = change, change
    return tensors, changes


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_comfyui_model_names_are_read(sd1, lora_folder, strength):
    base = _base_weights(sd1)
    tensors, changes = _ldm_lora(base)
    name = _write(lora_folder, "ldm_names.safetensors", tensors)
    model, clip = LoraLoader().load_lora(sd1[0], sd1[1], name, strength, strength)
    _assert_changes(_effective(model, clip), base, changes, strength)


@pytest.mark.parametrize("tensors, message", [
    ({"lora_unet_conv_in.diff": torch.zeros(3, 3)}, "does not fit this model's unet: .*conv_in"),
    ({"lora_unet_no_such_layer.diff": torch.zeros(3)}, "matches no layers"),
    ({"diffusion_model.input_blocks.99.0.in_layers.2.lora_up.weight": torch.zeros(4, 2),
      "diffusion_model.input_blocks.99.0.in_layers.2.lora_down.weight": torch.zeros(2, 4)}, "matches no layers"),
])
def test_unusable_differences_are_named_errors(sd1, lora_folder, tensors, message):
    name = _write(lora_folder, "bad.safetensors", tensors)
    with pytest.raises(ValueError, match=f"lora_name: .*{message}"):
        LoraLoaderModelOnly().load_lora_model_only(sd1[0], name, 1.0)


def _perturbed(model, clip, seed: int = 5):
    """A 'fine-tune' of the tiny model: every floating tensor of the UNet and text encoder moved a little."""
    generator = torch.Generator().manual_seed(seed)

    def moved(module):
        return network_with(module, {key: value + 0.05 * torch.randn(value.shape, generator=generator)
                                     for key, value in module.state_dict().items() if value.is_floating_point()})

    return (dataclasses.replace(model, network=moved(model.network)),
            dataclasses.replace(clip, text_encoder=moved(clip.text_encoder)))


@pytest.mark.parametrize("lora_type, rank", [("standard", 8), ("full_diff", 8)])
def test_lora_save_output_loads_back(node_env, sd1, lora_folder, lora_type, rank):
    """LoraSave's default (bias_diff on) and full_diff files: each layer of the file changes its weight as ComfyUI
    would apply the file (low-rank pairs as up @ down, differences whole, fp16 as written)."""
    from nodes.model_merging import ModelMergeSubtract
    from nodes.model_saving import LoraSave
    from nodes.text_encoders import CLIPMergeSubtract

    model, clip, _ = sd1
    tuned_model, tuned_clip = _perturbed(model, clip)
    (model_diff,) = ModelMergeSubtract().merge(tuned_model, model, 1.0)
    (clip_diff,) = CLIPMergeSubtract().merge(tuned_clip, clip, 1.0)
    LoraSave().save(f"loras/{lora_type}", rank, lora_type, True, model_diff=model_diff, text_encoder_diff=clip_diff)
    written = node_env.folders.output_dir / "loras" / f"{lora_type}_00001_.safetensors"
    shutil.copy(written, lora_folder / written.name)
    lora = load_file(str(written))
    base = _base_weights(sd1)
    changes = {UNET: {}, TEXT_ENCODER: {}}
    for component in (UNET, TEXT_ENCODER):
        for key, value in base[component].items():
            layer, _, kind = key.rpartition(".")
            prefix = _kohya(component, layer)
            if f"{prefix}.lora_up.weight" in lora and kind == "weight":
                changes[component][key] = _product(lora[f"{prefix}.lora_up.weight"],
                                                   lora[f"{prefix}.lora_down.weight"], value.shape)
            elif f"{prefix}.{'diff' if kind == 'weight' else 'diff_b'}" in lora:
                changes[component][key] = lora[f"{prefix}.{'diff' if kind == 'weight' else 'diff_b'}"].float()
    assert any(key.startswith("lora_te_text_model_encoder_") for key in lora), "the text encoder's part is written"
    assert any(key.endswith(".diff_b") for key in lora) and any(key.startswith("lora_unet_") for key in lora)
    assert sum(len(found) for found in changes.values()) == len(
        [key for key in lora if not key.endswith(".lora_down.weight")]), "every tensor of the file is applied"
    model_lora, clip_lora = LoraLoader().load_lora(model, clip, f"{lora_folder.name}/{written.name}", 1.0, 1.0)
    _assert_changes(_effective(model_lora, clip_lora), base, changes, 1.0, atol=1e-5)
    if lora_type == "full_diff":  # whole differences give back the fine-tune, up to fp16 rounding of the changes
        tuned = tuned_model.network.state_dict()
        rebuilt = effective_state_dict(model_lora.network, UNET, model_lora.loras)
        for key, value in tuned.items():
            rounding = (value - base[UNET][key]).abs() * 2.0 ** -11 + 1e-6
            assert ((rebuilt[key] - value).abs() <= rounding).all(), key


def test_lora_workflow_runs_through_the_engine(node_env, sd1, lora_folder):
    from diffusion.families.sd.demo import DEMO_CHECKPOINT
    from tests.nodes.family_workflows import run_workflow

    base = _base_weights(sd1)
    low_rank, _ = _low_rank_lora(base, "mixed", seed=6)
    differences, _ = _differences(base)
    ldm, _ = _ldm_lora(base)
    mixed = _write(lora_folder, "workflow_mixed.safetensors", {**low_rank, **differences})
    comfy = _write(lora_folder, "workflow_ldm.safetensors", ldm)
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO_CHECKPOINT}},
        "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": mixed,
                                                     "strength_model": 0.8, "strength_clip": 0.5}},
        "3": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["2", 0], "lora_name": comfy,
                                                              "strength_model": 1.0}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 1], "text": "a red cube"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 1], "text": ""}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["3", 0], "positive": ["4", 0], "negative": ["5", 0],
                                                   "latent_image": ["6", 0], "seed": 3, "steps": 2, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "lora_scaling"}},
    }
    (image,) = run_workflow(node_env, prompt)
    assert image.size == (64, 64)
    assert torch.equal(sd1[0].network.state_dict()["conv_norm_out.weight"], base[UNET]["conv_norm_out.weight"])


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_transformer_families_scale_peft_layouts_by_each_layers_alpha(family):
    """diffusers' SD3 reader ignored `.alpha` keys (every layer at scale 1); FLUX's reads them right. Both now give
    ComfyUI's `alpha / rank` per layer, on ranks and alphas that differ between layers."""
    from diffusion.contracts import LoraPatch
    from diffusion.lora import TRANSFORMER

    if family == "sd3":
        from diffusion.families.sd3.demo import build_tiny_sd3 as build
        from diffusion.families.sd3.lora import read_lora
    else:
        from diffusion.families.flux.demo import build_tiny_flux as build
        from diffusion.families.flux.lora import read_lora
    network = build(3).transformer
    base = network.state_dict()
    generator = torch.Generator().manual_seed(7)
    tensors, changes = {}, {}
    layers = [key.removesuffix(".weight") for key, value in base.items() if key.endswith(".weight") and value.ndim == 2]
    for index, layer in enumerate(layers[:10]):
        weight = base[f"{layer}.weight"]
        rank, alpha = index % 3 + 2, ALPHAS[index % len(ALPHAS)]
        down = torch.randn(rank, weight.shape[1], generator=generator)
        up = torch.randn(weight.shape[0], rank, generator=generator)
        tensors.update({f"transformer.{layer}.lora_A.weight": down, f"transformer.{layer}.lora_B.weight": up,
                        f"transformer.{layer}.alpha": torch.tensor(alpha)})
        changes[f"{layer}.weight"] = alpha / rank * _product(up, down, weight.shape)
    state, alphas = read_lora(tensors)
    effective = effective_state_dict(network, TRANSFORMER, [LoraPatch("peft", state, alphas, 0.5)])
    for key, value in base.items():
        expected = value + 0.5 * changes[key] if key in changes else value
        assert torch.allclose(effective[key], expected, atol=1e-5, rtol=0), key
