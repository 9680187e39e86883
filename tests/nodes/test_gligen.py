"""GLIGEN (GLIGENLoader, GLIGENTextBoxApply): the contracts against ComfyUI's (nodes.py), loading a tiny GLIGEN in
ComfyUI's key layout for the tiny SD1 UNet, the conditioning the apply node builds, the denoiser call against
diffusers' UNet with `attention_type="gated"` and the same weights, exactness without GLIGEN, ComfyUI's filling
of the negative, errors, and an API workflow through the engine."""
from __future__ import annotations

import shutil

import pytest
import torch

import nodes
from diffusion import gligen as gl
from diffusion.sampling.guidance import guidance_batch
from engine import input_spec
from nodes.conditioning import CLIPTextEncode
from nodes.gligen import GLIGENLoader, GLIGENTextBoxApply
from tests.nodes.conftest import validation_errors
from tests.nodes.family_workflows import run_workflow

MAX_RESOLUTION = 16384
TINY_GLIGEN = "tiny-gligen.safetensors"

# node: (category, RETURN_TYPES, inputs in order: link type, "COMBO", (STRING, multiline) or (INT, default, min,
# max, step)), read off ComfyUI's nodes.py
COMFYUI_CONTRACTS = {
    "GLIGENLoader": ("loaders", ("GLIGEN",), [("gligen_name", "COMBO")]),
    "GLIGENTextBoxApply": ("conditioning/gligen", ("CONDITIONING",), [
        ("conditioning_to", "CONDITIONING"), ("clip", "CLIP"), ("gligen_textbox_model", "GLIGEN"),
        ("text", ("STRING", True)),
        ("width", ("INT", 64, 8, MAX_RESOLUTION, 8)), ("height", ("INT", 64, 8, MAX_RESOLUTION, 8)),
        ("x", ("INT", 0, 0, MAX_RESOLUTION, 8)), ("y", ("INT", 0, 0, MAX_RESOLUTION, 8))]),
}


@pytest.mark.parametrize("class_type", sorted(COMFYUI_CONTRACTS))
def test_contract_matches_comfyui(node_env, class_type):
    category, return_types, inputs = COMFYUI_CONTRACTS[class_type]
    node_class = nodes.NODE_CLASS_MAPPINGS[class_type]
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[class_type] == class_type  # ComfyUI gives them no display name
    assert node_class.CATEGORY == category and node_class.RETURN_TYPES == return_types
    assert getattr(node_class, "RETURN_NAMES", None) is None
    required = node_class.INPUT_TYPES()["required"]
    assert list(required) == [name for name, _ in inputs]
    for name, expected in inputs:
        kind, options = required[name][0], (required[name][1] if len(required[name]) > 1 else {})
        if expected == "COMBO":
            assert isinstance(kind, list)
        elif isinstance(expected, str):
            assert kind == expected
        elif expected[0] == "STRING":
            assert kind == "STRING" and options["multiline"] is expected[1] and options["dynamicPrompts"] is True
        else:
            assert (kind, options["default"], options["min"], options["max"], options["step"]) == expected


# ---------------------------------------------------------------- a tiny GLIGEN for the tiny SD1 UNet

def comfy_block(name: str) -> str:
    """ComfyUI's (LDM) name of a diffusers transformer block of an SD1 UNet with two layers per level."""
    parts = name.split(".")
    if parts[0] == "mid_block":
        return "middle_block.1." + ".".join(parts[3:])
    level, index = int(parts[1]), int(parts[3])
    slot = 3 * level + index + 1 if parts[0] == "down_blocks" else 3 * level + index
    kind = "input_blocks" if parts[0] == "down_blocks" else "output_blocks"
    return f"{kind}.{slot}.1." + ".".join(parts[4:])


