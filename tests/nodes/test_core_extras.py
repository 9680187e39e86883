"""Small core nodes of ComfyUI's extras: attention multiply (UNet self/cross, CLIP), the model-specific merges
(SD1/SD2, SDXL, SD3 Medium, SD3.5 Large, FLUX.1), ImageAddNoise and the YCbCr split/join, LatentConcat/LatentCut and
the LATENT_OPERATION nodes. Their contracts against ComfyUI's (`COMFYUI_CONTRACTS`, read off
comfy_extras/nodes_attention_multiply.py, nodes_model_merging_model_specific.py, nodes_images.py,
nodes_morphology.py and nodes_latent.py), their maths against hand-computed values of ComfyUI's formulas, and API
workflows of each group run through the engine on the tiny SD1 model."""
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import nodes
from diffusion import merging
from diffusion.families.sd import demo as tiny
from diffusion.families.sd.demo import DEMO_LORA
from diffusion.families.sd.loading import sd_model
from diffusion.sampling.guiders import apply_pre_cfg
from nodes import attention_multiply as am
from nodes import image_extras as ie
from nodes import latent_operations as lo
from nodes import model_merging as mm
from nodes.loaders import LoraLoaderModelOnly
from tests.nodes.conftest import validation_errors
from tests.nodes.family_workflows import run_workflow

WORKFLOWS = Path(__file__).parents[2] / "workflows"
SEED_MAX = 0xFFFFFFFFFFFFFFFF
FACTOR = ("FLOAT", 1.0, 0.0, 10.0, 0.01)
RATIO = ("FLOAT", 1.0, 0.0, 1.0, 0.01)
ATTENTION, SPECIFIC = "_for_testing/attention_experiments", "advanced/model_merging/model_specific"
OPERATIONS = "latent/advanced/operations"
TWO_MODELS = [("model1", "MODEL"), ("model2", "MODEL")]
QKVO = [(name, FACTOR) for name in ("q", "k", "v", "out")]


def _ratios(*prefixes: str) -> list:
    return [*TWO_MODELS, *((prefix, RATIO) for prefix in prefixes)]


# ComfyUI's INPUT_TYPES loops, written out
SD1_PREFIXES = ("time_embed.", "label_emb.", *(f"input_blocks.{i}." for i in range(12)),
                *(f"middle_block.{i}." for i in range(3)), *(f"output_blocks.{i}." for i in range(12)), "out.")
SDXL_PREFIXES = ("time_embed.", "label_emb.", *(f"input_blocks.{i}" for i in range(9)),
                 *(f"middle_block.{i}" for i in range(3)), *(f"output_blocks.{i}" for i in range(9)), "out.")
MMDIT_EMBEDDERS = ("pos_embed.", "x_embedder.", "context_embedder.", "y_embedder.", "t_embedder.")
SD3_PREFIXES = (*MMDIT_EMBEDDERS, *(f"joint_blocks.{i}." for i in range(24)), "final_layer.")
SD35_PREFIXES = (*MMDIT_EMBEDDERS, *(f"joint_blocks.{i}." for i in range(38)), "final_layer.")
FLUX_PREFIXES = ("img_in.", "time_in.", "guidance_in", "vector_in.", "txt_in.",
                 *(f"double_blocks.{i}." for i in range(19)), *(f"single_blocks.{i}." for i in range(38)),
                 "final_layer.")

