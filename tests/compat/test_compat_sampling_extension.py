"""The sampling extension points packs build on, run by our core: `comfy.samplers.CFGGuider` (used and
subclassed), `sampling_function`, `calc_cond_batch`, `cfg_function`, `KSAMPLER` with a pack's own sampler
function, `comfy.k_diffusion.sampling`'s `sample_*` functions and `comfy.sampler_helpers`."""
from __future__ import annotations

import math

import pytest
import torch
from comfy import sample as comfy_sample
from comfy import sampler_helpers
from comfy import samplers as comfy_samplers
from comfy.k_diffusion import sampling as k_sampling

from nodes.custom_sampling import (
    BasicScheduler,
    CFGGuider,
    KSamplerSelect,
    RandomNoise,
    SamplerCustom,
    SamplerCustomAdvanced,
)
from nodes.latent import EmptyLatentImage


@pytest.fixture
def setting(sd1):
    model, positive, negative = sd1
    latent = EmptyLatentImage().generate(64, 64, 1)[0]
    (sigmas,) = BasicScheduler().get_sigmas(model, "karras", 4, 1.0)
    return model, positive, negative, latent, sigmas


def _reference(setting, cfg: float, sampler_name: str = "euler") -> torch.Tensor:
    """Our CFGGuider node's result with seed 9: what every pack-side route below must give."""
    model, positive, negative, latent, sigmas = setting
    (guider,) = CFGGuider().get_guider(model, positive, negative, cfg)
    (sampler,) = KSamplerSelect().get_sampler(sampler_name)
    output, _ = SamplerCustomAdvanced().sample(RandomNoise().get_noise(9)[0], guider, sampler, sigmas, latent)
    return output["samples"]


def _advanced(setting, guider, sampler) -> torch.Tensor:
    latent, sigmas = setting[3], setting[4]
    output, _ = SamplerCustomAdvanced().sample(RandomNoise().get_noise(9)[0], guider, sampler, sigmas, latent)
    return output["samples"]


def test_a_pack_cfg_guider_samples_as_our_guider(setting):
    model, positive, negative, latent, sigmas = setting
    guider = comfy_samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(6.0)
    (sampler,) = KSamplerSelect().get_sampler("euler")
    expected = _reference(setting, 6.0)
    torch.testing.assert_close(_advanced(setting, guider, sampler), expected)
    # and through its own `sample`, from ComfyUI's prepared noise
    noise = comfy_sample.prepare_noise(latent["samples"], 9)
    torch.testing.assert_close(guider.sample(noise, latent["samples"], sampler, sigmas, seed=9), expected)
    assert guider.sample(noise, latent["samples"], sampler, sigmas[:0]) is latent["samples"]


class ScheduledCfgGuider(comfy_samplers.CFGGuider):
    """KJNodes' Guider_ScheduledCFG in its manner: cfg inside a range of steps, 1 (no negative) outside."""

    def set_cfg(self, cfg, start_percent=0.0, end_percent=1.0):
        self.cfg, self.start_percent, self.end_percent = cfg, start_percent, end_percent
        self.seen = []

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        steps = model_options["transformer_options"]["sample_sigmas"]
        index = int(torch.isclose(steps, timestep.reshape(-1)[0].to(steps)).nonzero()[0])
        percent = index / (len(steps) - 1)
        self.seen.append((index, seed))
        if self.start_percent <= percent <= self.end_percent:
            cfg, uncond = self.cfg, self.conds.get("negative")
        else:
            cfg, uncond = 1.0, None
        return comfy_samplers.sampling_function(self.inner_model, x, timestep, uncond, self.conds.get("positive"),
                                                cfg, model_options=model_options, seed=seed)


def test_a_subclass_predict_noise_is_every_steps_denoiser(setting):
    model, positive, negative, latent, sigmas = setting
    (sampler,) = KSamplerSelect().get_sampler("euler")
    whole = ScheduledCfgGuider(model)
    whole.set_conds(positive, negative)
    whole.set_cfg(6.0, 0.0, 1.0)
    torch.testing.assert_close(_advanced(setting, whole, sampler), _reference(setting, 6.0))
    assert whole.seen == [(0, 9), (1, 9), (2, 9), (3, 9)]  # euler: one call per step, at each step's sigma
    never = ScheduledCfgGuider(model)
    never.set_conds(positive, negative)
    never.set_cfg(6.0, 2.0, 3.0)
    torch.testing.assert_close(_advanced(setting, never, sampler), _reference(setting, 1.0))
    # cfg 6 for the first half only: neither of the two
    half = ScheduledCfgGuider(model)
    half.set_conds(positive, negative)
    half.set_cfg(6.0, 0.0, 0.5)
    partly = _advanced(setting, half, sampler)
    assert not torch.allclose(partly, _reference(setting, 6.0)) and not torch.allclose(partly, _reference(setting, 1.0))


