"""Every family implements the written contracts: its MODEL carries its `FamilySampling` hooks and names its
family, its CLIP is a `TextEncoder` of the same family, its VAE a `VaeModel`; and each one is found through the
registry from its files."""
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
    if family == "lumina2":
        from diffusion.families.lumina2 import demo as lumina2_demo

        lumina2_demo.make_lumina2_demo_models(models_dir)
        files = models_dir / "diffusion_models", models_dir / "text_encoders", models_dir / "vae"
        return (loading.load_diffusion_model(manager, files[0] / lumina2_demo.DEMO_LUMINA2_TRANSFORMER),
                loading.load_text_encoders(manager, "lumina2",
                                           {"clip_name": files[1] / lumina2_demo.DEMO_LUMINA2_TEXT_ENCODER}),
                loading.load_vae(manager, files[2] / lumina2_demo.DEMO_LUMINA2_VAE))
    if family == "zimage":
        from diffusion.families.zimage import demo as zimage_demo

        zimage_demo.make_zimage_demo_models(models_dir)
        files = models_dir / "diffusion_models", models_dir / "text_encoders", models_dir / "vae"
        return (loading.load_diffusion_model(manager, files[0] / zimage_demo.DEMO_ZIMAGE_TRANSFORMER),
                loading.load_text_encoders(manager, "lumina2",
                                           {"clip_name": files[1] / zimage_demo.DEMO_ZIMAGE_TEXT_ENCODER}),
                loading.load_vae(manager, files[2] / zimage_demo.DEMO_ZIMAGE_VAE))
    if family == "flux2":
        from diffusion.families.flux2 import demo as flux2_demo

        files = models_dir / "diffusion_models", models_dir / "text_encoders", models_dir / "vae"
        return (loading.load_diffusion_model(manager, files[0] / flux2_demo.DEMO_FLUX2_TRANSFORMER),
                loading.load_text_encoders(manager, "flux2",
                                           {"clip_name": files[1] / flux2_demo.DEMO_FLUX2_TEXT_ENCODER}),
                loading.load_vae(manager, files[2] / flux2_demo.DEMO_FLUX2_VAE))
    if family == "qwenimage":
        from diffusion.families.qwenimage import demo as qwen_demo

        files = models_dir / "diffusion_models", models_dir / "text_encoders", models_dir / "vae"
        return (loading.load_diffusion_model(manager, files[0] / qwen_demo.DEMO_QWEN_IMAGE_TRANSFORMER),
                loading.load_text_encoders(manager, "qwen_image",
                                           {"clip_name": files[1] / qwen_demo.DEMO_QWEN_IMAGE_TEXT_ENCODER}),
                loading.load_vae(manager, files[2] / qwen_demo.DEMO_QWEN_IMAGE_VAE))
    if family == "chroma":
        from diffusion.families.chroma import demo as chroma_demo

        files = models_dir / "diffusion_models", models_dir / "text_encoders", models_dir / "vae"
        return (loading.load_diffusion_model(manager, files[0] / chroma_demo.DEMO_CHROMA_TRANSFORMER),
                loading.load_text_encoders(manager, "chroma", {"clip_name": files[1] / chroma_demo.DEMO_CHROMA_T5}),
                loading.load_vae(manager, files[2] / chroma_demo.DEMO_CHROMA_VAE))
    if family == "hidream":
        from diffusion.families.hidream import demo as hidream_demo

        files = models_dir / "diffusion_models", models_dir / "text_encoders", models_dir / "vae"
        encoders = (hidream_demo.DEMO_HIDREAM_CLIP_L, hidream_demo.DEMO_HIDREAM_CLIP_G, hidream_demo.DEMO_HIDREAM_T5,
                    hidream_demo.DEMO_HIDREAM_LLAMA)
        return (loading.load_diffusion_model(manager, files[0] / hidream_demo.DEMO_HIDREAM_TRANSFORMER),
                loading.load_text_encoders(manager, "hidream", {
                    f"clip_name{index}": files[1] / name for index, name in enumerate(encoders, 1)}),
                loading.load_vae(manager, files[2] / hidream_demo.DEMO_HIDREAM_VAE))
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