# node: (category, RETURN_TYPES, RETURN_NAMES or None, the inputs in order: link type, combo choices,
# (INT/FLOAT, default, min, max, step))
COMFYUI_CONTRACTS: dict[str, tuple[str, tuple, tuple | None, list]] = {
    "UNetSelfAttentionMultiply": (ATTENTION, ("MODEL",), None, [("model", "MODEL"), *QKVO]),
    "UNetCrossAttentionMultiply": (ATTENTION, ("MODEL",), None, [("model", "MODEL"), *QKVO]),
    "CLIPAttentionMultiply": (ATTENTION, ("CLIP",), None, [("clip", "CLIP"), *QKVO]),
    "ModelMergeSD1": (SPECIFIC, ("MODEL",), None, _ratios(*SD1_PREFIXES)),
    "ModelMergeSD2": (SPECIFIC, ("MODEL",), None, _ratios(*SD1_PREFIXES)),
    "ModelMergeSDXL": (SPECIFIC, ("MODEL",), None, _ratios(*SDXL_PREFIXES)),
    "ModelMergeSD3_2B": (SPECIFIC, ("MODEL",), None, _ratios(*SD3_PREFIXES)),
    "ModelMergeSD35_Large": (SPECIFIC, ("MODEL",), None, _ratios(*SD35_PREFIXES)),
    "ModelMergeFlux1": (SPECIFIC, ("MODEL",), None, _ratios(*FLUX_PREFIXES)),
    "ImageAddNoise": ("image", ("IMAGE",), None, [
        ("image", "IMAGE"), ("seed", ("INT", 0, 0, SEED_MAX, None)), ("strength", ("FLOAT", 0.5, 0.0, 1.0, 0.01))]),
    "ImageRGBToYUV": ("image/batch", ("IMAGE", "IMAGE", "IMAGE"), ("Y", "U", "V"), [("image", "IMAGE")]),
    "ImageYUVToRGB": ("image/batch", ("IMAGE",), None, [("Y", "IMAGE"), ("U", "IMAGE"), ("V", "IMAGE")]),
    "LatentConcat": ("latent/advanced", ("LATENT",), None, [
        ("samples1", "LATENT"), ("samples2", "LATENT"), ("dim", ["x", "-x", "y", "-y", "t", "-t"])]),
    "LatentCut": ("latent/advanced", ("LATENT",), None, [
        ("samples", "LATENT"), ("dim", ["x", "y", "t"]), ("index", ("INT", 0, -16384, 16384, 1)),
        ("amount", ("INT", 1, 1, 16384, 1))]),
    "LatentApplyOperation": (OPERATIONS, ("LATENT",), None, [
        ("samples", "LATENT"), ("operation", "LATENT_OPERATION")]),
    "LatentApplyOperationCFG": (OPERATIONS, ("MODEL",), None, [
        ("model", "MODEL"), ("operation", "LATENT_OPERATION")]),
    "LatentOperationTonemapReinhard": (OPERATIONS, ("LATENT_OPERATION",), None, [
        ("multiplier", ("FLOAT", 1.0, 0.0, 100.0, 0.01))]),
    "LatentOperationSharpen": (OPERATIONS, ("LATENT_OPERATION",), None, [
        ("sharpen_radius", ("INT", 9, 1, 31, 1)), ("sigma", ("FLOAT", 1.0, 0.1, 10.0, 0.1)),
        ("alpha", ("FLOAT", 0.1, 0.0, 5.0, 0.01))]),
}


def _contract(node_class: type) -> tuple:
    inputs = []
    for name, (kind, options) in node_class.INPUT_TYPES()["required"].items():
        if isinstance(kind, list):
            inputs.append((name, kind))
        elif kind in ("INT", "FLOAT"):
            inputs.append((name, (kind, options["default"], options["min"], options["max"], options.get("step"))))
        else:
            inputs.append((name, kind))
    return node_class.CATEGORY, node_class.RETURN_TYPES, getattr(node_class, "RETURN_NAMES", None), inputs


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert _contract(node_class) == COMFYUI_CONTRACTS[name]
    assert node_class.DESCRIPTION and callable(getattr(node_class(), node_class.FUNCTION))
    assert all(options.get("tooltip") for _, options in node_class.INPUT_TYPES()["required"].values())
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == name


def test_every_node_is_in_the_table():
    ours = {*am.NODE_CLASS_MAPPINGS, *ie.NODE_CLASS_MAPPINGS, *lo.NODE_CLASS_MAPPINGS,
            *(name for name, node in mm.NODE_CLASS_MAPPINGS.items() if node.CATEGORY == SPECIFIC)}
    assert ours == set(COMFYUI_CONTRACTS)
    assert nodes.NODE_CLASS_MAPPINGS["ModelMergeSD2"] is nodes.NODE_CLASS_MAPPINGS["ModelMergeSD1"]  # as ComfyUI


# -- attention multiply -----------------------------------------------------------------------------------------


def _tiny_model(seed: int):
    components = tiny.build_tiny_components("sd1", seed)
    return sd_model(components.unet, components.scheduler_config, f"tiny-{seed}")


@pytest.fixture(scope="module")
def two_models():
    return _tiny_model(0), _tiny_model(5)


def _state(module) -> dict[str, torch.Tensor]:
    return {key: tensor.clone() for key, tensor in module.state_dict().items()}


