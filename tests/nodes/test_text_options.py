"""CLIPTextEncodeControlnet, T5TokenizerOptions (comfy_extras/nodes_cond.py), FluxDisableGuidance and
FluxKontextImageScale (nodes_flux.py): their contracts against ComfyUI's, and what ComfyUI computes: a ControlNet
reading its own text while the UNet keeps the prompt (one denoiser call against diffusers' ControlNet + UNet
calls), T5 token counts as ComfyUI's T5 tokenizer pads them, FLUX without the guidance term in its time embedding
(ComfyUI's guidance None), Kontext sizes and Lanczos pixels; and API workflows through the engine."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

import nodes
from diffusion import controlnet as cn
from diffusion.encoders.t5 import T5Padding, tiny_t5_tokenizer
from diffusion.families.flux import demo as flux_demo
from diffusion.families.flux.sampling import NO_GUIDANCE
from diffusion.families.sd3 import demo as sd3_demo
from diffusion.lazy_module import resolve
from diffusion.sampling import guiders
from nodes import conditioning_ops, flux, text_encoders
from nodes import controlnet as cnodes
from nodes.conditioning import CLIPTextEncode
from nodes.loaders import DiffusersLoader
from tests.nodes.family_workflows import run_workflow
from tests.nodes.test_controlnet import (
    CONTROLNET,
    FLUX_CONTROLNET,
    controlnet_files,  # noqa: F401 (a fixture)
    transformer_controlnets,  # noqa: F401 (a fixture)
)
from tests.nodes.test_controlnet import _workflow as controlnet_workflow

EXPERIMENTAL = "_for_testing/conditioning"
FLUX = "advanced/conditioning/flux"
TOKENS = ("INT", 0, 0, 10000, 1)

# node: (module, category, RETURN_TYPES, RETURN_NAMES or None, inputs in order: link type or
# (INT, default, min, max, step), EXPERIMENTAL), read off ComfyUI's nodes_cond.py and nodes_flux.py
COMFYUI_CONTRACTS = {
    "CLIPTextEncodeControlnet": (conditioning_ops, EXPERIMENTAL, ("CONDITIONING",), None, [
        ("clip", "CLIP"), ("conditioning", "CONDITIONING"), ("text", "STRING")], True),
    "T5TokenizerOptions": (text_encoders, EXPERIMENTAL, ("CLIP",), None, [
        ("clip", "CLIP"), ("min_padding", TOKENS), ("min_length", TOKENS)], True),
    "FluxDisableGuidance": (flux, FLUX, ("CONDITIONING",), None, [("conditioning", "CONDITIONING")], False),
    "FluxKontextImageScale": (flux, FLUX, ("IMAGE",), None, [("image", "IMAGE")], False),
}


def _inputs(node_class: type) -> list:
    described = []
    for name, (kind, options) in node_class.INPUT_TYPES()["required"].items():
        assert options.get("tooltip"), name
        if kind == "INT":
            described.append((name, (kind, options["default"], options["min"], options["max"], options["step"])))
        else:
            described.append((name, kind))
    return described


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(name):
    module, category, returns, names, inputs, experimental = COMFYUI_CONTRACTS[name]
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert module.NODE_CLASS_MAPPINGS[name] is node_class
    assert (node_class.CATEGORY, node_class.RETURN_TYPES, getattr(node_class, "RETURN_NAMES", None)) == \
        (category, returns, names)
    assert _inputs(node_class) == inputs
    assert getattr(node_class, "EXPERIMENTAL", False) is experimental
    assert node_class.DESCRIPTION and callable(getattr(node_class(), node_class.FUNCTION))
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == name  # ComfyUI gives them no display name


def test_the_controlnet_text_is_a_multiline_prompt():
    text = nodes.NODE_CLASS_MAPPINGS["CLIPTextEncodeControlnet"].INPUT_TYPES()["required"]["text"][1]
    assert text["multiline"] is True and text["dynamicPrompts"] is True


# -- CLIPTextEncodeControlnet -------------------------------------------------------------------------------------


def _encode(clip, text):
    return CLIPTextEncode().encode(clip, text)[0]


def test_clip_text_encode_controlnet_adds_the_text_to_every_entry(sd1):
    _, clip, _ = sd1
    cat, dog = _encode(clip, "a cat"), _encode(clip, "a dog")
    both = [cat[0], [cat[0][0], {"strength": 0.5}]]
    (out,) = conditioning_ops.CLIPTextEncodeControlnet().encode(clip, both, "a dog")
    assert len(out) == 2 and "cross_attn_controlnet" not in both[0][1]
    for entry, original in zip(out, both):
        assert entry[0] is original[0]
        assert torch.equal(entry[1]["cross_attn_controlnet"], dog[0][0])
        assert torch.equal(entry[1]["pooled_output_controlnet"], dog[0][1]["pooled_output"])
    assert out[1][1]["strength"] == 0.5


def _control_residuals(control_net, model_input, timestep, text, hint, strength):
    return control_net.network(model_input, timestep, encoder_hidden_states=text, controlnet_cond=hint,
                               conditioning_scale=strength, return_dict=False)


def test_the_controlnet_reads_its_text_and_the_unet_the_prompt(sd1, controlnet_files):  # noqa: F811
    """One CFG denoiser call: the positive's ControlNet reads "a dog" (CLIPTextEncodeControlnet), the negative's
    its own text, and the UNet reads each entry's prompt, as ComfyUI's get_control swaps c_crossattn for the
    ControlNet call only."""
    model, clip, _ = sd1
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(CONTROLNET)
    cat, empty, dog = _encode(clip, "a cat"), _encode(clip, ""), _encode(clip, "a dog")
    hint = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    positive, negative = cnodes.ControlNetApplyAdvanced().apply_controlnet(cat, empty, control_net, hint, 10.0, 0.0,
                                                                           1.0)
    (positive,) = conditioning_ops.CLIPTextEncodeControlnet().encode(clip, positive, "a dog")
    sampling = model.model_sampling
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([3.0])
    got = guiders.CFGGuider(model, positive, negative, 2.0).denoiser(model.network, 1, None, sampling)(x, sigma)

    model_input, timestep = sampling.calculate_input(sigma, x), sampling.timestep(sigma).float()
    image = hint.movedim(-1, 1)
    estimates = []
    with torch.inference_mode():
        for prompt, control_text in ((empty, empty), (cat, dog)):
            down, mid = _control_residuals(control_net, model_input, timestep, control_text[0][0], image, 10.0)
            noise = model.network(model_input, timestep, encoder_hidden_states=prompt[0][0],
                                  down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
            estimates.append(sampling.calculate_denoised(sigma, noise, x))
    uncond, cond = estimates
    torch.testing.assert_close(got, uncond + 2.0 * (cond - uncond), rtol=0, atol=1e-5)

    own_text = guiders.CFGGuider(model, *cnodes.ControlNetApplyAdvanced().apply_controlnet(
        cat, empty, control_net, hint, 10.0, 0.0, 1.0), 2.0).denoiser(model.network, 1, None, sampling)(x, sigma)
    # the tiny model's ControlNet hardly tells texts apart: still 20 times the rounding of the batched call
    assert (got - own_text).abs().max() > 5e-5


def test_each_entrys_controlnet_reads_its_own_text(sd1, controlnet_files):  # noqa: F811
    """The residuals of one network call of two entries sharing a control: the first reads its own rows of the
    embeddings, the second the text given for it (value by value, as separate ControlNet calls)."""
    model, clip, _ = sd1
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(CONTROLNET)
    cat, dog = _encode(clip, "a cat"), _encode(clip, "a dog")
    (controlled,) = cnodes.ControlNetApply().apply_controlnet(cat, control_net, torch.rand(1, 64, 64, 3), 1.5)
    control = controlled[0][1]["control"]
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5)).repeat(2, 1, 1, 1)  # rows alike
    timestep, embeddings = torch.tensor([500.0, 500.0]), torch.cat([cat[0][0]] * 2)
    with torch.inference_mode():
        got = cn.network_kwargs([control, control], 1, x, 1.0, timestep, embeddings, {},
                                lambda percent: 10 * (1 - percent), cn.HintCache(), [None, dog[0][0]])
        hint = cn.center_resize(control.hint.float(), 64, 64)
        for row, text in enumerate((cat, dog)):
            _, mid = _control_residuals(control_net, x[row:row + 1], timestep[row:row + 1], text[0][0], hint, 1.5)
            torch.testing.assert_close(got["mid_block_additional_residual"][row:row + 1], mid, rtol=0, atol=1e-6)
    first, second = got["mid_block_additional_residual"]
    assert (first - second).abs().max() > 0.1


def test_a_controlnet_text_of_another_width_is_refused(sd1, controlnet_files):  # noqa: F811
    model, clip, _ = sd1
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(CONTROLNET)
    cat = _encode(clip, "a cat")
    positive, _ = cnodes.ControlNetApplyAdvanced().apply_controlnet(cat, cat, control_net, torch.rand(1, 64, 64, 3),
                                                                    1.0, 0.0, 1.0)
    wrong = [[positive[0][0], {**positive[0][1], "cross_attn_controlnet": torch.zeros(1, 77, 5)}]]
    denoiser = guiders.basic_guider(model, wrong).denoiser(model.network, 1, None, model.model_sampling)
    with pytest.raises(ValueError, match="^conditioning: the ControlNet text"):
        denoiser(torch.randn(1, 4, 8, 8), torch.tensor([3.0]))


def test_a_controlnet_text_workflow_runs_through_the_engine(node_env, controlnet_files):  # noqa: F811
    pixels = (torch.rand(48, 48, 3, generator=torch.Generator().manual_seed(8)) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(node_env.folders.input_dir / "hint.png")
    prompt = controlnet_workflow(CONTROLNET, "hint.png")
    prompt["12"] = {"class_type": "CLIPTextEncodeControlnet",
                    "inputs": {"clip": ["1", 1], "conditioning": ["2", 0], "text": "a dog"}}
    prompt["7"]["inputs"]["positive"] = ["12", 0]
    images = run_workflow(node_env, prompt)
    assert len(images) == 1 and images[0].size == (64, 64)


# -- T5TokenizerOptions -------------------------------------------------------------------------------------------


def _text_tokens(text: str) -> int:
    """The prompt's own T5 tokens (without the end token)."""
    return len(tiny_t5_tokenizer()(text, add_special_tokens=False).input_ids)


