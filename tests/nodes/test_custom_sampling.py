"""The custom-sampling nodes (NOISE, GUIDER, SAMPLER, SIGMAS, SamplerCustom/SamplerCustomAdvanced) and the MODEL
patch nodes of the sigma-based samplers: their contracts against ComfyUI's (`COMFYUI_CONTRACTS`, read off
comfy_extras/nodes_custom_sampler.py, nodes_align_your_steps.py, nodes_gits.py, nodes_perpneg.py,
nodes_model_advanced.py and nodes_cfg.py), the schedules they give, the DualCFG and Perp-Neg maths on a stand-in
model, validation, and sampling end to end on the tiny SD1 model."""
import dataclasses
import math
from typing import Any, Mapping

import pytest
import torch

import nodes
from diffusion.components import DiffusionModel
from diffusion.contracts import FamilySampling
from diffusion.sampling import guiders, samplers, sigma_schedules
from diffusion.sampling import model_sampling as schedules
from diffusion.sampling.custom import SamplerChoice
from nodes import custom_sampling as cs
from nodes import model_patches as mp
from nodes.conditioning import CLIPTextEncode
from nodes.latent import EmptyLatentImage
from tests.nodes.conftest import validation_errors

SEED_MAX = 0xFFFFFFFFFFFFFFFF
SIGMA_RANGE = [("sigma_max", ("FLOAT", 14.614642, 0.0, 5000.0, 0.01)),
               ("sigma_min", ("FLOAT", 0.0291675, 0.0, 5000.0, 0.01))]
ETA_S_NOISE = [("eta", ("FLOAT", 1.0, 0.0, 100.0, 0.01)), ("s_noise", ("FLOAT", 1.0, 0.0, 100.0, 0.01))]
CUSTOM, SCHEDULERS, SIGMAS = "sampling/custom_sampling", "sampling/custom_sampling/schedulers", \
    "sampling/custom_sampling/sigmas"
SAMPLERS, GUIDERS = "sampling/custom_sampling/samplers", "sampling/custom_sampling/guiders"