SELF_Q = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"
SELF_OUT_BIAS = "up_blocks.2.attentions.1.transformer_blocks.0.attn1.to_out.0.bias"
CROSS_K = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"
CROSS_OUT = "down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_out.0.weight"
OTHER = "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2.weight"


def test_unet_attention_multiply_scales_the_projections_comfyui_names(two_models):
    model, _ = two_models
    before = _state(model.network)
    (self_scaled,) = am.UNetSelfAttentionMultiply().patch(model, q=0.5, k=1.0, v=2.0, out=3.0)
    (cross_scaled,) = am.UNetCrossAttentionMultiply().patch(model, q=1.0, k=0.25, v=1.0, out=1.5)
    self_state, cross_state = self_scaled.network.state_dict(), cross_scaled.network.state_dict()
    assert torch.allclose(self_state[SELF_Q], before[SELF_Q] * 0.5)
    assert torch.allclose(self_state[SELF_OUT_BIAS], before[SELF_OUT_BIAS] * 3.0)
    assert torch.equal(self_state[CROSS_K], before[CROSS_K])
    assert torch.allclose(cross_state[CROSS_K], before[CROSS_K] * 0.25)
    assert torch.allclose(cross_state[CROSS_OUT], before[CROSS_OUT] * 1.5)
    assert torch.equal(cross_state[SELF_Q], before[SELF_Q])
    original = model.network.state_dict()
    assert self_state[OTHER].data_ptr() == original[OTHER].data_ptr()  # untouched weights are shared
    assert self_state[CROSS_K].data_ptr() == original[CROSS_K].data_ptr()
    assert all(torch.equal(tensor, before[key]) for key, tensor in original.items())  # the input is unchanged
    assert am.UNetSelfAttentionMultiply().patch(model, 1.0, 1.0, 1.0, 1.0)[0] is model


def test_unet_attention_multiply_scales_the_lora_patched_weight(sd1, tiny_models_dir):
    """ComfyUI multiplies the weight the LoRAs loaded before it patched: (base + delta) * q."""
    model, _, _ = sd1
    (with_lora,) = LoraLoaderModelOnly().load_lora_model_only(model, DEMO_LORA, 0.5)
    lora = load_file(str(tiny_models_dir / "loras" / DEMO_LORA))
    kohya = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    up, down = lora[f"{kohya}.lora_up.weight"], lora[f"{kohya}.lora_down.weight"]
    delta = up @ down * (lora[f"{kohya}.alpha"].item() / down.shape[0]) * 0.5
    base = model.network.state_dict()[SELF_Q].clone()
    (scaled,) = am.UNetSelfAttentionMultiply().patch(with_lora, q=2.0, k=1.0, v=1.0, out=1.0)
    assert scaled.loras == ()
    assert torch.allclose(scaled.network.state_dict()[SELF_Q], (base + delta) * 2.0, atol=1e-6)


def test_transformer_families_are_left_as_comfyui_leaves_them(two_models):
    sd3_like = dataclasses.replace(two_models[0], family="sd3")
    assert am.UNetCrossAttentionMultiply().patch(sd3_like, 2.0, 2.0, 2.0, 2.0)[0] is sd3_like


def test_clip_attention_multiply_scales_the_clip_self_attention(sd1):
    from nodes.conditioning import CLIPTextEncode

    _, clip, _ = sd1
    (module,) = clip.parts().values()
    before = _state(module)
    (scaled,) = am.CLIPAttentionMultiply().patch(clip, q=1.0, k=2.0, v=0.5, out=1.25)
    (scaled_module,) = scaled.parts().values()
    state = scaled_module.state_dict()
    layer = next(key for key in before if key.endswith("layers.0.self_attn.q_proj.weight")).removesuffix(
        "q_proj.weight")
    assert torch.allclose(state[layer + "k_proj.weight"], before[layer + "k_proj.weight"] * 2.0)
    assert torch.allclose(state[layer + "k_proj.bias"], before[layer + "k_proj.bias"] * 2.0)
    assert torch.allclose(state[layer + "v_proj.weight"], before[layer + "v_proj.weight"] * 0.5)
    assert torch.allclose(state[layer + "out_proj.bias"], before[layer + "out_proj.bias"] * 1.25)
    assert torch.equal(state[layer + "q_proj.weight"], before[layer + "q_proj.weight"])
    mlp = layer.replace("self_attn.", "mlp.fc1.weight")
    assert state[mlp].data_ptr() == module.state_dict()[mlp].data_ptr()
    assert all(torch.equal(tensor, before[key]) for key, tensor in module.state_dict().items())
    plain = CLIPTextEncode().encode(clip, "a red apple")[0][0][0]
    assert not torch.allclose(CLIPTextEncode().encode(scaled, "a red apple")[0][0][0], plain)
    assert am.CLIPAttentionMultiply().patch(clip, 1.0, 1.0, 1.0, 1.0)[0] is clip


