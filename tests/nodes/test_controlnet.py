"""ControlNet nodes: their contracts against ComfyUI's (nodes.py, comfy_extras/nodes_controlnet.py, nodes_sd3.py,
nodes_canny.py), loading a tiny random-weight SD1 ControlNet from the original (`control_model.*`) and diffusers
layouts (.safetensors and a pickled .pth), wrong files refused, the residuals added to the UNet exactly as
diffusers' ControlNet pipelines add them, ComfyUI's semantics (strength, start/end percent, chaining, the old
apply node's negative), the Canny detector on hand-checked images, and API workflows through the engine."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import nodes
from compat import folder_paths
from diffusion import controlnet as cn
from diffusion.families.ldm_export import UNET_PREFIX, unet_to_ldm
from diffusion.families.sd import demo as sd_demo
from diffusion.sampling import guiders
from diffusion.sampling.guidance import guidance_batch
from nodes import controlnet as cnodes
from nodes.canny import canny
from nodes.conditioning import CLIPTextEncode
from nodes.latent import EmptyLatentImage
from nodes.sampling import KSampler
from tests.nodes.conftest import validation_errors
from tests.nodes.family_workflows import run_workflow

CONTROLNET = "tiny-sd1-controlnet.safetensors"  # diffusers layout
CONTROLNET_LDM = "tiny-sd1-controlnet-ldm.safetensors"  # original layout, as lllyasviel's control_v11 files
CONTROLNET_PTH = "sub/tiny-sd1-controlnet-ldm.pth"
STRENGTH = ("FLOAT", 1.0, 0.0, 10.0, 0.01)
PERCENTS = [("start_percent", ("FLOAT", 0.0, 0.0, 1.0, 0.001)), ("end_percent", ("FLOAT", 1.0, 0.0, 1.0, 0.001))]
APPLY = "conditioning/controlnet"
BOTH = ("CONDITIONING", "CONDITIONING")
SIDES = ("positive", "negative")

# node: (category, RETURN_TYPES, RETURN_NAMES or None, required inputs in order, optional inputs); an input is a
# link type, "COMBO" (a file list) or choices, or (FLOAT, default, min, max, step)
COMFYUI_CONTRACTS = {
    "ControlNetLoader": ("loaders", ("CONTROL_NET",), None, [("control_net_name", "COMBO")], []),
    "DiffControlNetLoader": ("loaders", ("CONTROL_NET",), None,
                             [("model", "MODEL"), ("control_net_name", "COMBO")], []),
    "ControlNetApply": (APPLY, ("CONDITIONING",), None, [
        ("conditioning", "CONDITIONING"), ("control_net", "CONTROL_NET"), ("image", "IMAGE"),
        ("strength", STRENGTH)], []),
    "ControlNetApplyAdvanced": (APPLY, BOTH, SIDES, [
        ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("control_net", "CONTROL_NET"),
        ("image", "IMAGE"), ("strength", STRENGTH), *PERCENTS], [("vae", "VAE")]),
    "ControlNetApplySD3": (APPLY, BOTH, SIDES, [
        ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("control_net", "CONTROL_NET"),
        ("vae", "VAE"), ("image", "IMAGE"), ("strength", STRENGTH), *PERCENTS], []),
    "SetUnionControlNetType": (APPLY, ("CONTROL_NET",), None, [
        ("control_net", "CONTROL_NET"),
        ("type", ["auto", "openpose", "depth", "hed/pidi/scribble/ted", "canny/lineart/anime_lineart/mlsd",
                  "normal", "segment", "tile", "repaint"])], []),
    "ControlNetInpaintingAliMamaApply": (APPLY, BOTH, SIDES, [
        ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("control_net", "CONTROL_NET"),
        ("vae", "VAE"), ("image", "IMAGE"), ("mask", "MASK"), ("strength", STRENGTH), *PERCENTS], []),
    "Canny": ("image/preprocessors", ("IMAGE",), None, [
        ("image", "IMAGE"), ("low_threshold", ("FLOAT", 0.4, 0.01, 0.99, 0.01)),
        ("high_threshold", ("FLOAT", 0.8, 0.01, 0.99, 0.01))], []),
}
DISPLAY_NAMES = {"ControlNetLoader": "Load ControlNet Model", "DiffControlNetLoader": "Load ControlNet Model (diff)",
                 "ControlNetApply": "Apply ControlNet (OLD)", "ControlNetApplyAdvanced": "Apply ControlNet",
                 "ControlNetApplySD3": "Apply Controlnet with VAE"}


def _inputs(section: dict) -> list:
    described = []
    for name, (kind, options) in section.items():
        assert options.get("tooltip"), name
        if isinstance(kind, list):
            described.append((name, "COMBO" if name == "control_net_name" else kind))
        elif kind == "FLOAT":
            described.append((name, (kind, options["default"], options["min"], options["max"], options["step"])))
        else:
            described.append((name, kind))
    return described


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(name, node_env):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    spec = node_class.INPUT_TYPES()
    contract = (node_class.CATEGORY, node_class.RETURN_TYPES, getattr(node_class, "RETURN_NAMES", None),
                _inputs(spec["required"]), _inputs(spec.get("optional", {})))
    assert contract == COMFYUI_CONTRACTS[name]
    assert node_class.DESCRIPTION and callable(getattr(node_class(), node_class.FUNCTION))
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == DISPLAY_NAMES.get(name, name)
    assert getattr(node_class, "DEPRECATED", False) == (name in ("ControlNetApply", "ControlNetApplySD3"))


def test_every_node_is_in_the_table():
    assert set(cnodes.NODE_CLASS_MAPPINGS) == set(COMFYUI_CONTRACTS)


# -- a tiny SD1 ControlNet in the layouts people download ---------------------------------------------------------

_CONTROLNET_TO_LDM = {"controlnet_cond_embedding.conv_in.": "input_hint_block.0.",
                      "controlnet_cond_embedding.conv_out.": "input_hint_block.14.",
                      "controlnet_mid_block.": "middle_block_out.0."}


def controlnet_to_ldm(state: dict, unet_config: dict) -> dict:
    """A diffusers ControlNetModel state dict in the original layout (`control_model.*`), written from the LDM
    module names (the inverse of what the loader converts)."""
    own, shared = {}, {}
    for key, tensor in state.items():
        prefix = next((old for old in _CONTROLNET_TO_LDM if key.startswith(old)), None)
        if prefix is not None:
            own[_CONTROLNET_TO_LDM[prefix] + key[len(prefix):]] = tensor
        elif key.startswith("controlnet_cond_embedding.blocks."):
            index, rest = key.removeprefix("controlnet_cond_embedding.blocks.").split(".", 1)
            own[f"input_hint_block.{2 * (int(index) + 1)}.{rest}"] = tensor
        elif key.startswith("controlnet_down_blocks."):
            index, rest = key.removeprefix("controlnet_down_blocks.").split(".", 1)
            own[f"zero_convs.{index}.0.{rest}"] = tensor
        else:
            shared[key] = tensor
    converted = {key.replace(UNET_PREFIX, ""): tensor for key, tensor in unet_to_ldm(shared, unet_config).items()}
    return {cn.LDM_PREFIX + key: tensor.contiguous() for key, tensor in {**converted, **own}.items()}


def tiny_controlnet(seed: int = 5):
    """A random-weight ControlNetModel matching the tiny SD1 UNet (its zero-initialised outputs made random)."""
    from diffusers import ControlNetModel

    unet = sd_demo.build_tiny_components("sd1").unet
    torch.manual_seed(seed)
    model = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 16))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(torch.randn_like(parameter) * (0.3 if "controlnet_" in name else 0.05))
    return model.eval(), dict(unet.config)


@pytest.fixture(scope="session")
def controlnet_files(tiny_models_dir):
    model, unet_config = tiny_controlnet()
    folder = tiny_models_dir / "controlnet"
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    state = {key: tensor.contiguous() for key, tensor in model.state_dict().items()}
    save_file(state, folder / CONTROLNET)
    ldm = controlnet_to_ldm(state, unet_config)
    save_file(ldm, folder / CONTROLNET_LDM)
    torch.save({"state_dict": ldm}, folder / CONTROLNET_PTH)
    return model


@pytest.mark.parametrize("name", [CONTROLNET, CONTROLNET_LDM, CONTROLNET_PTH])
def test_loads_each_layout_with_the_same_weights(node_env, controlnet_files, name):
    assert name in cnodes.ControlNetLoader.INPUT_TYPES()["required"]["control_net_name"][0]
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(name)
    assert control_net.kind == cn.UNET and not control_net.needs_vae
    assert dict(control_net.network.config)["block_out_channels"] == tuple(controlnet_files.config.block_out_channels)
    expected = controlnet_files.state_dict()
    loaded = control_net.network.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[key], expected[key]) for key in expected)


def test_a_difference_controlnet_gets_the_models_weights_added(sd1, controlnet_files, tiny_models_dir):
    """ComfyUI's diff ControlNets store the ControlNet less the UNet it was trained from (a `difference` entry
    marks them); DiffControlNetLoader adds the model's weights back, ControlNetLoader refuses them."""
    model, _, _ = sd1
    unet = unet_to_ldm(model.network.state_dict(), dict(model.network.config))
    full = controlnet_to_ldm(controlnet_files.state_dict(), dict(model.network.config))
    difference = {key: tensor - unet[UNET_PREFIX + key.removeprefix(cn.LDM_PREFIX)]
                  if UNET_PREFIX + key.removeprefix(cn.LDM_PREFIX) in unet else tensor for key, tensor in full.items()}
    save_file({**difference, "difference": torch.tensor([])}, tiny_models_dir / "controlnet" / "tiny-diff.safetensors")
    with pytest.raises(ValueError, match="is a difference ControlNet.*DiffControlNetLoader"):
        cnodes.ControlNetLoader().load_controlnet("tiny-diff.safetensors")
    (control_net,) = cnodes.DiffControlNetLoader().load_controlnet(model, "tiny-diff.safetensors")
    loaded, expected = control_net.network.state_dict(), controlnet_files.state_dict()
    for key in expected:
        torch.testing.assert_close(loaded[key], expected[key], rtol=0, atol=1e-6)
    assert any(not torch.equal(difference[key], full[key]) for key in full)


