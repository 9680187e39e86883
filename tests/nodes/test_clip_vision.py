"""Image prompts: CLIPVisionLoader, CLIPVisionEncode, StyleModelLoader and StyleModelApply. Their contracts against
ComfyUI's (nodes.py), ComfyUI's image preparation by hand, tiny CLIP and SigLIP encoders in ComfyUI's clip_vision
file layout against transformers, FLUX Redux tokens by hand, the refusals, and a FLUX Redux workflow through the
engine."""
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import nodes
from diffusion.encoders.clip_vision import CLIP_MEAN, CLIP_STD, ClipVisionOutput, preprocess
from nodes import clip_vision as cv
from tests.nodes.family_workflows import run_workflow

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
CLIP_FILE, SIGLIP_FILE, REDUX_FILE = "tiny-clip-vision.safetensors", "tiny-siglip.safetensors", "tiny-redux.safetensors"
T2I_FILE = "tiny-t2i-style.safetensors"

# node: (category, RETURN_TYPES, the inputs in order: link type, combo choices or (FLOAT, default, min, max, step);
# a loader's choices: the models folder listed)
COMFYUI_CONTRACTS = {
    "CLIPVisionLoader": ("loaders", ("CLIP_VISION",), [("clip_name", "models/clip_vision")]),
    "CLIPVisionEncode": ("conditioning", ("CLIP_VISION_OUTPUT",), [
        ("clip_vision", "CLIP_VISION"), ("image", "IMAGE"), ("crop", ["center", "none"])]),
    "StyleModelLoader": ("loaders", ("STYLE_MODEL",), [("style_model_name", "models/style_models")]),
    "StyleModelApply": ("conditioning/style_model", ("CONDITIONING",), [
        ("conditioning", "CONDITIONING"), ("style_model", "STYLE_MODEL"),
        ("clip_vision_output", "CLIP_VISION_OUTPUT"), ("strength", ("FLOAT", 1.0, 0.0, 10.0, 0.001)),
        ("strength_type", ["multiply", "attn_bias"])]),
}
DISPLAY_NAMES = {"CLIPVisionLoader": "Load CLIP Vision", "CLIPVisionEncode": "CLIP Vision Encode",
                 "StyleModelLoader": "Load Style Model", "StyleModelApply": "Apply Style Model"}


def _save(state, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))