def test_clip_attention_multiply_scales_every_clip_of_sd3_and_leaves_t5(node_env, tiny_models_dir):
    from diffusion.families.sd3 import demo as sd3_tiny
    from nodes.loaders import DiffusersLoader

    sd3_tiny.make_sd3_demo_models(tiny_models_dir)
    model, clip, _ = DiffusersLoader().load_checkpoint(sd3_tiny.DEMO_DIFFUSERS)
    parts = clip.parts()
    (scaled,) = am.CLIPAttentionMultiply().patch(clip, q=2.0, k=1.0, v=1.0, out=1.0)
    scaled_parts = scaled.parts()
    assert set(parts) == {"clip_l", "clip_g", "t5xxl"} and scaled_parts["t5xxl"] is parts["t5xxl"]
    for part in ("clip_l", "clip_g"):
        before, after = parts[part].state_dict(), scaled_parts[part].state_dict()
        key = next(key for key in before if key.endswith("layers.0.self_attn.q_proj.weight"))
        assert torch.allclose(after[key], before[key] * 2.0), part
    assert am.UNetSelfAttentionMultiply().patch(model, 2.0, 2.0, 2.0, 2.0)[0] is model


# -- model-specific merges ----------------------------------------------------------------------------------------


def _expected(model1, model2, key: str, ratio: float) -> torch.Tensor:
    return model1.network.state_dict()[key] * ratio + model2.network.state_dict()[key] * (1 - ratio)


def _distinct_ratios(prefixes) -> dict[str, float]:
    return {prefix: round(0.01 * (index + 1), 2) for index, prefix in enumerate(prefixes)}


# diffusers keys of the tiny SD1 UNet -> the ComfyUI (LDM) prefix they fall under
SD1_KEYS = {
    "conv_in.weight": "input_blocks.0.",
    "time_embedding.linear_2.bias": "time_embed.",
    "down_blocks.0.resnets.1.conv2.weight": "input_blocks.2.",
    "down_blocks.0.downsamplers.0.conv.weight": "input_blocks.3.",
    "down_blocks.1.attentions.0.proj_in.weight": "input_blocks.4.",
    "down_blocks.3.resnets.0.conv1.weight": "input_blocks.10.",  # not input_blocks.1.
    "mid_block.resnets.0.conv1.weight": "middle_block.0.",
    "mid_block.attentions.0.proj_out.weight": "middle_block.1.",
    "mid_block.resnets.1.norm2.weight": "middle_block.2.",
    "up_blocks.0.upsamplers.0.conv.weight": "output_blocks.2.",
    "up_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k.weight": "output_blocks.7.",
    "up_blocks.3.resnets.2.conv1.weight": "output_blocks.11.",
    "conv_norm_out.weight": "out.",
    "conv_out.bias": "out.",
}


def test_sd1_merge_gives_each_ldm_block_its_ratio(two_models):
    model1, model2 = two_models
    ratios = _distinct_ratios(SD1_PREFIXES)
    (merged,) = mm.ModelMergeSD1().merge(model1, model2, **ratios)
    state = merged.network.state_dict()
    for key, prefix in SD1_KEYS.items():
        assert torch.allclose(state[key], _expected(model1, model2, key, ratios[prefix]), atol=1e-6), key
    assert mm.ModelMergeSD1().merge(model1, model2, **dict.fromkeys(SD1_PREFIXES, 1.0))[0] is model1


