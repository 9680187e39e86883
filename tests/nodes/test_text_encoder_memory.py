"""Big text encoders (T5 of SD3 and FLUX): read only when a prompt is first encoded, freed after encoding when the
environment's `text_encoder_offload` policy says so, read again on the next encode with identical results; and the
`--free-text-encoders` flag reaching the node environment."""
import argparse

import pytest
import torch

from diffusion.families.flux import demo as tiny_flux
from diffusion.families.sd3 import demo as sd3_tiny
from diffusion.lazy_module import LazyModule, should_free
from diffusion.manager import ModelManager
from nodes.conditioning import CLIPTextEncode
from nodes.environment import Folders, NodeEnvironment, use_environment
from nodes.flux import CLIPTextEncodeFlux
from nodes.loaders import DiffusersLoader, DualCLIPLoader, TripleCLIPLoader
from nodes.sd3 import CLIPTextEncodeSD3

PROMPT = "a photo of an astronaut riding a horse on mars"


@pytest.fixture(scope="module")
def family_models(tiny_models_dir):
    sd3_tiny.make_sd3_demo_models(tiny_models_dir)
    tiny_flux.make_flux_demo_models(tiny_models_dir)
    return tiny_models_dir


def _environment(models_dir, tmp_path, policy):
    """An environment with its own model manager, so load counts start at zero."""
    folders = Folders(models_dir, tmp_path / "input", tmp_path / "output", tmp_path / "temp", tmp_path / "user")
    folders.create()
    manager = ModelManager(torch.device("cpu"), torch.float32)
    return NodeEnvironment(folders, torch.device("cpu"), torch.float32, manager, text_encoder_offload=policy)


FAMILIES = [(sd3_tiny.DEMO_DIFFUSERS, "t5"), (tiny_flux.DEMO_FLUX_DIFFUSERS, "t5_model")]


@pytest.mark.parametrize("folder,attribute", FAMILIES)
def test_t5_is_read_only_when_a_prompt_is_first_encoded(family_models, tmp_path, folder, attribute):
    with use_environment(_environment(family_models, tmp_path, "never")):
        _, clip, _ = DiffusersLoader().load_checkpoint(folder)
        t5 = getattr(clip, attribute)
        assert isinstance(t5, LazyModule) and not t5.loaded and t5.loads == 0
        _, clip_again, _ = DiffusersLoader().load_checkpoint(folder)
        CLIPTextEncode().encode(clip, PROMPT)
        CLIPTextEncode().encode(clip_again, "another prompt")
        assert getattr(clip_again, attribute) is t5 and t5.loaded and t5.loads == 1


def _encode(clip, text):
    if hasattr(clip, "t5"):
        return CLIPTextEncodeSD3().encode(clip, text, text, text, "none")[0]
    return CLIPTextEncodeFlux().encode(clip, text, text, 3.5)[0]


@pytest.mark.parametrize("folder,attribute", FAMILIES)
def test_always_frees_t5_after_encoding_and_the_next_encode_reloads_it_identically(family_models, tmp_path, folder,
                                                                                   attribute):
    with use_environment(_environment(family_models, tmp_path, "always")):
        _, clip, _ = DiffusersLoader().load_checkpoint(folder)
        t5 = getattr(clip, attribute)
        first = _encode(clip, PROMPT)
        assert not t5.loaded and t5.loads == 1
        second = CLIPTextEncode().encode(clip, PROMPT)[0]
        assert not t5.loaded and t5.loads == 2
    assert torch.equal(first[0][0], second[0][0])
    assert torch.equal(first[0][1]["pooled_output"], second[0][1]["pooled_output"])


def test_dual_clip_loader_reads_t5_lazily_and_rereads_the_file_after_freeing(family_models, tmp_path):
    with use_environment(_environment(family_models, tmp_path, "always")):
        (clip,) = DualCLIPLoader().load_clip(tiny_flux.DEMO_FLUX_T5, tiny_flux.DEMO_FLUX_CLIP_L, "flux")
        (clip_again,) = DualCLIPLoader().load_clip(tiny_flux.DEMO_FLUX_T5, tiny_flux.DEMO_FLUX_CLIP_L, "flux")
        t5 = clip.t5_model
        assert clip_again.t5_model is t5 and not t5.loaded and t5.loads == 0
        first = CLIPTextEncode().encode(clip, PROMPT)[0]
        second = CLIPTextEncode().encode(clip_again, PROMPT)[0]
        assert not t5.loaded and t5.loads == 2
    assert torch.equal(first[0][0], second[0][0])


