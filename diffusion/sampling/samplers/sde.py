"""Solvers of the reverse-time SDE in half-log-SNR lambda = log(alpha / sigma), which ComfyUI takes as
log((1 - sigma) / sigma) for rectified-flow models (starting those a hair below sigma 1, where lambda is finite):
DPM-Solver++ SDE (singlestep, `r` placing the second evaluation), DPM-Solver++(2M) SDE (midpoint or Heun
correction) and (3M) SDE, ER-SDE (Cui et al. 2023, up to three stages) and SEEDS-2/3 (Gonzalez et al. 2023).

The DPM-Solver++ SDEs draw Brownian-tree noise (`BrownianTreeNoise`; the `_gpu` names build the tree beside the
latents), ER-SDE and SEEDS fresh `SeededNoise`. Each reports one step per sigma interval with the estimate of the
interval's first evaluation. Knows nothing of models, guidance, nodes or files.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from diffusion.sampling.noise import BrownianTreeNoise, SeededNoise
from diffusion.sampling.samplers.common import (
    SamplingRun,
    ancestral_split,
    half_log_snr,
    positive_range,
    sigma_at_half_log_snr,
    without_infinite_start,
)


def _h_phi_1(h: torch.Tensor) -> torch.Tensor:
    """h * phi_1(h) of exponential integrators."""
    return torch.expm1(h)


def _h_phi_2(h: torch.Tensor) -> torch.Tensor:
    """h * phi_2(h)."""
    return (torch.expm1(h) - h) / h


def dpmpp_sde(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float, s_noise: float, r: float,
              cpu_tree: bool) -> torch.Tensor:
    """Two evaluations per step, the second at fraction `r` of the step in lambda; both moves are ancestral steps
    in exp(-lambda)."""
    if len(sigmas) <= 1:
        return x
    noise = BrownianTreeNoise(x, *positive_range(sigmas), run.seed, cpu_tree=cpu_tree)
    flow = run.rectified_flow
    sigmas = without_infinite_start(sigmas, run)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            lambda_s, lambda_t = half_log_snr(sigma, flow), half_log_snr(sigma_next, flow)
            lambda_mid = lambda_s + r * (lambda_t - lambda_s)
            sigma_mid = sigma_at_half_log_snr(lambda_mid, flow)
            alpha_s = sigma * lambda_s.exp()
            alpha_mid = sigma_mid * lambda_mid.exp()
            alpha_t = sigma_next * lambda_t.exp()

            sigma_down, sigma_up = ancestral_split(lambda_s.neg().exp(), lambda_mid.neg().exp(), eta)
            h_down = sigma_down.log().neg() - lambda_s
            x_mid = (alpha_mid / alpha_s) * (-h_down).exp() * x - alpha_mid * (-h_down).expm1() * denoised
            if eta > 0 and s_noise > 0:
                x_mid = x_mid + alpha_mid * noise(sigma, sigma_mid) * s_noise * sigma_up
            denoised_mid = run.denoise(x_mid, sigma_mid)

            sigma_down, sigma_up = ancestral_split(lambda_s.neg().exp(), lambda_t.neg().exp(), eta)
            h_down = sigma_down.log().neg() - lambda_s
            fac = 1 / (2 * r)
            estimate = (1 - fac) * denoised + fac * denoised_mid
            x = (alpha_t / alpha_s) * (-h_down).exp() * x - alpha_t * (-h_down).expm1() * estimate
            if eta > 0 and s_noise > 0:
                x = x + alpha_t * noise(sigma, sigma_next) * s_noise * sigma_up
        run.report(i, x, denoised)
    return x


def dpmpp_2m_sde(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float, s_noise: float,
                 solver_type: str, cpu_tree: bool) -> torch.Tensor:
    """`solver_type` 'midpoint' or 'heun': how the previous estimate corrects the step."""
    if len(sigmas) <= 1:
        return x
    if solver_type not in {"heun", "midpoint"}:
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    noise = BrownianTreeNoise(x, *positive_range(sigmas), run.seed, cpu_tree=cpu_tree)
    flow = run.rectified_flow
    sigmas = without_infinite_start(sigmas, run)
    previous = h = h_previous = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            lambda_s, lambda_t = half_log_snr(sigma, flow), half_log_snr(sigma_next, flow)
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigma_next * lambda_t.exp()
            x = sigma_next / sigma * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if previous is not None:
                r = h_previous / h
                if solver_type == "heun":
                    x = x + alpha_t * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - previous)
                else:
                    x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - previous)
            if eta > 0 and s_noise > 0:
                x = x + _sde_noise(noise, sigma, sigma_next, h, eta) * s_noise
        previous, h_previous = denoised, h
        run.report(i, x, denoised)
    return x


def _sde_noise(noise: BrownianTreeNoise, sigma: torch.Tensor, sigma_next: torch.Tensor, h: torch.Tensor,
               eta: float) -> torch.Tensor:
    """The noise the multistep SDE adds over a step of h in lambda: std sigma_next * sqrt(1 - exp(-2 h eta))."""
    return noise(sigma, sigma_next) * sigma_next * (-2 * h * eta).expm1().neg().sqrt()


def dpmpp_3m_sde(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float, s_noise: float,
                 cpu_tree: bool) -> torch.Tensor:
    """Third order from the two previous estimates (second order on the second step)."""
    if len(sigmas) <= 1:
        return x
    noise = BrownianTreeNoise(x, *positive_range(sigmas), run.seed, cpu_tree=cpu_tree)
    flow = run.rectified_flow
    sigmas = without_infinite_start(sigmas, run)
    denoised_1 = denoised_2 = None
    h = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            lambda_s, lambda_t = half_log_snr(sigma, flow), half_log_snr(sigma_next, flow)
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigma_next * lambda_t.exp()
            x = sigma_next / sigma * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                slope_0 = (denoised - denoised_1) / r0
                slope_1 = (denoised_1 - denoised_2) / r1
                first = slope_0 + (slope_0 - slope_1) * r0 / (r0 + r1)
                second = (slope_0 - slope_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * first - (alpha_t * phi_3) * second
            elif h_1 is not None:
                x = x + (alpha_t * phi_2) * ((denoised - denoised_1) / (h_1 / h))
            if eta > 0 and s_noise > 0:
                x = x + _sde_noise(noise, sigma, sigma_next, h, eta) * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
        run.report(i, x, denoised)
    return x


ER_SDE_INTEGRATION_POINTS = 200  # the quadrature of ER-SDE's stage-2 and stage-3 integrals


def er_sde_noise_scaler(er_lambda: torch.Tensor) -> torch.Tensor:
    """ER-SDE's own noise scale function (the paper's ER-SDE-Solver-3 choice)."""
    return er_lambda * ((er_lambda ** 0.3).exp() + 10.0)


def reverse_time_sde_noise_scaler(eta: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The noise scale of the plain reverse-time SDE with stochastic strength eta (eta 0: the ODE)."""
    return lambda er_lambda: er_lambda ** (eta + 1)