def gated_unet(network):
    """diffusers' UNet with `attention_type="gated"` on the plain UNet's weights, its GLIGEN layers random (gates
    open: real GLIGEN files have non-zero alphas)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(7)
    unet = UNet2DConditionModel.from_config(network.config, attention_type="gated").eval()
    missing, unexpected = unet.load_state_dict(network.state_dict(), strict=False)
    assert not unexpected and all(".fuser." in key or key.startswith("position_net.") for key in missing)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if name.endswith(("alpha_attn", "alpha_dense")):
                parameter.fill_(0.4 if name.endswith("alpha_attn") else -0.3)
            elif name.startswith("position_net.null_"):
                parameter.normal_()
    return unet


def comfy_layout(unet) -> dict[str, torch.Tensor]:
    """The GLIGEN weights of a gated diffusers UNet keyed as ComfyUI's GLIGEN files are."""
    state = {}
    for key, tensor in unet.state_dict().items():
        if ".fuser." in key:
            state[comfy_block(key)] = tensor.clone()
        elif key.startswith("position_net."):
            state[key] = tensor.clone()
    return state


@pytest.fixture
def tiny_gligen(sd1, tiny_models_dir):
    """(the gated diffusers UNet, GLIGEN loaded through GLIGENLoader from a file in ComfyUI's layout)."""
    from safetensors.torch import save_file

    unet = gated_unet(sd1[0].network)
    path = tiny_models_dir / "gligen" / TINY_GLIGEN
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        save_file(comfy_layout(unet), str(path))
    return unet, GLIGENLoader().load_gligen(TINY_GLIGEN)[0]


def test_loader_reads_comfyui_layout(tiny_gligen):
    unet, loaded = tiny_gligen
    assert set(loaded.fusers) == {comfy_block(name) for name, module in unet.named_modules()
                                  if name.endswith("transformer_blocks.0")}
    assert "input_blocks.4.1.transformer_blocks.0" in loaded.fusers and loaded.embedding_width == 64
    expected = unet.get_submodule("up_blocks.2.attentions.1.transformer_blocks.0.fuser").state_dict()
    for key, tensor in loaded.fusers["output_blocks.7.1.transformer_blocks.0"].state_dict().items():
        assert torch.equal(tensor, expected[key]), key
    assert torch.equal(loaded.position_net.null_position_feature, unet.position_net.null_position_feature)


def test_gligen_layers_are_attached_for_a_call_only(sd1, tiny_gligen):
    network, gligen = sd1[0].network, tiny_gligen[1]
    name, fuser = gligen.plan(network)[0]
    base = gligen.fusers[comfy_block(name)]
    assert fuser.attn.heads == network.get_submodule(name).attn1.heads == 8  # the UNet block's heads
    assert fuser.linear.weight is base.linear.weight  # another head count shares the loaded weights
    with pytest.raises(RuntimeError, match="inside"):
        with gl.attached(network, gligen):
            assert isinstance(network.get_submodule(name).fuser, gl.RowFuser)
            raise RuntimeError("inside")
    assert not hasattr(network, "position_net") and not hasattr(network.get_submodule(name), "fuser")


def test_loader_refuses_other_files(node_env, tiny_models_dir):
    from diffusion.families.sd.demo import DEMO_CHECKPOINT, DEMO_LORA

    target = tiny_models_dir / "gligen" / "not-gligen.safetensors"
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(tiny_models_dir / "loras" / DEMO_LORA, target)
    try:
        with pytest.raises(ValueError, match=r"gligen_name: not-gligen.safetensors is not a GLIGEN text-box model: "
                                             r"this file holds a LoRA"):
            GLIGENLoader().load_gligen("not-gligen.safetensors")
    finally:
        target.unlink()
    from diffusion.files import read_safetensors

    checkpoint = read_safetensors(tiny_models_dir / "checkpoints" / DEMO_CHECKPOINT, "ckpt_name")
    with pytest.raises(ValueError, match="is not a GLIGEN text-box model: this file holds a Stable Diffusion "
                                         r"1.x/2.x checkpoint \(load it with CheckpointLoaderSimple\)"):
        gl.gligen_from_state_dict(checkpoint, DEMO_CHECKPOINT)
    with pytest.raises(ValueError, match="gligen_name: x.pt is not a GLIGEN text-box model"):
        gl.gligen_from_state_dict({"position_net.linears_text.0.weight": torch.zeros(1)}, "x.pt")
    with pytest.raises(ValueError, match="gligen_name: 'missing.safetensors' not found"):
        GLIGENLoader().load_gligen("missing.safetensors")