# node: (category, RETURN_TYPES, RETURN_NAMES or None, the inputs in order: link type, combo choices,
# (BOOLEAN, default) or (INT/FLOAT, default, min, max, step or None))
COMFYUI_CONTRACTS: dict[str, tuple[str, tuple, tuple | None, list]] = {
    "SamplerCustom": (CUSTOM, ("LATENT", "LATENT"), ("output", "denoised_output"), [
        ("model", "MODEL"), ("add_noise", ("BOOLEAN", True)), ("noise_seed", ("INT", 0, 0, SEED_MAX, None)),
        ("cfg", ("FLOAT", 8.0, 0.0, 100.0, 0.1)), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
        ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"), ("latent_image", "LATENT")]),
    "SamplerCustomAdvanced": (CUSTOM, ("LATENT", "LATENT"), ("output", "denoised_output"), [
        ("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"),
        ("latent_image", "LATENT")]),
    "BasicScheduler": (SCHEDULERS, ("SIGMAS",), None, [
        ("model", "MODEL"),
        ("scheduler", ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                       "linear_quadratic", "kl_optimal"]),
        ("steps", ("INT", 20, 1, 10000, None)), ("denoise", ("FLOAT", 1.0, 0.0, 1.0, 0.01))]),
    "KarrasScheduler": (SCHEDULERS, ("SIGMAS",), None, [
        ("steps", ("INT", 20, 1, 10000, None)), *SIGMA_RANGE, ("rho", ("FLOAT", 7.0, 0.0, 100.0, 0.01))]),
    "ExponentialScheduler": (SCHEDULERS, ("SIGMAS",), None, [("steps", ("INT", 20, 1, 10000, None)), *SIGMA_RANGE]),
    "PolyexponentialScheduler": (SCHEDULERS, ("SIGMAS",), None, [
        ("steps", ("INT", 20, 1, 10000, None)), *SIGMA_RANGE, ("rho", ("FLOAT", 1.0, 0.0, 100.0, 0.01))]),
    "LaplaceScheduler": (SCHEDULERS, ("SIGMAS",), None, [
        ("steps", ("INT", 20, 1, 10000, None)), *SIGMA_RANGE, ("mu", ("FLOAT", 0.0, -10.0, 10.0, 0.1)),
        ("beta", ("FLOAT", 0.5, 0.0, 10.0, 0.1))]),
    "VPScheduler": (SCHEDULERS, ("SIGMAS",), None, [
        ("steps", ("INT", 20, 1, 10000, None)), ("beta_d", ("FLOAT", 19.9, 0.0, 5000.0, 0.01)),
        ("beta_min", ("FLOAT", 0.1, 0.0, 5000.0, 0.01)), ("eps_s", ("FLOAT", 0.001, 0.0, 1.0, 0.0001))]),
    "BetaSamplingScheduler": (SCHEDULERS, ("SIGMAS",), None, [
        ("model", "MODEL"), ("steps", ("INT", 20, 1, 10000, None)), ("alpha", ("FLOAT", 0.6, 0.0, 50.0, 0.01)),
        ("beta", ("FLOAT", 0.6, 0.0, 50.0, 0.01))]),
    "SDTurboScheduler": (SCHEDULERS, ("SIGMAS",), None, [
        ("model", "MODEL"), ("steps", ("INT", 1, 1, 10, None)), ("denoise", ("FLOAT", 1.0, 0, 1.0, 0.01))]),
    "AlignYourStepsScheduler": (SCHEDULERS, ("SIGMAS",), None, [
        ("model_type", ["SD1", "SDXL", "SVD"]), ("steps", ("INT", 10, 1, 10000, None)),
        ("denoise", ("FLOAT", 1.0, 0.0, 1.0, 0.01))]),
    "GITSScheduler": (SCHEDULERS, ("SIGMAS",), None, [
        ("coeff", ("FLOAT", 1.20, 0.80, 1.50, 0.05)), ("steps", ("INT", 10, 2, 1000, None)),
        ("denoise", ("FLOAT", 1.0, 0.0, 1.0, 0.01))]),
    "SplitSigmas": (SIGMAS, ("SIGMAS", "SIGMAS"), ("high_sigmas", "low_sigmas"), [
        ("sigmas", "SIGMAS"), ("step", ("INT", 0, 0, 10000, None))]),
    "SplitSigmasDenoise": (SIGMAS, ("SIGMAS", "SIGMAS"), ("high_sigmas", "low_sigmas"), [
        ("sigmas", "SIGMAS"), ("denoise", ("FLOAT", 1.0, 0.0, 1.0, 0.01))]),
    "FlipSigmas": (SIGMAS, ("SIGMAS",), None, [("sigmas", "SIGMAS")]),
    "SetFirstSigma": (SIGMAS, ("SIGMAS",), None, [
        ("sigmas", "SIGMAS"), ("sigma", ("FLOAT", 136.0, 0.0, 20000.0, 0.001))]),
    "ExtendIntermediateSigmas": (SIGMAS, ("SIGMAS",), None, [
        ("sigmas", "SIGMAS"), ("steps", ("INT", 2, 1, 100, None)),
        ("start_at_sigma", ("FLOAT", -1.0, -1.0, 20000.0, 0.01)), ("end_at_sigma", ("FLOAT", 12.0, 0.0, 20000.0, 0.01)),
        ("spacing", ["linear", "cosine", "sine"])]),
    "SamplingPercentToSigma": (SIGMAS, ("FLOAT",), ("sigma_value",), [
        ("model", "MODEL"), ("sampling_percent", ("FLOAT", 0.0, 0.0, 1.0, 0.0001)),
        ("return_actual_sigma", ("BOOLEAN", False))]),
    "KSamplerSelect": (SAMPLERS, ("SAMPLER",), None, [("sampler_name", list(samplers.SAMPLER_NAMES))]),
    "SamplerEulerAncestral": (SAMPLERS, ("SAMPLER",), None, ETA_S_NOISE),
    "SamplerEulerAncestralCFGPP": (SAMPLERS, ("SAMPLER",), None, [
        ("eta", ("FLOAT", 1.0, 0.0, 1.0, 0.01)), ("s_noise", ("FLOAT", 1.0, 0.0, 10.0, 0.01))]),
    "SamplerLMS": (SAMPLERS, ("SAMPLER",), None, [("order", ("INT", 4, 1, 100, None))]),
    "SamplerDPMPP_3M_SDE": (SAMPLERS, ("SAMPLER",), None, [*ETA_S_NOISE, ("noise_device", ["gpu", "cpu"])]),
    "SamplerDPMPP_2M_SDE": (SAMPLERS, ("SAMPLER",), None, [
        ("solver_type", ["midpoint", "heun"]), *ETA_S_NOISE, ("noise_device", ["gpu", "cpu"])]),
    "SamplerDPMPP_SDE": (SAMPLERS, ("SAMPLER",), None, [
        *ETA_S_NOISE, ("r", ("FLOAT", 0.5, 0.0, 100.0, 0.01)), ("noise_device", ["gpu", "cpu"])]),
    "SamplerDPMPP_2S_Ancestral": (SAMPLERS, ("SAMPLER",), None, ETA_S_NOISE),
    "SamplerDPMAdaptative": (SAMPLERS, ("SAMPLER",), None, [
        ("order", ("INT", 3, 2, 3, None)), ("rtol", ("FLOAT", 0.05, 0.0, 100.0, 0.01)),
        ("atol", ("FLOAT", 0.0078, 0.0, 100.0, 0.01)), ("h_init", ("FLOAT", 0.05, 0.0, 100.0, 0.01)),
        ("pcoeff", ("FLOAT", 0.0, 0.0, 100.0, 0.01)), ("icoeff", ("FLOAT", 1.0, 0.0, 100.0, 0.01)),
        ("dcoeff", ("FLOAT", 0.0, 0.0, 100.0, 0.01)), ("accept_safety", ("FLOAT", 0.81, 0.0, 100.0, 0.01)),
        ("eta", ("FLOAT", 0.0, 0.0, 100.0, 0.01)), ("s_noise", ("FLOAT", 1.0, 0.0, 100.0, 0.01))]),
    "SamplerER_SDE": (SAMPLERS, ("SAMPLER",), None, [
        ("solver_type", ["ER-SDE", "Reverse-time SDE", "ODE"]), ("max_stage", ("INT", 3, 1, 3, None)),
        *ETA_S_NOISE]),
    # use_pece and simple_order_2 have no default in ComfyUI: the widget starts unchecked
    "SamplerSASolver": (SAMPLERS, ("SAMPLER",), None, [
        ("model", "MODEL"), ("eta", ("FLOAT", 1.0, 0.0, 10.0, 0.01)),
        ("sde_start_percent", ("FLOAT", 0.2, 0.0, 1.0, 0.001)), ("sde_end_percent", ("FLOAT", 0.8, 0.0, 1.0, 0.001)),
        ("s_noise", ("FLOAT", 1.0, 0.0, 100.0, 0.01)), ("predictor_order", ("INT", 3, 1, 6, None)),
        ("corrector_order", ("INT", 4, 0, 6, None)), ("use_pece", ("BOOLEAN", False)),
        ("simple_order_2", ("BOOLEAN", False))]),
    "RandomNoise": ("sampling/custom_sampling/noise", ("NOISE",), None, [
        ("noise_seed", ("INT", 0, 0, SEED_MAX, None))]),
    "DisableNoise": ("sampling/custom_sampling/noise", ("NOISE",), None, []),
    "AddNoise": ("_for_testing/custom_sampling/noise", ("LATENT",), None, [
        ("model", "MODEL"), ("noise", "NOISE"), ("sigmas", "SIGMAS"), ("latent_image", "LATENT")]),
    "BasicGuider": (GUIDERS, ("GUIDER",), None, [("model", "MODEL"), ("conditioning", "CONDITIONING")]),
    "CFGGuider": (GUIDERS, ("GUIDER",), None, [
        ("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
        ("cfg", ("FLOAT", 8.0, 0.0, 100.0, 0.1))]),
    "DualCFGGuider": (GUIDERS, ("GUIDER",), None, [
        ("model", "MODEL"), ("cond1", "CONDITIONING"), ("cond2", "CONDITIONING"), ("negative", "CONDITIONING"),
        ("cfg_conds", ("FLOAT", 8.0, 0.0, 100.0, 0.1)), ("cfg_cond2_negative", ("FLOAT", 8.0, 0.0, 100.0, 0.1)),
        ("style", ["regular", "nested"])]),
    "PerpNegGuider": ("_for_testing", ("GUIDER",), None, [
        ("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
        ("empty_conditioning", "CONDITIONING"), ("cfg", ("FLOAT", 8.0, 0.0, 100.0, 0.1)),
        ("neg_scale", ("FLOAT", 1.0, 0.0, 100.0, 0.01))]),
    "ModelSamplingDiscrete": ("advanced/model", ("MODEL",), None, [
        ("model", "MODEL"), ("sampling", ["eps", "v_prediction", "lcm", "x0", "img_to_img"]),
        ("zsnr", ("BOOLEAN", False))]),
    "ModelSamplingAuraFlow": ("advanced/model", ("MODEL",), None, [
        ("model", "MODEL"), ("shift", ("FLOAT", 1.73, 0.0, 100.0, 0.01))]),
    "ModelSamplingFlux": ("advanced/model", ("MODEL",), None, [
        ("model", "MODEL"), ("max_shift", ("FLOAT", 1.15, 0.0, 100.0, 0.01)),
        ("base_shift", ("FLOAT", 0.5, 0.0, 100.0, 0.01)), ("width", ("INT", 1024, 16, 16384, 8)),
        ("height", ("INT", 1024, 16, 16384, 8))]),
    "ModelSamplingContinuousEDM": ("advanced/model", ("MODEL",), None, [
        ("model", "MODEL"), ("sampling", ["v_prediction", "edm", "edm_playground_v2.5", "eps", "cosmos_rflow"]),
        ("sigma_max", ("FLOAT", 120.0, 0.0, 1000.0, 0.001)), ("sigma_min", ("FLOAT", 0.002, 0.0, 1000.0, 0.001))]),
    "ModelSamplingContinuousV": ("advanced/model", ("MODEL",), None, [
        ("model", "MODEL"), ("sampling", ["v_prediction"]), ("sigma_max", ("FLOAT", 500.0, 0.0, 1000.0, 0.001)),
        ("sigma_min", ("FLOAT", 0.03, 0.0, 1000.0, 0.001))]),
    "RescaleCFG": ("advanced/model", ("MODEL",), None, [
        ("model", "MODEL"), ("multiplier", ("FLOAT", 0.7, 0.0, 1.0, 0.01))]),
    "CFGZeroStar": ("advanced/guidance", ("MODEL",), ("patched_model",), [("model", "MODEL")]),
}


def _contract(node_class: type) -> tuple[str, tuple, tuple | None, list]:
    inputs = []
    for name, (kind, options) in node_class.INPUT_TYPES()["required"].items():
        if isinstance(kind, list):
            inputs.append((name, kind))
        elif kind in ("INT", "FLOAT"):
            inputs.append((name, (kind, options["default"], options["min"], options["max"], options.get("step"))))
        elif kind == "BOOLEAN":
            inputs.append((name, (kind, options["default"])))
        else:
            inputs.append((name, kind))
    return node_class.CATEGORY, node_class.RETURN_TYPES, getattr(node_class, "RETURN_NAMES", None), inputs


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert _contract(node_class) == COMFYUI_CONTRACTS[name]
    assert node_class.DESCRIPTION and callable(getattr(node_class(), node_class.FUNCTION))
    assert all(options.get("tooltip") for _, options in node_class.INPUT_TYPES()["required"].values())
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == (
        "SamplerEulerAncestralCFG++" if name == "SamplerEulerAncestralCFGPP" else name)


def test_every_new_node_is_in_the_table():
    assert set(cs.NODE_CLASS_MAPPINGS) | set(mp.NODE_CLASS_MAPPINGS) == set(COMFYUI_CONTRACTS)


# -- a stand-in model: eps = input * (1 + m) / 2 + m, m the mean of the row's text embedding ------------------------


class _Network:
    device, dtype = torch.device("cpu"), torch.float32


class _StandInSampling(FamilySampling):
    lora_component, family_title = "unet", "stand-in"

    def __init__(self) -> None:
        self.calls: list[int] = []  # rows per network call

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


def _stand_in(**changes: Any) -> DiffusionModel:
    model = DiffusionModel(_Network(), {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
                           "stand-in", "sd1", _StandInSampling(), schedule_override=schedules.DiscreteModelSampling())
    return dataclasses.replace(model, **changes)


def _text(value: float, tokens: int = 3) -> list:
    return [[torch.full((1, tokens, 4), value), {}]]


X = torch.linspace(-1.0, 1.0, 2 * 4 * 2 * 2).reshape(2, 4, 2, 2)
SIGMA = torch.tensor([2.0, 2.0])


def _denoise(guider: Any) -> torch.Tensor:
    model = guider.model
    return guider.denoiser(model.network, X.shape[0], None, model.model_sampling)(X, SIGMA)


def _estimate(model: DiffusionModel, conditioning: list) -> torch.Tensor:
    return _denoise(guiders.basic_guider(model, conditioning))


@pytest.mark.parametrize("nested", [False, True])
def test_dual_cfg_combines_the_three_estimates_as_comfyui(nested):
    model = _stand_in()
    cond1, cond2, negative = _text(0.9), _text(0.4, tokens=6), _text(-0.3)
    c1, c2, neg = (_estimate(model, c) for c in (cond1, cond2, negative))
    model.sampling.calls.clear()
    guided = _denoise(guiders.DualCFGGuider(model, cond1, cond2, negative, 3.0, 5.0, nested=nested))
    expected = neg + 5.0 * ((c2 + (c1 - c2) * 3.0) - neg) if nested else (neg + (c2 - neg) * 5.0) + (c1 - c2) * 3.0
    assert torch.allclose(guided, expected, atol=1e-6)
    assert model.sampling.calls == [6]  # one network call for all three (token lengths 3 and 6 share one)


def test_dual_cfg_skips_the_negative_at_scale_1_and_cond2_too_when_both_are_1():
    model = _stand_in()
    cond1, cond2, negative = _text(0.9), _text(0.4), _text(-0.3)
    c1, c2 = _estimate(model, cond1), _estimate(model, cond2)
    model.sampling.calls.clear()
    guided = _denoise(guiders.DualCFGGuider(model, cond1, cond2, negative, 3.0, 1.0))
    assert model.sampling.calls == [4] and torch.allclose(guided, c2 + (c1 - c2) * 3.0, atol=1e-6)
    model.sampling.calls.clear()
    assert torch.allclose(_denoise(guiders.DualCFGGuider(model, cond1, cond2, negative, 1.0, 1.0)), c1)
    assert model.sampling.calls == [2]


def test_perp_neg_removes_the_negative_along_the_positive_direction():
    model = _stand_in()
    positive, negative, empty = _text(0.9), _text(-0.3), _text(0.1)
    pos, neg, nothing = (_estimate(model, c) for c in (positive, negative, empty))
    guided = _denoise(guiders.PerpNegGuider(model, positive, negative, empty, 4.0, 1.5))
    towards_positive, towards_negative = pos - nothing, neg - nothing
    perpendicular = towards_negative - (towards_negative * towards_positive).sum() / towards_positive.norm() ** 2 \
        * towards_positive
    assert torch.allclose(guided, nothing + 4.0 * (towards_positive - 1.5 * perpendicular), atol=1e-6)
    # the perpendicular part is orthogonal to the positive direction
    assert abs(float((perpendicular * towards_positive).sum())) < 1e-4


def test_perp_neg_skips_the_negative_at_neg_scale_0_and_the_empty_prompt_at_cfg_1():
    model = _stand_in()
    positive, negative, empty = _text(0.9), _text(-0.3), _text(0.1)
    pos, nothing = _estimate(model, positive), _estimate(model, empty)
    model.sampling.calls.clear()
    guided = _denoise(guiders.PerpNegGuider(model, positive, negative, empty, 4.0, 0.0))
    assert model.sampling.calls == [4] and torch.allclose(guided, nothing + 4.0 * (pos - nothing), atol=1e-6)
    model.sampling.calls.clear()
    assert torch.allclose(_denoise(guiders.PerpNegGuider(model, positive, negative, empty, 1.0, 0.0)), pos)
    assert model.sampling.calls == [2]


def test_guiders_name_an_empty_conditioning():
    with pytest.raises(ValueError, match="^cond2: empty"):
        guiders.DualCFGGuider(_stand_in(), _text(1.0), [], _text(0.0), 2.0, 2.0)
    with pytest.raises(ValueError, match="^empty_conditioning: empty"):
        guiders.PerpNegGuider(_stand_in(), _text(1.0), _text(0.0), [], 2.0, 1.0)


def test_guider_nodes_build_the_core_guiders():
    model, positive, negative = _stand_in(), _text(0.9), _text(-0.3)
    (cfg,) = cs.CFGGuider().get_guider(model, positive, negative, 6.5)
    assert isinstance(cfg, guiders.CFGGuider) and cfg.cfg == 6.5 and cfg.negative is negative
    (basic,) = cs.BasicGuider().get_guider(model, positive)
    assert basic.cfg == 1.0 and basic.positive is positive
    (dual,) = cs.DualCFGGuider().get_guider(model, positive, _text(0.4), negative, 2.0, 3.0, "nested")
    assert (dual.cfg_conds, dual.cfg_cond2_negative, dual.nested) == (2.0, 3.0, True)
    (perp,) = cs.PerpNegGuider().get_guider(model, positive, negative, _text(0.0), 7.0, 0.5)
    assert (perp.cfg, perp.neg_scale) == (7.0, 0.5)


# -- MODEL patches --------------------------------------------------------------------------------------------------


def test_model_sampling_patches_set_the_schedule_and_keep_the_rest():
    model = _stand_in(schedule_override=None, post_cfg=(mp.CfgZeroStar(),))
    (v_model,) = mp.ModelSamplingDiscrete().patch(model, "v_prediction", True)
    assert model.schedule_override is None  # the input model is unchanged
    assert v_model.post_cfg == model.post_cfg and v_model.network is model.network
    sampling = v_model.model_sampling
    assert isinstance(sampling, schedules.DiscreteModelSampling) and sampling.prediction is schedules.V_PREDICTION
    assert sampling.zsnr and sampling.schedule == schedules.BetaSchedule.from_scheduler_config(model.scheduler_config)
    (lcm,) = mp.ModelSamplingDiscrete().patch(model, "lcm", False)
    assert isinstance(lcm.model_sampling, schedules.DistilledDiscreteModelSampling)
    assert len(lcm.model_sampling.sigmas) == 50 and lcm.model_sampling.prediction is schedules.LCM

    (aura,) = mp.ModelSamplingAuraFlow().patch_aura(model, 1.73)
    assert isinstance(aura.model_sampling, schedules.DiscreteFlowModelSampling)
    assert (aura.model_sampling.shift, aura.model_sampling.multiplier) == (1.73, 1.0)
    (flux,) = mp.ModelSamplingFlux().patch(model, 1.15, 0.5, 1024, 1024)
    assert math.isclose(flux.model_sampling.mu, 1.15)
    (edm,) = mp.ModelSamplingContinuousEDM().patch(model, "edm", 80.0, 0.002)
    assert edm.model_sampling.prediction is schedules.EDM and edm.model_sampling.sigma_data == 0.5
    assert math.isclose(float(edm.model_sampling.sigma_max), 80.0, rel_tol=1e-5)
    (v,) = mp.ModelSamplingContinuousV().patch(model, "v_prediction", 500.0, 0.03)
    assert isinstance(v.model_sampling, schedules.ContinuousVModelSampling)


def test_rescale_cfg_replaces_the_cfg_function_and_comes_first():
    model = _stand_in()
    (patched,) = mp.CFGZeroStar().patch(model)
    (patched,) = mp.RescaleCFG().patch(patched, 0.5)
    (patched,) = mp.RescaleCFG().patch(patched, 0.7)
    assert patched.post_cfg == (mp.RescaledCfg(0.7), mp.CfgZeroStar())

    plain = _denoise(guiders.CFGGuider(model, _text(0.9), _text(-0.3), 5.0))
    no_rescale = _stand_in(post_cfg=(mp.RescaledCfg(0.0),))
    assert torch.allclose(_denoise(guiders.CFGGuider(no_rescale, _text(0.9), _text(-0.3), 5.0)), plain, atol=1e-5)
    rescaled = _stand_in(post_cfg=(mp.RescaledCfg(0.7),))
    assert not torch.allclose(_denoise(guiders.CFGGuider(rescaled, _text(0.9), _text(-0.3), 5.0)), plain)
    # Perp-Neg never calls the cfg function
    perp = [_text(0.9), _text(-0.3), _text(0.1), 4.0, 1.5]
    assert torch.equal(_denoise(guiders.PerpNegGuider(rescaled, *perp)), _denoise(guiders.PerpNegGuider(model, *perp)))


def test_cfg_zero_star_scales_the_unconditional_estimate():
    x = torch.randn(2, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    cond, uncond = x * 0.5, x * 0.2
    denoised = uncond + (cond - uncond) * 4.0
    out = mp.CfgZeroStar()({"input": x, "cond_denoised": cond, "uncond_denoised": uncond, "denoised": denoised,
                            "cond_scale": 4.0})
    alpha = 0.5 / 0.8  # (x - cond) = 0.5 x fitted to (x - uncond) = 0.8 x
    assert torch.allclose(out, alpha * uncond + 4.0 * (cond - alpha * uncond), atol=1e-6)


# -- schedulers, sigmas, samplers, noise ----------------------------------------------------------------------------


def test_scheduler_nodes_give_the_sigma_schedules():
    model = _stand_in()
    ms = model.model_sampling
    cases = [
        (cs.BasicScheduler().get_sigmas(model, "karras", 8, 0.5),
         sigma_schedules.basic_scheduler_sigmas(ms, "karras", 8, 0.5)),
        (cs.KarrasScheduler().get_sigmas(10, 14.6, 0.03, 7.0), sigma_schedules.karras_sigmas(10, 0.03, 14.6, 7.0)),
        (cs.ExponentialScheduler().get_sigmas(10, 14.6, 0.03), sigma_schedules.exponential_sigmas(10, 0.03, 14.6)),
        (cs.PolyexponentialScheduler().get_sigmas(10, 14.6, 0.03, 2.0),
         sigma_schedules.polyexponential_sigmas(10, 0.03, 14.6, 2.0)),
        (cs.LaplaceScheduler().get_sigmas(10, 14.6, 0.03, 0.5, 0.7),
         sigma_schedules.laplace_sigmas(10, 0.03, 14.6, 0.5, 0.7)),
        (cs.VPScheduler().get_sigmas(10, 19.9, 0.1, 0.001), sigma_schedules.vp_sigmas(10, 19.9, 0.1, 0.001)),
        (cs.BetaSamplingScheduler().get_sigmas(model, 10, 0.6, 0.6), sigma_schedules.beta_sigmas(ms, 10, 0.6, 0.6)),
        (cs.SDTurboScheduler().get_sigmas(model, 3, 0.8), sigma_schedules.sd_turbo_sigmas(ms, 3, 0.8)),
        (cs.AlignYourStepsScheduler().get_sigmas("SDXL", 15, 0.6),
         sigma_schedules.align_your_steps_sigmas("SDXL", 15, 0.6)),
        (cs.GITSScheduler().get_sigmas(1.2, 10, 1.0), sigma_schedules.gits_sigmas(1.2, 10, 1.0)),
    ]
    for (sigmas,), expected in cases:
        assert sigmas.dtype == torch.float32 and sigmas.ndim == 1 and torch.equal(sigmas, expected)
    assert len(cs.BasicScheduler().get_sigmas(model, "normal", 8, 0.0)[0]) == 0


def test_sigma_nodes_give_the_sigma_manipulations():
    model = _stand_in()
    sigmas = sigma_schedules.karras_sigmas(6, 0.03, 14.6)
    high, low = cs.SplitSigmas().get_sigmas(sigmas, 2)
    assert torch.equal(high, sigmas[:3]) and torch.equal(low, sigmas[2:])
    high, low = cs.SplitSigmasDenoise().get_sigmas(sigmas, 0.5)
    assert torch.equal(high, sigmas[:-3]) and torch.equal(low, sigmas[-4:])
    (flipped,) = cs.FlipSigmas().get_sigmas(sigmas)
    assert torch.equal(flipped, sigma_schedules.flip_sigmas(sigmas)) and float(flipped[0]) == pytest.approx(1e-4)
    (first,) = cs.SetFirstSigma().set_first_sigma(sigmas, 136.0)
    assert float(first[0]) == 136.0 and torch.equal(first[1:], sigmas[1:]) and float(sigmas[0]) != 136.0
    with pytest.raises(ValueError, match="^sigmas:"):
        cs.SetFirstSigma().set_first_sigma(sigmas[:0], 1.0)
    (extended,) = cs.ExtendIntermediateSigmas().extend(sigmas, 3, -1.0, 1.0, "cosine")
    assert torch.equal(extended, sigma_schedules.extend_intermediate_sigmas(sigmas, 3, -1.0, 1.0, "cosine"))
    assert cs.SamplingPercentToSigma().get_sigma(model, 0.0, False) == (schedules.BEFORE_FIRST_SIGMA,)
    assert cs.SamplingPercentToSigma().get_sigma(model, 0.0, True)[0] == pytest.approx(14.6146, rel=1e-4)
    assert cs.SamplingPercentToSigma().get_sigma(model, 0.3, False) == (model.model_sampling.percent_to_sigma(0.3),)


def _widget_defaults(node_class: type) -> dict[str, Any]:
    return {name: options["default"] for name, (kind, options) in node_class.INPUT_TYPES()["required"].items()
            if isinstance(kind, str) and "default" in options} | {
        name: kind[0] for name, (kind, _) in node_class.INPUT_TYPES()["required"].items() if isinstance(kind, list)}


SAMPLER_NODES = {"SamplerEulerAncestral": "euler_ancestral", "SamplerEulerAncestralCFGPP": "euler_ancestral_cfg_pp",
                 "SamplerLMS": "lms", "SamplerDPMPP_3M_SDE": "dpmpp_3m_sde_gpu",
                 "SamplerDPMPP_2M_SDE": "dpmpp_2m_sde_gpu", "SamplerDPMPP_SDE": "dpmpp_sde_gpu",
                 "SamplerDPMPP_2S_Ancestral": "dpmpp_2s_ancestral", "SamplerDPMAdaptative": "dpm_adaptive",
                 "SamplerER_SDE": "er_sde", "SamplerSASolver": "sa_solver"}


@pytest.mark.parametrize("name", sorted(SAMPLER_NODES))
def test_sampler_nodes_choose_a_registered_sampler_with_its_default_options(name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    widgets = _widget_defaults(node_class)
    if "model" in node_class.INPUT_TYPES()["required"]:
        widgets["model"] = _stand_in()
    (choice,) = getattr(node_class(), node_class.FUNCTION)(**widgets)
    assert isinstance(choice, SamplerChoice) and choice.name == SAMPLER_NODES[name]
    # every option is one the sampler takes, at ComfyUI's default (which the registry shares)
    assert samplers.sampler_spec(choice.name).settings(choice.options) == samplers.option_defaults(choice.name)


def test_noise_device_cpu_chooses_the_cpu_tree_samplers():
    (choice,) = cs.SamplerDPMPP_2M_SDE().get_sampler("heun", 0.5, 1.0, "cpu")
    assert choice == SamplerChoice("dpmpp_2m_sde", {"eta": 0.5, "s_noise": 1.0, "solver_type": "heun"})
    assert cs.KSamplerSelect().get_sampler("dpmpp_2m") == (SamplerChoice("dpmpp_2m"),)


def test_add_noise_noises_the_latents_by_the_span_of_the_sigmas():
    model = _stand_in()
    latent = {"samples": torch.ones(1, 4, 2, 2), "batch_index": [0]}
    (noise,) = cs.RandomNoise().get_noise(7)
    (noisy,) = cs.AddNoise().add_noise(model, noise, torch.tensor([10.0, 4.0, 1.0]), latent)
    assert torch.allclose(noisy["samples"], 1.0 + 9.0 * noise.generate(latent)) and noisy["batch_index"] == [0]
    assert cs.AddNoise().add_noise(model, noise, torch.zeros(0), latent) == (latent,)
    (none,) = cs.DisableNoise().get_noise()
    assert torch.equal(none.generate(latent), torch.zeros(1, 4, 2, 2))


# -- validation -------------------------------------------------------------------------------------------------------


def _refusal(class_type: str, inputs: dict[str, Any]) -> list[tuple[str, str]]:
    errors = validation_errors({"1": {"class_type": class_type, "inputs": inputs}})
    return [(error["extra_info"].get("input_name"), error["details"]) for error in errors.get("1", [])]


def test_impossible_constants_are_refused_naming_the_input(node_env):
    assert _refusal("GITSScheduler", {"coeff": 0.83, "steps": 10, "denoise": 1.0})[0][0] == "coeff"
    assert _refusal("GITSScheduler", {"coeff": 0.85, "steps": 10, "denoise": 1.0}) == []
    assert _refusal("KarrasScheduler", {"steps": 10, "sigma_max": 14.6, "sigma_min": 0.03, "rho": 0.0})[0][0] == "rho"
    assert _refusal("ExponentialScheduler", {"steps": 10, "sigma_max": 14.6, "sigma_min": 0.0})[0][0] == "sigma_min"
    assert _refusal("ExponentialScheduler", {"steps": 0, "sigma_max": 14.6, "sigma_min": 0.1})[0][0] == "steps"
    model = ["2", 0]
    loader = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd1.safetensors"}}

    def refusal_with_model(class_type: str, inputs: dict[str, Any]) -> list[tuple[str, str]]:
        errors = validation_errors({"1": {"class_type": class_type, "inputs": {"model": model, **inputs}},
                                    "2": loader})
        return [(error["extra_info"].get("input_name"), error["details"]) for error in errors.get("1", [])]

    (problem,) = refusal_with_model("ModelSamplingContinuousEDM",
                                    {"sampling": "cosmos_rflow", "sigma_max": 80.0, "sigma_min": 0.002})
    assert problem[0] == "sampling" and "cosmos_rflow" in problem[1]
    (problem,) = refusal_with_model("ModelSamplingContinuousV",
                                    {"sampling": "v_prediction", "sigma_max": 1.0, "sigma_min": 2.0})
    assert problem[0] == "sigma_min"
    assert refusal_with_model("ModelSamplingContinuousEDM",
                              {"sampling": "edm", "sigma_max": 80.0, "sigma_min": 0.002}) == []
    assert refusal_with_model("ModelSamplingAuraFlow", {"shift": 0.0})[0][0] == "shift"
    assert refusal_with_model("SamplerDPMPP_2M_SDE", {"solver_type": "euler", "eta": 1.0, "s_noise": 1.0,
                                                      "noise_device": "cpu"})[0][0] == "solver_type"


def test_linked_impossible_values_fail_naming_the_input():
    with pytest.raises(ValueError, match="^rho:"):
        cs.KarrasScheduler().get_sigmas(10, 14.6, 0.03, 0.0)
    with pytest.raises(ValueError, match="^sampling:"):
        mp.ModelSamplingContinuousEDM().patch(_stand_in(), "edm_playground_v2.5", 80.0, 0.002)


# -- end to end on the tiny SD1 model ------------------------------------------------------------------------------


def _advanced(model, positive, negative, seed, sigmas, latent, sampler="euler"):
    (noise,) = cs.RandomNoise().get_noise(seed)
    (guider,) = cs.CFGGuider().get_guider(model, positive, negative, 5.0)
    (choice,) = cs.KSamplerSelect().get_sampler(sampler)
    return cs.SamplerCustomAdvanced().sample(noise, guider, choice, sigmas, latent)


def test_sampler_custom_advanced_samples_the_tiny_sd1_model(sd1):
    model, clip, _ = sd1
    positive = CLIPTextEncode().encode(clip, "a red cube")[0]
    negative = CLIPTextEncode().encode(clip, "blurry")[0]
    (latent,) = EmptyLatentImage().generate(64, 64, 1)
    (sigmas,) = cs.BasicScheduler().get_sigmas(model, "normal", 3, 1.0)
    output, denoised = _advanced(model, positive, negative, 11, sigmas, latent)
    samples = output["samples"]
    assert samples.shape == (1, 4, 8, 8) and samples.dtype == torch.float32 and torch.isfinite(samples).all()
    # Euler's last step to sigma 0 lands on that step's denoised estimate
    assert torch.allclose(denoised["samples"], samples, atol=1e-4)
    again, _ = _advanced(model, positive, negative, 11, sigmas, latent)
    other, _ = _advanced(model, positive, negative, 12, sigmas, latent)
    assert torch.equal(again["samples"], samples) and not torch.allclose(other["samples"], samples)
    custom, _ = cs.SamplerCustom().sample(model, True, 11, 5.0, positive, negative, SamplerChoice("euler"), sigmas,
                                          latent)
    assert torch.equal(custom["samples"], samples)

    # one Euler step, stopping with noise left: the denoised output is the estimate that step moved towards
    high, _ = cs.SplitSigmas().get_sigmas(sigmas, 1)
    noisy, estimate = _advanced(model, positive, negative, 11, high, latent)
    start = model.model_sampling.noise_scaling(high[0], cs.RandomNoise().get_noise(11)[0].generate(latent),
                                               latent["samples"], True)
    to_model = model.latent_format.process_in  # the step runs in model space; LATENT holds raw latents
    moved_towards = start + (to_model(noisy["samples"]) - start) * high[0] / (high[0] - high[1])
    assert torch.allclose(to_model(estimate["samples"]), moved_towards, atol=1e-3)
    assert not torch.allclose(estimate["samples"], noisy["samples"], atol=0.1)


@pytest.mark.parametrize("guider", ["DualCFGGuider", "PerpNegGuider"])
def test_dual_cfg_and_perp_neg_guiders_sample_the_tiny_sd1_model(sd1, guider):
    model, clip, _ = sd1
    texts = [CLIPTextEncode().encode(clip, text)[0] for text in ("a red cube", "a cube", "blurry")]
    if guider == "DualCFGGuider":
        (built,) = cs.DualCFGGuider().get_guider(model, *texts, 4.0, 3.0, "regular")
    else:
        (built,) = cs.PerpNegGuider().get_guider(model, texts[0], texts[2], CLIPTextEncode().encode(clip, "")[0],
                                                 4.0, 1.0)
    (latent,) = EmptyLatentImage().generate(64, 64, 1)
    (sigmas,) = cs.BasicScheduler().get_sigmas(model, "karras", 2, 1.0)
    output, _ = cs.SamplerCustomAdvanced().sample(cs.RandomNoise().get_noise(3)[0], built, SamplerChoice("euler"),
                                                  sigmas, latent)
    assert output["samples"].shape == (1, 4, 8, 8) and torch.isfinite(output["samples"]).all()
