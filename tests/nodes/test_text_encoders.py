"""Text encoder nodes: CLIPLoader and DualCLIPLoader for every `type` of a family we run (others refused at
validation), TripleCLIPLoader, the CLIP merges and CLIPSave. Contracts against ComfyUI's (`COMFYUI_CONTRACTS`,
read off nodes.py, comfy_extras/nodes_sd3.py and nodes_model_merging.py); encodings against the same encoders
loaded the existing ways (checkpoints, TripleCLIPLoader) and against what ComfyUI's SD3 text encoder computes with
encoders missing (zeros of 768/1280 for CLIP-L/CLIP-G); merges checked on the weights; CLIPSave round trips; API
workflows through the engine."""
import json
import shutil

import pytest
import torch

import nodes
from app.runtime import build_executor
from diffusion.encoders import text_encoder_files
from diffusion.families.flux import demo as flux_tiny
from diffusion.families.sd import demo as sd_tiny
from diffusion.families.sd3 import demo as sd3_tiny
from diffusion.families.sdxl import demo as sdxl_tiny
from diffusion.families.sdxl.text_encoding import SdxlClip
from diffusion.lazy_module import LazyModule
from engine.cache import OutputCache
from engine.registry import NodeRegistry
from engine.validation import validate_prompt
from nodes.conditioning import CLIPSetLastLayer
from nodes.loaders import CheckpointLoaderSimple, CLIPLoader, DualCLIPLoader, TripleCLIPLoader
from nodes.text_encoders import CLIPMergeAdd, CLIPMergeSimple, CLIPMergeSubtract, CLIPSave
from tests.nodes.conftest import validation_errors

PROMPT = "a (red:1.2) cat on a mat"
L_FILE, G_FILE, T5_FILE = (f"tiny-sd3-{part}.safetensors" for part in ("clip_l", "clip_g", "t5xxl"))
L_WIDTH, G_WIDTH = sd3_tiny.CLIP_L_WIDTH, sd3_tiny.CLIP_G_WIDTH
COMFY_L, COMFY_G = 768, 1280  # ComfyUI's zeros for an SD3 CLIP-L / CLIP-G that is not loaded
G32_FILE = "te-test-clip-g-32-layers.safetensors"
H24_FILE = "te-test-clip-h-24-layers.safetensors"

FILES = "COMBO"  # a list of the files in models/text_encoders
MERGING = "advanced/model_merging"
CLIP_LOADER_TYPES = ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart",
                     "cosmos", "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image",
                     "hunyuan_image", "flux2"]
DUAL_TYPES = ["sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image"]
DEVICE = ["default", "cpu"]
# name: (category, RETURN_TYPES, RETURN_NAMES, required inputs, optional inputs, display name)
COMFYUI_CONTRACTS = {
    "CLIPLoader": ("advanced/loaders", ("CLIP",), None,
                   [("clip_name", FILES), ("type", CLIP_LOADER_TYPES)], [("device", DEVICE)], "Load CLIP"),
    "DualCLIPLoader": ("advanced/loaders", ("CLIP",), None,
                       [("clip_name1", FILES), ("clip_name2", FILES), ("type", DUAL_TYPES)], [("device", DEVICE)],
                       "DualCLIPLoader"),
    "TripleCLIPLoader": ("advanced/loaders", ("CLIP",), None,
                         [("clip_name1", FILES), ("clip_name2", FILES), ("clip_name3", FILES)], [], None),
    "CLIPMergeSimple": (MERGING, ("CLIP",), None, [
        ("clip1", "CLIP"), ("clip2", "CLIP"), ("ratio", ("FLOAT", 1.0, 0.0, 1.0, 0.01))], [], "CLIPMergeSimple"),
    "CLIPMergeSubtract": (MERGING, ("CLIP",), None, [
        ("clip1", "CLIP"), ("clip2", "CLIP"), ("multiplier", ("FLOAT", 1.0, -10.0, 10.0, 0.01))], [],
        "CLIPMergeSubtract"),
    "CLIPMergeAdd": (MERGING, ("CLIP",), None, [("clip1", "CLIP"), ("clip2", "CLIP")], [], "CLIPMergeAdd"),
    "CLIPSave": (MERGING, (), None, [("clip", "CLIP"), ("filename_prefix", ("STRING", "clip/ComfyUI"))], [],
                 "CLIPSave"),
}