def test_prefix_ratio_is_comfyuis_longest_prefix_else_the_first():
    ratios = {"time_embed.": 0.1, "input_blocks.1": 0.2, "input_blocks.10": 0.3}
    assert merging.prefix_ratio("input_blocks.10.0.in_layers.0.weight", ratios) == 0.3
    assert merging.prefix_ratio("input_blocks.11.0.in_layers.0.weight", ratios) == 0.2  # ComfyUI's too
    assert merging.prefix_ratio("pos_embed", {"pos_embed.": 0.4, "x_embedder.": 0.5}) == 0.4  # the first
    assert merging.prefix_ratio("out.2.weight", ratios) == 0.1


def test_sdxl_merge_names_the_added_embedding_label_emb():
    from diffusion.families.sdxl.demo import build_tiny_sdxl

    model1, model2 = (dataclasses.replace(_tiny_model(0), network=build_tiny_sdxl(seed).unet, family="sdxl")
                      for seed in (0, 3))
    ratios = _distinct_ratios(SDXL_PREFIXES)
    (merged,) = mm.ModelMergeSDXL().merge(model1, model2, **ratios)
    state = merged.network.state_dict()
    keys = {"add_embedding.linear_1.weight": "label_emb.",
            "down_blocks.1.attentions.1.proj_in.weight": "input_blocks.5",
            "up_blocks.2.resnets.2.conv1.weight": "output_blocks.8",
            "mid_block.attentions.0.norm.bias": "middle_block.1", "time_embedding.linear_1.weight": "time_embed."}
    for key, prefix in keys.items():
        assert torch.allclose(state[key], _expected(model1, model2, key, ratios[prefix]), atol=1e-6), key


def test_sd3_names_are_the_original_mmdit_names():
    from diffusion.families.sd3.demo import build_tiny_sd3, transformer_to_original

    transformer = build_tiny_sd3(0).transformer
    model = dataclasses.replace(_tiny_model(0), network=transformer, family="sd3")
    ours = {".".join(name.split(".")[:2]) for name in merging.comfy_names(model).values()}
    original = {".".join(name.split(".")[:2]) for name in transformer_to_original(transformer)}
    assert ours == original


def test_sd3_and_flux_merges_follow_comfyuis_block_names():
    from diffusion.families.flux.demo import build_tiny_flux
    from diffusion.families.sd3.demo import build_tiny_sd3

    cases = [
        (mm.ModelMergeSD3_2B, "sd3", [build_tiny_sd3(seed).transformer for seed in (0, 4)], {
            "pos_embed.proj.weight": "x_embedder.", "time_text_embed.text_embedder.linear_2.bias": "y_embedder.",
            "time_text_embed.timestep_embedder.linear_1.weight": "t_embedder.",
            "context_embedder.weight": "context_embedder.", "transformer_blocks.1.attn.to_q.weight": "joint_blocks.1.",
            "norm_out.linear.weight": "final_layer.", "proj_out.bias": "final_layer."}),
        (mm.ModelMergeFlux1, "flux", [build_tiny_flux(seed).transformer for seed in (0, 4)], {
            "x_embedder.weight": "img_in.", "time_text_embed.guidance_embedder.linear_1.weight": "guidance_in",
            "time_text_embed.timestep_embedder.linear_2.bias": "time_in.",
            "time_text_embed.text_embedder.linear_1.weight": "vector_in.", "context_embedder.bias": "txt_in.",
            "transformer_blocks.0.attn.add_k_proj.weight": "double_blocks.0.",
            "single_transformer_blocks.0.proj_mlp.weight": "single_blocks.0.", "proj_out.weight": "final_layer."}),
    ]
    for node_class, family, networks, keys in cases:
        model1, model2 = (dataclasses.replace(_tiny_model(0), network=network, family=family) for network in networks)
        ratios = _distinct_ratios(node_class.PREFIXES)
        (merged,) = node_class().merge(model1, model2, **ratios)
        state = merged.network.state_dict()
        for key, prefix in keys.items():
            assert torch.allclose(state[key], _expected(model1, model2, key, ratios[prefix]), atol=1e-6), key


def test_a_family_without_comfyui_block_names_is_refused(two_models):
    model1, model2 = (dataclasses.replace(model, family="unclip") for model in two_models)
    with pytest.raises(ValueError, match="model1: a unclip model's weights have no ComfyUI block names"):
        mm.ModelMergeSD1().merge(model1, model2, **_distinct_ratios(SD1_PREFIXES))


# -- images ---------------------------------------------------------------------------------------------------------