def test_a_shuffle_controlnet_pools_its_residuals_as_comfyui(node_env, controlnet_files, tiny_models_dir):
    folder = tiny_models_dir / "controlnet"
    shutil.copy(folder / CONTROLNET, folder / "tiny_shuffle.safetensors")
    (pooled,) = cnodes.ControlNetLoader().load_controlnet("tiny_shuffle.safetensors")
    (plain,) = cnodes.ControlNetLoader().load_controlnet(CONTROLNET)
    assert pooled.network.config.global_pool_conditions and not plain.network.config.global_pool_conditions
    x, hint = torch.randn(1, 4, 8, 8), torch.rand(1, 3, 64, 64)
    arguments = dict(encoder_hidden_states=torch.randn(1, 77, controlnet_files.config.cross_attention_dim),
                     controlnet_cond=hint, return_dict=False)
    with torch.inference_mode():
        _, mid = pooled.network(x, torch.tensor([10.0]), **arguments)
        _, plain_mid = plain.network(x, torch.tensor([10.0]), **arguments)
    torch.testing.assert_close(mid, plain_mid.mean(dim=(2, 3), keepdim=True))


def test_a_t2i_adapter_folder_file_is_offered_and_loaded(node_env, controlnet_files, tiny_models_dir):
    folder = tiny_models_dir / "t2i_adapter"
    folder.mkdir(exist_ok=True)
    shutil.copy(tiny_models_dir / "controlnet" / CONTROLNET, folder / "in-adapter-folder.safetensors")
    assert "in-adapter-folder.safetensors" in cnodes.controlnet_names()
    (control_net,) = cnodes.DiffControlNetLoader().load_controlnet(None, "in-adapter-folder.safetensors")
    assert control_net.kind == cn.UNET
    assert "in-adapter-folder.safetensors" in folder_paths.get_filename_list("controlnet")
    assert folder_paths.get_full_path("controlnet", "in-adapter-folder.safetensors") == str(
        (folder / "in-adapter-folder.safetensors").resolve())