@pytest.mark.parametrize("min_padding,min_length", [(0, 0), (3, 0), (0, 77), (5, 10), (0, 256)])
def test_t5_padding_gives_comfyuis_token_counts(min_padding, min_length):
    """ComfyUI's SDTokenizer for T5: the tokens, the end token (1), min_padding pad tokens (0), then pads up to
    min_length; nothing is cut."""
    text = "a photo of a cat"
    tokens = _text_tokens(text)
    ids = T5Padding(min_padding, min_length).token_ids(tiny_t5_tokenizer(), text)[0].tolist()
    assert len(ids) == max(tokens + 1 + min_padding, min_length)
    assert ids[tokens] == 1 and set(ids[tokens + 1:]) <= {0} and 0 not in ids[:tokens]
    long_text = "word " * 600
    assert len(T5Padding(0, 77).token_ids(tiny_t5_tokenizer(), long_text)[0]) == _text_tokens(long_text) + 1


@pytest.fixture(scope="session")
def text_models(tiny_models_dir):
    sd3_demo.make_sd3_demo_models(tiny_models_dir)
    flux_demo.make_flux_demo_models(tiny_models_dir)


def _t5_hidden(clip_t5, ids):
    with torch.inference_mode():
        return resolve(clip_t5)(ids)[0].float()