def test_image_add_noise_draws_comfyuis_noise_without_touching_the_global_generator():
    image = torch.rand(2, 4, 5, 3, generator=torch.Generator().manual_seed(1))
    state = torch.get_rng_state()
    (noisy,) = ie.ImageAddNoise().repeat(image, seed=42, strength=0.3)
    assert torch.equal(torch.get_rng_state(), state)
    with torch.random.fork_rng():
        expected = torch.clip(image + 0.3 * torch.randn(image.size(), generator=torch.manual_seed(42)), 0.0, 1.0)
    assert torch.equal(noisy, expected)
    (largest,) = ie.ImageAddNoise().repeat(image, seed=SEED_MAX, strength=0.0)
    assert torch.equal(largest, image)


def test_rgb_to_yuv_is_kornias_ycbcr():
    red_white = torch.tensor([[[[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]]])  # [1, 1, 2, 3]
    y, u, v = ie.ImageRGBToYUV().split(red_white)
    assert y.shape == u.shape == v.shape == red_white.shape
    assert torch.allclose(y[0, 0, :, 0], torch.tensor([0.299, 1.0]))
    assert torch.allclose(u[0, 0, :, 0], torch.tensor([(0 - 0.299) * 0.564 + 0.5, 0.5]))
    assert torch.allclose(v[0, 0, :, 0], torch.tensor([(1 - 0.299) * 0.713 + 0.5, 0.5]))
    assert torch.equal(y[..., 0], y[..., 2])  # each plane as a grey image


def test_yuv_to_rgb_reads_each_planes_mean_and_inverts_the_split():
    y = torch.tensor([0.4, 0.5, 0.6]).expand(1, 1, 1, 3)  # mean 0.5
    u, v = torch.full((1, 1, 1, 3), 0.6), torch.full((1, 1, 1, 3), 0.4)
    (rgb,) = ie.ImageYUVToRGB().join(y, u, v)
    assert torch.allclose(rgb[0, 0, 0], torch.tensor([0.5 - 0.1403, 0.5 - 0.0344 + 0.0714, 0.5 + 0.1773]))
    image = torch.rand(2, 3, 4, 3, generator=torch.Generator().manual_seed(3))
    (round_trip,) = ie.ImageYUVToRGB().join(*ie.ImageRGBToYUV().split(image))
    assert torch.allclose(round_trip, image, atol=2e-3)  # kornia's rounded coefficients


def test_image_nodes_name_a_bad_input():
    with pytest.raises(ValueError, match="image: expected an RGB image"):
        ie.ImageRGBToYUV().split(torch.rand(1, 2, 2, 4))
    with pytest.raises(ValueError, match="V: a plane of"):
        ie.ImageYUVToRGB().join(torch.rand(1, 2, 2, 3), torch.rand(1, 2, 2, 3), torch.rand(1, 3, 2, 3))


# -- latents --------------------------------------------------------------------------------------------------------


def _ramp(*shape: int) -> torch.Tensor:
    return torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape)


def test_latent_concat_joins_along_comfyuis_axes():
    first, second = _ramp(2, 4, 3, 5), -_ramp(1, 4, 3, 2) - 1
    mask = torch.ones(1, 1, 24, 40)
    latent1, latent2 = {"samples": first, "noise_mask": mask}, {"samples": second}
    (joined,) = lo.LatentConcat().concat(latent1, latent2, "x")
    assert joined["samples"].shape == (2, 4, 3, 7) and joined["noise_mask"] is mask
    assert torch.equal(joined["samples"][1, :, :, 5:], second[0])  # samples2's batch cycled to samples1's
    (before,) = lo.LatentConcat().concat(latent1, latent2, "-x")
    assert torch.equal(before["samples"][:, :, :, :2], second.expand(2, -1, -1, -1))
    (stacked,) = lo.LatentConcat().concat(latent1, latent1, "-y")
    assert stacked["samples"].shape == (2, 4, 6, 5)
    (channels,) = lo.LatentConcat().concat(latent1, latent1, "t")  # dim -3: the channels of image latents
    assert channels["samples"].shape == (2, 8, 3, 5)
    with pytest.raises(ValueError, match="samples2: a latent of shape"):
        lo.LatentConcat().concat(latent1, latent2, "y")