@pytest.mark.parametrize("source, words", [
    (("loras", sd_demo.DEMO_LORA), "a LoRA"),
    (("checkpoints", sd_demo.DEMO_CHECKPOINT), "Stable Diffusion 1.x/2.x checkpoint"),
])
def test_other_files_are_refused_saying_what_they_hold(node_env, tiny_models_dir, source, words):
    target = tiny_models_dir / "controlnet" / f"wrong-{source[1]}"
    target.parent.mkdir(exist_ok=True)
    shutil.copy(tiny_models_dir.joinpath(*source), target)
    with pytest.raises(ValueError, match=f"control_net_name: wrong-.* is not a ControlNet.*{words}"):
        cnodes.ControlNetLoader().load_controlnet(target.name)


def test_a_light_t2i_adapter_and_a_control_lora_are_named():
    assert "light T2I-Adapter" in cn.describe_other({"body.0.in_conv.weight", "body.0.body.0.block1.weight"})
    assert "Control-LoRA" in cn.describe_other({"lora_controlnet", "input_hint_block.0.weight"})
    sd35 = {"controlnet_blocks.0.weight", "pos_embed_input.proj.weight", "transformer_blocks.0.adaLN_modulation.1.bias"}
    assert cn.detect_kind(sd35) is None and "SD3.5 ControlNet in Stability's layout" in cn.describe_other(sd35)
    xlabs = {"controlnet_blocks.0.weight", "input_hint_block.0.weight", "double_blocks.0.img_attn.norm.key_norm.scale"}
    assert cn.detect_kind(xlabs) is None and "XLabs FLUX ControlNet" in cn.describe_other(xlabs)


# -- residuals as diffusers adds them -----------------------------------------------------------------------------


def _conditioning(clip, text):
    return CLIPTextEncode().encode(clip, text)[0]


def test_the_residuals_are_added_as_diffusers_adds_them(sd1, controlnet_files):
    """One denoiser call with a control equals diffusers' ControlNet + UNet call on the same input (what
    StableDiffusionControlNetPipeline runs each step), the hint cropped from the centre and resized."""
    model, clip, _ = sd1
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(CONTROLNET)
    positive = _conditioning(clip, "a cat")
    image = torch.rand(1, 48, 80, 3, generator=torch.Generator().manual_seed(1))  # wider than the latents
    controlled, _ = cnodes.ControlNetApplyAdvanced().apply_controlnet(positive, positive, control_net, image, 0.7,
                                                                      0.0, 1.0)
    sampling = model.model_sampling
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([3.0])
    denoiser = guiders.basic_guider(model, controlled).denoiser(model.network, 1, None, sampling)
    got = denoiser(x, sigma)

    hint = image.movedim(-1, 1)[..., :, 16:64]  # 48x80 cropped to the latents' square from the centre
    hint = torch.nn.functional.interpolate(hint, size=(64, 64), mode="nearest-exact")
    model_input = sampling.calculate_input(sigma, x)
    timestep = sampling.timestep(sigma).float()
    embeddings = positive[0][0]
    with torch.inference_mode():
        down, mid = control_net.network(model_input, timestep, encoder_hidden_states=embeddings,
                                        controlnet_cond=hint, conditioning_scale=0.7, return_dict=False)
        noise = model.network(model_input, timestep, encoder_hidden_states=embeddings,
                              down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    torch.testing.assert_close(got, sampling.calculate_denoised(sigma, noise, x), rtol=0, atol=1e-6)
    plain = guiders.basic_guider(model, positive).denoiser(model.network, 1, None, sampling)(x, sigma)
    assert (got - plain).abs().max() > 1e-3


def test_an_sdxl_controlnet_gets_the_models_size_conditioning(node_env):
    """An SDXL ControlNet (diffusers layout, as SDXL ControlNets are shipped) gets the pooled text and size numbers
    the SDXL UNet gets: one denoiser call equals diffusers' ControlNet + UNet call with them."""
    from diffusers import ControlNetModel

    from diffusion.families.sdxl import demo as sdxl_demo
    from nodes.loaders import CheckpointLoaderSimple

    sdxl_demo.make_sdxl_demo_models(node_env.folders.models_dir)
    model, clip, _ = CheckpointLoaderSimple().load_checkpoint(f"{sdxl_demo.DEMO_BASE}.safetensors")
    torch.manual_seed(16)
    reference = _randomise(ControlNetModel.from_unet(model.network, conditioning_embedding_out_channels=(4, 8, 8, 16)),
                           16)
    _save(reference, node_env.folders.models_dir / "controlnet" / "tiny-sdxl-controlnet.safetensors")
    (control_net,) = cnodes.ControlNetLoader().load_controlnet("tiny-sdxl-controlnet.safetensors")
    positive = _conditioning(clip, "a cat")
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(17))
    controlled, _ = cnodes.ControlNetApplyAdvanced().apply_controlnet(positive, positive, control_net, image, 1.2,
                                                                      0.0, 1.0)
    sampling = model.model_sampling
    x, sigma = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(18)), torch.tensor([2.0])
    got = guiders.basic_guider(model, controlled).denoiser(model.network, 1, None, sampling)(x, sigma)

    guidance = guidance_batch(positive, positive, 1, 1.0, model.device, model.dtype)
    added = model.sampling.network_inputs(guidance, 1, model.device, model.dtype)["added_cond_kwargs"]
    model_input, timestep = sampling.calculate_input(sigma, x), sampling.timestep(sigma).float()
    with torch.inference_mode():
        down, mid = reference(model_input, timestep, encoder_hidden_states=positive[0][0],
                              controlnet_cond=image.movedim(-1, 1), conditioning_scale=1.2, added_cond_kwargs=added,
                              return_dict=False)
        noise = model.network(model_input, timestep, encoder_hidden_states=positive[0][0], added_cond_kwargs=added,
                              down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    torch.testing.assert_close(got, sampling.calculate_denoised(sigma, noise, x), rtol=0, atol=1e-6)


def test_center_resize_crops_as_comfyui():
    image = torch.arange(4 * 8, dtype=torch.float32).reshape(1, 1, 4, 8)
    assert torch.equal(cn.center_resize(image, 4, 4), image[..., 2:6])
    tall = torch.arange(6 * 2, dtype=torch.float32).reshape(1, 1, 6, 2)
    assert torch.equal(cn.center_resize(tall, 2, 2), tall[..., 2:4, :])


def _sample(model, positive, negative, seed=3, steps=3):
    (latent,) = EmptyLatentImage().generate(64, 64, 1)
    return KSampler().sample(model, seed, steps, 2.0, "euler", "normal", positive, negative, latent)[0]["samples"]


def test_strength_and_the_percent_range_as_comfyui(sd1, controlnet_files):
    model, clip, _ = sd1
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(CONTROLNET_LDM)
    positive, negative = _conditioning(clip, "a cat"), _conditioning(clip, "")
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(4))
    apply = cnodes.ControlNetApplyAdvanced().apply_controlnet
    plain = _sample(model, positive, negative)
    assert apply(positive, negative, control_net, image, 0.0, 0.0, 1.0) == (positive, negative)
    controlled = _sample(model, *apply(positive, negative, control_net, image, 1.0, 0.0, 1.0))
    assert (controlled - plain).abs().max() > 1e-3
    # a range the run never reaches (sigma 0 only): the same samples as without it
    assert torch.equal(_sample(model, *apply(positive, negative, control_net, image, 1.0, 1.0, 1.0)), plain)
    # only the first step: differs from both
    first = _sample(model, *apply(positive, negative, control_net, image, 1.0, 0.0, 0.3))
    assert (first - plain).abs().max() > 1e-4 and (first - controlled).abs().max() > 1e-4