def test_t5_options_change_sd3s_t5_tokens_as_comfyui(node_env, text_models):
    _, clip, _ = DiffusersLoader().load_checkpoint(sd3_demo.DEMO_DIFFUSERS)
    options = text_encoders.T5TokenizerOptions()
    text = "a photo of a cat"
    plain = _encode(clip, text)[0][0]
    assert plain.shape[1] == 77 + 256  # the CLIPs' 77 tokens, then T5's 256 as StableDiffusion3Pipeline pads them
    (comfy_default,) = options.set_options(clip, 0, 77)  # ComfyUI's SD3 T5 tokenizer: min_length 77
    assert clip.t5_padding is None  # the input CLIP is unchanged
    encoded = _encode(comfy_default, text)[0][0]
    assert encoded.shape[1] == 77 + 77
    ids = T5Padding(0, 77).token_ids(clip.t5_tokenizer, text)
    torch.testing.assert_close(encoded[:, 77:], _t5_hidden(clip.t5, ids), rtol=0, atol=0)
    torch.testing.assert_close(encoded[:, :77], plain[:, :77], rtol=0, atol=0)  # the CLIP part unchanged
    (unpadded,) = options.set_options(clip, 2, 0)
    assert _encode(unpadded, text)[0][0].shape[1] == 77 + _text_tokens(text) + 1 + 2


