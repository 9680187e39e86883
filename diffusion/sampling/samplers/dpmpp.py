"""Exponential integrators of the data-prediction ODE in t = -log(sigma) (Lu et al. 2022, Zhang & Chen 2023):
DPM-Solver++(2S) ancestral (singlestep, a second evaluation halfway; its own form for rectified flow), DPM-Solver++
(2M) (multistep, the previous estimate as second point) and RES multistep (Zhang et al. 2023, second order with
phi functions), each with a CFG++ form that steps along the unguided estimate.

Ancestral forms add `SeededNoise` after each step. Each reports one step per sigma interval with the estimate of
the interval's first evaluation. Knows nothing of models, guidance, nodes or files.
"""
from __future__ import annotations

import torch

from diffusion.sampling.noise import SeededNoise
from diffusion.sampling.samplers.common import (
    FlowAncestralStep,
    SamplingRun,
    ancestral_split,
    derivative,
)


def _time(sigma: torch.Tensor) -> torch.Tensor:
    """t = -log(sigma)."""
    return sigma.log().neg()


def _sigma(time: torch.Tensor) -> torch.Tensor:
    return time.neg().exp()


def dpmpp_2s_ancestral(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float,
                       s_noise: float) -> torch.Tensor:
    if run.rectified_flow:
        return _dpmpp_2s_ancestral_flow(run, x, sigmas, eta, s_noise)
    noise = SeededNoise(x, run.seed)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        sigma_down, sigma_up = ancestral_split(sigma, sigma_next, eta)
        if sigma_down == 0:
            x = x + derivative(x, sigma, denoised) * (sigma_down - sigma)
        else:
            t, t_next = _time(sigma), _time(sigma_down)
            h = t_next - t
            t_mid = t + h / 2
            x_mid = (_sigma(t_mid) / _sigma(t)) * x - (-h / 2).expm1() * denoised
            denoised_mid = run.denoise(x_mid, _sigma(t_mid))
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_mid
        if sigma_next > 0:
            x = x + noise(sigma, sigma_next) * s_noise * sigma_up
        run.report(i, x, denoised)
    return x


def _flow_time(sigma: torch.Tensor) -> torch.Tensor:
    """log((1 - sigma) / sigma), the half-log-SNR of rectified flow."""
    return ((1 - sigma) / sigma).log()


def _dpmpp_2s_ancestral_flow(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, eta: float,
                             s_noise: float) -> torch.Tensor:
    noise = SeededNoise(x, run.seed)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        step = FlowAncestralStep.between(sigma, sigma_next, eta)
        if sigma_next == 0:
            x = x + derivative(x, sigma, denoised) * (step.sigma_down - sigma)
        else:
            sigma_mid = _flow_midpoint(sigma, step.sigma_down)
            kept = sigma_mid / sigma
            x_mid = kept * x + (1 - kept) * denoised
            denoised_mid = run.denoise(x_mid, sigma_mid)
            kept = step.sigma_down / sigma
            x = kept * x + (1 - kept) * denoised_mid
        if sigma_next > 0 and eta > 0:
            x = step.alpha_ratio * x + noise(sigma, sigma_next) * s_noise * step.renoise
        run.report(i, x, denoised)
    return x


def _flow_midpoint(sigma: torch.Tensor, sigma_down: torch.Tensor) -> torch.Tensor | float:
    """The sigma halfway in half-log-SNR; just below 1 when starting from pure noise (infinitely far away)."""
    if sigma == 1.0:
        return 0.9999
    t, t_down = _flow_time(sigma), _flow_time(sigma_down)
    t_mid = t + (t_down - t) / 2
    return (t_mid.exp() + 1) ** -1


def dpmpp_2s_ancestral_cfg_pp(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float,
                              s_noise: float) -> torch.Tensor:
    """Both half steps move x by the guidance (guided - unguided estimate) of the latest evaluation."""
    noise = SeededNoise(x, run.seed)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        sigma_down, sigma_up = ancestral_split(sigma, sigma_next, eta)
        if sigma_down == 0:
            x = denoised + derivative(x, sigma, run.unguided(denoised)) * sigma_down
        else:
            t, t_next = _time(sigma), _time(sigma_down)
            h = t_next - t
            t_mid = t + h / 2
            guided_x = x + (denoised - run.unguided(denoised))
            x_mid = (_sigma(t_mid) / _sigma(t)) * guided_x - (-h / 2).expm1() * denoised
            denoised_mid = run.denoise(x_mid, _sigma(t_mid))
            # ComfyUI takes the unguided estimate of the latest call, the midpoint's, with the first guided one
            guided_x = x + (denoised - run.unguided(denoised_mid))
            x = (_sigma(t_next) / _sigma(t)) * guided_x - (-h).expm1() * denoised_mid
        if sigma_next > 0:
            x = x + noise(sigma, sigma_next) * s_noise * sigma_up
        run.report(i, x, denoised)
    return x


def dpmpp_2m(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    previous = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        t, t_next = _time(sigma), _time(sigma_next)
        h = t_next - t
        if previous is None or sigma_next == 0:
            estimate = denoised
        else:
            r = (t - _time(sigmas[i - 1])) / h
            estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
        x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * estimate
        previous = denoised
        run.report(i, x, denoised)
    return x


def dpmpp_2m_cfg_pp(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    previous_unguided = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        unguided = run.unguided(denoised)
        t, t_next = _time(sigma), _time(sigma_next)
        h = t_next - t
        if previous_unguided is None or sigma_next == 0:
            mix = -torch.exp(-h) * unguided
        else:
            r = (t - _time(sigmas[i - 1])) / h
            mix = -torch.exp(-h) * unguided - torch.expm1(-h) * (1 / (2 * r)) * (denoised - previous_unguided)
        x = denoised + mix + torch.exp(-h) * x
        previous_unguided = unguided
        run.report(i, x, denoised)
    return x


def res_multistep(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float, s_noise: float,
                  cfg_pp: bool) -> torch.Tensor:
    """RES second-order multistep; the first step and the last (to sigma 0) are Euler steps. eta > 0 makes it
    ancestral."""
    noise = SeededNoise(x, run.seed)
    previous = previous_sigma_down = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        sigma_down, sigma_up = ancestral_split(sigma, sigma_next, eta)
        current = run.unguided(denoised) if cfg_pp else denoised
        if sigma_down == 0 or previous is None:
            if cfg_pp:
                x = denoised + derivative(x, sigma, current) * sigma_down
            else:
                x = x + derivative(x, sigma, denoised) * (sigma_down - sigma)
        else:
            t, t_next = _time(sigma), _time(sigma_down)
            h = t_next - t
            c2 = (_time(sigmas[i - 1]) - _time(previous_sigma_down)) / h
            weight_current, weight_previous = _res_weights(h, c2)
            if cfg_pp:
                x = x + (denoised - current)
            x = _sigma(h) * x + h * (weight_current * current + weight_previous * previous)
        if sigma_next > 0:
            x = x + noise(sigma, sigma_next) * s_noise * sigma_up
        previous, previous_sigma_down = current, sigma_down
        run.report(i, x, denoised)
    return x


def _res_weights(h: torch.Tensor, c2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(b1, b2) of the second-order RES step from phi_1(-h) and phi_2(-h); 0 where they are undefined."""
    phi_1 = torch.expm1(-h) / -h
    phi_2 = (phi_1 - 1.0) / -h
    return torch.nan_to_num(phi_1 - phi_2 / c2, nan=0.0), torch.nan_to_num(phi_2 / c2, nan=0.0)