def _input(kind, options, name):
    if isinstance(kind, list):
        return FILES if "clip_name" in name else kind
    if kind == "FLOAT":
        return kind, options["default"], options["min"], options["max"], options.get("step")
    if kind == "STRING":
        return kind, options["default"]
    return kind


def _contract(node_class):
    spec = node_class.INPUT_TYPES()
    required = [(name, _input(kind, options, name)) for name, (kind, options) in spec["required"].items()]
    optional = [(name, _input(kind, options, name)) for name, (kind, options) in spec.get("optional", {}).items()]
    return node_class.CATEGORY, node_class.RETURN_TYPES, getattr(node_class, "RETURN_NAMES", None), required, optional


@pytest.fixture(scope="session")
def te_models(tiny_models_dir):
    """SD3 and FLUX text encoder files, the SDXL checkpoints, and tiny CLIP files with the layer counts of
    OpenCLIP-G (32) and OpenCLIP-H (24)."""
    from safetensors.torch import save_file

    sd3_tiny.make_sd3_demo_models(tiny_models_dir)
    flux_tiny.make_flux_demo_models(tiny_models_dir)
    sdxl_tiny.make_sdxl_demo_models(tiny_models_dir)
    for name, layers, seed in ((G32_FILE, 32, 5), (H24_FILE, 24, 6)):
        torch.manual_seed(seed)
        state = {key: tensor.contiguous() for key, tensor in _deep_clip(layers).state_dict().items()
                 if not key.endswith("position_ids")}
        save_file(state, str(tiny_models_dir / "text_encoders" / name))
    return tiny_models_dir


def _deep_clip(layers):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=1000, hidden_size=16, intermediate_size=16, num_hidden_layers=layers, num_attention_heads=1,
        max_position_embeddings=77, projection_dim=8, hidden_act="gelu", bos_token_id=998, eos_token_id=999)).eval()


@pytest.fixture
def triple(node_env, te_models):
    return TripleCLIPLoader().load_clip(L_FILE, G_FILE, T5_FILE)[0]


def _encode(clip, text=PROMPT):
    (hidden, options), = clip.encode_prompt(text)
    return hidden, options["pooled_output"]


def _saved_files(node_env, clip, prefix):
    """CLIPSave's files for `clip`, copied into models/text_encoders under unique names; part -> file name."""
    saved = CLIPSave().save(clip, f"te/{prefix}")["ui"]["text_encoders"]
    names = {}
    for entry in saved:
        source = node_env.folders.output_dir / entry["subfolder"] / entry["filename"]
        name = f"te-test-{node_env.folders.output_dir.parent.name}-{entry['filename']}"
        shutil.copy(source, node_env.folders.model_dir("text_encoders") / name)
        part = entry["filename"].removeprefix(prefix + "_").rsplit("_", 2)[0]
        names[part] = name
    return names


def _run(prompt):
    """Validate and run an API prompt through the engine with the built-in nodes; the outputs' ui entries."""
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    validation = validate_prompt(prompt, registry)
    assert validation.ok and not validation.node_errors, validation.to_response()
    result = build_executor(registry, OutputCache()).execute(validation.prompt, "p1", {}, validation.outputs)
    assert result.success, result.error
    return result.outputs


# ---------------------------------------------------------------- contracts and validation