def er_sde(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, solver_type: str, max_stage: int,
           eta: float, s_noise: float) -> torch.Tensor:
    """`solver_type` as ComfyUI's SamplerER_SDE: 'ER-SDE' (its own noise scale; eta unused), 'Reverse-time SDE'
    (strength eta) or 'ODE' (no noise)."""
    if solver_type == "ODE" or (solver_type == "Reverse-time SDE" and eta == 0):
        eta, s_noise = 0, 0
    scaler = er_sde_noise_scaler if solver_type == "ER-SDE" else reverse_time_sde_noise_scaler(eta)
    noise = SeededNoise(x, run.seed)
    points = torch.arange(0, float(ER_SDE_INTEGRATION_POINTS), dtype=torch.float32, device=x.device)
    sigmas = without_infinite_start(sigmas, run)
    er_lambdas = half_log_snr(sigmas, run.rectified_flow).neg().exp()  # sigma / alpha
    previous = previous_slope = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        stages = min(max_stage, i + 1)
        if sigma_next == 0:
            x = denoised
        else:
            er_lambda_s, er_lambda_t = er_lambdas[i], er_lambdas[i + 1]
            alpha_s, alpha_t = sigma / er_lambda_s, sigma_next / er_lambda_t
            r = scaler(er_lambda_t) / scaler(er_lambda_s)
            x = alpha_t / alpha_s * r * x + alpha_t * (1 - r) * denoised
            if stages >= 2:
                dt = er_lambda_t - er_lambda_s
                step = -dt / float(ER_SDE_INTEGRATION_POINTS)
                positions = er_lambda_t + points * step
                scaled = scaler(positions)
                slope = (denoised - previous) / (er_lambda_s - er_lambdas[i - 1])
                x = x + alpha_t * (dt + torch.sum(1 / scaled) * step * scaler(er_lambda_t)) * slope
                if stages >= 3:
                    s_u = torch.sum((positions - er_lambda_s) / scaled) * step
                    curvature = (slope - previous_slope) / ((er_lambda_s - er_lambdas[i - 2]) / 2)
                    x = x + alpha_t * ((dt ** 2) / 2 + s_u * scaler(er_lambda_t)) * curvature
                previous_slope = slope
            if s_noise > 0:
                spread = (er_lambda_t ** 2 - er_lambda_s ** 2 * r ** 2).sqrt().nan_to_num(nan=0.0)
                x = x + alpha_t * noise(sigma, sigma_next) * s_noise * spread
        previous = denoised
        run.report(i, x, denoised)
    return x