def test_chained_controls_add_up_and_entries_without_one_get_zeros(sd1, controlnet_files):
    model, clip, _ = sd1
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(CONTROLNET)
    positive = _conditioning(clip, "a cat")
    first_image, second_image = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(6)).split(1)
    apply = cnodes.ControlNetApplyAdvanced().apply_controlnet
    once, _ = apply(positive, positive, control_net, first_image, 0.5, 0.0, 1.0)
    twice, _ = apply(once, once, control_net, second_image, 1.5, 0.0, 1.0)
    assert twice[0][1]["control"].previous is once[0][1]["control"]
    alone, _ = apply(positive, positive, control_net, second_image, 1.5, 0.0, 1.0)
    x = torch.randn(2, 4, 8, 8)
    timestep, embeddings = torch.tensor([500.0, 500.0]), torch.cat([positive[0][0]] * 2)

    def kwargs(controls):
        return cn.network_kwargs(controls, 1, x, 1.0, timestep, embeddings, {}, lambda percent: 10 * (1 - percent),
                                 cn.HintCache())

    chained = kwargs([twice[0][1]["control"], None])
    parts = [kwargs([control, None]) for control in (once[0][1]["control"], alone[0][1]["control"])]
    torch.testing.assert_close(chained["mid_block_additional_residual"],
                               sum(part["mid_block_additional_residual"] for part in parts))
    assert not chained["mid_block_additional_residual"][1].any()  # the second entry has no control
    assert kwargs([None, None]) == {}


def test_the_old_apply_node_steers_the_negative_too(sd1, controlnet_files):
    model, clip, _ = sd1
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(CONTROLNET)
    positive, negative = _conditioning(clip, "a cat"), _conditioning(clip, "")
    (controlled,) = cnodes.ControlNetApply().apply_controlnet(positive, control_net, torch.rand(1, 64, 64, 3), 1.0)
    control = controlled[0][1]["control"]
    options = [negative[0][1], controlled[0][1]]
    assert cn.entry_controls(options, 1) == [control, control]
    advanced, plain_negative = cnodes.ControlNetApplyAdvanced().apply_controlnet(
        positive, negative, control_net, torch.rand(1, 64, 64, 3), 1.0, 0.0, 1.0)
    assert cn.entry_controls([negative[0][1], advanced[0][1]], 1) == [None, advanced[0][1]["control"]]


def test_a_controlnet_of_another_family_is_refused(sd1, controlnet_files):
    model, clip, _ = sd1
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(CONTROLNET)
    positive = _conditioning(clip, "a cat")
    sd3_like = cn.ControlNet(control_net.network, cn.SD3, "other.safetensors")
    with pytest.raises(ValueError, match="vae: .*VAE"):
        cnodes.ControlNetApplyAdvanced().apply_controlnet(positive, positive, sd3_like, torch.rand(1, 8, 8, 3), 1.0,
                                                          0.0, 1.0)
    controlled, _ = cnodes.ControlNetApplyAdvanced().apply_controlnet(positive, positive, sd3_like,
                                                                      torch.rand(1, 8, 8, 3), 1.0, 0.0, 1.0, vae=1)
    with pytest.raises(ValueError, match=r"positive: other.safetensors is for SD3 models \(SD3 ControlNet\); "
                                         "it cannot steer this SD1.x/SD2.x model"):
        guiders.basic_guider(model, controlled).denoiser(model.network, 1, None, model.model_sampling)


