"""The upscaling nodes: their contracts against ComfyUI's (`COMFYUI_CONTRACTS`, read off
comfy_extras/nodes_upscale_model.py, nodes.py ImageScaleBy, nodes_post_processing.py ImageScaleToTotalPixels and
nodes_images.py ImageScaleToMaxDimension); tiny random-weight ESRGAN (Real-ESRGAN's RRDBNet layout in a .pth
wrapped in `params_ema`, and the old `model.N` layout), Real-ESRGAN compact (SRVGGNetCompact, .safetensors) and
SwinIR (.pth in `params`) files loaded through the loader and run against spandrel's own call; ComfyUI's tile
blending, tile counts, halving on running out of memory, progress and interrupts; the resize nodes' sizes and
pixels, hand-computed; and API-format workflows run through the engine."""
import importlib.util
import math
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import nodes
from app.runtime import build_executor
from diffusion import upscale as model_upscale
from diffusion.upscale import UpscaleModel, tile_steps, tiled_scale, upscale_image
from engine.cache import OutputCache
from engine.interrupt import ExecutionInterrupted, InterruptFlag
from engine.progress import NodeRunContext, bind_node_context
from engine.registry import NodeRegistry
from engine.validation import validate_prompt
from nodes import upscale as nu
from tests.nodes.family_workflows import run_workflow

METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]

# node: (category, RETURN_TYPES, RETURN_NAMES or None, the inputs in order: link type, combo choices (None: the
# models folder), or (INT/FLOAT, default, min, max, step))
COMFYUI_CONTRACTS = {
    "UpscaleModelLoader": ("loaders", ("UPSCALE_MODEL",), None, [("model_name", None)]),
    "ImageUpscaleWithModel": ("image/upscaling", ("IMAGE",), None, [
        ("upscale_model", "UPSCALE_MODEL"), ("image", "IMAGE")]),
    "ImageScaleBy": ("image/upscaling", ("IMAGE",), None, [
        ("image", "IMAGE"), ("upscale_method", METHODS), ("scale_by", ("FLOAT", 1.0, 0.01, 8.0, 0.01))]),
    "ImageScaleToTotalPixels": ("image/upscaling", ("IMAGE",), None, [
        ("image", "IMAGE"), ("upscale_method", METHODS), ("megapixels", ("FLOAT", 1.0, 0.01, 16.0, 0.01))]),
    "ImageScaleToMaxDimension": ("image/upscaling", ("IMAGE",), None, [
        ("image", "IMAGE"), ("upscale_method", ["area", "lanczos", "bilinear", "nearest-exact", "bicubic"]),
        ("largest_size", ("INT", 512, 0, nodes.MAX_RESOLUTION, 1))]),
}
DISPLAY_NAMES = {"UpscaleModelLoader": "Load Upscale Model", "ImageUpscaleWithModel": "Upscale Image (using Model)",
                 "ImageScaleBy": "Upscale Image By", "ImageScaleToTotalPixels": "Scale Image to Total Pixels",
                 "ImageScaleToMaxDimension": "ImageScaleToMaxDimension"}



def _spandrel_loads() -> bool:
    try:
        model_upscale.import_spandrel()
    except RuntimeError:
        return False
    return True


needs_spandrel = pytest.mark.skipif(not _spandrel_loads(), reason="spandrel is not installed: pip install --no-deps "
                                                                   "-r requirements-nodeps.txt")
ESRGAN, COMPACT, SWINIR = "tiny-esrgan-x4.pth", "tiny-compact-x4.safetensors", "tiny-swinir-x2.pth"
ESRGAN_OLD = "tiny-esrgan-old-layout-x4.pth"
LORA, CHECKPOINT, NOT_WEIGHTS = "a-lora.safetensors", "tiny-sd1.safetensors", "garbage.pth"


def _conv(state: dict, name: str, out_channels: int, in_channels: int, generator: torch.Generator) -> None:
    state[f"{name}.weight"] = torch.randn(out_channels, in_channels, 3, 3, generator=generator) * 0.1
    state[f"{name}.bias"] = torch.randn(out_channels, generator=generator) * 0.01


