"""The ComfyUI module surface node packs import (`nodes`, `folder_paths`, `node_helpers`, `comfy.latent_formats`,
`comfy.cli_args`, `comfy.utils`, `latent_preview`), each name checked against what ComfyUI's does, and a small
node pack importing them that loads through our plugin loader and runs through the engine."""
import hashlib
import inspect
import os
import textwrap

import folder_paths
import latent_preview
import node_helpers
import pytest
import torch
from comfy import latent_formats, utils
from comfy.cli_args import LatentPreviewMethod, args
from safetensors.torch import save_file

import nodes
from app.runtime import build_executor, build_registry, load_custom_nodes, share_web_directories
from app.settings import Settings
from engine.cache import OutputCache
from engine.interrupt import InterruptFlag
from engine.plugin_loader import PluginRecord
from engine.progress import NodeRunContext, bind_node_context
from engine.validation import validate_prompt
from nodes.environment import Folders, NodeEnvironment, use_environment


@pytest.fixture
def environment(tmp_path):
    folders = Folders.under(tmp_path)
    folders.create()
    with use_environment(NodeEnvironment(folders, torch.device("cpu"), torch.float32)) as env:
        yield env


# --- nodes ---------------------------------------------------------------------------------------------------

def test_every_registered_class_is_a_module_attribute():
    for name, node_class in nodes.NODE_CLASS_MAPPINGS.items():
        if name.isidentifier():
            assert getattr(nodes, name) is node_class, name
    from nodes import ControlNetApplyAdvanced, DualCLIPLoader, ImageBatch, ImageScaleBy, UNETLoader  # noqa: F401
    with pytest.raises(AttributeError, match="NoSuchNode"):
        nodes.NoSuchNode  # noqa: B018
    with pytest.raises(ImportError):
        from nodes import NoSuchNode  # noqa: F401


def test_comfyui_constants_and_class_attributes():
    assert nodes.MAX_RESOLUTION == 16384
    assert isinstance(nodes.EXTENSION_WEB_DIRS, dict)
    # ComfyUI's nodes.py values
    assert nodes.ImageScale.upscale_methods == ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
    assert nodes.ImageScale.crop_methods == ["disabled", "center"]
    assert nodes.ImageScaleBy.upscale_methods == ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
    assert nodes.LatentUpscale.upscale_methods == ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
    assert nodes.LatentUpscale.crop_methods == ["disabled", "center"]
    assert nodes.LatentUpscaleBy.upscale_methods == ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
    assert nodes.ImageScale.INPUT_TYPES()["required"]["upscale_method"][0] == nodes.ImageScale.upscale_methods


def test_common_ksampler_signature_is_comfyuis():
    parameters = inspect.signature(nodes.common_ksampler).parameters
    assert list(parameters) == ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                                "latent", "denoise", "disable_noise", "start_step", "last_step",
                                "force_full_denoise"]
    defaults = {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}
    assert defaults == {"denoise": 1.0, "disable_noise": False, "start_step": None, "last_step": None,
                        "force_full_denoise": False}


def test_extension_web_dirs_are_served(tmp_path):
    own, listed = tmp_path / "own_js", tmp_path / "listed_js"
    own.mkdir()
    listed.mkdir()
    with_web = PluginRecord("with_web", tmp_path, "loaded", web_directory=own)
    by_table = PluginRecord("by_table", tmp_path, "loaded")
    failed = PluginRecord("failed_pack", tmp_path, "failed")
    nodes.EXTENSION_WEB_DIRS.update({"by_table": str(listed), "failed_pack": str(listed)})
    try:
        share_web_directories([with_web, by_table, failed])
        assert nodes.EXTENSION_WEB_DIRS["with_web"] == str(own)
        assert by_table.web_directory == listed.resolve()
        assert failed.web_directory is None
    finally:
        for name in ("with_web", "by_table", "failed_pack"):
            nodes.EXTENSION_WEB_DIRS.pop(name, None)


# --- folder_paths --------------------------------------------------------------------------------------------

