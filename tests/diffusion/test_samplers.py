"""The ComfyUI samplers (`diffusion.sampling.samplers`) on a problem with a closed-form answer: data ~ N(MU, STD^2)
per element, whose exact denoiser is known both for diffusion models (x = x0 + sigma * noise) and for rectified
flow (x = (1 - sigma) * x0 + sigma * noise), and whose probability-flow ODE maps the starting noise affinely to the
data. Deterministic samplers must land on that map, stochastic ones on the data distribution, reproducibly per
seed; CFG++ samplers must step with the unguided estimate; every sampler reports its steps as ComfyUI counts
them."""
import math

import pytest
import torch

from diffusion.sampling.samplers import (
    SAMPLER_NAMES,
    option_defaults,
    sample,
    sample_from_noise,
    sampler_spec,
)
from diffusion.sampling.samplers.dpm_solver import fast_step_orders
from diffusion.sampling.samplers.uni_pc import FINAL_SIGMA

pytestmark = pytest.mark.filterwarnings("ignore:Should have tb<=t1:UserWarning")  # torchsde rounds its ends

MU, STD = 0.5, 0.7
SIGMA_MIN, SIGMA_MAX = 0.0292, 14.6146  # SD1's sigma range
FLOW_SHIFT = 3.0

COMFYUI_SAMPLER_NAMES = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)

# deterministic as ComfyUI runs them, and the stochastic ones made deterministic by their options
DETERMINISTIC = {
    **{name: {} for name in (
        "euler", "euler_cfg_pp", "heun", "heunpp2", "dpm_2", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2m",
        "dpmpp_2m_cfg_pp", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp",
        "gradient_estimation", "gradient_estimation_cfg_pp", "ddim", "uni_pc", "uni_pc_bh2")},
    **{name: {"eta": 0.0} for name in (
        "euler_ancestral", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_sde_gpu",
        "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_3m_sde", "res_multistep_ancestral",
        "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece")},
    "er_sde": {"solver_type": "ODE"},
}
STOCHASTIC = (
    "euler_ancestral", "euler_ancestral_cfg_pp", "dpm_2_ancestral", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm",
    "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver",
    "sa_solver_pece",
)
# first-order methods (and the loosely tolerant adaptive one) land less close in 30 steps
FIRST_ORDER = {"euler", "euler_cfg_pp", "ddim", "euler_ancestral", "euler_ancestral_cfg_pp", "heunpp2",
               "gradient_estimation", "gradient_estimation_cfg_pp", "dpm_adaptive"}
# they stop at the smallest non-zero sigma (ComfyUI does not step to 0 with them)
STOP_ABOVE_ZERO = {"dpm_fast", "dpm_adaptive"}


def _flow_shift(t):
    return FLOW_SHIFT * t / (1 + (FLOW_SHIFT - 1) * t)


def _per_row(sigma, like):
    return sigma.reshape(-1, *[1] * (like.ndim - 1)) if sigma.ndim else sigma


class DiffusionSchedule:
    """The parts of a ComfyUI EPS model sampling the samplers use (x = x0 + sigma * noise)."""

    sigma_min, sigma_max = torch.tensor(SIGMA_MIN), torch.tensor(SIGMA_MAX)
    is_flow_matching = False

    def percent_to_sigma(self, percent):
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return math.exp(math.log(SIGMA_MIN) + (math.log(SIGMA_MAX) - math.log(SIGMA_MIN)) * (1.0 - percent))

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        sigma = _per_row(sigma, noise)
        return noise * (torch.sqrt(1.0 + sigma ** 2) if max_denoise else sigma) + latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent

    def exact_denoised(self, x, sigma):
        return MU + STD ** 2 / (STD ** 2 + sigma ** 2) * (x - MU)

    def ode_solution(self, x_start, sigma_start, sigma_end):
        """Where the probability-flow ODE carries x_start at sigma_start to at sigma_end."""
        return MU + math.sqrt(STD ** 2 + sigma_end ** 2) / math.sqrt(STD ** 2 + sigma_start ** 2) * (x_start - MU)

    def sigmas(self, steps):
        """Karras et al.'s schedule, ending at 0."""
        ramp = torch.linspace(0, 1, steps)
        rho = 7.0
        sigmas = (SIGMA_MAX ** (1 / rho) + ramp * (SIGMA_MIN ** (1 / rho) - SIGMA_MAX ** (1 / rho))) ** rho
        return torch.cat([sigmas, sigmas.new_zeros(1)])

    def start(self, noise, sigma):
        return MU + math.sqrt(STD ** 2 + float(sigma) ** 2) * noise