def test_t5_options_change_fluxs_t5_tokens_as_comfyui(node_env, text_models):
    _, clip, _ = DiffusersLoader().load_checkpoint(flux_demo.DEMO_FLUX_DIFFUSERS)
    text = "a photo of a cat"
    plain = _encode(clip, text)
    assert plain[0][0].shape[1] == 512  # FluxPipeline's T5 length
    (comfy_default,) = text_encoders.T5TokenizerOptions().set_options(clip, 0, 256)  # ComfyUI's FLUX min_length
    encoded = _encode(comfy_default, text)
    ids = T5Padding(0, 256).token_ids(clip.t5_tokenizer, text)
    torch.testing.assert_close(encoded[0][0], _t5_hidden(clip.t5_model, ids), rtol=0, atol=0)
    torch.testing.assert_close(encoded[0][1]["pooled_output"], plain[0][1]["pooled_output"], rtol=0, atol=0)


def test_a_clip_without_t5_is_returned_as_it_is(sd1):
    _, clip, _ = sd1
    assert text_encoders.T5TokenizerOptions().set_options(clip, 4, 100) == (clip,)


# -- FluxDisableGuidance ------------------------------------------------------------------------------------------


def test_flux_disable_guidance_sets_none_on_every_entry():
    entries = [[torch.zeros(1, 2, 4), {"guidance": 3.5, "pooled_output": torch.ones(1, 4)}], [torch.ones(1, 2, 4), {}]]
    (out,) = flux.FluxDisableGuidance().append(entries)
    assert [entry[1]["guidance"] for entry in out] == [None, None]
    assert out[0][0] is entries[0][0] and out[0][1]["pooled_output"] is entries[0][1]["pooled_output"]
    assert entries[0][1]["guidance"] == 3.5 and "guidance" not in entries[1][1]


def _without_guidance_embedder(transformer):
    """The same FLUX transformer (or ControlNet) built without a guidance embedding: its time embedding is
    ComfyUI's time_in(t) + vector_in(y), what ComfyUI's FLUX computes when guidance is None."""
    config = {**dict(transformer.config), "guidance_embeds": False}
    other = type(transformer).from_config(config)
    state = {key: value for key, value in transformer.state_dict().items() if "guidance_embedder" not in key}
    other.load_state_dict(state, strict=True)
    return other.eval()


def test_flux_without_guidance_leaves_the_guidance_term_out(node_env, text_models):
    """One CFG denoiser call on tiny FLUX.1-dev (guidance_embeds): the positive without guidance
    (FluxDisableGuidance) runs as a FLUX model without the guidance embedding, the negative keeps guidance 3.5."""
    model, clip, _ = DiffusersLoader().load_checkpoint(flux_demo.DEMO_FLUX_DIFFUSERS)
    assert model.network.config.guidance_embeds
    (positive,) = flux.FluxDisableGuidance().append(_encode(clip, "a cat"))
    negative = _encode(clip, "blurry")
    sampling = model.model_sampling
    x = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(3))
    sigma = torch.tensor([0.7])
    got = guiders.CFGGuider(model, positive, negative, 2.0).denoiser(model.network, 1, None, sampling)(x, sigma)

    model_input, timestep = sampling.calculate_input(sigma, x), sampling.timestep(sigma).float()
    plain = _without_guidance_embedder(model.network)

    def estimate(network, conditioning):
        inputs = {"pooled_projections": conditioning[0][1]["pooled_output"],
                  "guidance": torch.tensor([flux.DEFAULT_GUIDANCE])}
        with torch.inference_mode():
            output = model.sampling.network_output(network, model_input, timestep, conditioning[0][0], inputs)
        return sampling.calculate_denoised(sigma, output.float(), x)

    uncond, cond = estimate(model.network, negative), estimate(plain, positive)
    torch.testing.assert_close(got, uncond + 2.0 * (cond - uncond), rtol=0, atol=1e-5)
    (zero,) = flux.FluxGuidance().append(positive, 0.0)
    at_zero = guiders.basic_guider(model, zero).denoiser(model.network, 1, None, sampling)(x, sigma)
    alone = guiders.basic_guider(model, positive).denoiser(model.network, 1, None, sampling)(x, sigma)
    torch.testing.assert_close(alone, cond, rtol=0, atol=1e-5)
    assert (at_zero - alone).abs().max() > 1e-4  # no guidance is not guidance 0