def test_the_diffusers_scheduler_refuses_controls(sd1, controlnet_files):
    model, clip, _ = sd1
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(CONTROLNET)
    positive = _conditioning(clip, "a cat")
    controlled, negative = cnodes.ControlNetApplyAdvanced().apply_controlnet(
        positive, positive, control_net, torch.rand(1, 64, 64, 3), 1.0, 0.0, 1.0)
    (latent,) = EmptyLatentImage().generate(64, 64, 1)
    with pytest.raises(ValueError, match="scheduler: the 'diffusers' scheduler does not run ControlNets"):
        KSampler().sample(model, 1, 2, 2.0, "euler", "diffusers", controlled, negative, latent)


UNION_CONTROLNET = "tiny-sd1-union-controlnet.safetensors"


@pytest.fixture(scope="session")
def union_controlnet(tiny_models_dir, controlnet_files):
    """A random-weight ControlNetUnionModel (ControlNet++) with the tiny SD1 UNet's shape and all 8 types."""
    import inspect

    from diffusers import ControlNetUnionModel

    accepted = inspect.signature(ControlNetUnionModel.__init__).parameters
    config = {key: value for key, value in dict(controlnet_files.config).items() if key in accepted}
    config.update(addition_time_embed_dim=8, num_trans_channel=32, num_proj_channel=32, num_trans_head=8,
                  num_control_type=8)
    model = _randomise(ControlNetUnionModel(**config), 12)
    _save(model, tiny_models_dir / "controlnet" / UNION_CONTROLNET)
    return model


def test_a_union_controlnet_runs_with_the_type_set(sd1, union_controlnet):
    model, clip, _ = sd1
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(UNION_CONTROLNET)
    assert control_net.kind == cn.UNION
    positive, negative = _conditioning(clip, "a cat"), _conditioning(clip, "")
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(13))
    apply = cnodes.ControlNetApplyAdvanced().apply_controlnet
    plain = _sample(model, positive, negative)
    (depth,) = cnodes.SetUnionControlNetType().set_controlnet_type(control_net, "depth")
    (canny_type,) = cnodes.SetUnionControlNetType().set_controlnet_type(control_net, "canny/lineart/anime_lineart/mlsd")
    with_depth = _sample(model, *apply(positive, negative, depth, image, 1.0, 0.0, 1.0))
    with_canny = _sample(model, *apply(positive, negative, canny_type, image, 1.0, 0.0, 1.0))
    assert (with_depth - plain).abs().max() > 1e-4 and (with_depth - with_canny).abs().max() > 1e-5
    automatic = _sample(model, *apply(positive, negative, control_net, image, 1.0, 0.0, 1.0))
    assert (automatic - plain).abs().max() > 1e-4 and (automatic - with_depth).abs().max() > 1e-5