class FlowSchedule:
    """The parts of a ComfyUI CONST (rectified flow) model sampling, shifted as SD3's."""

    sigma_min, sigma_max = torch.tensor(_flow_shift(1 / 1000)), torch.tensor(1.0)
    is_flow_matching = True

    def percent_to_sigma(self, percent):
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return _flow_shift(1.0 - percent)

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        sigma = _per_row(sigma, noise)
        return sigma * noise + (1.0 - sigma) * latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent / (1.0 - _per_row(sigma, latent))

    def exact_denoised(self, x, sigma):
        alpha = 1 - sigma
        return MU + alpha * STD ** 2 / (alpha ** 2 * STD ** 2 + sigma ** 2) * (x - alpha * MU)

    def ode_solution(self, x_start, sigma_start, sigma_end):
        def spread(sigma):
            return math.sqrt((1 - sigma) ** 2 * STD ** 2 + sigma ** 2)
        return (1 - sigma_end) * MU + spread(sigma_end) / spread(sigma_start) * (x_start - (1 - sigma_start) * MU)

    def sigmas(self, steps):
        return _flow_shift(torch.linspace(1, 0, steps + 1))

    def start(self, noise, sigma):
        return noise  # sigma 1: pure noise


class GaussianDenoiser:
    """The exact denoiser; its negative estimate is the same shifted by `negative_offset` (None: no negative)."""

    def __init__(self, model_sampling, negative_offset=0.0):
        self.model_sampling = model_sampling
        self.negative_offset = negative_offset
        self.uncond_denoised = None
        self.calls = 0

    def __call__(self, x, sigma):
        self.calls += 1
        denoised = self.model_sampling.exact_denoised(x, sigma.reshape(-1, 1, 1, 1))
        self.uncond_denoised = None if self.negative_offset is None else denoised + self.negative_offset
        return denoised


def _noise(seed=0, shape=(1, 4, 32, 32)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_every_comfyui_sampler_name_is_registered_in_comfyui_order():
    assert SAMPLER_NAMES == COMFYUI_SAMPLER_NAMES
    assert set(DETERMINISTIC) | set(STOCHASTIC) >= set(SAMPLER_NAMES)


@pytest.mark.parametrize("schedule", [DiffusionSchedule(), FlowSchedule()], ids=["diffusion", "flow"])
@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_samplers_solve_the_probability_flow_ode(name, schedule):
    sigmas = schedule.sigmas(30)
    x_start = schedule.start(_noise(), sigmas[0])
    result = sample(name, GaussianDenoiser(schedule), x_start, sigmas, seed=1, **DETERMINISTIC[name])
    sigma_end = float(sigmas[-2]) if name in STOP_ABOVE_ZERO else 0.0
    expected = schedule.ode_solution(x_start, float(sigmas[0]), sigma_end)
    flow_slack = 1.5 if isinstance(schedule, FlowSchedule) else 1.0  # diffusion-time solvers on flow paths
    tolerance = (0.2 if name in FIRST_ORDER else 0.05) * flow_slack
    assert (result - expected).abs().max() < tolerance


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_are_reproducible_per_seed_and_differ_across_seeds(name):
    schedule = DiffusionSchedule()
    sigmas = schedule.sigmas(8)
    x_start = schedule.start(_noise(shape=(2, 4, 8, 8)), sigmas[0])
    first = sample(name, GaussianDenoiser(schedule), x_start, sigmas, seed=5)
    again = sample(name, GaussianDenoiser(schedule), x_start, sigmas, seed=5)
    other = sample(name, GaussianDenoiser(schedule), x_start, sigmas, seed=6)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other, atol=1e-3)


# lcm needs a consistency model; dpmpp_2s_ancestral_cfg_pp steps with the midpoint's negative and the first
# estimate (as ComfyUI does), which shrinks the result even when both estimates agree
@pytest.mark.parametrize("name", [name for name in STOCHASTIC if name not in ("lcm", "dpmpp_2s_ancestral_cfg_pp")])
def test_stochastic_samplers_end_on_the_data_distribution(name):
    schedule = DiffusionSchedule()
    sigmas = schedule.sigmas(50)
    result = sample(name, GaussianDenoiser(schedule), schedule.start(_noise(), sigmas[0]), sigmas, seed=3)
    assert abs(result.mean().item() - MU) < 0.05
    assert abs(result.std().item() / STD - 1) < 0.1