@pytest.mark.parametrize("dim, index, amount, expected", [
    ("x", 3, 10, slice(3, 5)),  # amount clamped to what is left
    ("x", 10, 2, slice(4, 5)),  # index clamped to the last column
    ("x", -2, 5, slice(3, 5)),  # counted from the end, clamped
    ("x", -9, 2, slice(0, 2)),  # clamped to the first column
    ("y", 1, 1, slice(1, 2)),
])
def test_latent_cut_clamps_as_comfyui(dim, index, amount, expected):
    samples = _ramp(1, 4, 3, 5)
    (cut,) = lo.LatentCut().cut({"samples": samples, "batch_index": [3]}, dim, index, amount)
    want = samples[..., expected] if dim == "x" else samples[:, :, expected]
    assert torch.equal(cut["samples"], want) and cut["batch_index"] == [3]


def test_latent_cut_t_cuts_the_channels_of_image_latents():
    (cut,) = lo.LatentCut().cut({"samples": _ramp(1, 4, 3, 5)}, "t", 1, 2)
    assert torch.equal(cut["samples"], _ramp(1, 4, 3, 5)[:, 1:3])


def test_tonemap_reinhard_compresses_the_vector_norms():
    latent = torch.tensor([[[[3.0, -4.0]]]])  # one channel, two pixels: norms 3 and 4
    (operation,) = lo.LatentOperationTonemapReinhard().make(multiplier=1.0)
    mean, std = 3.5, math.sqrt(0.5)  # torch.std is the unbiased estimate
    top = std * 5 + mean
    expected = torch.tensor([[[[3.0 / (3.0 / top + 1.0), -4.0 / (4.0 / top + 1.0)]]]])
    assert torch.allclose(operation(latent=latent), expected, atol=1e-5)
    (applied,) = lo.LatentApplyOperation().apply({"samples": latent, "batch_index": [0]}, operation)
    assert torch.allclose(applied["samples"], expected, atol=1e-5) and applied["batch_index"] == [0]


def _comfy_sharpen(latent: torch.Tensor, radius: int, sigma: float, alpha: float) -> torch.Tensor:
    """ComfyUI's steps as it writes them: reflect padding, then a zero-padded convolution, then the crop."""
    luminance = (torch.linalg.vector_norm(latent, dim=1) + 1e-6)[:, None]
    size = 2 * radius + 1
    axis = torch.linspace(-1, 1, size)
    grid_x, grid_y = torch.meshgrid(axis, axis, indexing="ij")
    gaussian = torch.exp(-(grid_x ** 2 + grid_y ** 2) / (2 * sigma * sigma))
    kernel = gaussian / gaussian.sum() * (alpha * -10)
    kernel[radius, radius] = kernel[radius, radius] - kernel.sum() + 1.0
    channels = latent.shape[1]
    padded = torch.nn.functional.pad(latent / luminance, (radius,) * 4, "reflect")
    sharpened = torch.nn.functional.conv2d(padded, kernel.repeat(channels, 1, 1).unsqueeze(1), padding=radius,
                                           groups=channels)[:, :, radius:-radius, radius:-radius]
    return luminance * sharpened


def test_sharpen_is_comfyuis_unsharp_kernel_on_the_normalized_latent():
    latent = torch.randn(2, 4, 6, 7, generator=torch.Generator().manual_seed(0))
    (operation,) = lo.LatentOperationSharpen().make(sharpen_radius=2, sigma=1.0, alpha=0.3)
    assert torch.allclose(operation.kernel().sum(), torch.tensor(1.0))
    assert torch.allclose(operation(latent=latent), _comfy_sharpen(latent, 2, 1.0, 0.3), atol=1e-5)
    (identity,) = lo.LatentOperationSharpen().make(sharpen_radius=2, sigma=1.0, alpha=0.0)
    assert torch.allclose(identity(latent=latent), latent, atol=1e-5)
    with pytest.raises(ValueError, match="sharpen_radius: 9 must be smaller than the latent"):
        lo.LatentOperationSharpen().make(9, 1.0, 0.1)[0](latent=latent)


def test_apply_operation_cfg_operates_on_the_guidance_direction(two_models):
    model = two_models[0]
    (patched,) = lo.LatentApplyOperationCFG().patch(model, lambda latent, **kwargs: latent * 2.0)
    assert len(patched.pre_cfg) == len(model.pre_cfg) + 1 and model.pre_cfg == ()
    cond, uncond = torch.full((1, 4, 2, 2), 3.0), torch.full((1, 4, 2, 2), 1.0)
    new_cond, new_uncond = apply_pre_cfg(patched.pre_cfg, cond, uncond, torch.tensor([1.0]), cond, 7.0)
    assert torch.equal(new_cond, (cond - uncond) * 2.0 + uncond) and torch.equal(new_uncond, uncond)