def test_folder_table_is_persistent_and_mutable(environment, tmp_path):
    models = environment.folders.models_dir
    table = folder_paths.folder_names_and_paths
    assert table is folder_paths.folder_names_and_paths
    assert folder_paths.models_dir == str(models)
    # ComfyUI lists both folders of a kind, and maps the legacy names onto the new ones
    assert table["text_encoders"][0] == [str(models / "text_encoders"), str(models / "clip")]
    assert table["diffusion_models"][0] == [str(models / "unet"), str(models / "diffusion_models")]
    assert folder_paths.get_folder_paths("clip") == folder_paths.get_folder_paths("text_encoders")
    assert folder_paths.get_folder_paths("unet") == folder_paths.get_folder_paths("diffusion_models")
    assert "clip" not in table and "unet" not in table
    assert table["custom_nodes"] == ([str(folder_paths.CUSTOM_NODES_DIR)], set())
    assert table["configs"][1] == {".yaml"}
    # a plugin's writes stay
    table["ipadapter"] = ([str(tmp_path / "ipadapter")], folder_paths.supported_pt_extensions)
    table["loras"][0].append(str(tmp_path / "more_loras"))
    assert folder_paths.get_folder_paths("ipadapter") == [str(tmp_path / "ipadapter")]
    assert folder_paths.get_folder_paths("loras")[-1] == str(tmp_path / "more_loras")
    paths = folder_paths.get_folder_paths("loras")
    paths.clear()  # a copy, as in ComfyUI
    assert folder_paths.get_folder_paths("loras")
    with pytest.raises(KeyError):
        folder_paths.get_folder_paths("no_such_kind")
    assert folder_paths.get_full_path("no_such_kind", "x.safetensors") is None


def test_add_model_folder_path_orders_and_registers_kinds(environment, tmp_path):
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    folder_paths.add_model_folder_path("checkpoints", first)
    folder_paths.add_model_folder_path("checkpoints", second, is_default=True)
    assert folder_paths.get_folder_paths("checkpoints")[0] == second
    assert folder_paths.get_folder_paths("checkpoints")[-1] == first
    folder_paths.add_model_folder_path("checkpoints", first, is_default=True)  # moves to the front
    assert folder_paths.get_folder_paths("checkpoints")[:2] == [first, second]
    folder_paths.add_model_folder_path("clip", first)
    assert folder_paths.get_folder_paths("text_encoders")[-1] == first
    new_kind = tmp_path / "anything"
    new_kind.mkdir()
    (new_kind / "notes.txt").write_text("x")
    folder_paths.add_model_folder_path("my_pack_files", str(new_kind))
    assert folder_paths.folder_names_and_paths["my_pack_files"] == ([str(new_kind)], set())
    assert folder_paths.get_filename_list("my_pack_files") == ["notes.txt"]  # no extension filter
    assert folder_paths.get_full_path("my_pack_files", "notes.txt") == str(new_kind / "notes.txt")


def test_filename_list_cache_follows_the_folders(environment):
    loras = environment.folders.models_dir / "loras"
    (loras / "a.safetensors").write_bytes(b"x")
    assert folder_paths.get_filename_list("loras") == ["a.safetensors"]
    names, folders, _ = folder_paths.filename_list_cache["loras"]
    assert names == ["a.safetensors"] and str(loras) in folders
    (loras / "b.safetensors").write_bytes(b"x")
    os.utime(loras, (1, 1))  # a changed folder time (some file systems tick coarsely)
    assert folder_paths.get_filename_list("loras") == ["a.safetensors", "b.safetensors"]
    folder_paths.filename_list_cache.clear()
    assert folder_paths.get_filename_list("loras") == ["a.safetensors", "b.safetensors"]


# --- node_helpers ----------------------------------------------------------------------------------------------

def test_conditioning_set_values():
    tensor = torch.zeros(1, 2, 3)
    conditioning = [[tensor, {"strength": 1.0, "area": (8, 8, 0, 0)}], [tensor, {}]]
    result = node_helpers.conditioning_set_values(conditioning, {"strength": 0.5, "mask": "m"})
    assert result[0][1] == {"strength": 0.5, "area": (8, 8, 0, 0), "mask": "m"}
    assert result[1][1] == {"strength": 0.5, "mask": "m"}
    assert conditioning[0][1] == {"strength": 1.0, "area": (8, 8, 0, 0)} and result[0][0] is tensor
    appended = node_helpers.conditioning_set_values([[tensor, {"hooks": [1]}], [tensor, {}]], {"hooks": [2]},
                                                    append=True)
    assert [entry[1]["hooks"] for entry in appended] == [[1, 2], [2]]


