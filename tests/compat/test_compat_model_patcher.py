"""MODEL answers ComfyUI's ModelPatcher API: clones, model facts and sampler functions that run in our sampler."""
from __future__ import annotations

import pytest
import torch
from comfy.model_patcher import ModelPatcher

from diffusion.families.sd.demo import DEMO_CHECKPOINT
from nodes.conditioning import CLIPTextEncode
from nodes.latent import EmptyLatentImage
from nodes.loaders import CheckpointLoaderSimple
from nodes.sampling import common_ksampler


@pytest.fixture
def sd1(node_env):
    model, clip, _ = CheckpointLoaderSimple().load_checkpoint(DEMO_CHECKPOINT)
    positive = CLIPTextEncode().encode(clip, "a red cat")[0]
    negative = CLIPTextEncode().encode(clip, "blurry")[0]
    return model, positive, negative


def _sample(model, positive, negative, cfg=4.0, steps=3):
    latent = EmptyLatentImage().generate(64, 64, 1)[0]
    return common_ksampler(model, 7, steps, cfg, "euler", "normal", positive, negative, latent)[0]["samples"]


def test_model_facts_are_comfyuis(sd1):
    model, _, _ = sd1
    assert isinstance(model, ModelPatcher)
    sampling = model.model.model_sampling
    assert sampling is not None and model.get_model_object("model_sampling").sigma_max == sampling.sigma_max
    # SD1's scaled-linear schedule: ComfyUI's sigma_min and sigma_max
    assert float(sampling.sigma_min) == pytest.approx(0.0291675, abs=1e-5)
    assert float(sampling.sigma_max) == pytest.approx(14.614642, abs=1e-4)
    assert float(sampling.timestep(sampling.sigma(torch.tensor(500.0)))) == pytest.approx(500.0, abs=1e-3)
    assert model.model.diffusion_model is model.network is model.get_model_object("diffusion_model")
    assert model.model.get_dtype() == model.model_dtype() == torch.float32
    assert model.load_device == torch.device("cpu") and model.offload_device == torch.device("cpu")
    assert model.model_size() == sum(p.numel() * p.element_size() for p in model.network.parameters()) + sum(
        b.numel() * b.element_size() for b in model.network.buffers())
    assert model.model.latent_format.scale_factor == pytest.approx(0.18215)


def test_a_cfg_function_that_is_plain_cfg_changes_nothing_and_the_original_is_untouched(sd1):
    model, positive, negative = sd1
    patched = model.clone()
    calls = []

    def plain_cfg(args):
        calls.append(sorted(args))
        return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"]

    patched.set_model_sampler_cfg_function(plain_cfg)
    assert patched.is_clone(model) and model.post_cfg == () and len(patched.post_cfg) == 1
    torch.testing.assert_close(_sample(patched, positive, negative), _sample(model, positive, negative))
    assert len(calls) == 3 and {"cond", "uncond", "cond_scale", "input", "sigma", "timestep", "model"} <= set(
        calls[0])


def test_a_cfg_function_returning_the_uncond_equals_cfg_zero(sd1):
    model, positive, negative = sd1
    patched = model.clone()
    patched.set_model_sampler_cfg_function(lambda args: args["uncond"])
    torch.testing.assert_close(_sample(patched, positive, negative),
                               _sample(model, positive, negative, cfg=0.0))


def test_post_and_pre_cfg_functions_see_comfyuis_args(sd1):
    model, positive, negative = sd1
    seen = {}

    def post(args):
        seen["post"] = set(args)
        return args["denoised"]

    def pre(args):
        seen["pre"] = set(args)
        cond, uncond = args["conds_out"]
        return [cond, uncond]

    patched = model.clone()
    patched.set_model_sampler_post_cfg_function(post)
    patched.set_model_sampler_pre_cfg_function(pre)
    torch.testing.assert_close(_sample(patched, positive, negative), _sample(model, positive, negative))
    assert {"denoised", "cond_denoised", "uncond_denoised", "sigma", "input", "cond_scale", "model"} <= seen["post"]
    assert {"conds_out", "cond_scale", "sigma", "input", "timestep", "model"} <= seen["pre"]

    doubled = model.clone()
    doubled.set_model_sampler_post_cfg_function(lambda args: args["denoised"] * 0.5)
    assert not torch.allclose(_sample(doubled, positive, negative, steps=1), _sample(model, positive, negative,
                                                                                     steps=1))


def test_unsupported_patcher_names_say_so(sd1):
    model, _, _ = sd1
    with pytest.raises(AttributeError, match="patch_model is not supported by nodeflow"):
        model.patch_model()
    with pytest.raises(AttributeError, match="set_model_double_block_patch is not supported"):
        model.set_model_double_block_patch(lambda *a: a)
    with pytest.raises(AttributeError, match="get_model_object"):
        model.get_model_object("not_a_part")


def test_a_denoise_mask_function_shapes_the_inpainting_mask_each_step(sd1):
    from nodes.inpaint import SetLatentNoiseMask

    model, positive, negative = sd1
    latent = EmptyLatentImage().generate(64, 64, 1)[0]
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0
    (masked,) = SetLatentNoiseMask().set_mask(latent, mask)
    seen = []

    def full_mask(sigma, denoise_mask, extra_options):
        seen.append((float(sigma[0]), len(extra_options["sigmas"]),
                     extra_options["model"].inner_model.model_sampling is not None))
        return torch.ones_like(denoise_mask)  # denoise everywhere: the noise mask no longer keeps anything

    patched = model.clone()
    patched.set_model_denoise_mask_function(full_mask)
    latent_samples = common_ksampler(patched, 7, 3, 4.0, "euler", "normal", positive, negative, masked)[0]
    unmasked = common_ksampler(model, 7, 3, 4.0, "euler", "normal", positive, negative, latent)[0]
    torch.testing.assert_close(latent_samples["samples"], unmasked["samples"])
    assert len(seen) == 3 and all(count == 4 and has_model for _, count, has_model in seen)
    assert model.denoise_mask_function is None
