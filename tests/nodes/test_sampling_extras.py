"""The sampling extras (`nodes.sampling_extras`): SamplerEulerCFGpp, SamplerLCMUpscale, OptimalStepsScheduler, TCFG,
FreSca, Mahiro, RenormCFG, PerpNeg, SkipLayerGuidanceDiTSimple and ModelComputeDtype, and the FLUX/SD3 padding of
odd-sized latents:

- their contracts against ComfyUI's (`COMFYUI_CONTRACTS`, read off comfy_extras/nodes_advanced_samplers.py,
  nodes_optimalsteps.py, nodes_tcfg.py, nodes_fresca.py, nodes_mahiro.py, nodes_lumina2.py, nodes_perpneg.py and
  nodes_slg.py, nodes_model_advanced.py);
- the maths on small tensors against values computed by hand from ComfyUI's formulas;
- each end to end through KSampler or SamplerCustom on the tiny SD1, SD3 and FLUX models, and two API-format
  workflows through the engine (validation and execution).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np
import pytest
import torch

import nodes
from diffusion.components import DiffusionModel
from diffusion.contracts import FamilySampling
from diffusion.families.flux import demo as tiny_flux
from diffusion.families.sd3 import demo as sd3_tiny
from diffusion.sampling import cfg_patches, guiders, network_changes, samplers, sigma_schedules
from diffusion.sampling import model_sampling as schedules
from diffusion.sampling.custom import SamplerChoice
from diffusion.sampling.flow import padded_to_patches
from diffusion.sampling.guidance import guidance_batch
from diffusion.sampling.samplers import advanced
from diffusion.sampling.samplers.common import SamplingRun
from nodes import sampling_extras as se
from nodes.conditioning import CLIPTextEncode
from nodes.conditioning_ops import ConditioningCombine, ConditioningSetArea
from nodes.custom_sampling import KSamplerSelect, SamplerCustom
from nodes.flux import EmptySD3LatentImage, FluxGuidance
from nodes.latent import EmptyLatentImage
from nodes.loaders import DiffusersLoader
from nodes.model_patches import RescaleCFG
from nodes.sampling import KSampler
from tests.nodes.family_workflows import run_workflow

GUIDANCE, TESTING = "advanced/guidance", "_for_testing"
LAYERS = ("STRING", "7, 8, 9")

# node: (category, RETURN_TYPES, RETURN_NAMES or None, display name, experimental, deprecated, the inputs in order:
# link type, combo choices, (STRING, default) or (INT/FLOAT, default, min, max, step))
COMFYUI_CONTRACTS: dict[str, tuple] = {
    "SamplerEulerCFGpp": (TESTING, ("SAMPLER",), None, "SamplerEulerCFG++", True, False, [
        ("version", ["regular", "alternative"])]),
    "SamplerLCMUpscale": ("sampling/custom_sampling/samplers", ("SAMPLER",), None, "SamplerLCMUpscale", False, False,
                          [("scale_ratio", ("FLOAT", 1.0, 0.1, 20.0, 0.01)), ("scale_steps", ("INT", -1, -1, 1000, 1)),
                           ("upscale_method", ["bislerp", "nearest-exact", "bilinear", "area", "bicubic"])]),
    "OptimalStepsScheduler": ("sampling/custom_sampling/schedulers", ("SIGMAS",), None, "OptimalStepsScheduler",
                              False, False, [("model_type", ["FLUX", "Wan", "Chroma"]),
                                             ("steps", ("INT", 20, 3, 1000, None)),
                                             ("denoise", ("FLOAT", 1.0, 0.0, 1.0, 0.01))]),
    "TCFG": (GUIDANCE, ("MODEL",), ("patched_model",), "Tangential Damping CFG", False, False, [("model", "MODEL")]),
    "FreSca": (TESTING, ("MODEL",), None, "FreSca", True, False, [
        ("model", "MODEL"), ("scale_low", ("FLOAT", 1.0, 0, 10, 0.01)), ("scale_high", ("FLOAT", 1.25, 0, 10, 0.01)),
        ("freq_cutoff", ("INT", 20, 1, 10000, 1))]),
    "Mahiro": (TESTING, ("MODEL",), ("patched_model",),
               "Mahiro is so cute that she deserves a better guidance function!! (。・ω・。)", True, False,
               [("model", "MODEL")]),
    "RenormCFG": ("advanced/model", ("MODEL",), None, "RenormCFG", False, False, [
        ("model", "MODEL"), ("cfg_trunc", ("FLOAT", 100, 0.0, 100.0, 0.01)),
        ("renorm_cfg", ("FLOAT", 1.0, 0.0, 100.0, 0.01))]),
    "PerpNeg": (TESTING, ("MODEL",), None, "Perp-Neg (DEPRECATED by PerpNegGuider)", True, True, [
        ("model", "MODEL"), ("empty_conditioning", "CONDITIONING"), ("neg_scale", ("FLOAT", 1.0, 0.0, 100.0, 0.01))]),
    "ModelComputeDtype": ("advanced/debug/model", ("MODEL",), None, "ModelComputeDtype", False, False, [
        ("model", "MODEL"), ("dtype", ["default", "fp32", "fp16", "bf16"])]),
    "SkipLayerGuidanceDiTSimple": (GUIDANCE, ("MODEL",), None, "SkipLayerGuidanceDiTSimple", True, False, [
        ("model", "MODEL"), ("double_layers", LAYERS), ("single_layers", LAYERS),
        ("start_percent", ("FLOAT", 0.0, 0.0, 1.0, 0.001)), ("end_percent", ("FLOAT", 1.0, 0.0, 1.0, 0.001))]),
}


def _contract(node_class: type) -> tuple:
    inputs = []
    for name, (kind, options) in node_class.INPUT_TYPES()["required"].items():
        if isinstance(kind, list):
            inputs.append((name, kind))
        elif kind in ("INT", "FLOAT"):
            inputs.append((name, (kind, options["default"], options["min"], options["max"], options.get("step"))))
        elif kind == "STRING":
            assert options["multiline"] is False
            inputs.append((name, (kind, options["default"])))
        else:
            inputs.append((name, kind))
    return (node_class.CATEGORY, node_class.RETURN_TYPES, getattr(node_class, "RETURN_NAMES", None),
            nodes.NODE_DISPLAY_NAME_MAPPINGS[node_class.__name__], getattr(node_class, "EXPERIMENTAL", False),
            getattr(node_class, "DEPRECATED", False), inputs)


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert node_class is se.NODE_CLASS_MAPPINGS[name]
    assert _contract(node_class) == COMFYUI_CONTRACTS[name]
    assert node_class.DESCRIPTION and callable(getattr(node_class(), node_class.FUNCTION))
    assert all(options.get("tooltip") for _, options in node_class.INPUT_TYPES()["required"].values())


def test_every_node_of_the_module_is_in_the_table():
    assert set(se.NODE_CLASS_MAPPINGS) == set(COMFYUI_CONTRACTS)


# -- schedules and samplers: the maths --------------------------------------------------------------------------------


def test_optimal_steps_is_the_table_interpolated_log_linearly():
    flux = list(sigma_schedules.OPTIMAL_STEPS_NOISE_LEVELS["FLUX"])
    (sigmas,) = se.OptimalStepsScheduler().get_sigmas("FLUX", 10, 1.0)
    assert torch.equal(sigmas, torch.tensor(flux[:-1] + [0.0], dtype=torch.float32))
    # 4 steps: 5 points evenly through the 11 logs of the table, read from its low end (ComfyUI's loglinear_interp)
    logs = np.log(flux[::-1])
    expected = np.exp(np.interp(np.linspace(0, 1, 5), np.linspace(0, 1, 11), logs))[::-1].copy()
    expected[-1] = 0
    (sigmas,) = se.OptimalStepsScheduler().get_sigmas("FLUX", 4, 1.0)
    assert torch.equal(sigmas, torch.tensor(expected, dtype=torch.float32))
    assert math.isclose(float(sigmas[0]), 0.9968, rel_tol=1e-6)  # the ends stay
    # denoise keeps the last round(steps * denoise) steps; 0 gives no sigmas
    (half,) = se.OptimalStepsScheduler().get_sigmas("FLUX", 10, 0.5)
    assert torch.equal(half, torch.tensor(flux[5:-1] + [0.0], dtype=torch.float32))
    assert len(se.OptimalStepsScheduler().get_sigmas("Wan", 20, 0.0)[0]) == 0
    (wan,) = se.OptimalStepsScheduler().get_sigmas("Wan", 20, 1.0)
    assert len(wan) == 21 and float(wan[0]) == 1.0 and float(wan[-1]) == 0.0
    assert len(se.OptimalStepsScheduler().get_sigmas("Chroma", 40, 1.0)[0]) == 41


def test_lcm_upscale_grows_evenly_over_about_half_the_schedule():
    # ComfyUI: linspace(1, total, steps) without its first point, steps = max(len(sigmas) // 2 + 1, 2) by default
    assert advanced.upscale_factors(4, 2.0, None) == [1.5, 2.0]
    assert advanced.upscale_factors(1, 3.0, None) == [3.0]
    assert advanced.upscale_factors(4, 2.0, 1) == [2.0]
    assert advanced.upscale_factors(4, 2.0, 3) == pytest.approx([4 / 3, 5 / 3, 2.0])
    assert advanced.upscale_factors(2, 2.0, 50) == pytest.approx([4 / 3, 5 / 3, 2.0])  # capped: len(sigmas) + 1 points


@dataclasses.dataclass
class _Halving:
    """A denoiser: the estimate is half the latents; the unguided estimate a quarter."""

    model_sampling: Any = None
    uncond_denoised: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.uncond_denoised = x / 4
        return x / 2


def test_lcm_upscale_jumps_to_the_estimate_resizes_and_adds_the_next_sigmas_noise():
    x = torch.arange(4.0).reshape(1, 1, 2, 2)
    sigmas = torch.tensor([3.0, 2.0, 0.0])
    reports = []
    out = advanced.lcm_upscale(SamplingRun(_Halving(), 5, lambda i, x, d: reports.append((x, d))), x, sigmas,
                               total_upscale=2.0, upscale_steps=None, upscale_method="nearest-exact")
    # the noise: ComfyUI's global CPU generator after drawing the starting noise of x's shape with the seed
    generator = torch.Generator().manual_seed(5)
    torch.randn(x.shape, generator=generator)
    # 2 steps, len(sigmas) // 2 + 1 = 2 points: one upscale step, to 2x
    first = torch.nn.functional.interpolate(x / 2, size=(4, 4), mode="nearest-exact")
    first = first + 2.0 * torch.randn((1, 1, 4, 4), generator=generator)
    assert torch.allclose(reports[0][0], first)
    assert torch.allclose(out, first / 2) and out.shape == (1, 1, 4, 4)  # the last step: the estimate alone
    with pytest.raises(ValueError, match="^upscale_method: 'lanczos' is not one of"):
        advanced.lcm_upscale(SamplingRun(_Halving(), 5, lambda *a: None), x, sigmas, total_upscale=2.0,
                             upscale_steps=None, upscale_method="lanczos")


def test_euler_cfg_pp_alternative_takes_the_slope_with_the_unguided_noise_added_back():
    x, sigmas = torch.tensor([[[[4.0]]]]), torch.tensor([2.0, 1.0])
    out = advanced.euler_cfg_pp_alternative(SamplingRun(_Halving(), 0, lambda *a: None), x, sigmas)
    # ComfyUI: d = to_d(x - denoised + uncond, sigma, denoised) = (4 - 2 + 1 - 2) / 2 = 0.5; x + d * (1 - 2) = 3.5
    assert torch.allclose(out, torch.tensor([[[[3.5]]]]))
    assert samplers.sampler_spec("euler_cfg_pp_alternative").uses_unguided
    assert "lcm_upscale" not in samplers.SAMPLER_NAMES and "euler_cfg_pp_alternative" not in samplers.SAMPLER_NAMES


def test_sampler_nodes_choose_the_samplers():
    assert se.SamplerEulerCFGpp().get_sampler("regular") == (SamplerChoice("euler_cfg_pp"),)
    assert se.SamplerEulerCFGpp().get_sampler("alternative") == (SamplerChoice("euler_cfg_pp_alternative"),)
    (choice,) = se.SamplerLCMUpscale().get_sampler(1.5, -1, "bilinear")
    assert choice == SamplerChoice("lcm_upscale", {"total_upscale": 1.5, "upscale_steps": None,
                                                   "upscale_method": "bilinear"})
    assert samplers.sampler_spec("lcm_upscale").settings(choice.options) == dict(choice.options)
    assert se.SamplerLCMUpscale().get_sampler(1.5, 3, "area")[0].options["upscale_steps"] == 3


# -- guidance patches: the maths --------------------------------------------------------------------------------------


def test_tcfg_keeps_the_negative_noise_along_the_shared_direction():
    # x = 0: noises are minus the estimates. Positive noise (2, 0), negative (1, 1): [neg; pos] = [[1, 1], [2, 0]],
    # A^T A = [[5, 1], [1, 1]], top eigenvector (1, sqrt 5 - 2); the negative noise projected onto it
    positive, negative, x = torch.tensor([-2.0, 0.0]), torch.tensor([-1.0, -1.0]), torch.zeros(2)
    direction = torch.tensor([1.0, math.sqrt(5) - 2])
    direction = direction / direction.norm()
    damped_noise = (torch.tensor([1.0, 1.0]) @ direction) * direction
    args = {"cond_denoised": positive.view(1, 2, 1, 1), "uncond_denoised": negative.view(1, 2, 1, 1),
            "input": x.view(1, 2, 1, 1)}
    new_positive, new_negative = cfg_patches.TangentialDamping()(args)
    assert torch.equal(new_positive, args["cond_denoised"])
    assert torch.allclose(new_negative.flatten(), -damped_noise, atol=1e-6)
    # a negative that was not computed (zeros at cfg 1) is left alone, as ComfyUI skips a None negative
    skipped = {**args, "uncond_denoised": torch.zeros(1, 2, 1, 1)}
    assert torch.equal(cfg_patches.TangentialDamping()(skipped)[1], skipped["uncond_denoised"])


def test_fresca_scales_low_and_high_frequencies_of_the_guidance():
    constant = torch.full((1, 1, 4, 4), 2.0)
    checkerboard = (torch.arange(4).view(4, 1) + torch.arange(4).view(1, 4)) % 2 * 2.0 - 1.0  # the Nyquist frequency
    guidance = constant + checkerboard.view(1, 1, 4, 4)
    # cutoff 1 on 4x4: the centred spectrum's indices 1..2 on both axes are low (the constant), index 0 high
    filtered = cfg_patches.frequency_scaled(guidance, 0.5, 3.0, 1)
    assert torch.allclose(filtered, constant * 0.5 + checkerboard * 3.0, atol=1e-5)
    assert torch.allclose(cfg_patches.frequency_scaled(guidance, 1.5, 1.5, 20), guidance * 1.5, atol=1e-5)
    negative = torch.ones(1, 1, 4, 4)
    args = {"cond_denoised": guidance + negative, "uncond_denoised": negative}
    new_positive, new_negative = cfg_patches.FrequencyScaledGuidance(0.5, 3.0, 1)(args)
    assert torch.equal(new_negative, negative) and torch.allclose(new_positive, filtered + negative, atol=1e-5)
    skipped = {**args, "uncond_denoised": torch.zeros_like(negative)}
    assert torch.equal(cfg_patches.FrequencyScaledGuidance(0.5, 3.0, 1)(skipped)[0], skipped["cond_denoised"])


def test_mahiro_mixes_the_guided_estimate_and_the_leap_by_similarity():
    # one pixel, two channels; scale 2: leap (2, 0), negative leap (0, 2), guided (4, 0), merge (3, 0);
    # signed square roots (0, sqrt 2) and (sqrt 3, 0) are orthogonal: s = 0, weight 2, (2 * guided + 2 * leap) / 4
    args = {"cond_scale": 2.0, "cond_denoised": torch.tensor([1.0, 0.0]).view(1, 2, 1, 1),
            "uncond_denoised": torch.tensor([0.0, 1.0]).view(1, 2, 1, 1),
            "denoised": torch.tensor([4.0, 0.0]).view(1, 2, 1, 1)}
    assert torch.allclose(cfg_patches.MahiroGuidance()(args).flatten(), torch.tensor([3.0, 0.0]))
    # the same direction everywhere: s = 1, the guided estimate itself
    same = {**args, "uncond_denoised": torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)}
    assert torch.allclose(cfg_patches.MahiroGuidance()(same), args["denoised"])


def test_renorm_cfg_caps_the_guided_norm_below_cfg_trunc():
    positive, negative = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1), torch.zeros(1, 2, 1, 1)
    args = {"cond_denoised": positive, "uncond_denoised": negative, "cond_scale": 2.0, "sigma": torch.tensor([0.5])}
    # guided (6, 8) has norm 10; at most 1.5 * 5 = 7.5: (4.5, 6)
    assert torch.allclose(cfg_patches.RenormalizedCfg(100.0, 1.5)(args).flatten(), torch.tensor([4.5, 6.0]))
    assert torch.allclose(cfg_patches.RenormalizedCfg(100.0, 3.0)(args).flatten(), torch.tensor([6.0, 8.0]))
    assert torch.allclose(cfg_patches.RenormalizedCfg(100.0, 0.0)(args).flatten(), torch.tensor([6.0, 8.0]))
    assert torch.equal(cfg_patches.RenormalizedCfg(0.5, 1.5)(args), positive)  # sigma not below cfg_trunc
    # per batch row (ComfyUI compares a single norm: one row)
    two = {**args, "cond_denoised": torch.cat([positive, positive * 0.1]), "uncond_denoised": torch.cat([negative] * 2)}
    assert torch.allclose(cfg_patches.RenormalizedCfg(100.0, 1.5)(two).flatten(), torch.tensor([4.5, 6.0, 0.45, 0.6]))


def test_perp_neg_patch_is_perp_neg_against_the_empty_estimate():
    positive, negative = torch.tensor([2.0, 0.0]).view(1, 2, 1, 1), torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)
    empty = torch.tensor([1.0, 1.0]).view(1, 2, 1, 1)
    asked = []
    args = {"cond_denoised": positive, "uncond_denoised": negative, "cond_scale": 3.0, "input": torch.zeros(1, 2, 1, 1),
            "sigma": torch.tensor([1.0]),
            "estimate": lambda conditioning, x, sigma: asked.append(conditioning) or empty}
    # towards positive (1, -1), towards negative (0, 2): projection -1, perpendicular (1, 1); neg_scale 2:
    # empty + 3 * ((1, -1) - 2 * (1, 1)) = (1, 1) + (-3, -9)
    out = cfg_patches.PerpNegCfg("empty", 2.0)(args)
    assert torch.allclose(out.flatten(), torch.tensor([-2.0, -8.0])) and asked == ["empty"]


def test_skip_layer_negative_is_guidance_with_the_skipped_negative():
    positive, negative = torch.tensor([2.0, 0.0]).view(1, 2, 1, 1), torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)
    skipped = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    args = {"cond_denoised": positive, "uncond_denoised": negative, "cond_scale": 4.0, "input": torch.zeros(1, 2, 1, 1),
            "denoised": negative + 4.0 * (positive - negative), "sigma": torch.tensor([0.5]), "uncond": "negative",
            "estimate": lambda conditioning, x, sigma, change: skipped}
    patch = cfg_patches.SkipLayerNegative({"double": (0,)}, 1.0, 0.0)
    assert torch.allclose(patch(args), skipped + 4.0 * (positive - skipped))
    assert torch.equal(cfg_patches.SkipLayerNegative({"double": (0,)}, 0.4, 0.0)(args), args["denoised"])
    assert torch.equal(patch({**args, "uncond": None}), args["denoised"])  # no negative computed (cfg 1)


# -- the patches on a stand-in model: eps = input * (1 + m) / 2 + m, m the mean of the text embedding ----------------


class _Network:
    device, dtype = torch.device("cpu"), torch.float32


class _StandInSampling(FamilySampling):
    lora_component, family_title = "unet", "stand-in"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def network_output(self, network: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                       embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        self.calls.append(model_input.shape[0])
        mean = embeddings.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return model_input * (1 + mean) / 2 + mean

    def make_scheduler(self, *args: Any) -> Any:
        raise NotImplementedError

    def noised(self, *args: Any) -> Any:
        raise NotImplementedError

    def predict(self, *args: Any) -> Any:
        raise NotImplementedError

    def denoised(self, *args: Any) -> Any:
        raise NotImplementedError


def _stand_in() -> DiffusionModel:
    return DiffusionModel(_Network(), {}, "stand-in", "sd1", _StandInSampling(),
                          schedule_override=schedules.DiscreteModelSampling())


def _text(value: float) -> list:
    return [[torch.full((1, 3, 4), value), {}]]


X = torch.linspace(-1.0, 1.0, 2 * 4 * 4 * 4).reshape(2, 4, 4, 4)
SIGMA = torch.tensor([2.0, 2.0])


def _denoise(guider: Any) -> torch.Tensor:
    return guider.denoiser(guider.model.network, X.shape[0], None, guider.model.model_sampling)(X, SIGMA)


def test_pre_and_post_cfg_patches_hook_into_the_guiders():
    plain = _stand_in()
    positive, negative = _denoise(guiders.basic_guider(plain, _text(0.9))), _denoise(guiders.basic_guider(plain,
                                                                                                        _text(-0.3)))
    cfg = 3.0

    def guided(model):
        return _denoise(guiders.CFGGuider(model, _text(0.9), _text(-0.3), cfg))

    damped = X - cfg_patches.tangentially_damped(X - positive, X - negative)
    assert torch.allclose(guided(se.TCFG().patch(plain)[0]), damped + cfg * (positive - damped), atol=1e-5)
    fresca = se.FreSca().patch(plain, 0.5, 2.0, 1)[0]
    expected = negative + cfg * cfg_patches.frequency_scaled(positive - negative, 0.5, 2.0, 1)
    assert torch.allclose(guided(fresca), expected, atol=1e-5)
    mahiro = cfg_patches.MahiroGuidance()({"cond_scale": cfg, "cond_denoised": positive, "uncond_denoised": negative,
                                           "denoised": negative + cfg * (positive - negative)})
    assert torch.allclose(guided(se.Mahiro().patch(plain)[0]), mahiro, atol=1e-5)
    renorm = se.RenormCFG().patch(plain, 100.0, 1.0)[0]
    assert torch.allclose(guided(renorm), cfg_patches.RenormalizedCfg(100.0, 1.0)(
        {"cond_denoised": positive, "uncond_denoised": negative, "cond_scale": cfg, "sigma": SIGMA}), atol=1e-5)
    empty = _denoise(guiders.basic_guider(plain, _text(0.1)))
    perp = se.PerpNeg().patch(plain, _text(0.1), 1.5)[0]
    assert torch.allclose(guided(perp), guiders.perp_neg(positive, negative, empty, 1.5, cfg), atol=1e-5)
    # at cfg 1 the negative is skipped: TCFG and FreSca leave the positive alone, as ComfyUI's do
    for model in (se.TCFG().patch(plain)[0], fresca):
        assert torch.allclose(_denoise(guiders.CFGGuider(model, _text(0.9), _text(-0.3), 1.0)), positive, atol=1e-6)


def test_cfg_functions_replace_each_other_and_come_first():
    plain = _stand_in()
    (model,) = se.Mahiro().patch(plain)
    (model,) = RescaleCFG().patch(model, 0.7)
    (model,) = se.RenormCFG().patch(model, 100.0, 1.0)
    assert [type(patch).__name__ for patch in model.post_cfg] == ["RenormalizedCfg", "MahiroGuidance"]
    (model,) = se.PerpNeg().patch(model, _text(0.1), 1.0)
    assert [type(patch).__name__ for patch in model.post_cfg] == ["PerpNegCfg", "MahiroGuidance"]
    with pytest.raises(ValueError, match="^empty_conditioning: empty conditioning"):
        se.PerpNeg().patch(plain, [], 1.0)
    assert plain.post_cfg == () and plain.pre_cfg == ()


# -- end to end on the tiny models ------------------------------------------------------------------------------------

PROMPT, NEGATIVE, SEED, CFG = "a photo of an astronaut riding a horse", "blurry", 7, 5.0


@pytest.fixture
def sd1_texts(sd1):
    model, clip, _ = sd1
    return model, CLIPTextEncode().encode(clip, PROMPT)[0], CLIPTextEncode().encode(clip, NEGATIVE)[0]


@pytest.fixture
def empty(sd1):
    return CLIPTextEncode().encode(sd1[1], "")[0]


def _counted_calls(network: torch.nn.Module, rows: list[int]):
    def count(module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        rows.append(sample.shape[0])

    return network.register_forward_pre_hook(count, with_kwargs=True)


def _ksample(model, positive, negative, latent, cfg=CFG, steps=3, sampler="euler"):
    (samples,) = KSampler().sample(model, SEED, steps, cfg, sampler, "normal", positive, negative, latent)
    return samples["samples"]


def test_guidance_patches_sample_the_tiny_sd1_model_through_ksampler(sd1_texts, empty):
    model, positive, negative = sd1_texts
    (latent,) = EmptyLatentImage().generate(64, 64, 1)
    plain = _ksample(model, positive, negative, latent)
    patched = {
        "TCFG": se.TCFG().patch(model)[0], "FreSca": se.FreSca().patch(model, 1.0, 1.25, 2)[0],
        "Mahiro": se.Mahiro().patch(model)[0], "RenormCFG": se.RenormCFG().patch(model, 100.0, 1.0)[0],
        "PerpNeg": se.PerpNeg().patch(model, empty, 1.0)[0],
    }
    for name, patched_model in patched.items():
        rows: list[int] = []
        handle = _counted_calls(model.network, rows)
        try:
            samples = _ksample(patched_model, positive, negative, latent)
        finally:
            handle.remove()
        assert torch.isfinite(samples).all(), name
        assert (samples - plain).abs().max() > 1e-4, name
        assert torch.equal(_ksample(patched_model, positive, negative, latent), samples), name
        assert rows == ([2, 1] * 3 if name == "PerpNeg" else [2] * 3), name
    # neutral settings give plain guidance (a cutoff of half the 8x8 latents or more: all frequencies are low)
    assert torch.allclose(_ksample(se.FreSca().patch(model, 1.0, 1.0, 20)[0], positive, negative, latent), plain,
                          atol=1e-4)
    assert torch.allclose(_ksample(se.RenormCFG().patch(model, 100.0, 0.0)[0], positive, negative, latent), plain,
                          atol=1e-4)
    assert torch.allclose(_ksample(se.TCFG().patch(model)[0], positive, negative, latent, cfg=1.0),
                          _ksample(model, positive, negative, latent, cfg=1.0))


def _custom(model, positive, negative, sampler, sigmas, latent, cfg=CFG):
    output, denoised = SamplerCustom().sample(model, True, SEED, cfg, positive, negative, sampler, sigmas, latent)
    return output["samples"], denoised["samples"]


def test_euler_cfg_pp_versions_sample_the_tiny_sd1_model(sd1_texts):
    model, positive, negative = sd1_texts
    (latent,) = EmptyLatentImage().generate(64, 64, 1)
    sigmas = sigma_schedules.calculate_sigmas(model.model_sampling, "normal", 3)
    (regular,) = se.SamplerEulerCFGpp().get_sampler("regular")
    (select,) = KSamplerSelect().get_sampler("euler_cfg_pp")
    assert torch.equal(_custom(model, positive, negative, regular, sigmas, latent, 1.0)[0],
                       _custom(model, positive, negative, select, sigmas, latent, 1.0)[0])
    (alternative,) = se.SamplerEulerCFGpp().get_sampler("alternative")
    rows: list[int] = []
    handle = _counted_calls(model.network, rows)
    try:
        samples, _ = _custom(model, positive, negative, alternative, sigmas, latent, 1.0)
    finally:
        handle.remove()
    assert rows == [2] * 3  # the negative is computed at cfg 1 too: the step needs it
    assert torch.isfinite(samples).all()


def test_lcm_upscale_samples_the_tiny_sd1_model_to_a_larger_latent(sd1_texts):
    model, positive, negative = sd1_texts
    (latent,) = EmptyLatentImage().generate(64, 64, 1)
    sigmas = sigma_schedules.calculate_sigmas(model.model_sampling, "normal", 4)
    (sampler,) = se.SamplerLCMUpscale().get_sampler(1.5, -1, "bislerp")
    samples, denoised = _custom(model, positive, negative, sampler, sigmas, latent)
    assert samples.shape == (1, 4, 12, 12) and denoised.shape == (1, 4, 12, 12)
    assert torch.isfinite(samples).all()
    assert torch.equal(_custom(model, positive, negative, sampler, sigmas, latent)[0], samples)


def test_model_compute_dtype_runs_the_network_in_the_dtype_and_leaves_the_weights(sd1_texts):
    model, positive, negative = sd1_texts
    (latent,) = EmptyLatentImage().generate(64, 64, 1)
    weights = {name: tensor.clone() for name, tensor in model.network.state_dict().items()}
    plain = _ksample(model, positive, negative, latent, steps=2)
    (fp16,) = se.ModelComputeDtype().patch(model, "fp16")
    assert fp16.speedups.compute_dtype == "fp16" and model.speedups.compute_dtype == "default"
    seen: list[torch.dtype] = []
    handle = model.network.conv_in.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    try:
        samples = _ksample(fp16, positive, negative, latent, steps=2)
        diffusers_loop = KSampler().sample(se.ModelComputeDtype().patch(model, "bf16")[0], SEED, 2, CFG, "euler",
                                           "diffusers", positive, negative, latent)[0]["samples"]
    finally:
        handle.remove()
    assert seen == [torch.float16] * 2 + [torch.bfloat16] * 2  # the sigma core's steps, then the diffusers loop's
    assert torch.isfinite(samples).all() and torch.isfinite(diffusers_loop).all()
    assert 0 < (samples - plain).abs().mean() < 0.01 * plain.abs().mean()  # fp16's rounding: near, not equal
    assert model.network.dtype == torch.float32
    assert all(torch.equal(tensor, weights[name]) for name, tensor in model.network.state_dict().items())
    assert torch.equal(_ksample(se.ModelComputeDtype().patch(model, "fp32")[0], positive, negative, latent,
                                steps=2), plain)
    assert torch.equal(_ksample(se.ModelComputeDtype().patch(fp16, "default")[0], positive, negative, latent,
                                steps=2), plain)


# -- SD3 and FLUX: SkipLayerGuidanceDiTSimple, odd latent sizes --------------------------------------------------------


@pytest.fixture
def sd3(node_env, tiny_models_dir):
    sd3_tiny.make_sd3_demo_models(tiny_models_dir)
    return DiffusersLoader().load_checkpoint(sd3_tiny.DEMO_DIFFUSERS)


@pytest.fixture
def flux(node_env, tiny_models_dir):
    tiny_flux.make_flux_demo_models(tiny_models_dir)
    return DiffusersLoader().load_checkpoint(tiny_flux.DEMO_FLUX_DIFFUSERS)


def test_skip_layer_guidance_dit_simple_guides_against_the_negative_with_blocks_skipped(sd3):
    model, clip, _ = sd3
    positive, negative = CLIPTextEncode().encode(clip, PROMPT)[0], CLIPTextEncode().encode(clip, NEGATIVE)[0]
    (patched,) = se.SkipLayerGuidanceDiTSimple().patch(model, "1", "", 0.0, 1.0)
    x = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(3))
    sigma = torch.tensor([0.6])

    def estimate(conditioning, change=None):
        guider = guiders.basic_guider(model, conditioning)
        denoiser = guider.denoiser(model.network, 1, None, model.model_sampling)
        if change is None:
            return denoiser(x, sigma)
        with change(model.network):
            return denoiser(x, sigma)

    with torch.no_grad():
        cond = estimate(positive)
        skipped = estimate(negative, lambda network: network_changes.blocks_skipped(network, {"double": (1,)}))
        guided = guiders.CFGGuider(patched, positive, negative, CFG).denoiser(
            model.network, 1, None, patched.model_sampling)(x, sigma)
    assert torch.allclose(guided, skipped + CFG * (cond - skipped), atol=1e-5)
    assert not any("forward" in vars(block) for block in model.network.transformer_blocks)
    # through KSampler: one more call for the negative per step; none at cfg 1 (no negative), or out of the span
    (latent,) = EmptySD3LatentImage().generate(32, 32, 1)
    rows: list[int] = []
    handle = _counted_calls(model.network, rows)
    try:
        samples = _ksample(patched, positive, negative, latent)
        _ksample(patched, positive, negative, latent, cfg=1.0)
        # 0 to 0.01 of the schedule is sigma 1 down to 0.9966 (shift 3): only the first step (sigmas 1, 0.75, 0.009)
        _ksample(se.SkipLayerGuidanceDiTSimple().patch(model, "1", "", 0.0, 0.01)[0], positive, negative, latent)
    finally:
        handle.remove()
    assert rows == [2, 1] * 3 + [1] * 3 + [2, 1, 2, 2]
    assert torch.isfinite(samples).all()
    assert (samples - _ksample(model, positive, negative, latent)).abs().max() > 1e-4
    assert se.SkipLayerGuidanceDiTSimple().patch(model, "", "", 0.0, 1.0)[0] is model
    # it changes the negative: after the cfg function, before the other post-CFG patches
    (rescaled,) = RescaleCFG().patch(se.Mahiro().patch(model)[0], 0.7)
    (both,) = se.SkipLayerGuidanceDiTSimple().patch(rescaled, "1", "", 0.0, 1.0)
    assert [type(patch).__name__ for patch in both.post_cfg] == ["RescaledCfg", "SkipLayerNegative",
                                                                 "MahiroGuidance"]
    with pytest.raises(ValueError, match=r"^double_layers: layer 7 is past the last of this model's 2 double"):
        se.SkipLayerGuidanceDiTSimple().patch(model, "7, 8, 9", "7, 8, 9", 0.0, 1.0)


def test_skip_layer_guidance_dit_simple_refuses_a_unet(sd1):
    with pytest.raises(ValueError, match="^model: SkipLayerGuidanceDiTSimple skips blocks of a DiT model"):
        se.SkipLayerGuidanceDiTSimple().patch(sd1[0], "7, 8, 9", "7, 8, 9", 0.0, 1.0)


def test_padded_to_patches_wraps_around():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    padded = padded_to_patches(x)
    assert padded.shape == (1, 1, 4, 4)
    assert torch.equal(padded[0, 0, :3, 3], x[0, 0, :, 0]) and torch.equal(padded[0, 0, 3, :3], x[0, 0, 0, :])
    assert padded_to_patches(padded) is padded


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_odd_latent_sizes_are_padded_to_patches_and_cropped_back(family, request):
    model, clip, _ = request.getfixturevalue(family)
    positive = CLIPTextEncode().encode(clip, PROMPT)[0]
    if family == "flux":
        positive = FluxGuidance().append(positive, 3.5)[0]
    inputs = model.sampling.network_inputs(guidance_batch(positive, positive, 1, 1.0, model.device, model.dtype), 1,
                                           model.device, model.dtype)
    odd = torch.randn(1, 16, 3, 5, generator=torch.Generator().manual_seed(4))
    timestep = torch.tensor([0.5 if family == "flux" else 500.0])
    with torch.no_grad():
        out = model.sampling.network_output(model.network, odd, timestep, positive[0][0], inputs)
        whole = model.sampling.network_output(model.network, padded_to_patches(odd), timestep, positive[0][0], inputs)
    assert out.shape == odd.shape and torch.allclose(out, whole[..., :3, :5], atol=1e-6)
    # an area conditioning of 3x3 latents (24 pixels) on 4x4 latents: ran into the crash ComfyUI's padding avoids
    (area,) = ConditioningSetArea().append(positive, 24, 24, 8, 8, 1.0)
    (combined,) = ConditioningCombine().combine(positive, area)
    (latent,) = EmptySD3LatentImage().generate(32, 32, 1)
    samples = _ksample(model, combined, CLIPTextEncode().encode(clip, "")[0], latent, cfg=2.0, steps=2)
    assert samples.shape == (1, 16, 4, 4) and torch.isfinite(samples).all()


def test_optimal_steps_and_lcm_upscale_sample_the_tiny_flux_model_to_odd_sizes(flux):
    model, clip, _ = flux
    positive = FluxGuidance().append(CLIPTextEncode().encode(clip, PROMPT)[0], 3.5)[0]
    negative = CLIPTextEncode().encode(clip, "")[0]
    (latent,) = EmptySD3LatentImage().generate(32, 32, 1)
    (sigmas,) = se.OptimalStepsScheduler().get_sigmas("FLUX", 3, 1.0)
    (sampler,) = se.SamplerLCMUpscale().get_sampler(1.25, 1, "bilinear")
    samples, _ = _custom(model, positive, negative, sampler, sigmas, latent, cfg=1.0)
    assert samples.shape == (1, 16, 5, 5) and torch.isfinite(samples).all()  # 4 * 1.25: odd, padded for FLUX


# -- API-format workflows through the engine ---------------------------------------------------------------------------


def _checkpoint_prompt() -> dict[str, Any]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd1.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }


def test_guidance_patch_workflow_runs_through_the_engine(node_env):
    prompt = {
        **_checkpoint_prompt(),
        "10": {"class_type": "TCFG", "inputs": {"model": ["1", 0]}},
        "11": {"class_type": "FreSca", "inputs": {"model": ["10", 0], "scale_low": 1.0, "scale_high": 1.25,
                                                  "freq_cutoff": 20}},
        "12": {"class_type": "Mahiro", "inputs": {"model": ["11", 0]}},
        "13": {"class_type": "RenormCFG", "inputs": {"model": ["12", 0], "cfg_trunc": 100, "renorm_cfg": 1.0}},
        "14": {"class_type": "PerpNeg", "inputs": {"model": ["13", 0], "empty_conditioning": ["4", 0],
                                                   "neg_scale": 1.0}},
        "18": {"class_type": "ModelComputeDtype", "inputs": {"model": ["14", 0], "dtype": "bf16"}},
        "15": {"class_type": "KSampler", "inputs": {
            "model": ["18", 0], "seed": SEED, "steps": 2, "cfg": CFG, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["5", 0], "denoise": 1.0}},
        "16": {"class_type": "VAEDecode", "inputs": {"samples": ["15", 0], "vae": ["1", 2]}},
        "17": {"class_type": "SaveImage", "inputs": {"images": ["16", 0], "filename_prefix": "extras"}},
    }
    (image,) = run_workflow(node_env, prompt)
    assert image.size == (64, 64)


def test_sampler_and_scheduler_workflow_runs_through_the_engine(node_env):
    prompt = {
        **_checkpoint_prompt(),
        "10": {"class_type": "OptimalStepsScheduler", "inputs": {"model_type": "FLUX", "steps": 3, "denoise": 1.0}},
        "11": {"class_type": "SamplerLCMUpscale", "inputs": {"scale_ratio": 1.5, "scale_steps": -1,
                                                             "upscale_method": "bislerp"}},
        "12": {"class_type": "SamplerCustom", "inputs": {
            "model": ["1", 0], "add_noise": True, "noise_seed": SEED, "cfg": CFG, "positive": ["2", 0],
            "negative": ["3", 0], "sampler": ["11", 0], "sigmas": ["10", 0], "latent_image": ["5", 0]}},
        "13": {"class_type": "SamplerEulerCFGpp", "inputs": {"version": "alternative"}},
        "14": {"class_type": "SamplerCustom", "inputs": {
            "model": ["1", 0], "add_noise": True, "noise_seed": SEED, "cfg": 1.0, "positive": ["2", 0],
            "negative": ["3", 0], "sampler": ["13", 0], "sigmas": ["10", 0], "latent_image": ["5", 0]}},
        "15": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["1", 2]}},
        "16": {"class_type": "VAEDecode", "inputs": {"samples": ["14", 0], "vae": ["1", 2]}},
        "17": {"class_type": "SaveImage", "inputs": {"images": ["15", 0], "filename_prefix": "upscaled"}},
        "18": {"class_type": "SaveImage", "inputs": {"images": ["16", 0], "filename_prefix": "cfgpp"}},
    }
    images = sorted(run_workflow(node_env, prompt), key=lambda image: image.size)
    assert [image.size for image in images] == [(64, 64), (96, 96)]