def seeds_2(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float, s_noise: float,
            r: float) -> torch.Tensor:
    """SEEDS-2: a second evaluation at fraction r of the step in lambda; the noise of the two stages is one
    Brownian path (the first stage's noise decays into the second)."""
    noise = SeededNoise(x, run.seed)
    inject_noise = eta > 0 and s_noise > 0
    flow = run.rectified_flow
    sigmas = without_infinite_start(sigmas, run)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        if sigma_next == 0:
            x = denoised
            run.report(i, x, denoised)
            continue
        lambda_s, lambda_t = half_log_snr(sigma, flow), half_log_snr(sigma_next, flow)
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_1 = torch.lerp(lambda_s, lambda_t, r)
        sigma_1 = sigma_at_half_log_snr(lambda_1, flow)
        alpha_1 = sigma_1 * lambda_1.exp()
        alpha_t = sigma_next * lambda_t.exp()

        x_1 = sigma_1 / sigma * (-r * h * eta).exp() * x - alpha_1 * _h_phi_1(-r * h_eta) * denoised
        if inject_noise:
            path = (-2 * r * h * eta).expm1().neg().sqrt() * noise(sigma, sigma_1)
            x_1 = x_1 + path * sigma_1 * s_noise
        denoised_1 = run.denoise(x_1, sigma_1)

        estimate = torch.lerp(denoised, denoised_1, 1 / (2 * r))
        x = sigma_next / sigma * (-h * eta).exp() * x - alpha_t * _h_phi_1(-h_eta) * estimate
        if inject_noise:
            path = _continued_path(path, (r - 1) * h * eta, noise(sigma_1, sigma_next))
            x = x + path * sigma_next * s_noise
        run.report(i, x, denoised)
    return x


def _continued_path(path: torch.Tensor, segment: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """The SEEDS noise at the next stage: the last stage's noise decayed over `segment` (negative: eta times
    the lambda span) plus fresh noise for the variance that decay frees."""
    return path * segment.exp() + segment.mul(2).expm1().neg().sqrt() * fresh


def seeds_3(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float, s_noise: float, r_1: float,
            r_2: float) -> torch.Tensor:
    """SEEDS-3: evaluations at fractions r_1 and r_2 of the step in lambda."""
    noise = SeededNoise(x, run.seed)
    inject_noise = eta > 0 and s_noise > 0
    flow = run.rectified_flow
    sigmas = without_infinite_start(sigmas, run)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        if sigma_next == 0:
            x = denoised
            run.report(i, x, denoised)
            continue
        lambda_s, lambda_t = half_log_snr(sigma, flow), half_log_snr(sigma_next, flow)
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_1, lambda_2 = torch.lerp(lambda_s, lambda_t, r_1), torch.lerp(lambda_s, lambda_t, r_2)
        sigma_1, sigma_2 = sigma_at_half_log_snr(lambda_1, flow), sigma_at_half_log_snr(lambda_2, flow)
        alpha_1, alpha_2 = sigma_1 * lambda_1.exp(), sigma_2 * lambda_2.exp()
        alpha_t = sigma_next * lambda_t.exp()

        x_1 = sigma_1 / sigma * (-r_1 * h * eta).exp() * x - alpha_1 * _h_phi_1(-r_1 * h_eta) * denoised
        if inject_noise:
            path = (-2 * r_1 * h * eta).expm1().neg().sqrt() * noise(sigma, sigma_1)
            x_1 = x_1 + path * sigma_1 * s_noise
        denoised_1 = run.denoise(x_1, sigma_1)

        a3_2 = r_2 / r_1 * _h_phi_2(-r_2 * h_eta)
        a3_1 = _h_phi_1(-r_2 * h_eta) - a3_2
        x_2 = sigma_2 / sigma * (-r_2 * h * eta).exp() * x - alpha_2 * (a3_1 * denoised + a3_2 * denoised_1)
        if inject_noise:
            path = _continued_path(path, (r_1 - r_2) * h * eta, noise(sigma_1, sigma_2))
            x_2 = x_2 + path * sigma_2 * s_noise
        denoised_2 = run.denoise(x_2, sigma_2)

        b3 = _h_phi_2(-h_eta) / r_2
        b1 = _h_phi_1(-h_eta) - b3
        x = sigma_next / sigma * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b3 * denoised_2)
        if inject_noise:
            path = _continued_path(path, (r_2 - 1) * h * eta, noise(sigma_2, sigma_next))
            x = x + path * sigma_next * s_noise
        run.report(i, x, denoised)
    return x