# -- API workflows through the engine -----------------------------------------------------------------------------


def _lora_prompt() -> dict:
    return json.loads((WORKFLOWS / "lora.json").read_text())


def _model_patches_prompt(**merge_ratios: float) -> dict:
    """lora.json with the checkpoint and its LoRA'd model merged by block, both attention multiplies and a
    sharpen in the guidance on the MODEL, and the CLIP's attention scaled."""
    prompt = _lora_prompt()
    ratios = {**dict.fromkeys(SD1_PREFIXES, 0.5), **merge_ratios}
    prompt.update({
        "9": {"class_type": "ModelMergeSD1", "inputs": {"model1": ["1", 0], "model2": ["2", 0], **ratios}},
        "10": {"class_type": "UNetSelfAttentionMultiply", "inputs": {"model": ["9", 0], "q": 1.1, "k": 0.9,
                                                                     "v": 1.0, "out": 1.2}},
        "11": {"class_type": "UNetCrossAttentionMultiply", "inputs": {"model": ["10", 0], "q": 1.0, "k": 1.3,
                                                                      "v": 0.8, "out": 1.0}},
        "12": {"class_type": "LatentOperationSharpen", "inputs": {"sharpen_radius": 2, "sigma": 1.0, "alpha": 0.1}},
        "13": {"class_type": "LatentApplyOperationCFG", "inputs": {"model": ["11", 0], "operation": ["12", 0]}},
        "14": {"class_type": "CLIPAttentionMultiply", "inputs": {"clip": ["2", 1], "q": 1.0, "k": 1.5, "v": 1.0,
                                                                 "out": 0.9}},
    })
    prompt["6"]["inputs"]["model"] = ["13", 0]
    for encoder in ("3", "4"):
        prompt[encoder]["inputs"]["clip"] = ["14", 0]
    prompt["8"]["inputs"]["filename_prefix"] = "core_extras_model"
    return prompt


def test_model_patches_run_as_an_api_workflow(node_env):
    images = run_workflow(node_env, _model_patches_prompt())
    assert len(images) == 1 and images[0].size == (64, 64)


def test_latent_and_image_nodes_run_as_an_api_workflow(node_env):
    prompt = _lora_prompt()
    prompt.update({
        "9": {"class_type": "LatentOperationTonemapReinhard", "inputs": {"multiplier": 1.0}},
        "10": {"class_type": "LatentApplyOperation", "inputs": {"samples": ["6", 0], "operation": ["9", 0]}},
        "11": {"class_type": "LatentCut", "inputs": {"samples": ["10", 0], "dim": "x", "index": 0, "amount": 4}},
        "12": {"class_type": "LatentConcat", "inputs": {"samples1": ["11", 0], "samples2": ["11", 0], "dim": "-x"}},
        "13": {"class_type": "ImageAddNoise", "inputs": {"image": ["7", 0], "seed": 3, "strength": 0.1}},
        "14": {"class_type": "ImageRGBToYUV", "inputs": {"image": ["13", 0]}},
        "15": {"class_type": "ImageYUVToRGB", "inputs": {"Y": ["14", 0], "U": ["14", 1], "V": ["14", 2]}},
    })
    prompt["7"]["inputs"]["samples"] = ["12", 0]
    prompt["8"]["inputs"].update(images=["15", 0], filename_prefix="core_extras_images")
    images = run_workflow(node_env, prompt)
    assert len(images) == 1 and images[0].size == (64, 64)  # 64 px: 8 latent columns, 4 cut and joined twice


def test_out_of_range_constants_are_refused_naming_the_input(node_env):
    errors = validation_errors(_model_patches_prompt(**{"input_blocks.4.": 1.5}))
    assert any(error["extra_info"].get("input_name") == "input_blocks.4." for error in errors["9"])
    prompt = _lora_prompt()
    prompt["9"] = {"class_type": "LatentCut", "inputs": {"samples": ["6", 0], "dim": "x", "index": 0, "amount": 0}}
    errors = validation_errors(prompt)
    assert any(error["extra_info"].get("input_name") == "amount" for error in errors["9"])