@pytest.fixture(scope="session")
def image_models(tiny_models_dir):
    """A tiny CLIP vision model with projection and a tiny SigLIP (ComfyUI's clip_vision layouts, `vision_model.`
    keys), and a tiny Redux style model from the SigLIP width to the tiny FLUX's T5 width (32)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    shape = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 3, "num_attention_heads": 16,
             "patch_size": 4, "image_size": 16}
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**shape, projection_dim=24, hidden_act="gelu")).eval()
    siglip = SiglipVisionModel(SiglipVisionConfig(**shape, vision_use_head=False)).eval()
    redux = {"redux_up.weight": torch.randn(96, 32) * 0.2, "redux_up.bias": torch.randn(96) * 0.1,
             "redux_down.weight": torch.randn(32, 96) * 0.2, "redux_down.bias": torch.randn(32) * 0.1}
    folder = tiny_models_dir / "clip_vision"
    _save(clip.state_dict(), folder / CLIP_FILE)
    siglip_state = siglip.state_dict()
    _save({key if key.startswith("vision_model.") else f"vision_model.{key}": value
           for key, value in siglip_state.items()}, folder / SIGLIP_FILE)
    _save(redux, tiny_models_dir / "style_models" / REDUX_FILE)
    torch.manual_seed(1)
    adapter = _ReferenceStyleAdapter(width=24, text_width=16, layers=2, queries=8).eval()
    _save(adapter.state_dict(), tiny_models_dir / "style_models" / T2I_FILE)
    return clip, siglip, redux, adapter


class _ReferenceBlock(torch.nn.Module):
    """OpenAI CLIP's residual attention block, sequence first, as the T2I-Adapter's style model is built."""

    def __init__(self, width, heads):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(width, heads)
        self.ln_1, self.ln_2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.mlp = torch.nn.Sequential(OrderedDict([("c_fc", torch.nn.Linear(width, width * 4)),
                                                    ("gelu", _QuickGelu()),
                                                    ("c_proj", torch.nn.Linear(width * 4, width))]))

    def forward(self, x):
        normed = self.ln_1(x)
        x = x + self.attn(normed, normed, normed, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class _QuickGelu(torch.nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class _ReferenceStyleAdapter(torch.nn.Module):
    def __init__(self, width, text_width, layers, queries):
        super().__init__()
        self.transformer_layes = torch.nn.Sequential(*[_ReferenceBlock(width, 8) for _ in range(layers)])
        self.style_embedding = torch.nn.Parameter(torch.randn(1, queries, width) * width ** -0.5)
        self.ln_post, self.ln_pre = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.proj = torch.nn.Parameter(torch.randn(width, text_width) * width ** -0.5)

    def forward(self, x):
        x = torch.cat([x, self.style_embedding.expand(x.shape[0], -1, -1)], dim=1)
        x = self.transformer_layes(self.ln_pre(x).permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, -self.style_embedding.shape[1]:]) @ self.proj


def _contract(node_class):
    inputs = []
    for name, (kind, options) in node_class.INPUT_TYPES()["required"].items():
        if name in ("clip_name", "style_model_name"):
            inputs.append((name, "models/clip_vision" if name == "clip_name" else "models/style_models"))
            assert kind == nodes.environment.current_environment().folders.list_models(inputs[-1][1][7:])
        elif isinstance(kind, list):
            inputs.append((name, kind))
        elif kind == "FLOAT":
            inputs.append((name, (kind, options["default"], options["min"], options["max"], options.get("step"))))
        else:
            inputs.append((name, kind))
    return node_class.CATEGORY, node_class.RETURN_TYPES, inputs


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(node_env, image_models, name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert node_class is cv.NODE_CLASS_MAPPINGS[name]
    assert _contract(node_class) == COMFYUI_CONTRACTS[name]
    assert node_class.DESCRIPTION and all(options.get("tooltip")
                                          for _, options in node_class.INPUT_TYPES()["required"].values())
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == DISPLAY_NAMES[name]
    assert set(cv.NODE_CLASS_MAPPINGS) == set(COMFYUI_CONTRACTS)


def test_images_are_prepared_as_comfyui_does():
    grey = torch.full((1, 16, 16, 3), 0.5)  # already the model's size: only 8-bit rounding and normalisation
    expected = (torch.tensor(128 / 255) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(preprocess(grey, 16, CLIP_MEAN, CLIP_STD, True)[0, :, 3, 5], expected)
    image = torch.rand(2, 20, 32, 4)
    pixels = image[..., :3].movedim(-1, 1)
    # centre: the short side scaled to 16 (20x32 -> 16x26), 5 columns cut from the left
    cropped = torch.nn.functional.interpolate(pixels, size=(16, 26), mode="bicubic", antialias=True)[..., 5:21]
    squeezed = torch.nn.functional.interpolate(pixels, size=(16, 16), mode="bicubic", antialias=True)
    for crop, resized in ((True, cropped), (False, squeezed)):
        normalised = (torch.clip(255 * resized, 0, 255).round() / 255 - torch.tensor(CLIP_MEAN).view(3, 1, 1)) \
            / torch.tensor(CLIP_STD).view(3, 1, 1)
        assert torch.equal(preprocess(image, 16, CLIP_MEAN, CLIP_STD, crop), normalised)


def test_clip_vision_files_encode_as_transformers_models(node_env, image_models):
    clip, siglip, _, _ = image_models
    image = torch.rand(1, 24, 20, 3, generator=torch.Generator().manual_seed(3))
    for name, reference, mean, std in ((CLIP_FILE, clip, CLIP_MEAN, CLIP_STD),
                                       (SIGLIP_FILE, siglip, (0.5,) * 3, (0.5,) * 3)):
        (encoder,) = cv.CLIPVisionLoader().load_clip(name)
        for crop in ("center", "none"):
            (output,) = cv.CLIPVisionEncode().encode(encoder, image, crop)
            with torch.no_grad():
                expected = reference(pixel_values=preprocess(image, 16, mean, std, crop == "center"),
                                     output_hidden_states=True)
            torch.testing.assert_close(output.last_hidden_state, expected.last_hidden_state)
            torch.testing.assert_close(output["penultimate_hidden_states"], expected.hidden_states[-2])
            if reference is clip:
                torch.testing.assert_close(output.image_embeds, expected.image_embeds)
            else:
                assert output.image_embeds is None and output.last_hidden_state.shape == (1, 16, 32)


def test_redux_appends_scaled_image_tokens(node_env, image_models):
    _, _, redux, _ = image_models
    (encoder,) = cv.CLIPVisionLoader().load_clip(SIGLIP_FILE)
    (output,) = cv.CLIPVisionEncode().encode(encoder, torch.rand(1, 16, 16, 3), "center")
    (style,) = cv.StyleModelLoader().load_style_model(REDUX_FILE)
    text = torch.randn(1, 5, 32)
    (conditioning,) = cv.StyleModelApply().apply_stylemodel([[text, {"guidance": 3.5}]], style, output, 0.5,
                                                            "multiply")
    hidden = output.last_hidden_state[0]
    up = torch.nn.functional.silu(hidden @ redux["redux_up.weight"].T + redux["redux_up.bias"])
    tokens = up @ redux["redux_down.weight"].T + redux["redux_down.bias"]
    assert conditioning[0][0].shape == (1, 5 + 16, 32) and conditioning[0][1] == {"guidance": 3.5}
    assert torch.equal(conditioning[0][0][:, :5], text)
    torch.testing.assert_close(conditioning[0][0][0, 5:], 0.5 * tokens, rtol=1e-5, atol=1e-5)
    (unbiased,) = cv.StyleModelApply().apply_stylemodel([[text, {}]], style, output, 1.0, "attn_bias")
    torch.testing.assert_close(unbiased[0][0][0, 5:], tokens, rtol=1e-5, atol=1e-5)


def test_unsupported_inputs_are_named(node_env, image_models, tiny_models_dir):
    (clip_encoder,) = cv.CLIPVisionLoader().load_clip(CLIP_FILE)
    (clip_output,) = cv.CLIPVisionEncode().encode(clip_encoder, torch.rand(1, 16, 16, 3), "center")
    (style,) = cv.StyleModelLoader().load_style_model(REDUX_FILE)
    text = [[torch.zeros(1, 3, 32), {}]]
    with pytest.raises(ValueError, match="strength_type: 'attn_bias'"):
        cv.StyleModelApply().apply_stylemodel(text, style, clip_output, 0.5, "attn_bias")
    with pytest.raises(ValueError, match="conditioning: its embeddings are 8 wide"):
        cv.StyleModelApply().apply_stylemodel([[torch.zeros(1, 3, 8), {}]], style, clip_output, 1.0, "multiply")
    _save({"style_embedding": torch.zeros(1, 8, 16)}, tiny_models_dir / "style_models" / "t2i-style.safetensors")
    with pytest.raises(ValueError, match="style_model_name: t2i-style.safetensors is not a style model"):
        cv.StyleModelLoader().load_style_model("t2i-style.safetensors")
    (adapter,) = cv.StyleModelLoader().load_style_model(T2I_FILE)
    (siglip,) = cv.CLIPVisionLoader().load_clip(SIGLIP_FILE)
    (siglip_output,) = cv.CLIPVisionEncode().encode(siglip, torch.rand(1, 16, 16, 3), "center")
    with pytest.raises(ValueError, match="clip_vision_output: .* takes image tokens 24 wide"):
        cv.StyleModelApply().apply_stylemodel(text, adapter, siglip_output, 1.0, "multiply")
    _save({"something.weight": torch.zeros(2, 2)}, tiny_models_dir / "clip_vision" / "not-clip.safetensors")
    with pytest.raises(ValueError, match="clip_name: not-clip.safetensors is not a CLIP vision model"):
        cv.CLIPVisionLoader().load_clip("not-clip.safetensors")
    for path in (tiny_models_dir / "style_models" / "t2i-style.safetensors",
                 tiny_models_dir / "clip_vision" / "not-clip.safetensors"):
        path.unlink()


def test_a_flux_redux_workflow_validates_and_runs(node_env, image_models, tiny_models_dir):
    from diffusion.families.flux import demo as tiny_flux

    tiny_flux.make_flux_demo_models(tiny_models_dir)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
        node_env.folders.input_dir / "style.png")
    prompt = json.loads((WORKFLOWS / "flux_txt2img.json").read_text())
    prompt.update({
        "11": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": SIGLIP_FILE}},
        "12": {"class_type": "LoadImage", "inputs": {"image": "style.png"}},
        "13": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["11", 0], "image": ["12", 0],
                                                           "crop": "none"}},
        "14": {"class_type": "StyleModelLoader", "inputs": {"style_model_name": REDUX_FILE}},
        "15": {"class_type": "StyleModelApply", "inputs": {
            "conditioning": ["5", 0], "style_model": ["14", 0], "clip_vision_output": ["13", 0], "strength": 0.8,
            "strength_type": "multiply"}},
    })
    prompt["8"]["inputs"]["positive"] = ["15", 0]
    (image,) = run_workflow(node_env, prompt, size=32)
    assert image.size == (32, 32)


def test_t2i_style_adapter_appends_style_tokens(node_env, image_models):
    _, _, _, adapter = image_models
    (style,) = cv.StyleModelLoader().load_style_model(T2I_FILE)
    tokens = torch.randn(2, 17, 24, generator=torch.Generator().manual_seed(5))
    output = ClipVisionOutput(tokens, None, tokens)
    text = torch.randn(1, 7, 16)
    (conditioning,) = cv.StyleModelApply().apply_stylemodel([[text, {}]], style, output, 2.0, "multiply")
    with torch.no_grad():
        expected = adapter(tokens).flatten(0, 1)[None]  # both images' 8 tokens, in one entry as ComfyUI does
    assert conditioning[0][0].shape == (1, 7 + 16, 16)
    torch.testing.assert_close(conditioning[0][0][:, 7:], 2.0 * expected, rtol=1e-5, atol=1e-5)