@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(name, node_env):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    category, returns, names, required, optional, display = COMFYUI_CONTRACTS[name]
    assert _contract(node_class) == (category, returns, names, required, optional)
    assert node_class.DESCRIPTION and callable(getattr(node_class(), node_class.FUNCTION))
    spec = node_class.INPUT_TYPES()
    assert all(options.get("tooltip") for part in ("required", "optional")
               for _, options in spec.get(part, {}).values())
    if display is not None:
        assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == display
    if name == "CLIPSave":
        assert node_class.OUTPUT_NODE and spec["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


@pytest.mark.parametrize("node, inputs, family", [
    ("CLIPLoader", {"clip_name": L_FILE, "type": "wan"}, "Wan"),
    ("CLIPLoader", {"clip_name": L_FILE, "type": "stable_cascade"}, "Stable Cascade"),
    ("DualCLIPLoader", {"clip_name1": L_FILE, "clip_name2": T5_FILE, "type": "hunyuan_image"}, "HunyuanImage"),
    ("DualCLIPLoader", {"clip_name1": L_FILE, "clip_name2": T5_FILE, "type": "hunyuan_video"}, "HunyuanVideo"),
])
def test_types_of_families_we_do_not_run_are_refused_at_validation(node_env, te_models, node, inputs, family):
    errors = validation_errors({"1": {"class_type": node, "inputs": inputs}})["1"]
    assert errors[0]["extra_info"]["input_name"] == "type"
    assert f"for {family} models, which this engine does not run" in errors[0]["details"]


def test_supported_types_and_the_device_input_validate(node_env, te_models):
    prompt = {
        "1": {"class_type": "CLIPLoader", "inputs": {"clip_name": L_FILE, "type": "sd3", "device": "cpu"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": L_FILE, "clip_name2": G_FILE,
                                                         "type": "sdxl", "device": "default"}},
        "3": {"class_type": "CLIPLoader", "inputs": {"clip_name": L_FILE, "type": "stable_diffusion"}},
    }
    assert validation_errors(prompt) == {}


def test_loaders_state_the_family_of_their_clip(node_env, te_models):
    assert CLIPLoader.OUTPUT_FACTS({}, clip_name=L_FILE, type="stable_diffusion") == ({"family": "sd"},)
    assert CLIPLoader.OUTPUT_FACTS({}, clip_name=G32_FILE, type="stable_diffusion") == ({"family": "sdxl"},)
    assert CLIPLoader.OUTPUT_FACTS({}, clip_name=T5_FILE, type="sd3") == ({"family": "sd3"},)
    assert DualCLIPLoader.OUTPUT_FACTS({}, type="sdxl") == ({"family": "sdxl"},)
    assert DualCLIPLoader.OUTPUT_FACTS({}, type="sd3") == ({"family": "sd3"},)


def test_a_file_of_the_wrong_kind_is_a_clear_error(node_env, te_models):
    with pytest.raises(ValueError, match="clip_name: type stable_diffusion takes an SD1 CLIP-L"):
        CLIPLoader().load_clip(T5_FILE, "stable_diffusion")
    with pytest.raises(ValueError, match="SDXL needs one CLIP-L and one CLIP-G"):
        DualCLIPLoader().load_clip(L_FILE, T5_FILE, "sdxl")
    with pytest.raises(ValueError, match="clip_name2: SD3 takes at most one CLIP-L"):
        DualCLIPLoader().load_clip(T5_FILE, T5_FILE, "sd3")


# ---------------------------------------------------------------- SD3 with some encoders (ComfyUI's zeros)

def test_sd3_clip_l_alone(triple):
    hidden, pooled = _encode(CLIPLoader().load_clip(L_FILE, "sd3")[0])
    full_hidden, full_pooled = _encode(triple.without_t5())
    assert torch.equal(hidden, full_hidden[..., :L_WIDTH])
    assert torch.equal(pooled, torch.cat([full_pooled[:, :L_WIDTH], torch.zeros(1, COMFY_G)], dim=-1))


def test_sd3_clip_g_alone_has_zeros_where_clip_l_would_be(node_env, te_models):
    clip = CLIPLoader().load_clip(G32_FILE, "sd3")[0]  # a tiny file is told to be CLIP-G by its 32 layers
    assert clip.clip_l is None and clip.t5 is None
    hidden, pooled = _encode(clip, "a cat")
    reference_hidden, reference_pooled = _g32_reference(te_models, clip.clip_g.tokenizer, "a cat")
    assert hidden.shape == (1, 77, COMFY_L + 16)
    assert torch.equal(hidden[..., :COMFY_L], torch.zeros(1, 77, COMFY_L))
    torch.testing.assert_close(hidden[..., COMFY_L:], reference_hidden, rtol=0, atol=1e-6)
    assert torch.equal(pooled[:, :COMFY_L], torch.zeros(1, COMFY_L))
    torch.testing.assert_close(pooled[:, COMFY_L:], reference_pooled, rtol=0, atol=1e-6)


def test_sd3_t5_alone(triple):
    clip = CLIPLoader().load_clip(T5_FILE, "sd3")[0]
    hidden, pooled = _encode(clip)
    full_hidden, _ = _encode(triple)
    assert torch.equal(hidden, full_hidden[:, 77:])
    assert torch.equal(pooled, torch.zeros(1, COMFY_L + COMFY_G))
    assert CLIPSetLastLayer().set_last_layer(clip, -2)[0] is clip  # no CLIP to read another layer of


@pytest.mark.parametrize("files", [(L_FILE, G_FILE), (G_FILE, L_FILE)])
def test_dual_sd3_clips_in_either_order_equal_the_triple_without_t5(triple, files):
    clip = DualCLIPLoader().load_clip(*files, "sd3")[0]
    assert [torch.equal(a, b) for a, b in zip(_encode(clip), _encode(triple.without_t5()))] == [True, True]
    assert clip.family == "sd3" and clip.offloadable() == []


def test_files_of_older_comfyui_clipsave_load(node_env, triple):
    """A [width, projection] `text_projection` (transposed, as ComfyUI reads it) and a `logit_scale`."""
    from safetensors.torch import load_file, save_file

    folder = node_env.folders.model_dir("text_encoders")
    state = load_file(str(folder / G_FILE))
    state["text_projection"] = state.pop("text_projection.weight").T.contiguous()
    state["logit_scale"] = torch.tensor(4.6)
    save_file(state, str(folder / "te-test-old-clip-g.safetensors"))
    clip = DualCLIPLoader().load_clip(L_FILE, "te-test-old-clip-g.safetensors", "sd3")[0]
    assert [torch.equal(a, b) for a, b in zip(_encode(clip), _encode(triple.without_t5()))] == [True, True]


def test_dual_sd3_clip_l_and_t5(triple):
    hidden, pooled = _encode(DualCLIPLoader().load_clip(T5_FILE, L_FILE, "sd3")[0])
    full_hidden, full_pooled = _encode(triple)
    assert torch.equal(hidden[:, 77:], full_hidden[:, 77:])
    assert torch.equal(hidden[:, :77, :L_WIDTH], full_hidden[:, :77, :L_WIDTH])
    assert torch.equal(hidden[:, :77, L_WIDTH:], torch.zeros_like(hidden[:, :77, L_WIDTH:]))
    assert torch.equal(pooled[:, :L_WIDTH], full_pooled[:, :L_WIDTH])


def test_triple_loader_still_encodes_as_the_checkpoint(node_env, te_models, triple):
    clip = CheckpointLoaderSimple().load_checkpoint(sd3_tiny.DEMO_CHECKPOINT)[1]
    assert [torch.equal(a, b) for a, b in zip(_encode(triple), _encode(clip))] == [True, True]


# ---------------------------------------------------------------- stable_diffusion and sdxl from files

def test_stable_diffusion_clip_l_round_trip_through_clipsave(node_env, sd1):
    clip = sd1[1]
    names = _saved_files(node_env, clip, "sd1")
    assert list(names) == ["clip_l"]
    loaded = CLIPLoader().load_clip(names["clip_l"], "stable_diffusion")[0]
    assert loaded.family == "sd"
    for layer in (-1, -2):
        a = CLIPSetLastLayer().set_last_layer(loaded, layer)[0]
        b = CLIPSetLastLayer().set_last_layer(clip, layer)[0]
        assert [torch.equal(x, y) for x, y in zip(_encode(a), _encode(b))] == [True, True]


def _deep_clip_output(models_dir, name, layers, tokenizer, text):
    """A deep test CLIP file computed by transformers (all hidden states, pooled projection) and the model."""
    from safetensors.torch import load_file

    reference = _deep_clip(layers)
    reference.load_state_dict(load_file(str(models_dir / "text_encoders" / name)), strict=False)
    ids = tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        return reference(ids, output_hidden_states=True), reference


def _g32_reference(models_dir, tokenizer, text):
    """The 32-layer test CLIP as SDXL and SD3 read CLIP-G: penultimate hidden states and pooled projection."""
    output, _ = _deep_clip_output(models_dir, G32_FILE, 32, tokenizer, text)
    return output.hidden_states[-2], output.text_embeds


def test_stable_diffusion_with_a_clip_h_file_reads_the_penultimate_layer_as_sd2(node_env, te_models):
    clip = CLIPLoader().load_clip(H24_FILE, "stable_diffusion")[0]
    assert clip.family == "sd" and clip.layer_count == 23 and list(clip.parts()) == ["clip_h"]
    output, reference = _deep_clip_output(te_models, H24_FILE, 24, clip.tokenizer, "a cat")
    with torch.no_grad():
        expected = reference.text_model.final_layer_norm(output.hidden_states[-2])
    torch.testing.assert_close(_encode(clip, "a cat")[0], expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="clip: SD2's OpenCLIP-H"):
        CLIPSave().save(clip, "clip/sd2")


def test_stable_diffusion_with_a_clip_g_file_is_the_sdxl_refiner_clip(node_env, te_models):
    clip = CLIPLoader().load_clip(G32_FILE, "stable_diffusion")[0]
    assert isinstance(clip, SdxlClip) and clip.refiner and clip.family == "sdxl"
    reference_hidden, reference_pooled = _g32_reference(te_models, clip.clip_g.tokenizer, "a cat")
    hidden, pooled = _encode(clip, "a cat")
    torch.testing.assert_close(hidden, reference_hidden, rtol=0, atol=1e-6)
    torch.testing.assert_close(pooled, reference_pooled, rtol=0, atol=1e-6)


def test_dual_sdxl_round_trip_through_clipsave(node_env, te_models):
    clip = CheckpointLoaderSimple().load_checkpoint(f"{sdxl_tiny.DEMO_BASE}.safetensors")[1]
    names = _saved_files(node_env, clip, "sdxl")
    assert sorted(names) == ["clip_g", "clip_l"]
    for order in ((names["clip_l"], names["clip_g"]), (names["clip_g"], names["clip_l"])):
        loaded = DualCLIPLoader().load_clip(*order, "sdxl")[0]
        assert isinstance(loaded, SdxlClip) and not loaded.refiner
        for text in (PROMPT, "x " * 100):
            assert [torch.equal(a, b) for a, b in zip(_encode(loaded, text), _encode(clip, text))] == [True, True]


# ---------------------------------------------------------------- merges, on the weights

def _weights(clip, part):
    return text_encoder_files.comfy_part_weights(part, clip.parts()[part])


@pytest.fixture
def two_clip_ls(node_env, te_models, sd1):
    """The tiny SD1 CLIP and FLUX's CLIP-L: the same architecture, different weights."""
    flux = DualCLIPLoader().load_clip(flux_tiny.DEMO_FLUX_CLIP_L, flux_tiny.DEMO_FLUX_T5, "flux")[0]
    return sd1[1], flux


@pytest.mark.parametrize("node, arguments, combine", [
    (CLIPMergeSimple, {"ratio": 0.25}, lambda a, b: a * 0.25 + b * 0.75),
    (CLIPMergeSubtract, {"multiplier": 0.5}, lambda a, b: a * 0.5 - b * 0.5),
    (CLIPMergeAdd, {}, lambda a, b: a + b),
])
def test_merges_combine_the_weights_as_comfyui(two_clip_ls, node, arguments, combine):
    clip1, clip2 = two_clip_ls
    before1 = {key: tensor.clone() for key, tensor in _weights(clip1, "clip_l").items()}
    merged = node().merge(clip1=clip1, clip2=clip2, **arguments)[0]
    assert merged.family == "sd" and merged.parts()["clip_l"] is not clip1.text_encoder
    merged_weights, weights2 = _weights(merged, "clip_l"), _weights(clip2, "clip_l")
    for key, tensor in before1.items():
        torch.testing.assert_close(merged_weights[key], combine(tensor, weights2[key]), rtol=0, atol=1e-6)
    assert all(torch.equal(tensor, _weights(clip1, "clip_l")[key]) for key, tensor in before1.items())
    position_ids = [key for key in clip1.text_encoder.state_dict() if key.endswith("position_ids")]
    for key in position_ids:
        assert torch.equal(merged.text_encoder.state_dict()[key], clip1.text_encoder.state_dict()[key])
    hidden, _ = _encode(merged)
    assert hidden.shape == _encode(clip1)[0].shape and torch.isfinite(hidden).all()


def test_merge_simple_at_ratio_one_is_clip1_and_other_shapes_are_left(two_clip_ls, triple):
    clip1, clip2 = two_clip_ls
    assert CLIPMergeSimple().merge(clip1, clip2, 1.0)[0] is clip1
    merged = CLIPMergeSimple().merge(clip1, triple, 0.5)[0]  # SD3's tiny CLIP-L is narrower: nothing matches
    assert [torch.equal(a, b) for a, b in zip(_encode(merged), _encode(clip1))] == [True, True]


def test_merge_keeps_clip1s_layer_and_bakes_its_lora(two_clip_ls):
    from nodes.loaders import lora_clip

    clip1, clip2 = two_clip_ls
    with_lora = CLIPSetLastLayer().set_last_layer(lora_clip(clip1, sd_tiny.DEMO_LORA, 0.8), -2)[0]
    merged = CLIPMergeSimple().merge(with_lora, clip2, 0.5)[0]
    assert merged.loras == () and merged.layer_index == -2
    baked = CLIPMergeSimple().merge(with_lora, with_lora, 0.5)[0]  # w * 0.5 + w * 0.5: the LoRA'd weights
    torch.testing.assert_close(_encode(baked)[0], _encode(with_lora)[0], rtol=0, atol=1e-5)


def test_t5_merge_is_lazy(node_env, te_models):
    flux = DualCLIPLoader().load_clip(flux_tiny.DEMO_FLUX_CLIP_L, flux_tiny.DEMO_FLUX_T5, "flux")[0]
    merged = CLIPMergeAdd().merge(flux, flux)[0]
    assert isinstance(merged.t5_model, LazyModule) and not merged.t5_model.loaded
    _encode(merged)
    doubled, original = _weights(merged, "t5xxl"), _weights(flux, "t5xxl")
    assert all(torch.equal(doubled[key], original[key] * 2) for key in original)
    t5 = merged.t5_model.get()
    assert t5.encoder.embed_tokens.weight.data_ptr() == t5.shared.weight.data_ptr()  # still tied, both merged


# ---------------------------------------------------------------- CLIPSave

def test_clipsave_writes_comfyui_files_with_metadata(node_env, triple):
    from safetensors import safe_open

    saved = CLIPSave().save(triple, "clip/ComfyUI", prompt={"1": {"class_type": "X"}},
                            extra_pnginfo={"workflow": {"nodes": []}})["ui"]["text_encoders"]
    assert [entry["filename"] for entry in saved] == [
        "ComfyUI_clip_l_00001_.safetensors", "ComfyUI_clip_g_00001_.safetensors", "ComfyUI_t5xxl_00001_.safetensors"]
    folder = node_env.folders.output_dir / "clip"
    assert sorted(path.name for path in folder.iterdir()) == sorted(entry["filename"] for entry in saved)
    with safe_open(str(folder / saved[0]["filename"]), framework="pt") as file:
        assert file.metadata() == {"format": "pt", "prompt": json.dumps({"1": {"class_type": "X"}}),
                                   "workflow": json.dumps({"nodes": []})}
        keys = set(file.keys())
    assert "text_model.encoder.layers.0.mlp.fc1.weight" in keys and "text_projection.weight" in keys
    assert not any(key.endswith("position_ids") for key in keys)
    with safe_open(str(folder / saved[2]["filename"]), framework="pt") as file:
        assert "shared.weight" in file.keys() and "encoder.embed_tokens.weight" not in file.keys()
    again = CLIPSave().save(triple, "clip/ComfyUI")["ui"]["text_encoders"]
    assert again[0]["filename"] == "ComfyUI_clip_l_00002_.safetensors"


def test_clipsave_round_trip_of_sd3_files(node_env, triple):
    names = _saved_files(node_env, triple, "sd3")
    loaded = TripleCLIPLoader().load_clip(names["t5xxl"], names["clip_g"], names["clip_l"])[0]
    assert [torch.equal(a, b) for a, b in zip(_encode(loaded), _encode(triple))] == [True, True]


def test_clipsave_refuses_bad_prefixes_and_incomplete_encoders(node_env, te_models):
    sd2 = CheckpointLoaderSimple().load_checkpoint("tiny-sd2.safetensors")[1]
    with pytest.raises(ValueError, match="clip: SD2's OpenCLIP-H"):
        CLIPSave().save(sd2, "clip/sd2")
    flux = DualCLIPLoader().load_clip(flux_tiny.DEMO_FLUX_CLIP_L, flux_tiny.DEMO_FLUX_T5, "flux")[0]
    with pytest.raises(ValueError, match="filename_prefix"):
        CLIPSave().save(flux, "../outside/x")
    assert not any(node_env.folders.output_dir.parent.glob("outside"))


# ---------------------------------------------------------------- API workflows through the engine

def _txt2img(clip_node, seed=3):
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": sd_tiny.DEMO_CHECKPOINT}},
        "2": clip_node,
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": PROMPT}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "blurry"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0], "seed": seed,
            "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "te"}},
    }