def test_text_box_apply_builds_comfyui_conditioning(sd1, tiny_gligen):
    _, clip, _ = sd1
    gligen = tiny_gligen[1]
    (conditioning,) = CLIPTextEncode().encode(clip, "a field")
    (once,) = GLIGENTextBoxApply().append(conditioning, clip, gligen, "a cat", 32, 16, 8, 17)
    (twice,) = GLIGENTextBoxApply().append(once, clip, gligen, "a dog", 64, 64, 0, 0)
    kind, model, boxes = twice[0][1]["gligen"]
    assert kind == "position" and model is gligen and len(boxes) == 2
    pooled = clip.encode_prompt("a cat")[0][1]["pooled_output"]
    assert torch.equal(boxes[0][0], pooled) and boxes[0][1:] == (2, 4, 2, 1)  # height, width, y, x // 8
    assert boxes[1][1:] == (8, 8, 0, 0)
    assert twice[0][0] is conditioning[0][0] and "gligen" not in conditioning[0][1]
    assert len(once[0][1]["gligen"][2]) == 1  # the input conditioning is left as it was


def test_text_box_apply_refuses_a_clip_of_another_width(sd1, tiny_gligen):
    import dataclasses

    narrow = dataclasses.replace(tiny_gligen[1])
    object.__setattr__(narrow, "position_net", type("Net", (), {"positive_len": 768})())
    (conditioning,) = CLIPTextEncode().encode(sd1[1], "a field")
    with pytest.raises(ValueError, match="clip: GLIGEN tiny-gligen.safetensors takes 768-wide text embeddings"):
        GLIGENTextBoxApply().append(conditioning, sd1[1], narrow, "a cat", 64, 64, 0, 0)


# ---------------------------------------------------------------- sampling