def test_triple_clip_loader_reads_t5_lazily_and_rereads_the_file_after_freeing(family_models, tmp_path):
    files = [f"tiny-sd3-{part}.safetensors" for part in ("t5xxl", "clip_g", "clip_l")]
    with use_environment(_environment(family_models, tmp_path, "always")):
        (clip,) = TripleCLIPLoader().load_clip(*files)
        assert not clip.t5.loaded and clip.t5.loads == 0
        first = CLIPTextEncode().encode(clip, PROMPT)[0]
        second = CLIPTextEncode().encode(clip, PROMPT)[0]
        assert not clip.t5.loaded and clip.t5.loads == 2
    assert torch.equal(first[0][0], second[0][0])


def test_never_keeps_t5_loaded(family_models, tmp_path):
    with use_environment(_environment(family_models, tmp_path, "never")):
        _, clip, _ = DiffusersLoader().load_checkpoint(sd3_tiny.DEMO_DIFFUSERS)
        CLIPTextEncode().encode(clip, PROMPT)
        CLIPTextEncode().encode(clip, PROMPT)
        assert clip.t5.loaded and clip.t5.loads == 1


def test_when_tight_frees_only_when_less_than_twice_the_encoder_is_available():
    module = LazyModule(lambda: torch.nn.Linear(10, 10), "t5")  # 110 float32 values: 440 bytes
    assert not should_free("when-tight", module)  # not loaded: nothing to free
    module.get()
    assert should_free("when-tight", module, available=lambda device: 879)
    assert not should_free("when-tight", module, available=lambda device: 880)
    assert should_free("always", module) and not should_free("never", module)
    with pytest.raises(ValueError, match="text_encoder_offload"):
        should_free("sometimes", module)


def test_an_unknown_policy_is_refused(tmp_path):
    with pytest.raises(ValueError, match="text_encoder_offload: 'sometimes'"):
        NodeEnvironment(Folders.under(tmp_path), torch.device("cpu"), torch.float32, text_encoder_offload="sometimes")


@pytest.mark.parametrize("flag,policy", [([], "when-tight"), (["--free-text-encoders", "never"], "never"),
                                         (["--free-text-encoders", "always"], "always")])
def test_the_cli_flag_reaches_the_node_environment(tmp_path, flag, policy):
    from app.runtime import build_runtime
    from app.settings import add_common_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    args = parser.parse_args(["--models-dir", str(tmp_path / "models"), "--input-dir", str(tmp_path / "input"),
                              "--output-dir", str(tmp_path / "output"), "--temp-dir", str(tmp_path / "temp"),
                              "--user-dir", str(tmp_path / "user"), "--cpu", "--threads", "1",
                              "--no-demo-models", "--disable-custom-nodes", *flag])
    runtime = build_runtime(settings_from_args(args))
    assert runtime.environment.text_encoder_offload == policy


@pytest.mark.parametrize("policy", ["never", "always"])
def test_the_memory_manager_counts_t5_while_it_is_loaded(family_models, tmp_path, policy):
    environment = _environment(family_models, tmp_path, policy)
    with use_environment(environment):
        DiffusersLoader().load_checkpoint(sd3_tiny.DEMO_DIFFUSERS)
        before = sum(entry["size_bytes"] for entry in environment.models.report()["models"])
        _, clip, _ = DiffusersLoader().load_checkpoint(sd3_tiny.DEMO_DIFFUSERS)
        t5 = clip.t5
        t5.get()
        t5_bytes = t5.size_bytes()
        assert t5_bytes > 0
        during = sum(entry["size_bytes"] for entry in environment.models.report()["models"])
        assert during == before + t5_bytes
        _encode(clip, PROMPT)
        after = sum(entry["size_bytes"] for entry in environment.models.report()["models"])
        assert after == (before if policy == "always" else during)