def _image(node_env, outputs):
    from PIL import Image

    entry = outputs["8"]["images"][0]
    return Image.open(node_env.folders.output_dir / entry["subfolder"] / entry["filename"]).tobytes()


def test_workflow_clip_loader_gives_the_checkpoints_picture(node_env, sd1):
    names = _saved_files(node_env, sd1[1], "wf")
    from_file = _run(_txt2img({"class_type": "CLIPLoader", "inputs": {
        "clip_name": names["clip_l"], "type": "stable_diffusion", "device": "default"}}))
    from_checkpoint = _run(_txt2img({"class_type": "CLIPSetLastLayer", "inputs": {
        "clip": ["1", 1], "stop_at_clip_layer": -1}}))
    assert _image(node_env, from_file) == _image(node_env, from_checkpoint)


def test_workflow_merges_and_saves_a_clip(node_env, te_models):
    prompt = _txt2img({"class_type": "CLIPMergeAdd", "inputs": {"clip1": ["10", 0], "clip2": ["11", 0]}})
    prompt.update({
        "9": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": flux_tiny.DEMO_FLUX_T5,
                                                         "clip_name2": flux_tiny.DEMO_FLUX_CLIP_L, "type": "flux"}},
        "10": {"class_type": "CLIPMergeSimple", "inputs": {"clip1": ["1", 1], "clip2": ["9", 0], "ratio": 0.5}},
        "11": {"class_type": "CLIPMergeSubtract", "inputs": {"clip1": ["1", 1], "clip2": ["9", 0],
                                                             "multiplier": 0.5}},
        "12": {"class_type": "CLIPSave", "inputs": {"clip": ["2", 0], "filename_prefix": "clip/merged"}},
    })
    outputs = _run(prompt)
    assert outputs["12"]["text_encoders"] == [
        {"filename": "merged_clip_l_00001_.safetensors", "subfolder": "clip", "type": "output"}]
    from safetensors.torch import load_file

    saved = load_file(str(node_env.folders.output_dir / "clip" / "merged_clip_l_00001_.safetensors"))
    sd1_weights = _weights(CheckpointLoaderSimple().load_checkpoint(sd_tiny.DEMO_CHECKPOINT)[1], "clip_l")
    # (0.5 a + 0.5 b) + (0.5 a - 0.5 b) = a
    assert all(torch.allclose(saved[key], tensor, atol=1e-6) for key, tensor in sd1_weights.items())
    assert len(outputs["8"]["images"]) == 1