def test_a_union_controlnet_without_a_type_runs_as_a_plain_controlnet_as_comfyui(sd1, union_controlnet):
    """ComfyUI's "auto" skips the type tokens: with the type embedding's output zeroed, the union ControlNet's
    residuals are those of a plain ControlNet with the same weights."""
    import copy
    import inspect

    from diffusers import ControlNetModel

    model, clip, _ = sd1
    union = copy.deepcopy(union_controlnet)
    with torch.no_grad():
        union.control_add_embedding.linear_2.weight.zero_()
        union.control_add_embedding.linear_2.bias.zero_()
    accepted = inspect.signature(ControlNetModel.__init__).parameters
    plain = ControlNetModel(**{key: value for key, value in dict(union.config).items() if key in accepted}).eval()
    plain.load_state_dict(union.state_dict(), strict=False)
    control = cn.AppliedControl(cn.ControlNet(union, cn.UNION, "union"), torch.rand(1, 3, 64, 64), 0.6)
    sample, timestep = torch.randn(1, 4, 8, 8), torch.tensor([300.0])
    embeddings = _conditioning(clip, "a cat")[0][0]
    with torch.inference_mode():
        got = cn.control_output(control, control.hint, sample, timestep, embeddings, {})
        down, mid = plain(sample, timestep, encoder_hidden_states=embeddings, controlnet_cond=control.hint,
                          conditioning_scale=0.6, return_dict=False)
    torch.testing.assert_close(got["mid_block_additional_residual"][0], mid, rtol=0, atol=1e-6)
    for ours, theirs in zip(got["down_block_additional_residuals"], down, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def _randomise(model, seed: int):
    """Random weights everywhere, so that the zero-initialised outputs of a fresh ControlNet do something."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(torch.randn_like(parameter) * (0.2 if "controlnet" in name else 0.05))
    return model.eval()


def _save(model, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: tensor.contiguous() for key, tensor in model.state_dict().items()}, path)


def test_union_type_is_set_only_on_union_controlnets(node_env, union_controlnet):
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(CONTROLNET)
    assert cnodes.SetUnionControlNetType().set_controlnet_type(control_net, "depth")[0] is control_net
    (union,) = cnodes.ControlNetLoader().load_controlnet(UNION_CONTROLNET)
    assert cnodes.SetUnionControlNetType().set_controlnet_type(union, "depth")[0].union_type == 1
    assert cnodes.SetUnionControlNetType().set_controlnet_type(union, "repaint")[0].union_type == 7
    assert cnodes.SetUnionControlNetType().set_controlnet_type(union, "auto")[0].union_type is None
    six_types = cn.ControlNet(SimpleNamespace(config=SimpleNamespace(num_control_type=6)), cn.UNION, "six")
    with pytest.raises(ValueError, match="type: 'tile' is not one of the 6 control types"):
        cnodes.SetUnionControlNetType().set_controlnet_type(six_types, "tile")


# -- T2I-Adapters -------------------------------------------------------------------------------------------------

ADAPTER, ADAPTER_ORIGINAL = "tiny-sd1-t2i-adapter.safetensors", "tiny-sd1-t2i-adapter-original.pth"


def adapter_to_original(state: dict) -> dict:
    """A diffusers T2IAdapter state dict in TencentARC's layout (`body.{2 * level + j}.`, `conv_in.`)."""
    converted = {}
    for key, tensor in state.items():
        key = key.removeprefix("adapter.")
        if key.startswith("body."):
            level, rest = key.removeprefix("body.").split(".", 1)
            if rest.startswith("resnets."):
                block, rest = rest.removeprefix("resnets.").split(".", 1)
                key = f"body.{2 * int(level) + int(block)}.{rest}"
            else:
                key = f"body.{2 * int(level)}.{rest}"
        converted[key] = tensor.contiguous()
    return converted


@pytest.fixture(scope="session")
def t2i_adapter(tiny_models_dir):
    """A random-weight full T2I-Adapter whose features fit the tiny SD2 UNet's four levels (which, as real SD1 and
    SD2 UNets, has attention at the first level, so diffusers adds the features before its downsampler, where
    ComfyUI adds them), in the diffusers layout (in models/t2i_adapter) and TencentARC's original one (a .pth in
    models/controlnet)."""
    from diffusers import T2IAdapter

    torch.manual_seed(19)
    adapter = _randomise(T2IAdapter(in_channels=3, channels=[64, 64, 64, 64], num_res_blocks=2, downscale_factor=8,
                                    adapter_type="full_adapter"), 19)
    _save(adapter, tiny_models_dir / "t2i_adapter" / ADAPTER)
    (tiny_models_dir / "controlnet").mkdir(exist_ok=True)
    torch.save(adapter_to_original(adapter.state_dict()), tiny_models_dir / "controlnet" / ADAPTER_ORIGINAL)
    return adapter


@pytest.mark.parametrize("name", [ADAPTER, ADAPTER_ORIGINAL])
def test_t2i_adapters_load_from_both_layouts(node_env, t2i_adapter, name):
    (adapter,) = cnodes.ControlNetLoader().load_controlnet(name)
    assert adapter.kind == cn.T2I and adapter.network.config.adapter_type == "full_adapter"
    expected = t2i_adapter.state_dict()
    assert all(torch.equal(tensor, expected[key]) for key, tensor in adapter.network.state_dict().items())


def test_t2i_adapter_features_are_added_inside_the_down_blocks(node_env, t2i_adapter):
    """One denoiser call with two T2I-Adapters chained equals diffusers' UNet call with the adapter's features
    times the summed strengths (`down_intrablock_additional_residuals`, where ComfyUI adds a T2I-Adapter's "input"
    controls)."""
    from nodes.loaders import CheckpointLoaderSimple

    model, clip, _ = CheckpointLoaderSimple().load_checkpoint("tiny-sd2.safetensors")
    (adapter,) = cnodes.ControlNetLoader().load_controlnet(ADAPTER)
    positive = _conditioning(clip, "a cat")
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(20))
    apply = cnodes.ControlNetApplyAdvanced().apply_controlnet
    controlled, _ = apply(*apply(positive, positive, adapter, image, 0.5, 0.0, 1.0), adapter, image, 0.3, 0.0, 1.0)
    sampling = model.model_sampling
    x, sigma = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(21)), torch.tensor([1.5])
    got = guiders.basic_guider(model, controlled).denoiser(model.network, 1, None, sampling)(x, sigma)

    model_input, timestep = sampling.calculate_input(sigma, x), sampling.timestep(sigma).float()
    with torch.inference_mode():
        features = [feature * 0.5 + feature * 0.3 for feature in t2i_adapter(image.movedim(-1, 1))]
        noise = model.network(model_input, timestep, encoder_hidden_states=positive[0][0],
                              down_intrablock_additional_residuals=features).sample
    torch.testing.assert_close(got, sampling.calculate_denoised(sigma, noise, x), rtol=0, atol=1e-6)
    plain = guiders.basic_guider(model, positive).denoiser(model.network, 1, None, sampling)(x, sigma)
    assert (got - plain).abs().max() > 1e-4


def test_a_controlnet_and_a_t2i_adapter_chained_both_act(sd1, controlnet_files, t2i_adapter):
    model, clip, _ = sd1
    (adapter,) = cnodes.ControlNetLoader().load_controlnet(ADAPTER)
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(CONTROLNET)
    positive = _conditioning(clip, "a cat")
    image = torch.rand(1, 64, 64, 3)
    apply = cnodes.ControlNetApplyAdvanced().apply_controlnet
    chained, _ = apply(*apply(positive, positive, control_net, image, 1.0, 0.0, 1.0), adapter, image, 1.0, 0.0, 1.0)
    kwargs = cn.network_kwargs([None, chained[0][1]["control"]], 1, torch.randn(2, 4, 8, 8), 1.0,
                               torch.tensor([500.0, 500.0]), torch.cat([positive[0][0]] * 2), {},
                               lambda percent: 10 * (1 - percent), cn.HintCache())
    assert len(kwargs["down_block_additional_residuals"]) == 12 and len(kwargs[cn.T2I_RESIDUALS]) == 4
    assert kwargs["mid_block_additional_residual"].shape[0] == 2 and not kwargs[cn.T2I_RESIDUALS][0][0].any()


# -- SD3 and FLUX ControlNets ------------------------------------------------------------------------------------

SD3_CONTROLNET, FLUX_CONTROLNET = "tiny-sd3-controlnet.safetensors", "tiny-flux-controlnet.safetensors"
SD3_INPAINTING = "tiny-sd3-inpainting-controlnet.safetensors"  # Alimama's layout: a mask channel beside the image