CFG_PP_PAIRS = [("euler_cfg_pp", "euler"), ("euler_ancestral_cfg_pp", "euler_ancestral"),
                ("dpmpp_2m_cfg_pp", "dpmpp_2m"), ("res_multistep_cfg_pp", "res_multistep"),
                ("res_multistep_ancestral_cfg_pp", "res_multistep_ancestral"),
                ("gradient_estimation_cfg_pp", "gradient_estimation")]


@pytest.mark.parametrize("cfg_pp, plain", CFG_PP_PAIRS)
def test_cfg_pp_samplers_take_the_plain_steps_when_the_negative_equals_the_guided_estimate(cfg_pp, plain):
    schedule = DiffusionSchedule()
    sigmas = schedule.sigmas(10)
    x_start = schedule.start(_noise(shape=(1, 4, 8, 8)), sigmas[0])
    with_negative = sample(cfg_pp, GaussianDenoiser(schedule), x_start, sigmas, seed=2)
    assert torch.allclose(with_negative, sample(plain, GaussianDenoiser(schedule), x_start, sigmas, seed=2),
                          atol=1e-4)


@pytest.mark.parametrize("name", [name for name in SAMPLER_NAMES if sampler_spec(name).uses_unguided])
def test_cfg_pp_samplers_step_with_the_unguided_estimate(name):
    schedule = DiffusionSchedule()
    sigmas = schedule.sigmas(6)
    x_start = schedule.start(_noise(shape=(1, 4, 8, 8)), sigmas[0])
    results = [sample(name, GaussianDenoiser(schedule, offset), x_start, sigmas, seed=2) for offset in (0.0, 0.3)]
    assert not torch.allclose(results[0], results[1], atol=1e-3)
    plain = [sample("euler", GaussianDenoiser(schedule, offset), x_start, sigmas, seed=2) for offset in (0.0, 0.3)]
    assert torch.equal(plain[0], plain[1])


def test_euler_cfg_pp_steps_from_the_guided_estimate_along_the_unguided_noise():
    schedule = DiffusionSchedule()
    sigmas = torch.tensor([2.0, 0.5, 0.0])
    x_start = schedule.start(_noise(shape=(1, 4, 8, 8)), sigmas[0])
    reports = []
    sample("euler_cfg_pp", GaussianDenoiser(schedule, 0.3), x_start, sigmas, seed=0,
           callback=lambda i, x, denoised: reports.append((x, denoised)))
    (x_1, denoised), _ = reports
    assert torch.allclose(x_1, denoised + 0.5 * (x_start - (denoised + 0.3)) / 2.0, atol=1e-5)


def test_without_a_negative_cfg_pp_steps_with_zeros_as_comfyui_guidance_gives():
    schedule = DiffusionSchedule()
    sigmas = torch.tensor([2.0, 0.5, 0.0])
    x_start = schedule.start(_noise(shape=(1, 4, 8, 8)), sigmas[0])
    reports = []
    sample("euler_cfg_pp", GaussianDenoiser(schedule, None), x_start, sigmas, seed=0,
           callback=lambda i, x, denoised: reports.append((x, denoised)))
    (x_1, denoised), _ = reports
    assert torch.allclose(x_1, denoised + 0.5 * x_start / 2.0, atol=1e-5)


def _expected_reports(name, steps):
    if name == "dpm_fast":
        return len(fast_step_orders(steps))
    return steps


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_each_step_is_reported_once_with_the_latents_after_it(name):
    schedule = DiffusionSchedule()
    sigmas = schedule.sigmas(6)
    reports = []
    result = sample(name, GaussianDenoiser(schedule), schedule.start(_noise(shape=(1, 4, 8, 8)), sigmas[0]),
                    sigmas, seed=4, callback=lambda i, x, denoised: reports.append((i, x, denoised)))
    if name == "dpm_adaptive":  # one report per step tried, accepted or not
        assert len(reports) >= 1
    else:
        assert len(reports) == _expected_reports(name, 6)
    assert [index for index, _, _ in reports] == list(range(len(reports)))
    assert torch.equal(reports[-1][1], result)
    assert all(denoised.shape == result.shape for _, _, denoised in reports)


def test_dpm_fast_spends_one_evaluation_per_step_of_the_schedule():
    schedule = DiffusionSchedule()
    denoiser = GaussianDenoiser(schedule)
    sigmas = schedule.sigmas(7)
    sample("dpm_fast", denoiser, schedule.start(_noise(shape=(1, 4, 8, 8)), sigmas[0]), sigmas, seed=0)
    assert fast_step_orders(7) == [3, 3, 1] and denoiser.calls == 7