def rrdbnet_state(generator: torch.Generator, features: int = 8, growth: int = 32, blocks: int = 1) -> dict:
    """Real-ESRGAN's (BasicSR's) RRDBNet x4 tensors: conv_first, body.N.rdbM.convK, conv_body, two up-convs."""
    state: dict = {}
    _conv(state, "conv_first", features, 3, generator)
    for block in range(blocks):
        for rdb in (1, 2, 3):
            for conv in range(1, 6):
                _conv(state, f"body.{block}.rdb{rdb}.conv{conv}", growth if conv < 5 else features,
                      features + (conv - 1) * growth, generator)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        _conv(state, name, features, features, generator)
    _conv(state, "conv_last", 3, features, generator)
    return state


def compact_state(generator: torch.Generator, features: int = 8, convs: int = 2, scale: int = 4) -> dict:
    """SRVGGNetCompact tensors (realesr-general-x4v3's layout): body.2k conv, body.2k+1 PReLU, a pixel-shuffle conv."""
    state: dict = {}
    _conv(state, "body.0", features, 3, generator)
    state["body.1.weight"] = torch.full((features,), 0.25)
    for index in range(convs):
        _conv(state, f"body.{2 * index + 2}", features, features, generator)
        state[f"body.{2 * index + 3}.weight"] = torch.full((features,), 0.25)
    _conv(state, f"body.{2 * convs + 2}", 3 * scale * scale, features, generator)
    return state


def swinir_state() -> dict:
    """A tiny SwinIR x2 (pixelshuffle upsampler) in the official layout, from spandrel's copy of the network."""
    model_upscale.import_spandrel()
    from spandrel.architectures.SwinIR.__arch.SwinIR import SwinIR

    torch.manual_seed(3)
    network = SwinIR(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, upscale=2,
                     upsampler="pixelshuffle", mlp_ratio=2.0)
    return {key: value.clone() for key, value in network.state_dict().items()}


@pytest.fixture(scope="module")
def upscale_models(tiny_models_dir):
    """The tiny upscale models (and files that are not upscale models) in the models folder's upscale_models/."""
    from safetensors.torch import save_file

    folder = tiny_models_dir / "upscale_models"
    folder.mkdir(exist_ok=True)
    generator = torch.Generator().manual_seed(7)
    torch.save({"params_ema": rrdbnet_state(generator)}, folder / ESRGAN)
    old_layout = spandrel_model(folder / ESRGAN).model.state_dict()  # model.0 ... model.N, as 4x-UltraSharp has
    torch.save(dict(old_layout), folder / ESRGAN_OLD)
    save_file(compact_state(generator), str(folder / COMPACT))
    torch.save({"params": swinir_state()}, folder / SWINIR)
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)},
              str(folder / LORA))
    shutil.copyfile(tiny_models_dir / "checkpoints" / "tiny-sd1.safetensors", folder / CHECKPOINT)
    (folder / NOT_WEIGHTS).write_bytes(b"not a pickle at all")
    return folder


def spandrel_model(path):
    """spandrel's own descriptor of a file, loaded its own way, for comparison."""
    spandrel = model_upscale.import_spandrel()
    return spandrel.ModelLoader().load_from_file(str(path)).eval()


