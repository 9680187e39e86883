"""DPM-Solver (Lu et al. 2022) on the noise-prediction ODE in t = -log(sigma), which ignores the given sigmas
except for their ends: dpm_fast (DPM-Solver-Fast, evenly spaced steps in t with orders 3, ..., 3 and a last step
of order 1 or 2, as many network evaluations as the schedule has steps) and dpm_adaptive (DPM-Solver-12/23, the
step size chosen by a PID controller on the difference of two orders; optionally ancestral with eta).

Both stop at the smallest non-zero sigma of the schedule and return what is left there (ComfyUI does not step
to 0 with them). Each reports every step it tries, with the first evaluation's estimate. Knows nothing of models,
guidance, nodes or files.
"""
from __future__ import annotations

import math

import torch

from diffusion.sampling.noise import SeededNoise
from diffusion.sampling.samplers.common import SamplingRun, ancestral_split


def _time(sigma: torch.Tensor) -> torch.Tensor:
    """t = -log(sigma)."""
    return sigma.log().neg()


def _sigma(time: torch.Tensor) -> torch.Tensor:
    return time.neg().exp()


def _sigma_ends(sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(smallest sigma to stop at: the last, or the one before a final 0; the first sigma)."""
    sigma_min = sigmas[-2] if sigmas[-1] == 0 else sigmas[-1]
    if sigma_min <= 0 or sigmas[0] <= 0:
        raise ValueError("dpm_fast and dpm_adaptive need sigmas above 0 at both ends")
    return sigma_min, sigmas[0]


class _SolverStep:
    """One DPM-Solver step from (x, t): the noise predictions it makes, each intermediate point evaluated once
    (the two orders compared by dpm_adaptive share their first intermediate point)."""

    def __init__(self, run: SamplingRun, x: torch.Tensor, t: torch.Tensor):
        self._run, self.x, self.t = run, x, t
        self.eps = self._noise_prediction(x, t)
        self.denoised = x - _sigma(t) * self.eps
        self._stages: dict[str, torch.Tensor] = {}

    def _noise_prediction(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (x - self._run.denoise(x, _sigma(t))) / _sigma(t)

    def _stage(self, name: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if name not in self._stages:
            self._stages[name] = self._noise_prediction(x, t)
        return self._stages[name]

    def order_1(self, t_next: torch.Tensor) -> torch.Tensor:
        h = t_next - self.t
        return self.x - _sigma(t_next) * h.expm1() * self.eps

    def order_2(self, t_next: torch.Tensor, r1: float = 1 / 2) -> torch.Tensor:
        x, eps = self.x, self.eps
        h = t_next - self.t
        s1 = self.t + r1 * h
        eps_1 = self._stage("r1", x - _sigma(s1) * (r1 * h).expm1() * eps, s1)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / (2 * r1) * h.expm1() * (eps_1 - eps)

    def order_3(self, t_next: torch.Tensor, r1: float = 1 / 3, r2: float = 2 / 3) -> torch.Tensor:
        x, eps = self.x, self.eps
        h = t_next - self.t
        s1, s2 = self.t + r1 * h, self.t + r2 * h
        eps_1 = self._stage("r1", x - _sigma(s1) * (r1 * h).expm1() * eps, s1)
        x_2 = (x - _sigma(s2) * (r2 * h).expm1() * eps
               - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_1 - eps))
        eps_2 = self._stage("r2", x_2, s2)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_2 - eps)


def fast_step_orders(evaluations: int) -> list[int]:
    """The orders of DPM-Solver-Fast's steps, summing to `evaluations`: third order, then 2 and 1 or the rest."""
    steps = math.floor(evaluations / 3) + 1
    if evaluations % 3 == 0:
        return [3] * (steps - 2) + [2, 1]
    return [3] * (steps - 1) + [evaluations % 3]


def dpm_fast(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    if len(sigmas) <= 1:
        return x
    sigma_min, sigma_max = _sigma_ends(sigmas)
    orders = fast_step_orders(len(sigmas) - 1)
    times = torch.linspace(_time(sigma_max), _time(sigma_min), len(orders) + 1, device=x.device)
    for i, order in enumerate(orders):
        step = _SolverStep(run, x, times[i])
        x = (step.order_1, step.order_2, step.order_3)[order - 1](times[i + 1])
        run.report(i, x, step.denoised)
    return x


class _PidStepSize:
    """The step-size controller of dpm_adaptive: scales h by a PID law on the inverse error, accepting the step
    when the scale factor is at least `accept_safety`."""

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float, accept_safety: float):
        self.h = h
        self._b1 = (pcoeff + icoeff + dcoeff) / order
        self._b2 = -(pcoeff + 2 * dcoeff) / order
        self._b3 = dcoeff / order
        self._accept_safety = accept_safety
        self._inverse_errors: list[float] = []

    def propose_step(self, error: torch.Tensor) -> bool:
        inverse_error = 1 / (float(error) + 1e-8)
        if not self._inverse_errors:
            self._inverse_errors = [inverse_error] * 3
        self._inverse_errors[0] = inverse_error
        errors = self._inverse_errors
        factor = errors[0] ** self._b1 * errors[1] ** self._b2 * errors[2] ** self._b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self._accept_safety
        if accept:
            self._inverse_errors[2] = self._inverse_errors[1]
            self._inverse_errors[1] = self._inverse_errors[0]
        self.h *= factor
        return accept


def dpm_adaptive(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, order: int, rtol: float, atol: float,
                 h_init: float, pcoeff: float, icoeff: float, dcoeff: float, accept_safety: float, eta: float,
                 s_noise: float) -> torch.Tensor:
    """`order` 2 (DPM-Solver-12) or 3 (DPM-Solver-23); rtol/atol bound the error of the lower order against the
    higher; h_init is the first step in t; pcoeff/icoeff/dcoeff/accept_safety tune the controller."""
    if len(sigmas) <= 1:
        return x
    if order not in {2, 3}:
        raise ValueError("order should be 2 or 3")
    sigma_min, sigma_max = _sigma_ends(sigmas)
    t_start, t_end = _time(sigma_max), _time(sigma_min)
    forward = t_end > t_start
    if not forward and eta:
        raise ValueError("eta must be 0 for reverse sampling")
    noise = SeededNoise(x, run.seed)
    controller = _PidStepSize(abs(h_init) * (1 if forward else -1), pcoeff, icoeff, dcoeff, 1.5 if eta else order,
                              accept_safety)
    atol_tensor, rtol_tensor = torch.tensor(atol), torch.tensor(rtol)
    s, x_low_previous, attempt = t_start, x, 0
    while s < t_end - 1e-5 if forward else s > t_end + 1e-5:
        t = torch.minimum(t_end, s + controller.h) if forward else torch.maximum(t_end, s + controller.h)
        if eta:
            sigma_down = ancestral_split(_sigma(s), _sigma(t), eta)[0]
            t_down = torch.minimum(t_end, _time(sigma_down))
            sigma_up = (_sigma(t) ** 2 - _sigma(t_down) ** 2) ** 0.5
        else:
            t_down, sigma_up = t, 0.
        step = _SolverStep(run, x, s)
        if order == 2:
            x_low, x_high = step.order_1(t_down), step.order_2(t_down)
        else:
            x_low, x_high = step.order_2(t_down, r1=1 / 3), step.order_3(t_down)
        delta = torch.maximum(atol_tensor, rtol_tensor * torch.maximum(x_low.abs(), x_low_previous.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if controller.propose_step(error):
            x_low_previous = x_low
            x = x_high + sigma_up * s_noise * noise(_sigma(s), _sigma(t))
            s = t
        run.report(attempt, x, step.denoised)
        attempt += 1
    return x