def test_options_have_comfyuis_node_defaults_and_unknown_ones_are_refused():
    assert option_defaults("euler_ancestral") == {"eta": 1.0, "s_noise": 1.0}
    assert option_defaults("lms") == {"order": 4}
    assert option_defaults("dpmpp_2m_sde") == {"eta": 1.0, "s_noise": 1.0, "solver_type": "midpoint"}
    assert option_defaults("dpmpp_2m_sde_heun")["solver_type"] == "heun"
    assert option_defaults("dpmpp_sde") == {"eta": 1.0, "s_noise": 1.0, "r": 0.5}
    assert option_defaults("dpm_adaptive") == {
        "order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05, "pcoeff": 0.0, "icoeff": 1.0, "dcoeff": 0.0,
        "accept_safety": 0.81, "eta": 0.0, "s_noise": 1.0}
    assert option_defaults("er_sde") == {"solver_type": "ER-SDE", "max_stage": 3, "eta": 1.0, "s_noise": 1.0}
    assert option_defaults("sa_solver") == {
        "eta": 1.0, "sde_start_percent": 0.2, "sde_end_percent": 0.8, "s_noise": 1.0, "predictor_order": 3,
        "corrector_order": 4, "use_pece": False, "simple_order_2": False}
    assert option_defaults("euler") == {}
    schedule = DiffusionSchedule()
    with pytest.raises(ValueError, match="unknown sampler options"):
        sample("euler", GaussianDenoiser(schedule), _noise(), schedule.sigmas(3), seed=0, eta=0.5)
    with pytest.raises(ValueError, match="unknown sampler"):
        sample("plms", GaussianDenoiser(schedule), _noise(), schedule.sigmas(3), seed=0)


def test_ksampler_schedule_facts_of_the_names():
    assert {name for name in SAMPLER_NAMES if sampler_spec(name).discards_penultimate_sigma} == {
        "dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}
    assert [name for name in SAMPLER_NAMES if sampler_spec(name).random_inpaint_noise] == ["ddim"]


def test_ddim_is_euler():
    schedule = DiffusionSchedule()
    sigmas = schedule.sigmas(5)
    x_start = schedule.start(_noise(shape=(1, 4, 8, 8)), sigmas[0])
    assert torch.equal(sample("ddim", GaussianDenoiser(schedule), x_start, sigmas, seed=0),
                       sample("euler", GaussianDenoiser(schedule), x_start, sigmas, seed=0))


def test_sample_from_noise_scales_pure_noise_to_the_variance_preserving_start():
    schedule = DiffusionSchedule()
    noise, latent = _noise(shape=(1, 4, 8, 8)), torch.zeros(1, 4, 8, 8)
    first_inputs = []

    class Recording(GaussianDenoiser):
        def __call__(self, x, sigma):
            first_inputs.append(x)
            return super().__call__(x, sigma)

    sigmas = torch.tensor([SIGMA_MAX, 1.0, 0.0])
    sample_from_noise("euler", Recording(schedule), noise, latent, sigmas, seed=0)
    assert torch.allclose(first_inputs[0], noise * math.sqrt(1 + SIGMA_MAX ** 2))
    first_inputs.clear()
    sample_from_noise("euler", Recording(schedule), noise, latent, torch.tensor([5.0, 1.0, 0.0]), seed=0)
    assert torch.allclose(first_inputs[0], noise * 5.0)


def test_sample_from_noise_undoes_flow_scaling_where_uni_pc_stops():
    schedule = FlowSchedule()
    sigmas = schedule.sigmas(6)
    noise, latent = _noise(shape=(1, 4, 8, 8)), torch.zeros(1, 4, 8, 8)
    raw = sample("uni_pc", GaussianDenoiser(schedule), noise.clone(), sigmas, seed=0)
    result = sample_from_noise("uni_pc", GaussianDenoiser(schedule), noise, latent, sigmas, seed=0)
    assert torch.equal(result, raw / (1.0 - torch.tensor(FINAL_SIGMA)))
    assert torch.equal(sample_from_noise("euler", GaussianDenoiser(schedule), noise, latent, sigmas, seed=0),
                       sample("euler", GaussianDenoiser(schedule), noise.clone(), sigmas, seed=0))


def test_no_sigmas_leave_the_latents_alone():
    latent = torch.ones(1, 4, 8, 8)
    assert sample_from_noise("euler", GaussianDenoiser(DiffusionSchedule()), _noise(shape=(1, 4, 8, 8)), latent,
                             torch.tensor([]), seed=0) is latent