def _contract(node_class: type) -> tuple:
    inputs = []
    for name, (kind, options) in node_class.INPUT_TYPES()["required"].items():
        if isinstance(kind, list):
            inputs.append((name, None if name == "model_name" else kind))
        elif kind in ("INT", "FLOAT"):
            inputs.append((name, (kind, options["default"], options["min"], options["max"], options.get("step"))))
        else:
            inputs.append((name, kind))
    return node_class.CATEGORY, node_class.RETURN_TYPES, getattr(node_class, "RETURN_NAMES", None), inputs


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(node_env, name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert node_class is nu.NODE_CLASS_MAPPINGS[name]
    assert _contract(node_class) == COMFYUI_CONTRACTS[name]
    assert node_class.DESCRIPTION and callable(getattr(node_class(), node_class.FUNCTION))
    assert all(options.get("tooltip") for _, options in node_class.INPUT_TYPES()["required"].values())
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == DISPLAY_NAMES[name]


def test_every_node_is_in_the_table():
    assert set(nu.NODE_CLASS_MAPPINGS) == set(COMFYUI_CONTRACTS)


@needs_spandrel
def test_loader_lists_the_upscale_models_folder(node_env, upscale_models):
    choices = nu.UpscaleModelLoader.INPUT_TYPES()["required"]["model_name"][0]
    assert {ESRGAN, ESRGAN_OLD, COMPACT, SWINIR} <= set(choices)


# -- loading and running the models -------------------------------------------------------------------------------


@needs_spandrel
@pytest.mark.parametrize("name, architecture, scale", [(ESRGAN, "ESRGAN", 4), (ESRGAN_OLD, "ESRGAN", 4),
                                                       (COMPACT, "RealESRGAN Compact", 4), (SWINIR, "SwinIR", 2)])
def test_models_load_and_upscale_as_spandrel_runs_them(node_env, upscale_models, name, architecture, scale):
    (model,) = nu.UpscaleModelLoader().load_model(name)
    assert (model.architecture, model.scale) == (architecture, scale)
    assert nu.UpscaleModelLoader().load_model(name)[0] is model  # cached by the model manager
    assert ("upscale_model", str((upscale_models / name).resolve())) in node_env.models.loaded()
    image = torch.rand(2, 20, 13, 3, generator=torch.Generator().manual_seed(1))
    (upscaled,) = nu.ImageUpscaleWithModel().upscale(model, image)
    assert upscaled.shape == (2, 20 * scale, 13 * scale, 3) and upscaled.dtype == torch.float32
    assert not upscaled.is_inference()  # later nodes may change it in place
    reference = spandrel_model(upscale_models / name)
    with torch.no_grad():
        expected = torch.cat([reference(frame[None].movedim(-1, 1)) for frame in image]).movedim(1, -1)
    torch.testing.assert_close(upscaled, expected, rtol=0, atol=1e-5)
    assert 0 <= upscaled.min() and upscaled.max() <= 1


# Seam tolerance: abs difference of tiled (48-pixel tiles, 16 overlap) vs untiled on an 80x72 image, measured on
# these random-weight models (max / mean): ESRGAN 0.0168 / 0.00037, compact 0.0112 / 0.00026, SwinIR 0.0218 /
# 0.00058; set a little above. (Tiles see less context at their edges; the feathered overlap hides most of it.)
@needs_spandrel
@pytest.mark.parametrize("name", [ESRGAN, COMPACT, SWINIR])
def test_tiled_equals_untiled_within_tolerance(node_env, upscale_models, name):
    (model,) = nu.UpscaleModelLoader().load_model(name)
    image = torch.rand(1, 72, 80, 3, generator=torch.Generator().manual_seed(2))
    whole = upscale_image(model, image, tile=512)

    def run(piece):
        return model.descriptor(piece)

    with torch.inference_mode():
        tiled = tiled_scale(image.movedim(-1, 1), run, model.scale, 3, tile=48, overlap=16).movedim(1, -1)
    assert tile_steps(80, 72, 48, 16) == 4
    assert (tiled - whole).abs().max() < 0.03 and (tiled - whole).abs().mean() < 0.001


@needs_spandrel
def test_files_that_are_not_upscale_models_say_what_they_are(node_env, upscale_models):
    with pytest.raises(ValueError, match=r"model_name: a-lora.safetensors is not an upscale model: .*a LoRA"):
        nu.UpscaleModelLoader().load_model(LORA)
    with pytest.raises(ValueError, match=r"tiny-sd1.safetensors is not an upscale model: this file holds a "
                                         r"Stable Diffusion 1.x/2.x checkpoint \(load it with CheckpointLoaderSimple"):
        nu.UpscaleModelLoader().load_model(CHECKPOINT)
    with pytest.raises(ValueError, match=r"model_name: garbage.pth is not a readable PyTorch weights file"):
        nu.UpscaleModelLoader().load_model(NOT_WEIGHTS)
    with pytest.raises(ValueError, match=r"model_name: 'missing.pth' not found"):
        nu.UpscaleModelLoader().load_model("missing.pth")
    with pytest.raises(ValueError, match=r"points outside"):
        nu.UpscaleModelLoader().load_model("../checkpoints/tiny-sd1.safetensors")


@needs_spandrel
def test_unknown_tensors_are_described(node_env, upscale_models, tmp_path):
    path = tmp_path / "unknown.pth"
    torch.save({"params": {"weird.weight": torch.zeros(3)}}, path)
    with pytest.raises(ValueError, match=r"unknown.pth is not an upscale model of an architecture spandrel knows: "
                                         r"this file holds no model this engine knows"):
        model_upscale.load_upscale_model(node_env.models, path)


def test_pickles_with_code_are_refused(node_env, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"params": {"conv.weight": torch.zeros(1)}, "hook": np.dtype("float32")}, path)
    with pytest.raises(ValueError, match="only tensors are loaded"):
        model_upscale.read_state_dict(path, "model_name")


