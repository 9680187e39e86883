"""`comfy.samplers` and `comfy.sample` over our sampling core: the same names, sigmas, noise and latents as our
nodes give."""
from __future__ import annotations

import pytest
import torch
from comfy import sample as comfy_sample
from comfy import samplers as comfy_samplers

from diffusion.sampling import samplers as our_samplers
from nodes.custom_sampling import BasicScheduler, KSamplerSelect, SamplerCustom
from nodes.latent import EmptyLatentImage
from nodes.sampling import KSampler, KSamplerAdvanced


def test_the_name_lists_are_what_our_ksampler_takes():
    spec = KSampler.INPUT_TYPES()["required"]
    assert comfy_samplers.KSampler.SAMPLERS == list(spec["sampler_name"][0]) == comfy_samplers.SAMPLER_NAMES
    assert comfy_samplers.KSampler.SCHEDULERS == list(spec["scheduler"][0]) == comfy_samplers.SCHEDULER_NAMES
    # ComfyUI's own lists come first, in its order
    assert comfy_samplers.SAMPLER_NAMES[:4] == ["euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp"]
    assert comfy_samplers.SCHEDULER_NAMES[:3] == ["simple", "sgm_uniform", "karras"]
    assert "ddim" not in comfy_samplers.KSAMPLER_NAMES and "dpmpp_2m" in comfy_samplers.KSAMPLER_NAMES
    assert comfy_samplers.sampler_object("euler") == KSamplerSelect().get_sampler("euler")[0]
    with pytest.raises(ValueError, match="unknown sampler 'nope'"):
        comfy_samplers.sampler_object("nope")
    assert set(comfy_samplers.KSAMPLER_NAMES) < set(our_samplers.SAMPLER_NAMES)


@pytest.mark.parametrize("scheduler", ["normal", "karras", "simple", "beta"])
def test_calculate_sigmas_equals_basic_scheduler(sd1, scheduler):
    model = sd1[0]
    (expected,) = BasicScheduler().get_sigmas(model, scheduler, 5, 1.0)
    sigmas = comfy_samplers.calculate_sigmas(model.model.model_sampling, scheduler, 5)
    torch.testing.assert_close(sigmas, expected)
    assert len(sigmas) == 6 and float(sigmas[-1]) == 0.0


def test_prepare_noise_is_comfyuis_seeded_noise():
    latent = torch.zeros(3, 4, 8, 8)
    noise = comfy_sample.prepare_noise(latent, 42)
    torch.testing.assert_close(noise, torch.randn(latent.shape, generator=torch.Generator().manual_seed(42)))
    # batch indices pick draws of the whole batch: rows 2 and 0
    picked = comfy_sample.prepare_noise(torch.zeros(2, 4, 8, 8), 42, [2, 0])
    torch.testing.assert_close(picked, noise[[2, 0]])


def test_sample_from_prepared_noise_equals_the_ksampler_node(sd1):
    model, positive, negative = sd1
    latent = EmptyLatentImage().generate(64, 64, 1)[0]
    (expected,) = KSampler().sample(model, 11, 3, 5.0, "euler_ancestral", "karras", positive, negative, latent)
    noise = comfy_sample.prepare_noise(latent["samples"], 11)
    steps_seen = []
    samples = comfy_sample.sample(model, noise, 3, 5.0, "euler_ancestral", "karras", positive, negative,
                                  latent["samples"], seed=11,
                                  callback=lambda step, x0, x, total: steps_seen.append((step, total)))
    torch.testing.assert_close(samples, expected["samples"])
    assert steps_seen == [(0, 3), (1, 3), (2, 3)]


def test_sample_with_steps_window_equals_ksampler_advanced(sd1):
    model, positive, negative = sd1
    latent = EmptyLatentImage().generate(64, 64, 1)[0]
    (expected,) = KSamplerAdvanced().sample(model, "enable", 3, 4, 6.0, "euler", "normal", positive, negative,
                                            latent, 0, 2, "disable")  # no leftover noise: full denoise
    noise = comfy_sample.prepare_noise(latent["samples"], 3)
    samples = comfy_sample.sample(model, noise, 4, 6.0, "euler", "normal", positive, negative, latent["samples"],
                                  start_step=0, last_step=2, force_full_denoise=True, seed=3)
    torch.testing.assert_close(samples, expected["samples"])


def test_sample_custom_equals_sampler_custom(sd1):
    model, positive, negative = sd1
    latent = EmptyLatentImage().generate(64, 64, 1)[0]
    (sigmas,) = BasicScheduler().get_sigmas(model, "normal", 3, 1.0)
    sampler = comfy_samplers.ksampler("dpmpp_2m")
    expected = SamplerCustom().sample(model, True, 5, 4.0, positive, negative, sampler, sigmas, latent)[0]
    noise = comfy_sample.prepare_noise(latent["samples"], 5)
    samples = comfy_sample.sample_custom(model, noise, 4.0, sampler, sigmas, positive, negative, latent["samples"],
                                         seed=5)
    torch.testing.assert_close(samples, expected["samples"])


def test_bad_choices_name_the_problem(sd1):
    model = sd1[0]
    with pytest.raises(ValueError, match="scheduler"):
        comfy_samplers.KSampler(model, 3, None, "euler", "no-such-scheduler")
    with pytest.raises(ValueError, match="noise of shape"):
        comfy_sample.sample(model, torch.zeros(1, 4, 4, 4), 2, 1.0, "euler", "normal", [], [],
                            torch.zeros(1, 4, 8, 8))