def test_a_flux_controlnet_leaves_the_guidance_term_out_too(node_env, transformer_controlnets):  # noqa: F811
    model, clip, vae = DiffusersLoader().load_checkpoint(flux_demo.DEMO_FLUX_DIFFUSERS)
    (control_net,) = cnodes.ControlNetLoader().load_controlnet(FLUX_CONTROLNET)
    assert control_net.network.config.guidance_embeds
    (positive,) = flux.FluxDisableGuidance().append(_encode(clip, "a cat"))
    image = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(6))
    controlled, _ = cnodes.ControlNetApplyAdvanced().apply_controlnet(positive, positive, control_net, image, 1.0,
                                                                      0.0, 1.0, vae)
    control = controlled[0][1]["control"]
    plain = dataclasses.replace(control, control_net=dataclasses.replace(
        control_net, network=_without_guidance_embedder(control_net.network)))
    x, timestep = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(7)), torch.tensor([0.7])
    pooled = positive[0][1]["pooled_output"]

    def block_samples(applied, guidance):
        with torch.inference_mode():
            return cn.network_kwargs([applied], 1, x, 0.7, timestep, positive[0][0],
                                     {"pooled_projections": pooled, "guidance": torch.tensor([guidance])},
                                     lambda percent: 1 - percent, cn.HintCache(model.latent_format))

    got, expected = block_samples(control, NO_GUIDANCE), block_samples(plain, 3.5)
    assert got.keys() == expected.keys()
    for key in got:
        for tensor, other in zip(got[key], expected[key]):
            torch.testing.assert_close(tensor, other, rtol=0, atol=1e-6)


def _flux_workflow(image_name: str) -> dict:
    return {
        "1": {"class_type": "DiffusersLoader", "inputs": {"model_path": flux_demo.DEMO_FLUX_DIFFUSERS}},
        "2": {"class_type": "T5TokenizerOptions", "inputs": {"clip": ["1", 1], "min_padding": 1, "min_length": 256}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a house", "clip": ["2", 0]}},
        "4": {"class_type": "FluxDisableGuidance", "inputs": {"conditioning": ["3", 0]}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 1, "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": ["4", 0], "negative": ["4", 0], "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "flux"}},
        "9": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "10": {"class_type": "FluxKontextImageScale", "inputs": {"image": ["9", 0]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "kontext"}},
    }


def test_a_flux_workflow_with_the_new_nodes_runs_through_the_engine(node_env, text_models):
    pixels = (torch.rand(30, 40, 3, generator=torch.Generator().manual_seed(9)) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(node_env.folders.input_dir / "photo.png")
    images = run_workflow(node_env, _flux_workflow("photo.png"), size=32)
    assert sorted(image.size for image in images) == [(32, 32), (1184, 880)]


# -- FluxKontextImageScale ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("width,height,expected", [
    (64, 64, (1024, 1024)), (80, 48, (1328, 800)), (64, 96, (832, 1248)), (40, 30, (1184, 880)),
    (160, 90, (1392, 752)), (1000, 10, (1568, 672)), (10, 1000, (672, 1568)), (100, 30, (1568, 672)),
])
def test_kontext_sizes_are_the_closest_aspect_ratio(width, height, expected):
    assert flux.kontext_size(width, height) == expected


def test_kontext_scale_crops_the_centre_and_resizes_with_lanczos():
    """A 30x100 image goes to 1568x672 (aspect 2.33): 15 columns cropped each side, then PIL's Lanczos on 8-bit
    pixels, as ComfyUI's common_upscale does (values a quarter level above whole 8-bit levels, where ComfyUI's
    truncation to 8 bits and rounding agree)."""
    levels = torch.randint(0, 255, (2, 30, 100, 3), generator=torch.Generator().manual_seed(4))
    image = (levels.float() + 0.25) / 255
    (scaled,) = flux.FluxKontextImageScale().scale(image)
    assert scaled.shape == (2, 672, 1568, 3)
    for got, source in zip(scaled, levels):
        cropped = Image.fromarray(source[:, 15:85].numpy().astype(np.uint8))
        expected = np.asarray(cropped.resize((1568, 672), Image.Resampling.LANCZOS)).astype(np.float32) / 255
        assert np.array_equal(got.numpy(), expected)


def test_kontext_scale_refuses_a_mask_shaped_input():
    with pytest.raises(ValueError, match="^image:"):
        flux.FluxKontextImageScale().scale(torch.zeros(30, 100, 3))