# -- ComfyUI's tiling ---------------------------------------------------------------------------------------------


def comfyui_tiled_scale(samples, function, tile, overlap, scale):
    """ComfyUI's tiled_scale for [B, C, H, W], written out loop by loop as a reference."""
    batch, channels, height, width = samples.shape
    output = torch.empty(batch, channels, round(height * scale), round(width * scale))
    for b in range(batch):
        s = samples[b:b + 1]
        if height <= tile and width <= tile:
            output[b:b + 1] = function(s)
            continue
        out = torch.zeros(1, channels, round(height * scale), round(width * scale))
        out_div = torch.zeros_like(out)
        ys = range(0, height - overlap, tile - overlap) if height > tile else [0]
        xs = range(0, width - overlap, tile - overlap) if width > tile else [0]
        for y in ys:
            for x in xs:
                y0, x0 = max(0, min(height - overlap, y)), max(0, min(width - overlap, x))
                piece = s[:, :, y0:y0 + min(tile, height - y0), x0:x0 + min(tile, width - x0)]
                result = function(piece)
                mask = torch.ones_like(result)
                feather = round(overlap * scale)
                for dim in (2, 3):
                    if feather >= mask.shape[dim]:
                        continue
                    for t in range(feather):
                        a = (t + 1) / feather
                        mask.narrow(dim, t, 1).mul_(a)
                        mask.narrow(dim, mask.shape[dim] - 1 - t, 1).mul_(a)
                oy, ox = round(y0 * scale), round(x0 * scale)
                out[:, :, oy:oy + result.shape[2], ox:ox + result.shape[3]] += result * mask
                out_div[:, :, oy:oy + result.shape[2], ox:ox + result.shape[3]] += mask
        output[b:b + 1] = out / out_div
    return output


def position_dependent_double(piece):
    """A 2x 'model' whose output depends on where a pixel sits in its tile, so that tiles disagree and the
    blending weights show."""
    doubled = piece.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    rows = torch.linspace(0, 0.3, doubled.shape[2]).view(1, 1, -1, 1)
    columns = torch.linspace(0, 0.2, doubled.shape[3]).view(1, 1, 1, -1)
    return doubled + rows + columns


@pytest.mark.parametrize("height, width, tile, overlap", [(40, 70, 32, 8), (32, 32, 32, 8), (50, 33, 16, 4)])
def test_tiles_blend_as_comfyui_blends_them(height, width, tile, overlap):
    samples = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(4))
    ours = tiled_scale(samples, position_dependent_double, 2, 3, tile=tile, overlap=overlap)
    theirs = comfyui_tiled_scale(samples, position_dependent_double, tile, overlap, 2)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_tile_counts_and_first_tile_are_comfyuis_maths():
    assert tile_steps(512, 512, 512) == 1
    assert tile_steps(1024, 1024, 512) == 9  # ceil((1024 - 32) / 480) = 3 per side
    assert tile_steps(600, 300, 512) == 2
    assert tile_steps(1000, 700, 256) == 5 * 3  # ceil(968 / 224) = 5, ceil(668 / 224) = 3
    four_x_at_512 = 512 * 512 * 3 * 4 * 4 * 384  # ComfyUI's working-memory estimate of a 4x model
    assert model_upscale.first_tile(four_x_at_512, 4) == 512
    assert model_upscale.first_tile(four_x_at_512 - 1, 4) == 256
    assert model_upscale.first_tile(0, 4) == 128