def test_pillow_hasher_dtypes_and_alpha_fix():
    calls = []

    def flaky(value):
        calls.append(value)
        if len(calls) == 1:
            raise OSError("truncated")
        return value * 2

    assert node_helpers.pillow(flaky, 21) == 42 and calls == [21, 21]
    assert node_helpers.hasher() is hashlib.sha256
    assert node_helpers.string_to_torch_dtype("fp16") is torch.float16
    assert node_helpers.string_to_torch_dtype("bf16") is torch.bfloat16
    assert node_helpers.string_to_torch_dtype("fp32") is torch.float32
    assert node_helpers.string_to_torch_dtype("fp8") is None
    rgb, rgba = torch.full((1, 2, 2, 3), 0.5), torch.full((1, 2, 2, 4), 0.25)
    destination, source = node_helpers.image_alpha_fix(rgb, rgba)
    assert destination is rgb and source.shape[-1] == 3
    destination, source = node_helpers.image_alpha_fix(rgba, rgb)
    assert destination.shape[-1] == 5 and torch.all(destination[..., -1] == 1.0) and source is rgb


# --- comfy.latent_formats, comfy.cli_args ------------------------------------------------------------------------

def test_latent_formats_have_comfyuis_numbers():
    expected = {latent_formats.SD15: (0.18215, 0.0, 4, [0.3512, 0.2297, 0.3227], None),
                latent_formats.SDXL: (0.13025, 0.0, 4, [0.3651, 0.4232, 0.4341], [0.1084, -0.0175, -0.0011]),
                latent_formats.SD3: (1.5305, 0.0609, 16, None, None),
                latent_formats.Flux: (0.3611, 0.1159, 16, None, None)}
    for format_class, (scale, shift, channels, first_row, bias) in expected.items():
        latent_format = format_class()
        assert (latent_format.scale_factor, latent_format.shift_factor) == (scale, shift)
        assert latent_format.latent_channels == channels == len(latent_format.latent_rgb_factors)
        assert latent_format.latent_dimensions == 2
        if first_row is not None:
            assert latent_format.latent_rgb_factors[0] == first_row
        if bias is not None:
            assert latent_format.latent_rgb_factors_bias == bias
    assert isinstance(latent_formats.Flux(), latent_formats.SD3)
    assert latent_formats.SD15(scale_factor=0.5).scale_factor == 0.5
    z = torch.tensor([1.0, -2.0])
    torch.testing.assert_close(latent_formats.Flux().process_in(z), (z - 0.1159) * 0.3611)
    torch.testing.assert_close(latent_formats.SD15().process_out(z), z / 0.18215)
    torch.testing.assert_close(latent_formats.SD3().process_out(latent_formats.SD3().process_in(z)), z)
    wan = latent_formats.Wan21()
    assert wan.latent_channels == 16 and wan.latent_dimensions == 3 and wan.latents_mean.shape == (1, 16, 1, 1, 1)
    assert wan.latents_mean[0, 0].item() == pytest.approx(-0.7571) and wan.latents_std[0, 0].item() == pytest.approx(
        2.8184)
    frames = torch.randn(1, 16, 1, 2, 2)
    torch.testing.assert_close(wan.process_in(frames), (frames - wan.latents_mean) / wan.latents_std)
    torch.testing.assert_close(wan.process_out(wan.process_in(frames[:, :, 0])), frames[:, :, 0])


def test_cli_args_follow_the_environment(environment):
    folders = environment.folders
    assert args.cpu is True and args.force_fp32 is True and args.fp16_unet is False
    assert args.output_directory == str(folders.output_dir) and args.input_directory == str(folders.input_dir)
    assert args.temp_directory == str(folders.temp_dir) and args.user_directory == str(folders.user_dir)
    assert args.base_directory is None and args.default_hashing_function == "sha256"
    assert args.preview_method == LatentPreviewMethod.Latent2RGB and args.preview_size == 512
    assert LatentPreviewMethod("none") is LatentPreviewMethod.NoPreviews
    with pytest.raises(AttributeError):
        args.lowvram_mode_we_do_not_have  # noqa: B018


# --- comfy.utils -----------------------------------------------------------------------------------------------

class NotAWeight:
    """An object a pickle can hold but a weights-only unpickler refuses."""