@pytest.fixture(scope="session")
def transformer_controlnets(tiny_models_dir):
    from diffusers import FluxControlNetModel, SD3ControlNetModel

    from diffusion.families.flux import demo as flux_demo
    from diffusion.families.sd3 import demo as sd3_demo

    sd3_demo.make_sd3_demo_models(tiny_models_dir)
    flux_demo.make_flux_demo_models(tiny_models_dir)
    sd3 = SD3ControlNetModel.from_transformer(sd3_demo.build_tiny_sd3(20).transformer, num_layers=1,
                                              num_extra_conditioning_channels=0)
    flux = FluxControlNetModel.from_transformer(flux_demo.build_tiny_flux(0).transformer, num_layers=1,
                                                num_single_layers=1, attention_head_dim=32, num_attention_heads=2)
    inpainting = SD3ControlNetModel.from_transformer(sd3_demo.build_tiny_sd3(20).transformer, num_layers=1,
                                                     num_extra_conditioning_channels=1)
    models = {SD3_CONTROLNET: _randomise(sd3, 7), FLUX_CONTROLNET: _randomise(flux, 8),
              SD3_INPAINTING: _randomise(inpainting, 9)}
    for name, model in models.items():
        _save(model, tiny_models_dir / "controlnet" / name)
    return models


def _transformer_model(name):
    from diffusion.families.flux import demo as flux_demo
    from diffusion.families.sd3 import demo as sd3_demo
    from nodes.loaders import DiffusersLoader

    folder = flux_demo.DEMO_FLUX_DIFFUSERS if name == FLUX_CONTROLNET else sd3_demo.DEMO_DIFFUSERS
    return DiffusersLoader().load_checkpoint(folder)


def test_an_sd3_controlnet_adds_its_block_samples_as_diffusers_does(node_env, transformer_controlnets):
    """One denoiser call with an SD3 ControlNet equals diffusers' SD3ControlNetModel + SD3 transformer call
    (StableDiffusion3ControlNetPipeline's step), the hint encoded by the VAE into the model's latent space."""
    from diffusion.families.sd3.sampling import with_t5_width

    model, clip, vae = _transformer_model(SD3_CONTROLNET)
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(SD3_CONTROLNET)
    assert control_net.kind == cn.SD3 and control_net.needs_vae and not control_net.concat_mask
    expected_weights = transformer_controlnets[SD3_CONTROLNET].state_dict()
    assert all(torch.equal(tensor, expected_weights[key]) for key, tensor in control_net.network.state_dict().items())
    positive = _conditioning(clip, "a cat")
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(9))
    controlled, _ = cnodes.ControlNetApplySD3().apply_controlnet(positive, positive, control_net, image, 0.7, 0.0,
                                                                 1.0, vae)
    sampling = model.model_sampling
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(10))
    sigma = torch.tensor([0.6])
    got = guiders.basic_guider(model, controlled).denoiser(model.network, 1, None, sampling)(x, sigma)

    hint = model.latent_format.process_in(vae.encode(image))
    model_input, timestep = sampling.calculate_input(sigma, x), sampling.timestep(sigma).float()
    embeddings = with_t5_width(positive[0][0], int(model.network.config.joint_attention_dim))
    pooled = positive[0][1]["pooled_output"]
    with torch.inference_mode():
        (samples,) = control_net.network(hidden_states=model_input, controlnet_cond=hint, conditioning_scale=0.7,
                                         encoder_hidden_states=embeddings, pooled_projections=pooled,
                                         timestep=timestep, return_dict=False)
        velocity = model.network(hidden_states=model_input, timestep=timestep, encoder_hidden_states=embeddings,
                                 pooled_projections=pooled, block_controlnet_hidden_states=samples,
                                 return_dict=False)[0]
    torch.testing.assert_close(got, sampling.calculate_denoised(sigma, velocity, x), rtol=0, atol=1e-6)