class _Descriptor:
    """A 2x nearest 'model' that runs out of memory on tiles wider than `limit`, recording the tile sides."""

    scale, input_channels, output_channels = 2, 3, 3

    class architecture:
        name = "stand-in"

    def __init__(self, limit):
        self.limit, self.sides = limit, []

    def __call__(self, piece):
        self.sides.append(piece.shape[-1])
        if piece.shape[-1] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (stand-in)")
        return piece.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def _stand_in_model(limit):
    return UpscaleModel(torch.nn.Conv2d(1, 1, 1), _Descriptor(limit), "stand-in")


def test_running_out_of_memory_halves_the_tile_down_to_128():
    image = torch.rand(1, 300, 300, 3, generator=torch.Generator().manual_seed(5))
    model = _stand_in_model(limit=128)
    upscaled = upscale_image(model, image)
    expected = image.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    torch.testing.assert_close(upscaled, expected, rtol=0, atol=1e-6)
    assert model.descriptor.sides[0] == 300 and 256 in model.descriptor.sides  # 512 (one tile), 256, then 128
    assert max(model.descriptor.sides[model.descriptor.sides.index(128):]) == 128
    with pytest.raises(torch.OutOfMemoryError):
        upscale_image(_stand_in_model(limit=100), image)


def test_progress_is_reported_per_tile_and_interrupts_stop_it():
    image = torch.rand(2, 600, 300, 3)
    events = []
    interrupt = InterruptFlag()
    context = NodeRunContext("7", "p1", interrupt, lambda node, value, total, preview: events.append((value, total)))
    with bind_node_context(context):
        nu.ImageUpscaleWithModel().upscale(_stand_in_model(limit=512), image)
    steps = 2 * math.ceil((600 - 32) / 480)
    assert events == [(step, steps) for step in range(1, steps + 1)]
    interrupt.request()
    model = _stand_in_model(limit=512)
    with bind_node_context(context), pytest.raises(ExecutionInterrupted):
        nu.ImageUpscaleWithModel().upscale(model, image)
    assert len(model.descriptor.sides) == 1  # stopped after the first tile


def test_images_with_other_channel_counts_are_refused():
    with pytest.raises(ValueError, match=r"image: expected \[batch, height, width, 3\]"):
        upscale_image(_stand_in_model(limit=512), torch.rand(1, 8, 8, 4))


# -- resizing -----------------------------------------------------------------------------------------------------


def test_scale_by_picks_and_averages_as_comfyui():
    image = torch.arange(4 * 6, dtype=torch.float32).view(1, 4, 6, 1).expand(1, 4, 6, 3) / 24
    (nearest,) = nu.ImageScaleBy().upscale(image, "nearest-exact", 0.5)
    torch.testing.assert_close(nearest, image[:, 1::2, 1::2])  # nearest-exact: source (i + 0.5) * 2 -> 2i + 1
    (area,) = nu.ImageScaleBy().upscale(image, "area", 0.5)
    blocks = (image[:, 0::2, 0::2] + image[:, 0::2, 1::2] + image[:, 1::2, 0::2] + image[:, 1::2, 1::2]) / 4
    torch.testing.assert_close(area, blocks)
    (bigger,) = nu.ImageScaleBy().upscale(torch.rand(2, 10, 7, 3), "bicubic", 1.55)
    assert bigger.shape == (2, 16, 11, 3)  # round(15.5) = 16 (to even), round(10.85) = 11