def _call(model, positive, negative, x, timestep, cfg=2.0):
    """One call of the model's network through its family hooks, every guidance row (negatives first)."""
    guidance = guidance_batch(positive, negative, x.shape[0], cfg, torch.device("cpu"), torch.float32)
    inputs = model.sampling.network_inputs(guidance, x.shape[0], model.device, model.dtype)
    (group,) = guidance.groups
    rows = torch.cat([x] * (guidance.rows // x.shape[0]))
    with torch.no_grad():
        return model.sampling.network_output(model.network, rows, timestep.expand(rows.shape[0]), group.embeddings,
                                             inputs)


def test_grounded_call_matches_diffusers_gated_unet(sd1, tiny_gligen):
    model, clip, _ = sd1
    unet, gligen = tiny_gligen
    (positive,) = CLIPTextEncode().encode(clip, "a field")
    (negative,) = CLIPTextEncode().encode(clip, "blurry")
    (grounded,) = GLIGENTextBoxApply().append(positive, clip, gligen, "a cat", 32, 16, 8, 16)
    (grounded,) = GLIGENTextBoxApply().append(grounded, clip, gligen, "a dog", 24, 40, 40, 0)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    timestep = torch.tensor([500.0])
    output = _call(model, grounded, negative, x, timestep)

    # ComfyUI's boxes on 8x8 latents: (x, y, x + width, y + height) / 8 in latent pixels, 30 objects, the negative
    # grounded with the positive's boxes (apply_empty_x_to_equal_area)
    boxes = torch.zeros(1, 30, 4)
    boxes[0, 0] = torch.tensor([1, 2, 5, 4]) / 8
    boxes[0, 1] = torch.tensor([5, 0, 8, 5]) / 8
    phrases = torch.zeros(1, 30, 64)
    phrases[0, 0] = clip.encode_prompt("a cat")[0][1]["pooled_output"][0]
    phrases[0, 1] = clip.encode_prompt("a dog")[0][1]["pooled_output"][0]
    masks = torch.zeros(1, 30)
    masks[0, :2] = 1
    texts = torch.cat([negative[0][0], positive[0][0]])
    with torch.no_grad():
        expected = unet(torch.cat([x, x]), timestep.expand(2), encoder_hidden_states=texts,
                        cross_attention_kwargs={"gligen": {"boxes": boxes.repeat(2, 1, 1),
                                                           "positive_embeddings": phrases.repeat(2, 1, 1),
                                                           "masks": masks.repeat(2, 1)}}).sample
        plain = model.network(torch.cat([x, x]), timestep.expand(2), encoder_hidden_states=texts).sample
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
    assert (output - plain).abs().max() > 1e-3  # the boxes change the output
    assert not hasattr(model.network, "position_net")  # the cached UNet is plain again
    assert not any(name.endswith("fuser") for name, _ in model.network.named_modules())


def test_without_gligen_the_output_is_the_plain_model(sd1, tiny_gligen):
    model, clip, _ = sd1
    gligen = tiny_gligen[1]
    (positive,) = CLIPTextEncode().encode(clip, "a field")
    (negative,) = CLIPTextEncode().encode(clip, "blurry")
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    timestep = torch.tensor([300.0])
    texts = torch.cat([negative[0][0].expand(2, -1, -1), positive[0][0].expand(2, -1, -1)])
    with torch.no_grad():
        plain = model.network(torch.cat([x, x]), timestep.expand(4), encoder_hidden_states=texts).sample
    assert torch.equal(_call(model, positive, negative, x, timestep), plain)

    # a negative with an area keeps no grounding (ComfyUI fills only negatives without one): its rows are the plain
    # model's exactly, in the same call as the grounded positive rows
    (grounded,) = GLIGENTextBoxApply().append(positive, clip, gligen, "a cat", 32, 32, 0, 0)
    area_negative = [[negative[0][0], {**negative[0][1], "area": (64, 64, 0, 0)}]]
    rows = _call(model, grounded, area_negative, x, timestep)
    assert torch.equal(rows[:2], plain[:2]) and not torch.allclose(rows[2:], plain[2:])


def test_negatives_are_filled_as_comfyui_fills_them():
    first, second = ("position", "g", ["a"]), ("position", "g", ["b"])
    options = [{}, {"area": (8, 8, 0, 0)}, {"gligen": first}, {"gligen": second}]
    # one open negative: each positive's in turn, the last one wins; the area negative is left alone
    assert gl.entry_gligens(options, 2) == [second, None, first, second]
    assert gl.entry_gligens([{}, {}, {"gligen": first}, {"gligen": second}], 2) == [first, second, first, second]
    own = ("position", "g", ["own"])  # a negative with its own boxes: nothing filled
    assert gl.entry_gligens([{"gligen": own}, {}, {"gligen": first}], 2) == [own, None, first]
    assert gl.entry_gligens([{"gligen": first}], 0) == [first]


def test_too_many_boxes_and_unfit_unets_are_errors(sd1, tiny_gligen):
    model, clip, _ = sd1
    gligen = tiny_gligen[1]
    (positive,) = CLIPTextEncode().encode(clip, "a field")
    pooled = positive[0][1]["pooled_output"]
    crowded = [[positive[0][0], {"gligen": ("position", gligen, [(pooled, 1, 1, 0, 0)] * 31)}]]
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match="positive: 31 GLIGEN boxes; GLIGEN takes at most 30"):
        _call(model, crowded, positive, x, torch.tensor([1.0]))
    partial = gl.Gligen("partial.safetensors", gligen.position_net,
                        {name: fuser for name, fuser in gligen.fusers.items() if not name.startswith("middle")})
    with pytest.raises(ValueError, match="GLIGEN partial.safetensors does not fit this model's UNet "
                                         r"\(no fuser for the UNet's middle_block.1.transformer_blocks.0\)"):
        partial.plan(model.network)


def test_workflow_through_the_engine(node_env, tiny_gligen):
    from diffusion.families.sd.demo import DEMO_CHECKPOINT

    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO_CHECKPOINT}},
        "2": {"class_type": "GLIGENLoader", "inputs": {"gligen_name": TINY_GLIGEN}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a meadow"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "5": {"class_type": "GLIGENTextBoxApply", "inputs": {
            "conditioning_to": ["3", 0], "clip": ["1", 1], "gligen_textbox_model": ["2", 0], "text": "a red ball",
            "width": 32, "height": 32, "x": 16, "y": 8}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["5", 0], "negative": ["4", 0], "latent_image": ["6", 0], "seed": 3,
            "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "gligen"}},
    }
    (image,) = run_workflow(node_env, prompt)
    assert image.size == (64, 64)
    plain = {key: {**node, "inputs": dict(node["inputs"])} for key, node in prompt.items() if key != "5"}
    plain["7"]["inputs"]["positive"] = ["3", 0]
    (unboxed,) = run_workflow(node_env, plain)
    assert image.tobytes() != unboxed.tobytes()  # the box reached the sampler

    bad = {key: {**node, "inputs": dict(node["inputs"])} for key, node in prompt.items()}
    bad["5"]["inputs"]["width"] = 4
    bad["2"]["inputs"]["gligen_name"] = "nothing.safetensors"
    errors = validation_errors(bad)
    assert {error["extra_info"]["input_name"] for error in errors["5"] + errors["2"]} == {"width", "gligen_name"}


