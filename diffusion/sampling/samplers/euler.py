"""Deterministic steps along the probability-flow ODE in sigma (Karras et al. 2022): Euler, Heun, Heun++ with
three evaluations (heunpp2), DPM-Solver-2 (a midpoint in log sigma) and gradient estimation (Euler with a
correction from the change of the derivative between steps, plain and CFG++).

Each reports one step per sigma interval with the estimate of the interval's first evaluation. Knows nothing of
models, guidance, nodes or files.
"""
from __future__ import annotations

import torch

from diffusion.sampling.samplers.common import SamplingRun, derivative


def euler(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        x = x + derivative(x, sigma, denoised) * (sigma_next - sigma)
        run.report(i, x, denoised)
    return x


def heun(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Heun's method; the last step to sigma 0 is an Euler step (the derivative at 0 is undefined)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        slope = derivative(x, sigma, denoised)
        dt = sigma_next - sigma
        if sigma_next == 0:
            x = x + slope * dt
        else:
            x_euler = x + slope * dt
            slope_next = derivative(x_euler, sigma_next, run.denoise(x_euler, sigma_next))
            x = x + (slope + slope_next) / 2 * dt
        run.report(i, x, denoised)
    return x


def heunpp2(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Heun++: the slope averaged over this sigma, the next and the one after, weighted by sigma relative to the
    first sigma of the schedule; two slopes on the step before the last, Euler on the last."""
    last = sigmas[-1]
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        slope = derivative(x, sigma, denoised)
        dt = sigma_next - sigma
        if sigma_next == last:
            x = x + slope * dt
        else:
            x_2 = x + slope * dt
            slope_2 = derivative(x_2, sigma_next, run.denoise(x_2, sigma_next))
            if sigmas[i + 2] == last:
                weight_2 = sigma_next / (2 * sigmas[0])
                x = x + (slope * (1 - weight_2) + slope_2 * weight_2) * dt
            else:
                sigma_after = sigmas[i + 2]
                x_3 = x_2 + slope_2 * (sigma_after - sigma_next)
                slope_3 = derivative(x_3, sigma_after, run.denoise(x_3, sigma_after))
                weight_2 = sigma_next / (3 * sigmas[0])
                weight_3 = sigma_after / (3 * sigmas[0])
                weight_1 = 1 - weight_2 - weight_3
                x = x + (weight_1 * slope + weight_2 * slope_2 + weight_3 * slope_3) * dt
        run.report(i, x, denoised)
    return x


def dpm_2(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """DPM-Solver-2: the slope at the geometric midpoint of the interval carries the whole step."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        slope = derivative(x, sigma, denoised)
        if sigma_next == 0:
            x = x + slope * (sigma_next - sigma)
        else:
            sigma_mid = sigma.log().lerp(sigma_next.log(), 0.5).exp()
            x_mid = x + slope * (sigma_mid - sigma)
            slope_mid = derivative(x_mid, sigma_mid, run.denoise(x_mid, sigma_mid))
            x = x + slope_mid * (sigma_next - sigma)
        run.report(i, x, denoised)
    return x


def gradient_estimation(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, ge_gamma: float,
                        cfg_pp: bool) -> torch.Tensor:
    """Euler plus (ge_gamma - 1) times the change of the slope since the last step (Permenter & Yuan). With
    `cfg_pp` the slope is the unguided one and each step restarts from the guided estimate (CFG++)."""
    previous_slope = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        slope = derivative(x, sigma, run.unguided(denoised) if cfg_pp else denoised)
        dt = sigma_next - sigma
        if sigma_next == 0:
            x = denoised
        else:
            x = denoised + slope * sigma_next if cfg_pp else x + slope * dt
            if i >= 1:
                x = x + (ge_gamma - 1) * (slope - previous_slope) * dt
        previous_slope = slope
        run.report(i, x, denoised)
    return x