def test_scale_to_total_pixels():
    image = torch.rand(1, 50, 100, 3)
    (resized,) = nu.ImageScaleToTotalPixels().upscale(image, "bilinear", 0.01)
    # int(0.01 * 1024 * 1024) = 10485 pixels; sqrt(10485 / 5000) = 1.44810 -> 144.81 x 72.40
    assert resized.shape == (1, 72, 145, 3)
    (lanczos,) = nu.ImageScaleToTotalPixels().upscale(torch.rand(1, 64, 64, 3), "lanczos", 0.015625)
    assert lanczos.shape == (1, 128, 128, 3)


@pytest.mark.parametrize("height, width, expected", [(20, 30, (40, 60)), (30, 20, (60, 40)), (25, 25, (60, 60)),
                                                     (7, 1000, (1, 60))])
def test_scale_to_max_dimension(height, width, expected):
    (resized,) = nu.ImageScaleToMaxDimension().upscale(torch.rand(1, height, width, 3), "area", 60)
    assert resized.shape[1:3] == expected


def test_scale_to_max_dimension_needs_a_size():
    with pytest.raises(ValueError, match="largest_size"):
        nu.ImageScaleToMaxDimension().upscale(torch.rand(1, 8, 8, 3), "area", 0)


# -- through the engine -------------------------------------------------------------------------------------------


@needs_spandrel
def test_upscale_workflow_runs_in_the_engine(node_env, upscale_models):
    pixels = (np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(node_env.folders.input_dir / "small.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "small.png"}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": COMPACT}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "ImageScaleBy", "inputs": {"image": ["3", 0], "upscale_method": "lanczos",
                                                       "scale_by": 0.5}},
        "5": {"class_type": "ImageScaleToMaxDimension", "inputs": {"image": ["4", 0], "upscale_method": "area",
                                                                   "largest_size": 40}},
        "6": {"class_type": "ImageScaleToTotalPixels", "inputs": {"image": ["3", 0],
                                                                  "upscale_method": "nearest-exact",
                                                                  "megapixels": 0.01}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "up/max"}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "up/total"}},
    }
    images = run_workflow(node_env, prompt)
    assert sorted(image.size for image in images) == [(40, 30), (118, 89)]  # 128x96 -> 64x48 -> 40x30; 10485 px


@needs_spandrel
def test_a_wrong_file_is_the_loaders_node_error(node_env, upscale_models):
    prompt = {
        "1": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": LORA}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["1", 0], "image": ["2", 0]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    Image.new("RGB", (8, 8)).save(node_env.folders.input_dir / "x.png")
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    validation = validate_prompt(prompt, registry)
    assert validation.ok, validation.to_response()
    result = build_executor(registry, OutputCache()).execute(validation.prompt, "p1", {}, validation.outputs)
    assert not result.success and result.error["node_id"] == "1"
    assert "model_name: a-lora.safetensors is not an upscale model" in result.error["exception_message"]


@needs_spandrel
def test_loaded_models_are_budgeted_and_reload_after_a_free(upscale_models):
    from diffusion.manager import ModelManager

    manager = ModelManager(torch.device("cpu"), torch.bfloat16)  # upscale models run in float32 all the same
    path = upscale_models / ESRGAN
    model = model_upscale.load_upscale_model(manager, path)
    (entry,) = manager.report()["models"]
    assert (entry["kind"], entry["path"]) == ("upscale_model", str(path.resolve()))
    assert entry["size_bytes"] == sum(tensor.numel() * 4 for tensor in model.network.state_dict().values())
    assert model.dtype == torch.float32 and model.device == torch.device("cpu")
    manager.clear()
    again = model_upscale.load_upscale_model(manager, path)
    assert again is not model and manager.loads[("upscale_model", str(path.resolve()))] == 2
    image = torch.rand(1, 9, 11, 3)
    torch.testing.assert_close(upscale_image(again, image), upscale_image(model, image), rtol=0, atol=0)


@needs_spandrel
def test_spandrel_loads_without_torchvision_and_leaves_none_behind():
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here")
    assert "torchvision" not in sys.modules
    from spandrel.architectures import RestoreFormer

    functional = RestoreFormer.tv_normalize
    image = torch.rand(3, 4, 5)
    torch.testing.assert_close(functional(image, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]), image * 2 - 1)
