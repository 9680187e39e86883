"""Every family implements the written contracts: its MODEL carries its `FamilySampling` hooks and names its
family, its CLIP is a `TextEncoder` of the same family, its VAE a `VaeModel`; and each one is found through the
registry from its files."""
import importlib

import pytest
import torch

from diffusion import loading, registry
from diffusion.contracts import FamilySampling, TextEncoder, VaeModel
from diffusion.families.flux import demo as flux_demo
from diffusion.families.sd import demo as sd_demo
from diffusion.families.sd3 import demo as sd3_demo
from diffusion.families.sdxl import demo as sdxl_demo
from diffusion.families.unclip import demo as unclip_demo
from diffusion.families.unclip.loading import load_decoder


@pytest.fixture(scope="module")
def every_family(tiny_models_dir):
    for family in registry.families():
        family.make_demo_models(tiny_models_dir)
    return tiny_models_dir


# families loaded from their separate files, as ComfyUI's templates load them: (CLIP loader type, the demo
# module's names of its transformer, text encoder(s) and VAE files)
SPLIT_FILES = {
    "lumina2": ("lumina2", "DEMO_LUMINA2_TRANSFORMER", ("DEMO_LUMINA2_TEXT_ENCODER",), "DEMO_LUMINA2_VAE"),
    "zimage": ("lumina2", "DEMO_ZIMAGE_TRANSFORMER", ("DEMO_ZIMAGE_TEXT_ENCODER",), "DEMO_ZIMAGE_VAE"),
    "flux2": ("flux2", "DEMO_FLUX2_TRANSFORMER", ("DEMO_FLUX2_TEXT_ENCODER",), "DEMO_FLUX2_VAE"),
    "qwenimage": ("qwen_image", "DEMO_QWEN_IMAGE_TRANSFORMER", ("DEMO_QWEN_IMAGE_TEXT_ENCODER",),
                  "DEMO_QWEN_IMAGE_VAE"),
    "qwenimage21": ("qwen_image", "DEMO_QWEN_IMAGE21_TRANSFORMER", ("DEMO_QWEN_IMAGE21_TEXT_ENCODER",),
                    "DEMO_QWEN_IMAGE21_VAE"),
    "chroma": ("chroma", "DEMO_CHROMA_TRANSFORMER", ("DEMO_CHROMA_T5",), "DEMO_CHROMA_VAE"),
    "hidream": ("hidream", "DEMO_HIDREAM_TRANSFORMER", ("DEMO_HIDREAM_CLIP_L", "DEMO_HIDREAM_CLIP_G",
                                                         "DEMO_HIDREAM_T5", "DEMO_HIDREAM_LLAMA"), "DEMO_HIDREAM_VAE"),
}


def _loaded(family: str, models_dir, manager):
    checkpoints, folders = models_dir / "checkpoints", models_dir / "diffusers"
    if family == "sd":
        return loading.load_checkpoint(manager, checkpoints / sd_demo.DEMO_CHECKPOINT)
    if family == "sdxl":
        return loading.load_checkpoint(manager, checkpoints / f"{sdxl_demo.DEMO_BASE}.safetensors")
    if family == "sd3":
        return loading.load_checkpoint(manager, checkpoints / sd3_demo.DEMO_CHECKPOINT)
    if family == "flux":
        return loading.load_diffusers(manager, folders / flux_demo.DEMO_FLUX_DIFFUSERS)
    if family in SPLIT_FILES:
        demo = importlib.import_module(f"diffusion.families.{family}.demo")
        clip_type, transformer, encoders, vae = SPLIT_FILES[family]
        paths = {f"clip_name{index}": models_dir / "text_encoders" / getattr(demo, name)
                 for index, name in enumerate(encoders, 1)}
        return (loading.load_diffusion_model(manager, models_dir / "diffusion_models" / getattr(demo, transformer)),
                loading.load_text_encoders(manager, clip_type, paths),
                loading.load_vae(manager, models_dir / "vae" / getattr(demo, vae)))
    model, vae = load_decoder(folders / unclip_demo.DEMO_DECODER, manager.place, "decoder_name")
    return model, None, vae


@pytest.mark.parametrize("family", registry.FAMILY_PACKAGES)
def test_each_familys_values_fulfil_the_contracts(family, every_family, shared_model_manager):
    model, clip, vae = _loaded(family, every_family, shared_model_manager)
    assert model.family == family and isinstance(model.sampling, registry.family(family).sampling)
    assert isinstance(model.sampling, FamilySampling) and model.lora_component in ("unet", "transformer")
    assert isinstance(vae, VaeModel)
    if clip is not None:  # the unCLIP decoder is conditioned on image embeddings, not on a CLIP
        assert isinstance(clip, TextEncoder) and clip.family == family


def test_a_model_without_its_familys_sampling_cannot_be_made():
    from diffusion.components import DiffusionModel

    with pytest.raises(TypeError):
        DiffusionModel(torch.nn.Linear(1, 1), {}, "no family")  # no default family or sampling means "SD1"
