"""The ComfyUI compatibility modules that plugins import, each checked against its documented behaviour."""
import os

import folder_paths
import pytest
import torch
from comfy import model_management
from comfy.comfy_types import IO, ComfyNodeABC, InputTypeDict
from comfy.utils import common_upscale
from comfy_execution.graph_utils import GraphBuilder

from engine.interrupt import ExecutionInterrupted, InterruptFlag
from engine.progress import NodeRunContext, bind_node_context
from nodes.environment import Folders, NodeEnvironment, use_environment


@pytest.fixture
def environment(tmp_path):
    folders = Folders.under(tmp_path)
    folders.create()
    with use_environment(NodeEnvironment(folders, torch.device("cpu"), torch.float32)) as env:
        yield env


def test_folder_paths_follow_the_environment(environment):
    folders = environment.folders
    assert folder_paths.get_input_directory() == str(folders.input_dir)
    assert folder_paths.output_directory == str(folders.output_dir)
    assert folder_paths.get_temp_directory() == folder_paths.temp_directory == str(folders.temp_dir)
    (folders.models_dir / "loras" / "sub").mkdir(parents=True)
    (folders.models_dir / "loras" / "sub" / "style.safetensors").write_bytes(b"x")
    (folders.models_dir / "loras" / "notes.txt").write_text("x")
    assert folder_paths.get_filename_list("loras") == ["sub/style.safetensors"]
    assert folder_paths.get_full_path("loras", "sub/style.safetensors").endswith("style.safetensors")
    assert folder_paths.get_full_path("loras", "../checkpoints/x") is None
    with pytest.raises(FileNotFoundError):
        folder_paths.get_full_path_or_raise("loras", "missing.safetensors")
    assert "checkpoints" in folder_paths.folder_names_and_paths


def test_extra_model_folders(environment, tmp_path):
    extra = tmp_path / "elsewhere"
    extra.mkdir()
    (extra / "more.safetensors").write_bytes(b"x")
    folder_paths.add_model_folder_path("upscale_models", str(extra))
    assert "more.safetensors" in folder_paths.get_filename_list("upscale_models")


def test_annotated_paths_stay_in_their_folders(environment):
    folders = environment.folders
    assert folder_paths.get_annotated_filepath("a.png") == os.path.realpath(folders.input_dir / "a.png")
    assert folder_paths.get_annotated_filepath("b.png [output]") == os.path.realpath(folders.output_dir / "b.png")
    (folders.temp_dir / "c.png").write_bytes(b"x")
    assert folder_paths.exists_annotated_filepath("c.png [temp]")
    with pytest.raises(ValueError):
        folder_paths.get_annotated_filepath("../../etc/passwd")
    assert not folder_paths.exists_annotated_filepath("../../etc/passwd")


def test_save_image_path_counts_up_and_refuses_escapes(environment):
    output = str(environment.folders.output_dir)
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path("shots/cat", output, 64, 64)
    assert (name, counter, subfolder) == ("cat", 1, "shots")
    open(os.path.join(folder, f"cat_{counter:05}_.png"), "wb").close()
    assert folder_paths.get_save_image_path("shots/cat", output)[2] == 2
    assert folder_paths.get_save_image_path("img_%width%x%height%", output, 8, 16)[1] == "img_8x16"
    with pytest.raises(ValueError):
        folder_paths.get_save_image_path("../../outside", output)


def test_model_management_device_interrupts_and_cache(environment):
    assert model_management.get_torch_device() == torch.device("cpu")
    assert model_management.InterruptProcessingException is ExecutionInterrupted
    flag = InterruptFlag()
    with bind_node_context(NodeRunContext("1", "p", flag, lambda *args: None)):
        assert not model_management.processing_interrupted()
        model_management.throw_exception_if_processing_interrupted()
        model_management.interrupt_processing()
        assert flag.is_set() and model_management.processing_interrupted()
        with pytest.raises(model_management.InterruptProcessingException):
            model_management.throw_exception_if_processing_interrupted()
        model_management.interrupt_processing(False)
        assert not flag.is_set()
    model_management.soft_empty_cache()


def test_common_upscale_modes():
    image = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for method in ("nearest-exact", "bilinear", "area", "bicubic", "lanczos"):
        assert common_upscale(image, 16, 4, method, "disabled").shape == (2, 3, 4, 16)
    assert common_upscale(image, 8, 4, "bilinear", "center").shape == (2, 3, 4, 8)
    with pytest.raises(ValueError):
        common_upscale(image, 4, 4, "magic", "disabled")


def test_comfy_types_and_graph_builder():
    assert IO.IMAGE == "IMAGE" and IO.ANY == "*" and str(IO.NUMBER) == "FLOAT,INT"

    class Node(ComfyNodeABC):
        @classmethod
        def INPUT_TYPES(cls) -> InputTypeDict:
            return {"required": {"image": (IO.IMAGE, {})}}

    assert Node.INPUT_TYPES()["required"]["image"][0] == "IMAGE"
    graph = GraphBuilder("7")
    first = graph.node("Add", a=1, b=2)
    graph.node("Add", id="second", a=first.out(0), b=3)
    assert graph.lookup_node("second").inputs["a"] == ["7.0", 0]
    graph.remove_node("second")
    assert list(graph.finalize()) == ["7.0"]


def test_node_typing_module():
    from comfy.comfy_types import node_typing

    assert node_typing.IO is IO and node_typing.ComfyNodeABC is ComfyNodeABC

    class Mixer(node_typing.CheckLazyMixin):
        pass

    # the mixin asks for every input the executor has not evaluated yet (passed as None)
    assert Mixer().check_lazy_status(a=None, b=1, c=None) == ["a", "c"]
    locator: node_typing.FileLocator = {"filename": "x.png", "subfolder": "", "type": "output"}
    assert set(locator) == set(node_typing.FileLocator.__annotations__)