def test_the_inpainting_controlnet_takes_the_masked_image_and_the_kept_area(node_env, transformer_controlnets):
    """ComfyUI's ControlNetInpaintingAliMamaApply: the image blanked where the mask is 1, encoded, and 1 - mask
    (resized to the latents) as one more hint channel."""
    from diffusion.families.sd3.sampling import with_t5_width

    model, clip, vae = _transformer_model(SD3_INPAINTING)
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(SD3_INPAINTING)
    assert control_net.concat_mask
    positive = _conditioning(clip, "a cat")
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(14))
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:40, 8:48] = 1.0
    controlled, _ = cnodes.ControlNetInpaintingAliMamaApply().apply_inpaint_controlnet(
        positive, positive, control_net, vae, image, mask, 0.9, 0.0, 1.0)
    sampling = model.model_sampling
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(15))
    sigma = torch.tensor([0.8])
    got = guiders.basic_guider(model, controlled).denoiser(model.network, 1, None, sampling)(x, sigma)

    kept = 1.0 - mask
    latents = model.latent_format.process_in(vae.encode(image * kept[..., None]))
    hint = torch.cat([latents, kept[:, None, 2::8, 2::8]], dim=1)  # nearest-exact from 64 to 8 samples 2, 10, ...
    model_input, timestep = sampling.calculate_input(sigma, x), sampling.timestep(sigma).float()
    embeddings = with_t5_width(positive[0][0], int(model.network.config.joint_attention_dim))
    pooled = positive[0][1]["pooled_output"]
    with torch.inference_mode():
        (samples,) = control_net.network(hidden_states=model_input, controlnet_cond=hint, conditioning_scale=0.9,
                                         encoder_hidden_states=embeddings, pooled_projections=pooled,
                                         timestep=timestep, return_dict=False)
        velocity = model.network(hidden_states=model_input, timestep=timestep, encoder_hidden_states=embeddings,
                                 pooled_projections=pooled, block_controlnet_hidden_states=samples,
                                 return_dict=False)[0]
    torch.testing.assert_close(got, sampling.calculate_denoised(sigma, velocity, x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", [SD3_CONTROLNET, FLUX_CONTROLNET])
def test_transformer_controlnets_steer_a_run_through_the_apply_node(node_env, transformer_controlnets, name):
    from nodes.flux import EmptySD3LatentImage

    model, clip, vae = _transformer_model(name)
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(name)
    assert control_net.kind == (cn.SD3 if name == SD3_CONTROLNET else cn.FLUX)
    positive, negative = _conditioning(clip, "a cat"), _conditioning(clip, "")
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(11))
    (latent,) = EmptySD3LatentImage().generate(64, 64, 1)

    def run(strength):
        conditioning = cnodes.ControlNetApplyAdvanced().apply_controlnet(positive, negative, control_net, image,
                                                                         strength, 0.0, 1.0, vae)
        return KSampler().sample(model, 2, 2, 1.0, "euler", "simple", *conditioning, latent)[0]["samples"]

    plain = KSampler().sample(model, 2, 2, 1.0, "euler", "simple", positive, negative, latent)[0]["samples"]
    assert torch.equal(run(0.0), plain)
    assert (run(1.0) - plain).abs().max() > 1e-4
    with pytest.raises(ValueError, match="vae: "):
        cnodes.ControlNetApplyAdvanced().apply_controlnet(positive, negative, control_net, image, 1.0, 0.0, 1.0)


def test_a_transformer_controlnet_refuses_a_unet_model(sd1, transformer_controlnets):
    model, clip, vae = sd1
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(FLUX_CONTROLNET)
    positive = _conditioning(clip, "a cat")
    controlled, _ = cnodes.ControlNetApplyAdvanced().apply_controlnet(positive, positive, control_net,
                                                                      torch.rand(1, 64, 64, 3), 1.0, 0.0, 1.0, vae)
    with pytest.raises(ValueError, match=r"is for FLUX models \(FLUX ControlNet\); it cannot steer this SD1.x"):
        guiders.basic_guider(model, controlled).denoiser(model.network, 1, None, model.model_sampling)


# -- Canny --------------------------------------------------------------------------------------------------------


def _canny(image, low=0.4, high=0.8):
    return cnodes.Canny().detect_edge(image, low, high)[0]


def test_canny_marks_the_middle_of_a_step_edge():
    """A vertical step from black to white over one grey column: after the blur the gradient peaks at that column
    (4 x the blurred step, well above both thresholds), and non-maximum suppression keeps only it."""
    image = torch.zeros(1, 12, 13, 3)
    image[:, :, 6] = 0.5
    image[:, :, 7:] = 1.0
    edges = _canny(image)
    assert edges.shape == (1, 12, 13, 3) and torch.equal(edges[..., 0], edges[..., 2])
    expected = torch.zeros(12, 13)
    expected[:, 6] = 1.0
    assert torch.equal(edges[0, ..., 0], expected)
    assert not _canny(image * 0.05).any()  # a faint step stays under the low threshold


def test_canny_ties_across_a_sharp_step_keep_the_left_column():
    """A step between two columns gives two equal gradient peaks; as OpenCV and kornia, the left one is kept."""
    image = torch.zeros(1, 10, 10, 3)
    image[:, :, 5:] = 1.0
    edges = _canny(image)[0, ..., 0]
    assert torch.equal(edges.nonzero()[:, 1].unique(), torch.tensor([4]))


def test_canny_hysteresis_keeps_weak_edges_connected_to_strong_ones():
    """A step edge of contrast 0.9 (peak gradient 0.9 x 2.59) below a high threshold of 2.5: all weak, dropped.
    Two rows of contrast 1 at the top (2.59, strong) make the whole column one connected edge, kept; the small
    step between the two contrasts on the right (0.1) stays under the low threshold."""
    image = torch.zeros(1, 1, 12, 13)
    image[..., 6], image[..., 7:] = 0.45, 0.9
    assert not canny(image, 0.4, 2.5).any()
    assert torch.equal(canny(image, 0.4, 2.0)[0, 0].nonzero()[:, 1].unique(), torch.tensor([6]))
    image[..., :2, 6], image[..., :2, 7:] = 0.5, 1.0
    edges = canny(image, 0.4, 2.5)[0, 0]
    assert torch.equal(edges[:, 6], torch.ones(12)) and edges.sum() == 12


def test_canny_thresholds_in_the_wrong_order_are_refused():
    with pytest.raises(ValueError, match="low_threshold"):
        _canny(torch.zeros(1, 8, 8, 3), 0.9, 0.2)


# -- through the engine -------------------------------------------------------------------------------------------


def _workflow(control_net_name: str, image_name: str) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": sd_demo.DEMO_CHECKPOINT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a house", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "5": {"class_type": "Canny", "inputs": {"image": ["4", 0], "low_threshold": 0.2, "high_threshold": 0.5}},
        "6": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": control_net_name}},
        "7": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "control_net": ["6", 0], "image": ["5", 0],
            "strength": 0.8, "start_percent": 0.0, "end_percent": 0.8, "vae": ["1", 2]}},
        "8": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "9": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 1, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["7", 0], "negative": ["7", 1], "latent_image": ["8", 0], "denoise": 1.0}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "controlnet"}},
    }


def test_a_canny_controlnet_workflow_runs_through_the_engine(node_env, controlnet_files):
    pixels = (torch.rand(48, 48, 3, generator=torch.Generator().manual_seed(8)) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(node_env.folders.input_dir / "hint.png")
    images = run_workflow(node_env, _workflow(CONTROLNET_LDM, "hint.png"))
    assert len(images) == 1 and images[0].size == (64, 64)


def test_a_missing_controlnet_fails_validation(node_env, controlnet_files):
    errors = validation_errors(_workflow("missing.safetensors", "hint.png"))
    assert any(error["type"] == "value_not_in_list" for error in errors["6"])