def test_boxes_on_an_area_sample_on_its_crop(sd1, tiny_gligen):
    """An entry with an area and boxes runs on the area's crop, its boxes relative to the crop (ComfyUI divides
    by the size of the latents the call sees); sampling runs and the boxes change the result."""
    from nodes.conditioning_ops import ConditioningCombine, ConditioningSetArea
    from nodes.latent import EmptyLatentImage
    from nodes.sampling import KSampler

    model, clip, _ = sd1
    (positive,) = CLIPTextEncode().encode(clip, "a field")
    (negative,) = CLIPTextEncode().encode(clip, "blurry")
    (boxed,) = GLIGENTextBoxApply().append(positive, clip, tiny_gligen[1], "a cat", 32, 32, 16, 16)
    (area,) = ConditioningSetArea().append(boxed, 64, 64, 64, 0, 1.0)
    (latent,) = EmptyLatentImage().generate(128, 128, 1)
    results = []
    for first in (positive, boxed):
        (both,) = ConditioningCombine().combine(first, area)
        results.append(KSampler().sample(model, 5, 2, 4.0, "euler", "normal", both, negative, latent)[0]["samples"])
    assert torch.isfinite(results[1]).all() and not torch.equal(results[0], results[1])


def test_boxes_and_a_lora_act_together(sd1, tiny_gligen):
    """The GLIGEN layers join the UNet the LoRA is injected into for the run: both change the result."""
    from diffusion.families.sd.demo import DEMO_LORA
    from nodes.latent import EmptyLatentImage
    from nodes.loaders import LoraLoader
    from nodes.sampling import KSampler

    model, clip, _ = sd1
    (lora_model, _) = LoraLoader().load_lora(model, clip, DEMO_LORA, 1.0, 0.0)
    (positive,) = CLIPTextEncode().encode(clip, "a field")
    (boxed,) = GLIGENTextBoxApply().append(positive, clip, tiny_gligen[1], "a cat", 32, 32, 16, 16)
    (latent,) = EmptyLatentImage().generate(64, 64, 1)
    results = {(with_lora, with_box): KSampler().sample(lora_model if with_lora else model, 5, 1, 1.0, "euler",
                                                        "normal", boxed if with_box else positive, positive,
                                                        latent)[0]["samples"]
               for with_lora in (False, True) for with_box in (False, True)}
    assert len({result.numpy().tobytes() for result in results.values()}) == 4
    assert not any(name.endswith("fuser") or "lora" in name for name, _ in model.network.named_modules())


def test_choices_list_the_gligen_folder(node_env, tiny_gligen):
    specs = input_spec.input_specs(GLIGENLoader)
    assert TINY_GLIGEN in specs["gligen_name"].choices
