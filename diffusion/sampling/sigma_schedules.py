"""Sigma schedules: the noise levels a sampler steps through, as ComfyUI computes them.

- `calculate_sigmas(model_sampling, scheduler_name, steps)`: the nine schedulers of ComfyUI's KSampler by name
  (`SCHEDULER_NAMES`, in ComfyUI's order), each ending in 0; `basic_scheduler_sigmas` and `ksampler_sigmas` add
  the `denoise` handling of the BasicScheduler node and of KSampler.
- the schedules behind ComfyUI's custom-sampling scheduler nodes, with their parameters (Karras, exponential,
  polyexponential, VP, Laplace, beta, SD-Turbo, Align Your Steps, GITS, OptimalSteps);
- the sigma manipulations of its sigma nodes (split, flip, set first, extend, percent to sigma).

Every function is plain: tensors and a `ModelSampling` in, a float32 CPU tensor (or Python float) out, with
ComfyUI's numbers (its float32/float64 steps and element-by-element evaluation kept where they change the last
bits). Knows nothing of nodes, networks, families or files.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable

import numpy as np
import torch

from diffusion.sampling.model_sampling import ModelSampling

Schedule = Callable[[ModelSampling, int], torch.Tensor]
# ComfyUI's KSampler schedules these samplers one step more and drops the last sigma before 0, so that they end
# with one larger step to 0 instead of a tiny last one
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})
NEAR_ZERO = 0.00001  # a sigma this small is zero: the table already ends without noise


def _sigmas(values: list[float] | np.ndarray) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _no_sigmas() -> torch.Tensor:
    return torch.zeros(0, dtype=torch.float32)


# -- the KSampler schedulers --------------------------------------------------------------------------------------


def simple_sigmas(model_sampling: ModelSampling, steps: int) -> torch.Tensor:
    """Evenly spaced entries of the model's sigma table, from the top."""
    table = model_sampling.sigmas
    stride = len(table) / steps
    return _sigmas([float(table[-(1 + int(step * stride))]) for step in range(steps)] + [0.0])