def test_load_torch_file(tmp_path):
    tensors = {"a.weight": torch.arange(4.0), "b": torch.ones(2, 2)}
    save_file(tensors, tmp_path / "w.safetensors", metadata={"format": "pt", "note": "hi"})
    state = utils.load_torch_file(str(tmp_path / "w.safetensors"))
    assert set(state) == {"a.weight", "b"} and torch.equal(state["a.weight"], tensors["a.weight"])
    state, metadata = utils.load_torch_file(str(tmp_path / "w.safetensors"), return_metadata=True)
    assert metadata == {"format": "pt", "note": "hi"}
    torch.save({"state_dict": tensors, "global_step": 3}, tmp_path / "lightning.ckpt")
    assert set(utils.load_torch_file(str(tmp_path / "lightning.ckpt"))) == {"a.weight", "b"}
    torch.save({"params": tensors}, tmp_path / "wrapped.pth")
    assert set(utils.load_torch_file(str(tmp_path / "wrapped.pth"))) == {"a.weight", "b"}
    state, metadata = utils.load_torch_file(str(tmp_path / "wrapped.pth"), return_metadata=True)
    assert metadata is None
    torch.save({"a": tensors["a.weight"], "code": NotAWeight()}, tmp_path / "unsafe.pt")  # not weights only
    with pytest.raises(ValueError, match="ckpt"):
        utils.load_torch_file(str(tmp_path / "unsafe.pt"), safe_load=False)


def test_save_torch_file_is_atomic_and_stays_in_the_folders(environment, tmp_path):
    target = environment.folders.models_dir / "loras" / "saved.safetensors"
    utils.save_torch_file({"x": torch.ones(3)}, str(target), metadata={"k": "v"})
    state, metadata = utils.load_torch_file(str(target), return_metadata=True)
    assert torch.equal(state["x"], torch.ones(3)) and metadata == {"k": "v"}
    assert [p.name for p in target.parent.iterdir()] == ["saved.safetensors"]  # no temporary left
    with pytest.raises(ValueError, match="outside"):
        utils.save_torch_file({"x": torch.ones(1)}, str(tmp_path / "elsewhere.safetensors"))
    with pytest.raises(ValueError, match="outside"):
        utils.save_torch_file({"x": torch.ones(1)}, str(environment.folders.output_dir / ".." / "x.safetensors"))


def test_state_dict_prefix_replace():
    state = {"model.diffusion_model.a": 1, "model.diffusion_model.b": 2, "first_stage_model.c": 3}
    result = utils.state_dict_prefix_replace(state, {"model.diffusion_model.": ""})
    assert result is state and result == {"a": 1, "b": 2, "first_stage_model.c": 3}
    state = {"cond_stage_model.x": 1, "other": 2}
    filtered = utils.state_dict_prefix_replace(state, {"cond_stage_model.": "te."}, filter_keys=True)
    assert filtered == {"te.x": 1} and state == {"other": 2}  # the moved keys leave the input, as in ComfyUI


def test_tiled_scale_matches_the_whole_image():
    images = torch.rand(2, 3, 20, 28, generator=torch.Generator().manual_seed(0))

    def double(tile):
        return torch.nn.functional.interpolate(tile, scale_factor=2, mode="nearest")

    class Bar:
        count = 0

        def update(self, value):
            self.count += value

    bar = Bar()
    result = utils.tiled_scale(images, double, tile_x=16, tile_y=16, overlap=4, upscale_amount=2, out_channels=3,
                               pbar=bar)
    torch.testing.assert_close(result, double(images))
    steps = utils.get_tiled_scale_steps(28, 20, 16, 16, 4)
    assert steps == 2 * 2 and bar.count == 2 * steps  # ceil((20-4)/12) rows x ceil((28-4)/12) columns
    assert utils.get_tiled_scale_steps(28, 20, 32, 8, 4) == 1 * 4
    with pytest.raises(ValueError, match="tile"):
        utils.tiled_scale(images, double, tile_x=16, tile_y=8)
    with pytest.raises(ValueError, match="upscale_amount"):
        utils.tiled_scale_multidim(images, double, (16, 16), upscale_amount=(2, 3))


# --- latent_preview ------------------------------------------------------------------------------------------

def test_latent2rgb_previewer_values():
    previewer = latent_preview.get_previewer(None, latent_formats.SD15())
    x0 = torch.zeros(1, 4, 2, 2)
    x0[0, 0] = 1.0  # channel 0 only: RGB = factors[0] = (0.3512, 0.2297, 0.3227), then (v + 1) / 2 * 255
    image = previewer.decode_latent_to_preview(x0)
    assert image.size == (2, 2)
    assert image.getpixel((0, 0)) == tuple(round((v + 1) / 2 * 255) for v in (0.3512, 0.2297, 0.3227))
    kind, picture, size = previewer.decode_latent_to_preview_image("JPEG", x0)
    assert (kind, size) == ("JPEG", 512) and picture.size == (2, 2)
    assert latent_preview.get_previewer(None, latent_formats.LatentFormat()) is None
    pixels = latent_preview.preview_to_image(torch.tensor([[[-1.0, 0.0, 1.0]]]))
    assert pixels.getpixel((0, 0)) == (0, 127, 255)


