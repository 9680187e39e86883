"""The model merging nodes (ModelMergeSimple, ModelMergeBlocks, ModelMergeSubtract, ModelMergeAdd): their contracts
against ComfyUI's (read off comfy_extras/nodes_model_merging.py), the merge maths weight by weight as ComfyUI's
patches compute it, ComfyUI's block names on our diffusers UNet, LoRAs merged in, the inputs left unchanged, and a
merge run through the engine."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import nodes
from diffusion import merging
from diffusion.families.sd import demo as tiny
from diffusion.families.sd.demo import DEMO_LORA
from diffusion.families.sd.loading import sd_model
from nodes import model_merging as mm
from nodes.loaders import LoraLoaderModelOnly
from tests.nodes.family_workflows import run_workflow

WORKFLOWS = Path(__file__).parents[2] / "workflows"
RATIO = ("FLOAT", 1.0, 0.0, 1.0, 0.01)
MERGING = "advanced/model_merging"
TWO_MODELS = [("model1", "MODEL"), ("model2", "MODEL")]
COMFYUI_CONTRACTS = {
    "ModelMergeSimple": (MERGING, ("MODEL",), None, [*TWO_MODELS, ("ratio", RATIO)]),
    "ModelMergeBlocks": (MERGING, ("MODEL",), None, [*TWO_MODELS, ("input", RATIO), ("middle", RATIO),
                                                      ("out", RATIO)]),
    "ModelMergeSubtract": (MERGING, ("MODEL",), None, [*TWO_MODELS,
                                                        ("multiplier", ("FLOAT", 1.0, -10.0, 10.0, 0.01))]),
    "ModelMergeAdd": (MERGING, ("MODEL",), None, TWO_MODELS),
}
# weights of the tiny SD1 UNet, by the ComfyUI (LDM) block they sit in
KEYS = {
    "conv_in": "conv_in.weight",  # input_blocks.0.0
    "down": "down_blocks.1.attentions.0.proj_in.weight",  # input_blocks.4.1
    "middle": "mid_block.resnets.0.conv1.weight",  # middle_block.0
    "up": "up_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k.weight",  # output_blocks.7.1
    "conv_out": "conv_out.weight",  # out.2
    "norm_out": "conv_norm_out.weight",  # out.0
    "time": "time_embedding.linear_1.weight",  # time_embed.0: no block, the first ratio
}


def contract(node_class: type) -> tuple:
    inputs = []
    for name, (kind, options) in node_class.INPUT_TYPES()["required"].items():
        if isinstance(kind, list):
            inputs.append((name, kind))
        elif kind in ("INT", "FLOAT"):
            inputs.append((name, (kind, options["default"], options["min"], options["max"], options.get("step"))))
        elif kind == "BOOLEAN":
            inputs.append((name, (kind, options["default"])))
        else:
            inputs.append((name, kind))
    return node_class.CATEGORY, node_class.RETURN_TYPES, getattr(node_class, "RETURN_NAMES", None), inputs


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert node_class is mm.NODE_CLASS_MAPPINGS[name]
    assert contract(node_class) == COMFYUI_CONTRACTS[name]
    assert node_class.DESCRIPTION and callable(getattr(node_class(), node_class.FUNCTION))
    assert all(options.get("tooltip") for _, options in node_class.INPUT_TYPES()["required"].values())
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == name


def test_every_node_is_in_the_table():  # the model-specific merges: tests/nodes/test_core_extras.py
    assert {name for name, node in mm.NODE_CLASS_MAPPINGS.items() if node.CATEGORY == MERGING} == set(COMFYUI_CONTRACTS)


def _tiny_model(seed: int, in_channels: int = 4):
    components = tiny.build_tiny_components("sd1", seed, unet_in_channels=in_channels)
    return sd_model(components.unet, components.scheduler_config, f"tiny-{seed}")


@pytest.fixture(scope="module")
def two_models():
    return _tiny_model(0), _tiny_model(5)


def _states(*models):
    return [{key: tensor.clone() for key, tensor in model.network.state_dict().items()} for model in models]


def test_simple_is_ratio_weighted(two_models):
    model1, model2 = two_models
    w1, w2 = _states(model1, model2)
    (merged,) = mm.ModelMergeSimple().merge(model1, model2, 0.3)
    state = merged.network.state_dict()
    for key in KEYS.values():
        assert torch.allclose(state[key], w1[key] * 0.3 + w2[key] * 0.7, atol=1e-7)
    assert set(state) == set(w1)
    assert mm.ModelMergeSimple().merge(model1, model2, 1.0)[0] is model1
    (only_model2,) = mm.ModelMergeSimple().merge(model1, model2, 0.0)
    assert all(torch.equal(tensor, w2[key]) for key, tensor in only_model2.network.state_dict().items())


def test_add_and_subtract(two_models):
    model1, model2 = two_models
    w1, w2 = _states(model1, model2)
    (total,) = mm.ModelMergeAdd().merge(model1, model2)
    (difference,) = mm.ModelMergeSubtract().merge(model1, model2, 2.5)
    for key in KEYS.values():
        assert torch.allclose(total.network.state_dict()[key], w1[key] + w2[key], atol=1e-6)
        assert torch.allclose(difference.network.state_dict()[key], (w1[key] - w2[key]) * 2.5, atol=1e-6)
    (restored,) = mm.ModelMergeAdd().merge(model2, mm.ModelMergeSubtract().merge(model1, model2, 1.0)[0])
    for key in KEYS.values():  # "add difference": model2 + (model1 - model2) is model1
        assert torch.allclose(restored.network.state_dict()[key], w1[key], atol=1e-6)


def test_blocks_follow_comfyuis_ldm_block_names(two_models):
    model1, model2 = two_models
    w1, w2 = _states(model1, model2)
    ratios = {"input": 0.25, "middle": 0.5, "out": 0.75}
    (merged,) = mm.ModelMergeBlocks().merge(model1, model2, **ratios)
    state = merged.network.state_dict()
    expected_ratio = {"conv_in": 0.25, "down": 0.25, "middle": 0.5, "up": 0.75, "conv_out": 0.75, "norm_out": 0.75,
                      "time": 0.25}
    for part, key in KEYS.items():
        ratio = expected_ratio[part]
        assert torch.allclose(state[key], w1[key] * ratio + w2[key] * (1 - ratio), atol=1e-7), part
    assert merging.block_of("down_blocks.0.resnets.0.conv1.weight") == "input"
    assert merging.block_of("add_embedding.linear_1.weight") is None  # SDXL's label_emb: the first ratio
    assert merging.block_ratio("transformer_blocks.0.attn.to_q.weight", ratios) == 0.25  # a DiT: all "input"


def test_untouched_weights_are_shared_and_the_inputs_unchanged(two_models):
    model1, model2 = two_models
    w1, w2 = _states(model1, model2)
    (merged,) = mm.ModelMergeBlocks().merge(model1, model2, 1.0, 0.0, 1.0)
    state, original = merged.network.state_dict(), model1.network.state_dict()
    assert state[KEYS["down"]].data_ptr() == original[KEYS["down"]].data_ptr()  # ratio 1: no copy
    assert torch.equal(state[KEYS["middle"]], w2[KEYS["middle"]])
    assert merged.network is not model1.network
    for model, before in ((model1, w1), (model2, w2)):
        after = model.network.state_dict()
        assert all(torch.equal(after[key], before[key]) for key in before)
    model1.network.to(torch.float64)  # moving model1 (the model manager offloading it) leaves the merge whole
    try:
        assert merged.network.state_dict()[KEYS["down"]].dtype == torch.float32
    finally:
        model1.network.to(torch.float32)


def test_a_weight_of_another_shape_stays_model1s():
    model1, inpainting = _tiny_model(0), _tiny_model(7, in_channels=9)
    (merged,) = mm.ModelMergeSimple().merge(model1, inpainting, 0.5)
    state, w1 = merged.network.state_dict(), model1.network.state_dict()
    assert torch.equal(state["conv_in.weight"], w1["conv_in.weight"])
    assert not torch.equal(state[KEYS["down"]], w1[KEYS["down"]])


def test_another_family_is_refused(two_models):
    import dataclasses

    model1, model2 = two_models
    with pytest.raises(ValueError, match="model2: a sdxl model cannot be merged"):
        mm.ModelMergeSimple().merge(model1, dataclasses.replace(model2, family="sdxl"), 0.5)


def test_loras_are_merged_in_first(sd1, tiny_models_dir):
    """ComfyUI patches a LoRA'd model's weights before merging: w = base + up @ down * alpha / rank * strength."""
    model, _, _ = sd1
    (with_lora,) = LoraLoaderModelOnly().load_lora_model_only(model, DEMO_LORA, 0.5)
    lora = load_file(str(tiny_models_dir / "loras" / DEMO_LORA))
    kohya = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    up, down = lora[f"{kohya}.lora_up.weight"], lora[f"{kohya}.lora_down.weight"]
    delta = up @ down * (lora[f"{kohya}.alpha"].item() / down.shape[0]) * 0.5
    key = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    base = model.network.state_dict()[key].clone()

    (merged,) = mm.ModelMergeSimple().merge(with_lora, model, 0.5)  # (base + delta) / 2 + base / 2
    assert merged.loras == ()
    assert torch.allclose(merged.network.state_dict()[key], base + delta / 2, atol=1e-6)
    assert torch.equal(model.network.state_dict()[key], base)


def _merge_prompt(class_type: str, inputs: dict) -> dict:
    prompt = json.loads((WORKFLOWS / "lora.json").read_text())
    prompt["9"] = {"class_type": class_type, "inputs": {"model1": ["1", 0], "model2": ["2", 0], **inputs}}
    prompt["6"]["inputs"]["model"] = ["9", 0]
    prompt["8"]["inputs"]["filename_prefix"] = "merged"
    return prompt


@pytest.mark.parametrize("class_type, inputs", [
    ("ModelMergeSimple", {"ratio": 0.5}), ("ModelMergeBlocks", {"input": 0.2, "middle": 0.5, "out": 0.8}),
])
def test_merges_run_as_api_workflows(node_env, class_type, inputs):
    images = run_workflow(node_env, _merge_prompt(class_type, inputs))
    assert len(images) == 1 and images[0].size == (64, 64)


def test_out_of_range_ratio_is_refused_at_validation(node_env):
    from tests.nodes.conftest import validation_errors

    errors = validation_errors(_merge_prompt("ModelMergeSimple", {"ratio": 1.5}))
    assert any(error["extra_info"].get("input_name") == "ratio" for error in errors["9"])


def test_sdxl_blocks_merge_keeps_the_label_embedding_on_the_input_ratio():
    from diffusion.components import DiffusionModel
    from diffusion.families.sdxl import demo as sdxl_tiny
    from diffusion.families.sdxl.sampling import sampling_for

    def sdxl(seed):
        unet = sdxl_tiny.build_tiny_sdxl(seed).unet
        return DiffusionModel(unet, {}, f"sdxl-{seed}", "sdxl", sampling_for(unet, False))

    model1, model2 = sdxl(10), sdxl(12)
    w1, w2 = _states(model1, model2)
    (merged,) = mm.ModelMergeBlocks().merge(model1, model2, 0.2, 0.6, 0.9)
    state = merged.network.state_dict()
    expected = {"add_embedding.linear_1.weight": 0.2, "mid_block.attentions.0.proj_in.weight": 0.6,
                "up_blocks.0.resnets.0.conv1.weight": 0.9, "down_blocks.1.attentions.0.proj_out.weight": 0.2}
    for key, ratio in expected.items():
        assert torch.allclose(state[key], w1[key] * ratio + w2[key] * (1 - ratio), atol=1e-7), key