class BatchedGuider(comfy_samplers.CFGGuider):
    """A guider computing both estimates with calc_cond_batch and guiding with cfg_function, as ComfyUI's own
    Guider_PerpNeg and packs' guiders do."""

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        cond, uncond = comfy_samplers.calc_cond_batch(
            self.inner_model, [self.conds["positive"], self.conds["negative"]], x, timestep, model_options)
        return comfy_samplers.cfg_function(self.inner_model, cond, uncond, self.cfg, x, timestep, model_options,
                                           self.conds["positive"], self.conds["negative"])


def test_calc_cond_batch_and_cfg_function_give_sampling_functions_result(setting):
    model, positive, negative = setting[:3]
    guider = BatchedGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(4.5)
    (sampler,) = KSamplerSelect().get_sampler("dpmpp_2m")
    torch.testing.assert_close(_advanced(setting, guider, sampler), _reference(setting, 4.5, "dpmpp_2m"))


def test_the_extension_functions_need_a_running_model(setting):
    model, positive, negative = setting[:3]
    x, sigma = torch.zeros(1, 4, 8, 8), torch.ones(1)
    with pytest.raises(TypeError, match="sampling_function: `model` must be the guider's `inner_model`"):
        comfy_samplers.sampling_function(model.model, x, sigma, negative, positive, 5.0)
    with pytest.raises(TypeError, match="calc_cond_batch"):
        comfy_samplers.calc_cond_batch(model, [positive], x, sigma, {})