def ddim_uniform_sigmas(model_sampling: ModelSampling, steps: int) -> torch.Tensor:
    """Every (table length // steps)-th entry of the sigma table counted from its second, as DDIM spaces
    timesteps, ending in 0 (or on the table's own zero, with one step more)."""
    table = model_sampling.sigmas
    if math.isclose(float(table[1]), 0, abs_tol=NEAR_ZERO):
        steps += 1
        values = []
    else:
        values = [0.0]
    stride = max(len(table) // steps, 1)
    values += [float(table[index]) for index in range(1, len(table), stride)]
    return _sigmas(values[::-1])


def normal_sigmas(model_sampling: ModelSampling, steps: int) -> torch.Tensor:
    """`steps` timesteps evenly spaced from the model's first to its last, both included, then 0 (unless the
    last one is already noise-free, which then takes one step more)."""
    start = model_sampling.timestep(model_sampling.sigma_max)
    end = model_sampling.timestep(model_sampling.sigma_min)
    ends_noise_free = math.isclose(float(model_sampling.sigma(end)), 0, abs_tol=NEAR_ZERO)
    timesteps = torch.linspace(start, end, steps + 1 if ends_noise_free else steps)
    values = _sigmas_at(model_sampling, timesteps)
    return _sigmas(values if ends_noise_free else values + [0.0])


def sgm_uniform_sigmas(model_sampling: ModelSampling, steps: int) -> torch.Tensor:
    """`steps` timesteps evenly spaced from the model's first towards its last, which is left out (the "trailing"
    spacing of SGM / SD-Turbo / Lightning models), then 0."""
    start = model_sampling.timestep(model_sampling.sigma_max)
    end = model_sampling.timestep(model_sampling.sigma_min)
    timesteps = torch.linspace(start, end, steps + 1)[:-1]
    return _sigmas(_sigmas_at(model_sampling, timesteps) + [0.0])


def _sigmas_at(model_sampling: ModelSampling, timesteps: torch.Tensor) -> list[float]:
    # one timestep at a time, as ComfyUI does: vectorized exp/log may differ in the last bit
    return [float(model_sampling.sigma(timestep)) for timestep in timesteps]


def beta_sigmas(model_sampling: ModelSampling, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Table entries at the quantiles of a Beta(alpha, beta) distribution (Lee et al. 2024, "Beta Sampling is All
    You Need"): with the defaults, more steps at both ends. Steps landing on the same entry count once."""
    from scipy import stats

    last_index = len(model_sampling.sigmas) - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    indices = np.rint(stats.beta.ppf(quantiles, alpha, beta) * last_index)
    values = []
    previous = -1
    for index in indices:
        if index != previous:
            values.append(float(model_sampling.sigmas[int(index)]))
        previous = index
    return _sigmas(values + [0.0])


def linear_quadratic_sigmas(model_sampling: ModelSampling, steps: int, threshold_noise: float = 0.025,
                            linear_steps: int | None = None) -> torch.Tensor:
    """Mochi's schedule: the first half of the steps (`linear_steps`) lowers the noise linearly by only
    `threshold_noise`, the rest quadratically to 0; in fractions of `sigma_max` (meant for flow models)."""
    if steps == 1:
        fractions = [1.0, 0.0]
    else:
        if linear_steps is None:
            linear_steps = steps // 2
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        step_difference = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quadratic_coef = step_difference / (linear_steps * quadratic_steps ** 2)
        linear_coef = threshold_noise / linear_steps - 2 * step_difference / (quadratic_steps ** 2)
        constant = quadratic_coef * (linear_steps ** 2)
        quadratic = [quadratic_coef * (i ** 2) + linear_coef * i + constant for i in range(linear_steps, steps)]
        fractions = [1.0 - done for done in linear + quadratic + [1.0]]
    return _sigmas(fractions) * model_sampling.sigma_max.cpu()


# -- schedules over a sigma range -----------------------------------------------------------------------------------


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022): evenly spaced in sigma^(1/rho), then 0."""
    ramp = torch.linspace(0, 1, steps)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential_sigmas(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Evenly spaced in log sigma, then 0."""
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())


def polyexponential_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """Log sigma following a ramp raised to `rho` (1: exponential; larger: more steps at low noise), then 0."""
    ramp = torch.linspace(1, 0, steps) ** rho
    return _append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def vp_sigmas(steps: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> torch.Tensor:
    """The continuous variance-preserving schedule (Song et al.) at times evenly spaced from 1 to `eps_s`,
    then 0."""
    t = torch.linspace(1, eps_s, steps)
    return _append_zero(torch.sqrt(torch.special.expm1(beta_d * t ** 2 / 2 + beta_min * t)))


def laplace_sigmas(steps: int, sigma_min: float, sigma_max: float, mu: float = 0.0,
                   beta: float = 0.5) -> torch.Tensor:
    """Log sigma at the quantiles of a Laplace(mu, beta) distribution (Tiankai et al. 2024), clamped to the range.
    As in ComfyUI, no 0 is appended: the last sigma is `sigma_min`."""
    avoid_log_zero = 1e-5
    x = torch.linspace(0, 1, steps)
    log_sigma = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + avoid_log_zero)
    return torch.clamp(torch.exp(log_sigma), min=sigma_min, max=sigma_max)


def kl_optimal_sigmas(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Evenly spaced in atan(sigma) (the KL-optimal schedule of "Align Your Steps"), then 0. As in ComfyUI, one
    step divides by zero (all NaN)."""
    fractions = torch.arange(steps, dtype=torch.float).div_(steps - 1)
    sigmas = fractions.new_zeros(steps + 1)
    sigmas[:-1] = (fractions * math.atan(sigma_min) + (1 - fractions) * math.atan(sigma_max)).tan_()
    return sigmas


def _over_sigma_range(schedule: Callable[[int, float, float], torch.Tensor]) -> Schedule:
    """A range schedule over the model's own `sigma_min` .. `sigma_max` (read as Python floats)."""
    def from_model_sampling(model_sampling: ModelSampling, steps: int) -> torch.Tensor:
        return schedule(steps, float(model_sampling.sigma_min), float(model_sampling.sigma_max))

    return from_model_sampling


SCHEDULERS: dict[str, Schedule] = {
    "simple": simple_sigmas,
    "sgm_uniform": sgm_uniform_sigmas,
    "karras": _over_sigma_range(karras_sigmas),
    "exponential": _over_sigma_range(exponential_sigmas),
    "ddim_uniform": ddim_uniform_sigmas,
    "beta": beta_sigmas,
    "normal": normal_sigmas,
    "linear_quadratic": linear_quadratic_sigmas,
    "kl_optimal": _over_sigma_range(kl_optimal_sigmas),
}
SCHEDULER_NAMES = tuple(SCHEDULERS)  # in ComfyUI's order, as its KSampler lists them


def calculate_sigmas(model_sampling: ModelSampling, scheduler_name: str, steps: int) -> torch.Tensor:
    """`steps` + 1 sigmas of the named KSampler scheduler for the model, from high noise down to 0."""
    if scheduler_name not in SCHEDULERS:
        raise ValueError(f"scheduler: unknown {scheduler_name!r}; known: {', '.join(SCHEDULER_NAMES)}")
    return SCHEDULERS[scheduler_name](model_sampling, steps)


def basic_scheduler_sigmas(model_sampling: ModelSampling, scheduler_name: str, steps: int,
                           denoise: float = 1.0) -> torch.Tensor:
    """The BasicScheduler node: with `denoise` < 1 the schedule of int(steps / denoise) steps is computed and its
    last `steps` + 1 sigmas kept, so that sampling starts part-way down; nothing for `denoise` <= 0."""
    total_steps = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return _no_sigmas()
        total_steps = int(steps / denoise)
    return calculate_sigmas(model_sampling, scheduler_name, total_steps).cpu()[-(steps + 1):]


def ksampler_sigmas(model_sampling: ModelSampling, scheduler_name: str, steps: int, denoise: float = 1.0,
                    sampler_name: str = "") -> torch.Tensor:
    """The sigmas of ComfyUI's KSampler: BasicScheduler's `denoise` handling (a denoise above 0.9999 counts as
    1), with the penultimate sigma dropped for the samplers in `DISCARD_PENULTIMATE_SIGMA_SAMPLERS`."""
    if denoise > 0.9999:
        return _ksampler_schedule(model_sampling, scheduler_name, steps, sampler_name)
    if denoise <= 0.0:
        return _no_sigmas()
    return _ksampler_schedule(model_sampling, scheduler_name, int(steps / denoise), sampler_name)[-(steps + 1):]


def _ksampler_schedule(model_sampling: ModelSampling, scheduler_name: str, steps: int,
                       sampler_name: str) -> torch.Tensor:
    if sampler_name not in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
        return calculate_sigmas(model_sampling, scheduler_name, steps)
    sigmas = calculate_sigmas(model_sampling, scheduler_name, steps + 1)
    return torch.cat([sigmas[:-2], sigmas[-1:]])


# -- the other scheduler nodes --------------------------------------------------------------------------------------


def sd_turbo_sigmas(model_sampling: ModelSampling, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The SDTurboScheduler node: SD-Turbo's distillation timesteps 999, 899, ..., 99, starting
    10 - int(10 * denoise) of them in and taking `steps`, then 0."""
    start_step = 10 - int(10 * denoise)
    timesteps = torch.flip(torch.arange(1, 11) * 100 - 1, (0,))[start_step:start_step + steps]
    return _append_zero(model_sampling.sigma(timesteps))


# Align Your Steps (Sabour et al. 2024, research.nvidia.com/labs/toronto-ai/AlignYourSteps): 10-step schedules
# optimized per model
ALIGN_YOUR_STEPS_NOISE_LEVELS: dict[str, tuple[float, ...]] = {
    "SD1": (14.6146412293, 6.4745760956, 3.8636745985, 2.694615152, 1.8841921177, 1.3943805092, 0.9642583904,
            0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582),
    "SDXL": (14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
             0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582),
    "SVD": (700.0, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}


def loglinear_interpolation(decreasing: tuple[float, ...] | list[float], count: int) -> np.ndarray:
    """`count` values through a decreasing sequence, interpolated linearly in log space over evenly spaced
    positions (float64)."""
    positions = np.linspace(0, 1, len(decreasing))
    log_values = np.log(decreasing[::-1])
    interpolated = np.interp(np.linspace(0, 1, count), positions, log_values)
    return np.exp(interpolated)[::-1].copy()


def _tabulated_sigmas(levels: list[float] | np.ndarray, steps: int, denoise: float) -> torch.Tensor:
    """The last round(steps * denoise) + 1 of a tabulated schedule, the last one set to 0; nothing for
    `denoise` <= 0 (what the AYS and GITS nodes share)."""
    if denoise <= 0.0:
        return _no_sigmas()
    kept_steps = round(steps * denoise) if denoise < 1.0 else steps
    levels = levels[-(kept_steps + 1):]
    levels[-1] = 0
    return _sigmas(levels)


def align_your_steps_sigmas(model_type: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The AlignYourStepsScheduler node: the `model_type`'s ("SD1", "SDXL", "SVD") 10-step schedule,
    log-linearly interpolated to `steps`."""
    if model_type not in ALIGN_YOUR_STEPS_NOISE_LEVELS:
        raise ValueError(f"model_type: unknown {model_type!r}; known: {', '.join(ALIGN_YOUR_STEPS_NOISE_LEVELS)}")
    levels = list(ALIGN_YOUR_STEPS_NOISE_LEVELS[model_type])
    if steps + 1 != len(levels):
        levels = loglinear_interpolation(levels, steps + 1)
    return _tabulated_sigmas(levels, steps, denoise)


# OptimalSteps (Pei et al. 2025, "Optimal Stepsize for Diffusion Sampling"): searched schedules of flow models,
# as ComfyUI's OptimalStepsScheduler tabulates them
OPTIMAL_STEPS_NOISE_LEVELS: dict[str, tuple[float, ...]] = {
    "FLUX": (0.9968, 0.9886, 0.9819, 0.975, 0.966, 0.9471, 0.9158, 0.8287, 0.5512, 0.2808, 0.001),
    "Wan": (1.0, 0.997, 0.995, 0.993, 0.991, 0.989, 0.987, 0.985, 0.98, 0.975, 0.973, 0.968, 0.96, 0.946, 0.927,
            0.902, 0.864, 0.776, 0.539, 0.208, 0.001),
    "Chroma": (0.992, 0.99, 0.988, 0.985, 0.982, 0.978, 0.973, 0.968, 0.961, 0.953, 0.943, 0.931, 0.917, 0.9, 0.881,
               0.858, 0.832, 0.802, 0.769, 0.731, 0.69, 0.646, 0.599, 0.55, 0.501, 0.451, 0.402, 0.355, 0.311, 0.27,
               0.232, 0.199, 0.169, 0.143, 0.12, 0.101, 0.084, 0.07, 0.058, 0.048, 0.001),
}


def optimal_steps_sigmas(model_type: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The OptimalStepsScheduler node: the `model_type`'s searched schedule (`OPTIMAL_STEPS_NOISE_LEVELS`, 10
    steps for FLUX, 20 for Wan, 40 for Chroma), log-linearly interpolated to `steps`."""
    if model_type not in OPTIMAL_STEPS_NOISE_LEVELS:
        raise ValueError(f"model_type: unknown {model_type!r}; known: {', '.join(OPTIMAL_STEPS_NOISE_LEVELS)}")
    levels = list(OPTIMAL_STEPS_NOISE_LEVELS[model_type])
    if steps + 1 != len(levels):
        levels = loglinear_interpolation(levels, steps + 1)
    return _tabulated_sigmas(levels, steps, denoise)


def gits_sigmas(coeff: float, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """The GITSScheduler node: GITS's SD1 schedule for `coeff` (0.80 .. 1.50 in steps of 0.05) and 2 .. 20 steps;
    beyond 20 steps the 20-step schedule log-linearly interpolated (the table, `GITS_NOISE_LEVELS`, ends the
    module)."""
    coeff = round(coeff, 2)
    if coeff not in GITS_NOISE_LEVELS:
        raise ValueError(f"coeff: no GITS schedule for {coeff}; known: {', '.join(map(str, GITS_NOISE_LEVELS))}")
    if steps <= 20:
        levels = list(GITS_NOISE_LEVELS[coeff][steps - 2])
    else:
        levels = loglinear_interpolation(GITS_NOISE_LEVELS[coeff][-1], steps + 1)
    return _tabulated_sigmas(levels, steps, denoise)


# -- sigma manipulations ------------------------------------------------------------------------------------------


def split_sigmas(sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The SplitSigmas node: (the first `step` steps, the rest), sharing the sigma at `step`."""
    return sigmas[:step + 1], sigmas[step:]


def split_sigmas_denoise(sigmas: torch.Tensor, denoise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The SplitSigmasDenoise node: the last round(steps * denoise) steps as the low part, what comes before as the
    high part, sharing one sigma. As in ComfyUI, when no step falls in the low part the high part is empty too."""
    steps = max(sigmas.shape[-1] - 1, 0)
    low_steps = round(steps * denoise)
    return sigmas[:-low_steps], sigmas[-(low_steps + 1):]


def flip_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """The FlipSigmas node: the schedule reversed (sampling from clean towards noise); a leading 0 becomes 0.0001,
    since the samplers divide by the sigma they start from."""
    if len(sigmas) == 0:
        return sigmas
    sigmas = sigmas.flip(0)
    if sigmas[0] == 0:
        sigmas[0] = 0.0001
    return sigmas


def set_first_sigma(sigmas: torch.Tensor, sigma: float) -> torch.Tensor:
    """The SetFirstSigma node: a copy with the first sigma replaced."""
    sigmas = sigmas.clone()
    sigmas[0] = sigma
    return sigmas


# ExtendIntermediateSigmas' spacings of the new sigmas between two old ones (0 = the current, 1 = the next), by
# ComfyUI's names: "cosine" bunches them towards the next sigma, "sine" towards the current one
INTERMEDIATE_SPACINGS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": lambda x: x,
    "cosine": lambda x: torch.sin(x * math.pi / 2),
    "sine": lambda x: 1 - torch.cos(x * math.pi / 2),
}


def extend_intermediate_sigmas(sigmas: torch.Tensor, steps: int, start_at_sigma: float = -1.0,
                               end_at_sigma: float = 12.0, spacing: str = "linear") -> torch.Tensor:
    """The ExtendIntermediateSigmas node: each step starting at a sigma within [`end_at_sigma`, `start_at_sigma`]
    (a negative start: no upper bound) split into `steps` steps."""
    if spacing not in INTERMEDIATE_SPACINGS:
        raise ValueError(f"spacing: unknown {spacing!r}; known: {', '.join(INTERMEDIATE_SPACINGS)}")
    if start_at_sigma < 0:
        start_at_sigma = float("inf")
    fractions = INTERMEDIATE_SPACINGS[spacing](torch.linspace(0, 1, steps + 1, device=sigmas.device)[1:-1])
    extended: list[float] = []
    for current, following in itertools.pairwise(sigmas):
        extended.append(float(current))
        if end_at_sigma <= current <= start_at_sigma:
            extended.extend((fractions * (following - current) + current).tolist())
    if len(sigmas) > 0:
        extended.append(float(sigmas[-1]))
    return _sigmas(extended)


def sampling_percent_to_sigma(model_sampling: ModelSampling, sampling_percent: float,
                              return_actual_sigma: bool = False) -> float:
    """The SamplingPercentToSigma node: the model's sigma `sampling_percent` of the way through sampling. At 0 and
    1 that is a value beyond the table for interval checks (e.g. 999999999.9 and 0), or with
    `return_actual_sigma` the table's own `sigma_max` and `sigma_min`."""
    if return_actual_sigma and sampling_percent == 0.0:
        return model_sampling.sigma_max.item()
    if return_actual_sigma and sampling_percent == 1.0:
        return model_sampling.sigma_min.item()
    return model_sampling.percent_to_sigma(sampling_percent)


# GITS (Chen et al. 2024, "On the Trajectory Regularity of ODE-based Diffusion Sampling", zju-pi/diff-sampler):
# SD1 schedules searched per coefficient, for 2 .. 20 steps (steps + 1 sigmas each)
GITS_NOISE_LEVELS: dict[float, tuple[tuple[float, ...], ...]] = {
    0.80: (
        (14.61464119, 7.49001646, 0.02916753),
        (14.61464119, 11.54541874, 6.77309084, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 3.07277966, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 5.85520077, 2.05039096, 0.02916753),
        (14.61464119, 12.2308979, 8.75849152, 7.49001646, 5.85520077, 2.05039096, 0.02916753),
        (14.61464119, 12.2308979, 8.75849152, 7.49001646, 5.85520077, 3.07277966, 1.56271636, 0.02916753),
        (14.61464119, 12.96784878, 11.54541874, 8.75849152, 7.49001646, 5.85520077, 3.07277966, 1.56271636, 0.02916753),
        (14.61464119, 13.76078796, 12.2308979, 10.90732002, 8.75849152, 7.49001646, 5.85520077, 3.07277966, 1.56271636,
         0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 10.90732002, 8.75849152, 7.49001646, 5.85520077, 3.07277966,
         1.56271636, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 10.90732002, 9.24142551, 8.30717278, 7.49001646, 5.85520077,
         3.07277966, 1.56271636, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 10.90732002, 9.24142551, 8.30717278, 7.49001646, 6.14220476,
         4.86714602, 3.07277966, 1.56271636, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.31284904, 9.24142551, 8.30717278,
         7.49001646, 6.14220476, 4.86714602, 3.07277966, 1.56271636, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.90732002, 10.31284904, 9.24142551,
         8.30717278, 7.49001646, 6.14220476, 4.86714602, 3.07277966, 1.56271636, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.90732002, 10.31284904, 9.24142551,
         8.75849152, 8.30717278, 7.49001646, 6.14220476, 4.86714602, 3.07277966, 1.56271636, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.90732002, 10.31284904, 9.24142551,
         8.75849152, 8.30717278, 7.49001646, 6.14220476, 4.86714602, 3.1956799, 1.98035145, 0.86115354, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.90732002, 10.31284904, 9.75859547,
         9.24142551, 8.75849152, 8.30717278, 7.49001646, 6.14220476, 4.86714602, 3.1956799, 1.98035145, 0.86115354,
         0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.90732002, 10.31284904, 9.75859547,
         9.24142551, 8.75849152, 8.30717278, 7.49001646, 6.77309084, 5.85520077, 4.65472794, 3.07277966, 1.84880662,
         0.83188516, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.90732002, 10.31284904, 9.75859547,
         9.24142551, 8.75849152, 8.30717278, 7.88507891, 7.49001646, 6.77309084, 5.85520077, 4.65472794, 3.07277966,
         1.84880662, 0.83188516, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.90732002, 10.31284904, 9.75859547,
         9.24142551, 8.75849152, 8.30717278, 7.88507891, 7.49001646, 6.77309084, 5.85520077, 4.86714602, 3.75677586,
         2.84484982, 1.78698075, 0.803307, 0.02916753),
    ),
    0.85: (
        (14.61464119, 7.49001646, 0.02916753),
        (14.61464119, 7.49001646, 1.84880662, 0.02916753),
        (14.61464119, 11.54541874, 6.77309084, 1.56271636, 0.02916753),
        (14.61464119, 11.54541874, 7.11996698, 3.07277966, 1.24153244, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 5.09240818, 2.84484982, 0.95350921, 0.02916753),
        (14.61464119, 12.2308979, 8.75849152, 7.49001646, 5.09240818, 2.84484982, 0.95350921, 0.02916753),
        (14.61464119, 12.2308979, 8.75849152, 7.49001646, 5.58536053, 3.1956799, 1.84880662, 0.803307, 0.02916753),
        (14.61464119, 12.96784878, 11.54541874, 8.75849152, 7.49001646, 5.58536053, 3.1956799, 1.84880662, 0.803307,
         0.02916753),
        (14.61464119, 12.96784878, 11.54541874, 8.75849152, 7.49001646, 6.14220476, 4.65472794, 3.07277966, 1.84880662,
         0.803307, 0.02916753),
        (14.61464119, 13.76078796, 12.2308979, 10.90732002, 8.75849152, 7.49001646, 6.14220476, 4.65472794, 3.07277966,
         1.84880662, 0.803307, 0.02916753),
        (14.61464119, 13.76078796, 12.2308979, 10.90732002, 9.24142551, 8.30717278, 7.49001646, 6.14220476, 4.65472794,
         3.07277966, 1.84880662, 0.803307, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 10.90732002, 9.24142551, 8.30717278, 7.49001646, 6.14220476,
         4.65472794, 3.07277966, 1.84880662, 0.803307, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.31284904, 9.24142551, 8.30717278,
         7.49001646, 6.14220476, 4.65472794, 3.07277966, 1.84880662, 0.803307, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.31284904, 9.24142551, 8.30717278,
         7.49001646, 6.14220476, 4.86714602, 3.60512662, 2.6383388, 1.56271636, 0.72133851, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.31284904, 9.24142551, 8.30717278,
         7.49001646, 6.77309084, 5.85520077, 4.65472794, 3.46139455, 2.45070267, 1.56271636, 0.72133851, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.31284904, 9.24142551, 8.75849152,
         8.30717278, 7.49001646, 6.77309084, 5.85520077, 4.65472794, 3.46139455, 2.45070267, 1.56271636, 0.72133851,
         0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.90732002, 10.31284904, 9.24142551,
         8.75849152, 8.30717278, 7.49001646, 6.77309084, 5.85520077, 4.65472794, 3.46139455, 2.45070267, 1.56271636,
         0.72133851, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.90732002, 10.31284904, 9.75859547,
         9.24142551, 8.75849152, 8.30717278, 7.49001646, 6.77309084, 5.85520077, 4.65472794, 3.46139455, 2.45070267,
         1.56271636, 0.72133851, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.90732002, 10.31284904, 9.75859547,
         9.24142551, 8.75849152, 8.30717278, 7.88507891, 7.49001646, 6.77309084, 5.85520077, 4.65472794, 3.46139455,
         2.45070267, 1.56271636, 0.72133851, 0.02916753),
    ),
    0.90: (
        (14.61464119, 6.77309084, 0.02916753),
        (14.61464119, 7.49001646, 1.56271636, 0.02916753),
        (14.61464119, 7.49001646, 3.07277966, 0.95350921, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 2.54230714, 0.89115214, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 4.86714602, 2.54230714, 0.89115214, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 5.09240818, 3.07277966, 1.61558151, 0.69515091, 0.02916753),
        (14.61464119, 12.2308979, 8.75849152, 7.11996698, 4.86714602, 3.07277966, 1.61558151, 0.69515091, 0.02916753),
        (14.61464119, 12.2308979, 8.75849152, 7.49001646, 5.85520077, 4.45427561, 2.95596409, 1.61558151, 0.69515091,
         0.02916753),
        (14.61464119, 12.2308979, 8.75849152, 7.49001646, 5.85520077, 4.45427561, 3.1956799, 2.19988537, 1.24153244,
         0.57119018, 0.02916753),
        (14.61464119, 12.96784878, 10.90732002, 8.75849152, 7.49001646, 5.85520077, 4.45427561, 3.1956799, 2.19988537,
         1.24153244, 0.57119018, 0.02916753),
        (14.61464119, 12.96784878, 11.54541874, 9.24142551, 8.30717278, 7.49001646, 5.85520077, 4.45427561, 3.1956799,
         2.19988537, 1.24153244, 0.57119018, 0.02916753),
        (14.61464119, 12.96784878, 11.54541874, 9.24142551, 8.30717278, 7.49001646, 6.14220476, 4.86714602, 3.75677586,
         2.84484982, 1.84880662, 1.08895338, 0.52423614, 0.02916753),
        (14.61464119, 13.76078796, 12.2308979, 10.90732002, 9.24142551, 8.30717278, 7.49001646, 6.14220476, 4.86714602,
         3.75677586, 2.84484982, 1.84880662, 1.08895338, 0.52423614, 0.02916753),
        (14.61464119, 13.76078796, 12.2308979, 10.90732002, 9.24142551, 8.30717278, 7.49001646, 6.44769001, 5.58536053,
         4.45427561, 3.32507086, 2.45070267, 1.61558151, 0.95350921, 0.45573691, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 10.90732002, 9.24142551, 8.30717278, 7.49001646, 6.44769001,
         5.58536053, 4.45427561, 3.32507086, 2.45070267, 1.61558151, 0.95350921, 0.45573691, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 10.90732002, 9.24142551, 8.30717278, 7.49001646, 6.77309084,
         5.85520077, 4.86714602, 3.91689563, 3.07277966, 2.27973175, 1.56271636, 0.95350921, 0.45573691, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.31284904, 9.24142551, 8.30717278,
         7.49001646, 6.77309084, 5.85520077, 4.86714602, 3.91689563, 3.07277966, 2.27973175, 1.56271636, 0.95350921,
         0.45573691, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.31284904, 9.24142551, 8.75849152,
         8.30717278, 7.49001646, 6.77309084, 5.85520077, 4.86714602, 3.91689563, 3.07277966, 2.27973175, 1.56271636,
         0.95350921, 0.45573691, 0.02916753),
        (14.61464119, 13.76078796, 12.96784878, 12.2308979, 11.54541874, 10.31284904, 9.24142551, 8.75849152,
         8.30717278, 7.49001646, 6.77309084, 5.85520077, 5.09240818, 4.45427561, 3.60512662, 2.95596409, 2.19988537,
         1.51179266, 0.89115214, 0.43325692, 0.02916753),
    ),
    0.95: (
        (14.61464119, 6.77309084, 0.02916753),
        (14.61464119, 6.77309084, 1.56271636, 0.02916753),
        (14.61464119, 7.49001646, 2.84484982, 0.89115214, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 2.36326075, 0.803307, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 2.95596409, 1.56271636, 0.64427125, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 4.86714602, 2.95596409, 1.56271636, 0.64427125, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 4.86714602, 3.07277966, 1.91321158, 1.08895338, 0.50118381, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 5.85520077, 4.45427561, 3.07277966, 1.91321158, 1.08895338, 0.50118381,
         0.02916753),
        (14.61464119, 12.2308979, 8.75849152, 7.49001646, 5.85520077, 4.45427561, 3.07277966, 1.91321158, 1.08895338,
         0.50118381, 0.02916753),
        (14.61464119, 12.2308979, 8.75849152, 7.49001646, 5.85520077, 4.45427561, 3.1956799, 2.19988537, 1.41535246,
         0.803307, 0.38853383, 0.02916753),
        (14.61464119, 12.2308979, 8.75849152, 7.49001646, 5.85520077, 4.65472794, 3.46139455, 2.6383388, 1.84880662,
         1.24153244, 0.72133851, 0.34370604, 0.02916753),
        (14.61464119, 12.96784878, 10.90732002, 8.75849152, 7.49001646, 5.85520077, 4.65472794, 3.46139455, 2.6383388,
         1.84880662, 1.24153244, 0.72133851, 0.34370604, 0.02916753),
        (14.61464119, 12.96784878, 10.90732002, 8.75849152, 7.49001646, 6.14220476, 4.86714602, 3.75677586, 2.95596409,
         2.19988537, 1.56271636, 1.05362725, 0.64427125, 0.32104823, 0.02916753),
        (14.61464119, 12.96784878, 10.90732002, 8.75849152, 7.49001646, 6.44769001, 5.58536053, 4.65472794, 3.60512662,
         2.95596409, 2.19988537, 1.56271636, 1.05362725, 0.64427125, 0.32104823, 0.02916753),
        (14.61464119, 12.96784878, 11.54541874, 9.24142551, 8.30717278, 7.49001646, 6.44769001, 5.58536053, 4.65472794,
         3.60512662, 2.95596409, 2.19988537, 1.56271636, 1.05362725, 0.64427125, 0.32104823, 0.02916753),
        (14.61464119, 12.96784878, 11.54541874, 9.24142551, 8.30717278, 7.49001646, 6.44769001, 5.58536053, 4.65472794,
         3.75677586, 3.07277966, 2.45070267, 1.78698075, 1.24153244, 0.83188516, 0.50118381, 0.22545385, 0.02916753),
        (14.61464119, 12.96784878, 11.54541874, 9.24142551, 8.30717278, 7.49001646, 6.77309084, 5.85520077, 5.09240818,
         4.45427561, 3.60512662, 2.95596409, 2.36326075, 1.72759056, 1.24153244, 0.83188516, 0.50118381, 0.22545385,
         0.02916753),
        (14.61464119, 13.76078796, 12.2308979, 10.90732002, 9.24142551, 8.30717278, 7.49001646, 6.77309084, 5.85520077,
         5.09240818, 4.45427561, 3.60512662, 2.95596409, 2.36326075, 1.72759056, 1.24153244, 0.83188516, 0.50118381,
         0.22545385, 0.02916753),
        (14.61464119, 13.76078796, 12.2308979, 10.90732002, 9.24142551, 8.30717278, 7.49001646, 6.77309084, 5.85520077,
         5.09240818, 4.45427561, 3.75677586, 3.07277966, 2.45070267, 1.91321158, 1.46270394, 1.05362725, 0.72133851,
         0.43325692, 0.19894916, 0.02916753),
    ),
    1.00: (
        (14.61464119, 1.56271636, 0.02916753),
        (14.61464119, 6.77309084, 0.95350921, 0.02916753),
        (14.61464119, 6.77309084, 2.36326075, 0.803307, 0.02916753),
        (14.61464119, 7.11996698, 3.07277966, 1.56271636, 0.59516323, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 2.84484982, 1.41535246, 0.57119018, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 2.84484982, 1.61558151, 0.86115354, 0.38853383, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 4.86714602, 2.84484982, 1.61558151, 0.86115354, 0.38853383, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 4.86714602, 3.07277966, 1.98035145, 1.24153244, 0.72133851, 0.34370604,
         0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 5.85520077, 4.45427561, 3.07277966, 1.98035145, 1.24153244, 0.72133851,
         0.34370604, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 5.85520077, 4.45427561, 3.1956799, 2.27973175, 1.51179266, 0.95350921,
         0.54755926, 0.25053367, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 5.85520077, 4.45427561, 3.1956799, 2.36326075, 1.61558151, 1.08895338,
         0.72133851, 0.41087446, 0.17026083, 0.02916753),
        (14.61464119, 11.54541874, 8.75849152, 7.49001646, 5.85520077, 4.45427561, 3.1956799, 2.36326075, 1.61558151,
         1.08895338, 0.72133851, 0.41087446, 0.17026083, 0.02916753),
        (14.61464119, 11.54541874, 8.75849152, 7.49001646, 5.85520077, 4.65472794, 3.60512662, 2.84484982, 2.12350607,
         1.56271636, 1.08895338, 0.72133851, 0.41087446, 0.17026083, 0.02916753),
        (14.61464119, 11.54541874, 8.75849152, 7.49001646, 5.85520077, 4.65472794, 3.60512662, 2.84484982, 2.19988537,
         1.61558151, 1.162866, 0.803307, 0.50118381, 0.27464288, 0.09824532, 0.02916753),
        (14.61464119, 11.54541874, 8.75849152, 7.49001646, 5.85520077, 4.65472794, 3.75677586, 3.07277966, 2.45070267,
         1.84880662, 1.36964464, 1.01931262, 0.72133851, 0.45573691, 0.25053367, 0.09824532, 0.02916753),
        (14.61464119, 11.54541874, 8.75849152, 7.49001646, 6.14220476, 5.09240818, 4.26497746, 3.46139455, 2.84484982,
         2.19988537, 1.67050016, 1.24153244, 0.92192322, 0.64427125, 0.43325692, 0.25053367, 0.09824532, 0.02916753),
        (14.61464119, 11.54541874, 8.75849152, 7.49001646, 6.14220476, 5.09240818, 4.26497746, 3.60512662, 2.95596409,
         2.45070267, 1.91321158, 1.51179266, 1.12534678, 0.83188516, 0.59516323, 0.38853383, 0.22545385, 0.09824532,
         0.02916753),
        (14.61464119, 12.2308979, 9.24142551, 8.30717278, 7.49001646, 6.14220476, 5.09240818, 4.26497746, 3.60512662,
         2.95596409, 2.45070267, 1.91321158, 1.51179266, 1.12534678, 0.83188516, 0.59516323, 0.38853383, 0.22545385,
         0.09824532, 0.02916753),
        (14.61464119, 12.2308979, 9.24142551, 8.30717278, 7.49001646, 6.77309084, 5.85520077, 5.09240818, 4.26497746,
         3.60512662, 2.95596409, 2.45070267, 1.91321158, 1.51179266, 1.12534678, 0.83188516, 0.59516323, 0.38853383,
         0.22545385, 0.09824532, 0.02916753),
    ),
    1.05: (
        (14.61464119, 0.95350921, 0.02916753),
        (14.61464119, 6.77309084, 0.89115214, 0.02916753),
        (14.61464119, 6.77309084, 2.05039096, 0.72133851, 0.02916753),
        (14.61464119, 6.77309084, 2.84484982, 1.28281462, 0.52423614, 0.02916753),
        (14.61464119, 6.77309084, 3.07277966, 1.61558151, 0.803307, 0.34370604, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 2.84484982, 1.56271636, 0.803307, 0.34370604, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 2.84484982, 1.61558151, 0.95350921, 0.52423614, 0.22545385, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 3.07277966, 1.98035145, 1.24153244, 0.74807048, 0.41087446, 0.17026083,
         0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 3.1956799, 2.27973175, 1.51179266, 0.95350921, 0.59516323, 0.34370604,
         0.13792117, 0.02916753),
        (14.61464119, 7.49001646, 5.09240818, 3.46139455, 2.45070267, 1.61558151, 1.08895338, 0.72133851, 0.45573691,
         0.25053367, 0.09824532, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 5.09240818, 3.46139455, 2.45070267, 1.61558151, 1.08895338, 0.72133851,
         0.45573691, 0.25053367, 0.09824532, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 5.85520077, 4.45427561, 3.1956799, 2.36326075, 1.61558151, 1.08895338,
         0.72133851, 0.45573691, 0.25053367, 0.09824532, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 5.85520077, 4.45427561, 3.1956799, 2.45070267, 1.72759056, 1.24153244,
         0.86115354, 0.59516323, 0.38853383, 0.22545385, 0.09824532, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 5.85520077, 4.65472794, 3.60512662, 2.84484982, 2.19988537, 1.61558151,
         1.162866, 0.83188516, 0.59516323, 0.38853383, 0.22545385, 0.09824532, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 5.85520077, 4.65472794, 3.60512662, 2.84484982, 2.19988537, 1.67050016,
         1.28281462, 0.95350921, 0.72133851, 0.52423614, 0.34370604, 0.19894916, 0.09824532, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 5.85520077, 4.65472794, 3.60512662, 2.95596409, 2.36326075, 1.84880662,
         1.41535246, 1.08895338, 0.83188516, 0.61951244, 0.45573691, 0.32104823, 0.19894916, 0.09824532, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 5.85520077, 4.65472794, 3.60512662, 2.95596409, 2.45070267, 1.91321158,
         1.51179266, 1.20157266, 0.95350921, 0.74807048, 0.57119018, 0.43325692, 0.29807833, 0.19894916, 0.09824532,
         0.02916753),
        (14.61464119, 11.54541874, 8.30717278, 7.11996698, 5.85520077, 4.65472794, 3.60512662, 2.95596409, 2.45070267,
         1.91321158, 1.51179266, 1.20157266, 0.95350921, 0.74807048, 0.57119018, 0.43325692, 0.29807833, 0.19894916,
         0.09824532, 0.02916753),
        (14.61464119, 11.54541874, 8.30717278, 7.11996698, 5.85520077, 4.65472794, 3.60512662, 2.95596409, 2.45070267,
         1.98035145, 1.61558151, 1.32549286, 1.08895338, 0.86115354, 0.69515091, 0.54755926, 0.41087446, 0.29807833,
         0.19894916, 0.09824532, 0.02916753),
    ),
    1.10: (
        (14.61464119, 0.89115214, 0.02916753),
        (14.61464119, 2.36326075, 0.72133851, 0.02916753),
        (14.61464119, 5.85520077, 1.61558151, 0.57119018, 0.02916753),
        (14.61464119, 6.77309084, 2.45070267, 1.08895338, 0.45573691, 0.02916753),
        (14.61464119, 6.77309084, 2.95596409, 1.56271636, 0.803307, 0.34370604, 0.02916753),
        (14.61464119, 6.77309084, 3.07277966, 1.61558151, 0.89115214, 0.4783645, 0.19894916, 0.02916753),
        (14.61464119, 6.77309084, 3.07277966, 1.84880662, 1.08895338, 0.64427125, 0.34370604, 0.13792117, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 2.84484982, 1.61558151, 0.95350921, 0.54755926, 0.27464288, 0.09824532,
         0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 2.95596409, 1.91321158, 1.24153244, 0.803307, 0.4783645, 0.25053367,
         0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 3.07277966, 2.05039096, 1.41535246, 0.95350921, 0.64427125, 0.41087446,
         0.22545385, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 3.1956799, 2.27973175, 1.61558151, 1.12534678, 0.803307, 0.54755926,
         0.36617002, 0.22545385, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 3.32507086, 2.45070267, 1.72759056, 1.24153244, 0.89115214, 0.64427125,
         0.45573691, 0.32104823, 0.19894916, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 5.09240818, 3.60512662, 2.84484982, 2.05039096, 1.51179266, 1.08895338, 0.803307,
         0.59516323, 0.43325692, 0.29807833, 0.19894916, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 5.09240818, 3.60512662, 2.84484982, 2.12350607, 1.61558151, 1.24153244, 0.95350921,
         0.72133851, 0.54755926, 0.41087446, 0.29807833, 0.19894916, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 5.85520077, 4.45427561, 3.1956799, 2.45070267, 1.84880662, 1.41535246, 1.08895338,
         0.83188516, 0.64427125, 0.50118381, 0.36617002, 0.25053367, 0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 5.85520077, 4.45427561, 3.1956799, 2.45070267, 1.91321158, 1.51179266, 1.20157266,
         0.95350921, 0.74807048, 0.59516323, 0.45573691, 0.34370604, 0.25053367, 0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 5.85520077, 4.45427561, 3.46139455, 2.84484982, 2.19988537, 1.72759056, 1.36964464,
         1.08895338, 0.86115354, 0.69515091, 0.54755926, 0.43325692, 0.34370604, 0.25053367, 0.17026083, 0.09824532,
         0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 5.85520077, 4.45427561, 3.46139455, 2.84484982, 2.19988537, 1.72759056,
         1.36964464, 1.08895338, 0.86115354, 0.69515091, 0.54755926, 0.43325692, 0.34370604, 0.25053367, 0.17026083,
         0.09824532, 0.02916753),
        (14.61464119, 11.54541874, 7.49001646, 5.85520077, 4.45427561, 3.46139455, 2.84484982, 2.19988537, 1.72759056,
         1.36964464, 1.08895338, 0.89115214, 0.72133851, 0.59516323, 0.4783645, 0.38853383, 0.29807833, 0.22545385,
         0.17026083, 0.09824532, 0.02916753),
    ),
    1.15: (
        (14.61464119, 0.83188516, 0.02916753),
        (14.61464119, 1.84880662, 0.59516323, 0.02916753),
        (14.61464119, 5.85520077, 1.56271636, 0.52423614, 0.02916753),
        (14.61464119, 5.85520077, 1.91321158, 0.83188516, 0.34370604, 0.02916753),
        (14.61464119, 5.85520077, 2.45070267, 1.24153244, 0.59516323, 0.25053367, 0.02916753),
        (14.61464119, 5.85520077, 2.84484982, 1.51179266, 0.803307, 0.41087446, 0.17026083, 0.02916753),
        (14.61464119, 5.85520077, 2.84484982, 1.56271636, 0.89115214, 0.50118381, 0.25053367, 0.09824532, 0.02916753),
        (14.61464119, 6.77309084, 3.07277966, 1.84880662, 1.12534678, 0.72133851, 0.43325692, 0.22545385, 0.09824532,
         0.02916753),
        (14.61464119, 6.77309084, 3.07277966, 1.91321158, 1.24153244, 0.803307, 0.52423614, 0.34370604, 0.19894916,
         0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 2.95596409, 1.91321158, 1.24153244, 0.803307, 0.52423614, 0.34370604,
         0.19894916, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 3.07277966, 2.05039096, 1.36964464, 0.95350921, 0.69515091, 0.4783645,
         0.32104823, 0.19894916, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 3.07277966, 2.12350607, 1.51179266, 1.08895338, 0.803307, 0.59516323,
         0.43325692, 0.29807833, 0.19894916, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 3.07277966, 2.12350607, 1.51179266, 1.08895338, 0.803307, 0.59516323,
         0.45573691, 0.34370604, 0.25053367, 0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 3.07277966, 2.19988537, 1.61558151, 1.24153244, 0.95350921, 0.74807048,
         0.59516323, 0.45573691, 0.34370604, 0.25053367, 0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 3.1956799, 2.45070267, 1.78698075, 1.32549286, 1.01931262, 0.803307,
         0.64427125, 0.50118381, 0.38853383, 0.29807833, 0.22545385, 0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 3.1956799, 2.45070267, 1.78698075, 1.32549286, 1.01931262, 0.803307,
         0.64427125, 0.52423614, 0.41087446, 0.32104823, 0.25053367, 0.19894916, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 3.1956799, 2.45070267, 1.84880662, 1.41535246, 1.12534678, 0.89115214,
         0.72133851, 0.59516323, 0.4783645, 0.38853383, 0.32104823, 0.25053367, 0.19894916, 0.13792117, 0.09824532,
         0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 3.1956799, 2.45070267, 1.84880662, 1.41535246, 1.12534678, 0.89115214,
         0.72133851, 0.59516323, 0.50118381, 0.41087446, 0.34370604, 0.27464288, 0.22545385, 0.17026083, 0.13792117,
         0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 4.86714602, 3.1956799, 2.45070267, 1.84880662, 1.41535246, 1.12534678, 0.89115214,
         0.72133851, 0.59516323, 0.50118381, 0.41087446, 0.34370604, 0.29807833, 0.25053367, 0.19894916, 0.17026083,
         0.13792117, 0.09824532, 0.02916753),
    ),
    1.20: (
        (14.61464119, 0.803307, 0.02916753),
        (14.61464119, 1.56271636, 0.52423614, 0.02916753),
        (14.61464119, 2.36326075, 0.92192322, 0.36617002, 0.02916753),
        (14.61464119, 2.84484982, 1.24153244, 0.59516323, 0.25053367, 0.02916753),
        (14.61464119, 5.85520077, 2.05039096, 0.95350921, 0.45573691, 0.17026083, 0.02916753),
        (14.61464119, 5.85520077, 2.45070267, 1.24153244, 0.64427125, 0.29807833, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.45070267, 1.36964464, 0.803307, 0.45573691, 0.25053367, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.84484982, 1.61558151, 0.95350921, 0.59516323, 0.36617002, 0.19894916, 0.09824532,
         0.02916753),
        (14.61464119, 5.85520077, 2.84484982, 1.67050016, 1.08895338, 0.74807048, 0.50118381, 0.32104823, 0.19894916,
         0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.95596409, 1.84880662, 1.24153244, 0.83188516, 0.59516323, 0.41087446, 0.27464288,
         0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 3.07277966, 1.98035145, 1.36964464, 0.95350921, 0.69515091, 0.50118381, 0.36617002,
         0.25053367, 0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 6.77309084, 3.46139455, 2.36326075, 1.56271636, 1.08895338, 0.803307, 0.59516323, 0.45573691,
         0.34370604, 0.25053367, 0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 6.77309084, 3.46139455, 2.45070267, 1.61558151, 1.162866, 0.86115354, 0.64427125, 0.50118381,
         0.38853383, 0.29807833, 0.22545385, 0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 4.65472794, 3.07277966, 2.12350607, 1.51179266, 1.08895338, 0.83188516, 0.64427125,
         0.50118381, 0.38853383, 0.29807833, 0.22545385, 0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 4.65472794, 3.07277966, 2.12350607, 1.51179266, 1.08895338, 0.83188516, 0.64427125,
         0.50118381, 0.41087446, 0.32104823, 0.25053367, 0.19894916, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 4.65472794, 3.07277966, 2.12350607, 1.51179266, 1.08895338, 0.83188516, 0.64427125,
         0.50118381, 0.41087446, 0.34370604, 0.27464288, 0.22545385, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 4.65472794, 3.07277966, 2.19988537, 1.61558151, 1.20157266, 0.92192322, 0.72133851,
         0.57119018, 0.45573691, 0.36617002, 0.29807833, 0.25053367, 0.19894916, 0.17026083, 0.13792117, 0.09824532,
         0.02916753),
        (14.61464119, 7.49001646, 4.65472794, 3.07277966, 2.19988537, 1.61558151, 1.24153244, 0.95350921, 0.74807048,
         0.59516323, 0.4783645, 0.38853383, 0.32104823, 0.27464288, 0.22545385, 0.19894916, 0.17026083, 0.13792117,
         0.09824532, 0.02916753),
        (14.61464119, 7.49001646, 4.65472794, 3.07277966, 2.19988537, 1.61558151, 1.24153244, 0.95350921, 0.74807048,
         0.59516323, 0.50118381, 0.41087446, 0.34370604, 0.29807833, 0.25053367, 0.22545385, 0.19894916, 0.17026083,
         0.13792117, 0.09824532, 0.02916753),
    ),
    1.25: (
        (14.61464119, 0.72133851, 0.02916753),
        (14.61464119, 1.56271636, 0.50118381, 0.02916753),
        (14.61464119, 2.05039096, 0.803307, 0.32104823, 0.02916753),
        (14.61464119, 2.36326075, 0.95350921, 0.43325692, 0.17026083, 0.02916753),
        (14.61464119, 2.84484982, 1.24153244, 0.59516323, 0.27464288, 0.09824532, 0.02916753),
        (14.61464119, 3.07277966, 1.51179266, 0.803307, 0.43325692, 0.22545385, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.36326075, 1.24153244, 0.72133851, 0.41087446, 0.22545385, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.45070267, 1.36964464, 0.83188516, 0.52423614, 0.34370604, 0.19894916, 0.09824532,
         0.02916753),
        (14.61464119, 5.85520077, 2.84484982, 1.61558151, 0.98595673, 0.64427125, 0.43325692, 0.27464288, 0.17026083,
         0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.84484982, 1.67050016, 1.08895338, 0.74807048, 0.52423614, 0.36617002, 0.25053367,
         0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.84484982, 1.72759056, 1.162866, 0.803307, 0.59516323, 0.45573691, 0.34370604,
         0.25053367, 0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.95596409, 1.84880662, 1.24153244, 0.86115354, 0.64427125, 0.4783645, 0.36617002,
         0.27464288, 0.19894916, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.95596409, 1.84880662, 1.28281462, 0.92192322, 0.69515091, 0.52423614, 0.41087446,
         0.32104823, 0.25053367, 0.19894916, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.95596409, 1.91321158, 1.32549286, 0.95350921, 0.72133851, 0.54755926, 0.43325692,
         0.34370604, 0.27464288, 0.22545385, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.95596409, 1.91321158, 1.32549286, 0.95350921, 0.72133851, 0.57119018, 0.45573691,
         0.36617002, 0.29807833, 0.25053367, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.95596409, 1.91321158, 1.32549286, 0.95350921, 0.74807048, 0.59516323, 0.4783645,
         0.38853383, 0.32104823, 0.27464288, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 3.07277966, 2.05039096, 1.41535246, 1.05362725, 0.803307, 0.61951244, 0.50118381,
         0.41087446, 0.34370604, 0.29807833, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532,
         0.02916753),
        (14.61464119, 5.85520077, 3.07277966, 2.05039096, 1.41535246, 1.05362725, 0.803307, 0.64427125, 0.52423614,
         0.43325692, 0.36617002, 0.32104823, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117,
         0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 3.07277966, 2.05039096, 1.46270394, 1.08895338, 0.83188516, 0.66947293, 0.54755926,
         0.45573691, 0.38853383, 0.34370604, 0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083,
         0.13792117, 0.09824532, 0.02916753),
    ),
    1.30: (
        (14.61464119, 0.72133851, 0.02916753),
        (14.61464119, 1.24153244, 0.43325692, 0.02916753),
        (14.61464119, 1.56271636, 0.59516323, 0.22545385, 0.02916753),
        (14.61464119, 1.84880662, 0.803307, 0.36617002, 0.13792117, 0.02916753),
        (14.61464119, 2.36326075, 1.01931262, 0.52423614, 0.25053367, 0.09824532, 0.02916753),
        (14.61464119, 2.84484982, 1.36964464, 0.74807048, 0.41087446, 0.22545385, 0.09824532, 0.02916753),
        (14.61464119, 3.07277966, 1.56271636, 0.89115214, 0.54755926, 0.34370604, 0.19894916, 0.09824532, 0.02916753),
        (14.61464119, 3.07277966, 1.61558151, 0.95350921, 0.61951244, 0.41087446, 0.27464288, 0.17026083, 0.09824532,
         0.02916753),
        (14.61464119, 5.85520077, 2.45070267, 1.36964464, 0.83188516, 0.54755926, 0.36617002, 0.25053367, 0.17026083,
         0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.45070267, 1.41535246, 0.92192322, 0.64427125, 0.45573691, 0.34370604, 0.25053367,
         0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.6383388, 1.56271636, 1.01931262, 0.72133851, 0.50118381, 0.36617002, 0.27464288,
         0.19894916, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.84484982, 1.61558151, 1.05362725, 0.74807048, 0.54755926, 0.41087446, 0.32104823,
         0.25053367, 0.19894916, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.84484982, 1.61558151, 1.08895338, 0.77538133, 0.57119018, 0.43325692, 0.34370604,
         0.27464288, 0.22545385, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.84484982, 1.61558151, 1.08895338, 0.803307, 0.59516323, 0.45573691, 0.36617002,
         0.29807833, 0.25053367, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.84484982, 1.61558151, 1.08895338, 0.803307, 0.59516323, 0.4783645, 0.38853383,
         0.32104823, 0.27464288, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.84484982, 1.72759056, 1.162866, 0.83188516, 0.64427125, 0.50118381, 0.41087446,
         0.34370604, 0.29807833, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.84484982, 1.72759056, 1.162866, 0.83188516, 0.64427125, 0.52423614, 0.43325692,
         0.36617002, 0.32104823, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532,
         0.02916753),
        (14.61464119, 5.85520077, 2.84484982, 1.78698075, 1.24153244, 0.92192322, 0.72133851, 0.57119018, 0.45573691,
         0.38853383, 0.34370604, 0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117,
         0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.84484982, 1.78698075, 1.24153244, 0.92192322, 0.72133851, 0.57119018, 0.4783645,
         0.41087446, 0.36617002, 0.32104823, 0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083,
         0.13792117, 0.09824532, 0.02916753),
    ),
    1.35: (
        (14.61464119, 0.69515091, 0.02916753),
        (14.61464119, 0.95350921, 0.34370604, 0.02916753),
        (14.61464119, 1.56271636, 0.57119018, 0.19894916, 0.02916753),
        (14.61464119, 1.61558151, 0.69515091, 0.29807833, 0.09824532, 0.02916753),
        (14.61464119, 1.84880662, 0.83188516, 0.43325692, 0.22545385, 0.09824532, 0.02916753),
        (14.61464119, 2.45070267, 1.162866, 0.64427125, 0.36617002, 0.19894916, 0.09824532, 0.02916753),
        (14.61464119, 2.84484982, 1.36964464, 0.803307, 0.50118381, 0.32104823, 0.19894916, 0.09824532, 0.02916753),
        (14.61464119, 2.84484982, 1.41535246, 0.83188516, 0.54755926, 0.36617002, 0.25053367, 0.17026083, 0.09824532,
         0.02916753),
        (14.61464119, 2.84484982, 1.56271636, 0.95350921, 0.64427125, 0.45573691, 0.32104823, 0.22545385, 0.17026083,
         0.09824532, 0.02916753),
        (14.61464119, 2.84484982, 1.56271636, 0.95350921, 0.64427125, 0.45573691, 0.34370604, 0.25053367, 0.19894916,
         0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 3.07277966, 1.61558151, 1.01931262, 0.72133851, 0.52423614, 0.38853383, 0.29807833, 0.22545385,
         0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 3.07277966, 1.61558151, 1.01931262, 0.72133851, 0.52423614, 0.41087446, 0.32104823, 0.25053367,
         0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 3.07277966, 1.61558151, 1.05362725, 0.74807048, 0.54755926, 0.43325692, 0.34370604, 0.27464288,
         0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 3.07277966, 1.72759056, 1.12534678, 0.803307, 0.59516323, 0.45573691, 0.36617002, 0.29807833,
         0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 3.07277966, 1.72759056, 1.12534678, 0.803307, 0.59516323, 0.4783645, 0.38853383, 0.32104823,
         0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.45070267, 1.51179266, 1.01931262, 0.74807048, 0.57119018, 0.45573691, 0.36617002,
         0.32104823, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.6383388, 1.61558151, 1.08895338, 0.803307, 0.61951244, 0.50118381, 0.41087446,
         0.34370604, 0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532,
         0.02916753),
        (14.61464119, 5.85520077, 2.6383388, 1.61558151, 1.08895338, 0.803307, 0.64427125, 0.52423614, 0.43325692,
         0.36617002, 0.32104823, 0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117,
         0.09824532, 0.02916753),
        (14.61464119, 5.85520077, 2.6383388, 1.61558151, 1.08895338, 0.803307, 0.64427125, 0.52423614, 0.45573691,
         0.38853383, 0.34370604, 0.32104823, 0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083,
         0.13792117, 0.09824532, 0.02916753),
    ),
    1.40: (
        (14.61464119, 0.59516323, 0.02916753),
        (14.61464119, 0.95350921, 0.34370604, 0.02916753),
        (14.61464119, 1.08895338, 0.43325692, 0.13792117, 0.02916753),
        (14.61464119, 1.56271636, 0.64427125, 0.27464288, 0.09824532, 0.02916753),
        (14.61464119, 1.61558151, 0.803307, 0.43325692, 0.22545385, 0.09824532, 0.02916753),
        (14.61464119, 2.05039096, 0.95350921, 0.54755926, 0.34370604, 0.19894916, 0.09824532, 0.02916753),
        (14.61464119, 2.45070267, 1.24153244, 0.72133851, 0.43325692, 0.27464288, 0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 2.45070267, 1.24153244, 0.74807048, 0.50118381, 0.34370604, 0.25053367, 0.17026083, 0.09824532,
         0.02916753),
        (14.61464119, 2.45070267, 1.28281462, 0.803307, 0.52423614, 0.36617002, 0.27464288, 0.19894916, 0.13792117,
         0.09824532, 0.02916753),
        (14.61464119, 2.45070267, 1.28281462, 0.803307, 0.54755926, 0.38853383, 0.29807833, 0.22545385, 0.17026083,
         0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.84484982, 1.41535246, 0.86115354, 0.59516323, 0.43325692, 0.32104823, 0.25053367, 0.19894916,
         0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.84484982, 1.51179266, 0.95350921, 0.64427125, 0.45573691, 0.34370604, 0.27464288, 0.22545385,
         0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.84484982, 1.51179266, 0.95350921, 0.64427125, 0.4783645, 0.36617002, 0.29807833, 0.25053367,
         0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.84484982, 1.56271636, 0.98595673, 0.69515091, 0.52423614, 0.41087446, 0.34370604, 0.29807833,
         0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.84484982, 1.56271636, 1.01931262, 0.72133851, 0.54755926, 0.43325692, 0.36617002, 0.32104823,
         0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.84484982, 1.61558151, 1.05362725, 0.74807048, 0.57119018, 0.45573691, 0.38853383, 0.34370604,
         0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.84484982, 1.61558151, 1.08895338, 0.803307, 0.61951244, 0.50118381, 0.41087446, 0.36617002,
         0.32104823, 0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532,
         0.02916753),
        (14.61464119, 2.84484982, 1.61558151, 1.08895338, 0.803307, 0.61951244, 0.50118381, 0.43325692, 0.38853383,
         0.34370604, 0.32104823, 0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117,
         0.09824532, 0.02916753),
        (14.61464119, 2.84484982, 1.61558151, 1.08895338, 0.803307, 0.64427125, 0.52423614, 0.45573691, 0.41087446,
         0.36617002, 0.34370604, 0.32104823, 0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083,
         0.13792117, 0.09824532, 0.02916753),
    ),
    1.45: (
        (14.61464119, 0.59516323, 0.02916753),
        (14.61464119, 0.803307, 0.25053367, 0.02916753),
        (14.61464119, 0.95350921, 0.34370604, 0.09824532, 0.02916753),
        (14.61464119, 1.24153244, 0.54755926, 0.25053367, 0.09824532, 0.02916753),
        (14.61464119, 1.56271636, 0.72133851, 0.36617002, 0.19894916, 0.09824532, 0.02916753),
        (14.61464119, 1.61558151, 0.803307, 0.45573691, 0.27464288, 0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 1.91321158, 0.95350921, 0.57119018, 0.36617002, 0.25053367, 0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 2.19988537, 1.08895338, 0.64427125, 0.41087446, 0.27464288, 0.19894916, 0.13792117, 0.09824532,
         0.02916753),
        (14.61464119, 2.45070267, 1.24153244, 0.74807048, 0.50118381, 0.34370604, 0.25053367, 0.19894916, 0.13792117,
         0.09824532, 0.02916753),
        (14.61464119, 2.45070267, 1.24153244, 0.74807048, 0.50118381, 0.36617002, 0.27464288, 0.22545385, 0.17026083,
         0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.45070267, 1.28281462, 0.803307, 0.54755926, 0.41087446, 0.32104823, 0.25053367, 0.19894916,
         0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.45070267, 1.28281462, 0.803307, 0.57119018, 0.43325692, 0.34370604, 0.27464288, 0.22545385,
         0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.45070267, 1.28281462, 0.83188516, 0.59516323, 0.45573691, 0.36617002, 0.29807833, 0.25053367,
         0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.45070267, 1.28281462, 0.83188516, 0.59516323, 0.45573691, 0.36617002, 0.32104823, 0.27464288,
         0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.84484982, 1.51179266, 0.95350921, 0.69515091, 0.52423614, 0.41087446, 0.34370604, 0.29807833,
         0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.84484982, 1.51179266, 0.95350921, 0.69515091, 0.52423614, 0.43325692, 0.36617002, 0.32104823,
         0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.84484982, 1.56271636, 0.98595673, 0.72133851, 0.54755926, 0.45573691, 0.38853383, 0.34370604,
         0.32104823, 0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532,
         0.02916753),
        (14.61464119, 2.84484982, 1.56271636, 1.01931262, 0.74807048, 0.57119018, 0.4783645, 0.41087446, 0.36617002,
         0.34370604, 0.32104823, 0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117,
         0.09824532, 0.02916753),
        (14.61464119, 2.84484982, 1.56271636, 1.01931262, 0.74807048, 0.59516323, 0.50118381, 0.43325692, 0.38853383,
         0.36617002, 0.34370604, 0.32104823, 0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083,
         0.13792117, 0.09824532, 0.02916753),
    ),
    1.50: (
        (14.61464119, 0.54755926, 0.02916753),
        (14.61464119, 0.803307, 0.25053367, 0.02916753),
        (14.61464119, 0.86115354, 0.32104823, 0.09824532, 0.02916753),
        (14.61464119, 1.24153244, 0.54755926, 0.25053367, 0.09824532, 0.02916753),
        (14.61464119, 1.56271636, 0.72133851, 0.36617002, 0.19894916, 0.09824532, 0.02916753),
        (14.61464119, 1.61558151, 0.803307, 0.45573691, 0.27464288, 0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 1.61558151, 0.83188516, 0.52423614, 0.34370604, 0.25053367, 0.17026083, 0.09824532, 0.02916753),
        (14.61464119, 1.84880662, 0.95350921, 0.59516323, 0.38853383, 0.27464288, 0.19894916, 0.13792117, 0.09824532,
         0.02916753),
        (14.61464119, 1.84880662, 0.95350921, 0.59516323, 0.41087446, 0.29807833, 0.22545385, 0.17026083, 0.13792117,
         0.09824532, 0.02916753),
        (14.61464119, 1.84880662, 0.95350921, 0.61951244, 0.43325692, 0.32104823, 0.25053367, 0.19894916, 0.17026083,
         0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.19988537, 1.12534678, 0.72133851, 0.50118381, 0.36617002, 0.27464288, 0.22545385, 0.19894916,
         0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.19988537, 1.12534678, 0.72133851, 0.50118381, 0.36617002, 0.29807833, 0.25053367, 0.22545385,
         0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.36326075, 1.24153244, 0.803307, 0.57119018, 0.43325692, 0.34370604, 0.29807833, 0.25053367,
         0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.36326075, 1.24153244, 0.803307, 0.57119018, 0.43325692, 0.34370604, 0.29807833, 0.27464288,
         0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.36326075, 1.24153244, 0.803307, 0.59516323, 0.45573691, 0.36617002, 0.32104823, 0.29807833,
         0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.36326075, 1.24153244, 0.803307, 0.59516323, 0.45573691, 0.38853383, 0.34370604, 0.32104823,
         0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753),
        (14.61464119, 2.45070267, 1.32549286, 0.86115354, 0.64427125, 0.50118381, 0.41087446, 0.36617002, 0.34370604,
         0.32104823, 0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117, 0.09824532,
         0.02916753),
        (14.61464119, 2.45070267, 1.36964464, 0.92192322, 0.69515091, 0.54755926, 0.45573691, 0.41087446, 0.36617002,
         0.34370604, 0.32104823, 0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083, 0.13792117,
         0.09824532, 0.02916753),
        (14.61464119, 2.45070267, 1.41535246, 0.95350921, 0.72133851, 0.57119018, 0.4783645, 0.43325692, 0.38853383,
         0.36617002, 0.34370604, 0.32104823, 0.29807833, 0.27464288, 0.25053367, 0.22545385, 0.19894916, 0.17026083,
         0.13792117, 0.09824532, 0.02916753),
    ),
}