def test_prepare_callback_reports_progress_with_previews():
    class Model:
        latent_format = latent_formats.SDXL().as_family_format()

    reports = []
    context = NodeRunContext("5", "p", InterruptFlag(), lambda *report: reports.append(report))
    x0_holder = {}
    with bind_node_context(context):
        callback = latent_preview.prepare_callback(Model(), 3, x0_holder)
        x0 = torch.zeros(1, 4, 2, 2)
        callback(0, x0, x0, 3)
        callback(2, x0, x0, 3)
    assert [report[1:3] for report in reports] == [(1, 3), (3, 3)]
    assert x0_holder["x0"] is x0 and reports[-1][3].to_image().size == (2, 2)
    with pytest.raises(ValueError, match="latent format"):
        latent_preview.prepare_callback(object(), 3)


# --- a node pack importing these names, loaded and run ----------------------------------------------------------

PACK = '''
import folder_paths
import latent_preview
import node_helpers
import nodes
from comfy import latent_formats
from comfy.cli_args import args
from comfy.utils import ProgressBar, common_upscale, load_torch_file, state_dict_prefix_replace, tiled_scale

folder_paths.add_model_folder_path("surface_pack_models", folder_paths.models_dir)


class SurfaceScale:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "method": (nodes.ImageScale.upscale_methods,),
                             "width": ("INT", {"default": 8, "max": nodes.MAX_RESOLUTION})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, image, method, width):
        scaled = nodes.ImageScale().upscale(image, method, width, width, "disabled")[0]
        scaled, _ = node_helpers.image_alpha_fix(scaled, scaled)
        return (scaled,)


class SurfaceSampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "latent": ("LATENT",), "seed": ("INT", {"default": 0})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, model, positive, negative, latent, seed):
        positive = node_helpers.conditioning_set_values(positive, {"strength": 1.0})
        return nodes.common_ksampler(model, seed, 2, 7.0, "euler", "normal", positive, negative, latent)


NODE_CLASS_MAPPINGS = {"SurfaceScale": SurfaceScale, "SurfaceSampler": SurfaceSampler}
'''


def test_a_pack_importing_the_surface_loads_and_runs(node_env, tmp_path):
    from diffusion.families.sd.demo import DEMO_CHECKPOINT

    plugins = tmp_path / "custom_nodes"
    (plugins / "surface_pack").mkdir(parents=True)
    (plugins / "surface_pack" / "__init__.py").write_text(textwrap.dedent(PACK))
    folders = node_env.folders
    settings = Settings(folders.models_dir, folders.input_dir, folders.output_dir, folders.temp_dir,
                        folders.user_dir, cache_size=10, cpu=True, threads=1, custom_nodes_dirs=(plugins,))
    registry = build_registry()
    (record,) = load_custom_nodes(settings, registry)
    assert record.status == "loaded", record.error
    assert record.nodes == ["SurfaceScale", "SurfaceSampler"]
    assert "surface_pack_models" in folder_paths.folder_names_and_paths

    def sampled(sampler: dict) -> dict:
        return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO_CHECKPOINT}},
                "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
                "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
                "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
                "5": sampler,
                "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
                "7": {"class_type": "SurfaceScale", "inputs": {"image": ["6", 0], "method": "bicubic", "width": 16}},
                "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}}}

    link = {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0]}
    plugin = sampled({"class_type": "SurfaceSampler", "inputs": {**link, "latent": ["4", 0], "seed": 3}})
    builtin = sampled({"class_type": "KSampler", "inputs": {
        **link, "latent_image": ["4", 0], "seed": 3, "steps": 2, "cfg": 7.0, "sampler_name": "euler",
        "scheduler": "normal", "denoise": 1.0}})
    images = []
    for prompt in (plugin, builtin):
        validation = validate_prompt(prompt, registry)
        assert validation.ok and not validation.node_errors, validation.to_response()
        result = build_executor(registry, OutputCache()).execute(validation.prompt, "p1", {}, validation.outputs)
        assert result.success, result.error
        (entry,) = result.outputs["8"]["images"]
        from PIL import Image

        images.append(Image.open(folders.temp_dir / entry["subfolder"] / entry["filename"]))
    assert images[0].size == (16, 16)
    assert images[0].tobytes() == images[1].tobytes()  # common_ksampler is KSampler's sampling