def _own_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, scale=1.0):
    """A pack's own k-diffusion sampler function: Euler steps, the step optionally scaled."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = x + k_sampling.to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i]) * scale
    return x


def test_ksampler_runs_a_packs_sampler_function(setting):
    model, positive, negative, latent, sigmas = setting
    (guider,) = CFGGuider().get_guider(model, positive, negative, 6.0)
    seen = {}

    def recording(model_k, x, sigmas_, extra_args=None, callback=None, disable=None, **options):
        seen.update(options=options, seed=extra_args["seed"], sample_sigmas=extra_args["model_options"][
            "transformer_options"]["sample_sigmas"], model_sampling=model_k.inner_model.inner_model.model_sampling)
        return _own_euler(model_k, x, sigmas_, extra_args, callback, disable, **options)

    steps = []
    output = comfy_samplers.run(guider, comfy_samplers.KSAMPLER(recording, {"scale": 1.0}), sigmas,
                                comfy_sample.prepare_noise(latent["samples"], 9), latent["samples"], None,
                                lambda step, x0, x, total: steps.append((step, total)), 9)
    torch.testing.assert_close(output, _reference(setting, 6.0))
    assert steps == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert seen["options"] == {"scale": 1.0} and seen["seed"] == 9
    torch.testing.assert_close(seen["model_sampling"].sigmas, model.model_sampling.sigmas)
    torch.testing.assert_close(seen["sample_sigmas"], sigmas)
    half = _advanced(setting, guider, comfy_samplers.KSAMPLER(_own_euler, {"scale": 0.5}))
    assert not torch.allclose(half, _reference(setting, 6.0))
    with pytest.raises(ValueError, match="inpaint_options"):
        comfy_samplers.KSAMPLER(_own_euler, {}, {"random": True})


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m_cfg_pp", "dpm_fast", "lms"])
def test_ksampler_by_name_equals_the_sampler_node(setting, name):
    model, positive, negative = setting[:3]
    (guider,) = CFGGuider().get_guider(model, positive, negative, 3.0)
    sampler = comfy_samplers.ksampler(name)
    assert callable(sampler.sampler_function)
    torch.testing.assert_close(_advanced(setting, guider, sampler), _reference(setting, 3.0, name))


def test_a_pack_wrapping_a_k_diffusion_sampler(setting):
    """A pack's sampler function calling comfy.k_diffusion.sampling's with its own options and its own model
    wrapper (the schedule read through ComfyUI's inner_model.inner_model)."""
    model, positive, negative = setting[:3]
    (guider,) = CFGGuider().get_guider(model, positive, negative, 6.0)
    calls = []

    def wrapped(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        def counting(x_, sigma, **kwargs):
            calls.append(float(sigma[0]))
            return model_k(x_, sigma, **kwargs)

        counting.inner_model = model_k.inner_model
        return k_sampling.sample_euler_ancestral(counting, x, sigmas, extra_args=extra_args, callback=callback,
                                                 disable=disable, eta=1.0, s_noise=1.0, noise_sampler=None)

    output = _advanced(setting, guider, comfy_samplers.KSAMPLER(wrapped))
    torch.testing.assert_close(output, _reference(setting, 6.0, "euler_ancestral"))
    assert calls == pytest.approx([float(sigma) for sigma in setting[4][:-1]])


def test_k_diffusion_functions_name_what_they_cannot_do(setting):
    x, sigmas = torch.zeros(1, 4, 8, 8), torch.tensor([1.0, 0.0])

    def plain(x_, sigma, **kwargs):
        return x_ * 0

    # ComfyUI's no-op options are accepted; plain models without a schedule work where none is read
    torch.testing.assert_close(k_sampling.sample_euler(plain, x, sigmas, s_churn=0.0, s_tmax=math.inf), x)
    with pytest.raises(ValueError, match="sample_euler: s_churn=0.5 is not supported"):
        k_sampling.sample_euler(plain, x, sigmas, s_churn=0.5)
    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        k_sampling.sample_dpmpp_2m(plain, x, sigmas, bogus=1)
    with pytest.raises(TypeError, match="CFG\\+\\+ sampler needs the unguided estimate"):
        k_sampling.sample_euler_cfg_pp(plain, x, sigmas)
    with pytest.raises(TypeError, match="has no `model_sampling`"):
        k_sampling.sample_euler_ancestral(plain, x, sigmas)
    with pytest.raises(ValueError, match="unknown sampler 'ddim'"):
        comfy_samplers.ksampler("ddim")


def test_comfy_samplers_sample_equals_sampler_custom(setting):
    model, positive, negative, latent, sigmas = setting
    noise = comfy_sample.prepare_noise(latent["samples"], 9)
    sampler = comfy_samplers.sampler_object("euler")
    samples = comfy_samplers.sample(model, noise, positive, negative, 2.5, None, sampler, sigmas,
                                    latent_image=latent["samples"], seed=9)
    expected = SamplerCustom().sample(model, True, 9, 2.5, positive, negative, sampler, sigmas, latent)[0]
    torch.testing.assert_close(samples, expected["samples"])


def test_sampler_helpers():
    mask = torch.zeros(1, 16, 16)
    mask[:, :8] = 1.0
    prepared = sampler_helpers.prepare_mask(mask, (2, 4, 8, 8), "cpu")
    assert prepared.shape == (2, 4, 8, 8)
    assert prepared[:, :, :4].min() == 1.0 and prepared[:, :, 4:].max() == 0.0
    control_a, control_b = object(), object()
    conditioning = [[torch.zeros(1), {"control": control_a}], [torch.zeros(1), {}],
                    [torch.zeros(1), {"control": [control_b]}]]
    assert sampler_helpers.get_models_from_cond(conditioning, "control") == [control_a, control_b]


def test_k_diffusion_utils_folder_of_images(tmp_path):
    from comfy.k_diffusion.utils import FolderOfImages
    from PIL import Image

    (tmp_path / "sub").mkdir()
    Image.new("L", (4, 2), 200).save(tmp_path / "sub" / "b.PNG")
    Image.new("RGB", (3, 3), (1, 2, 3)).save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    folder = FolderOfImages(tmp_path, transform=lambda image: image.size)
    assert [path.name for path in folder.paths] == ["a.jpg", "b.PNG"] and len(folder) == 2
    assert folder[1] == ((4, 2),) and ".webp" in FolderOfImages.IMG_EXTENSIONS
    (image,) = FolderOfImages(tmp_path / "sub")[0]
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (200, 200, 200)
