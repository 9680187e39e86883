"""Ancestral samplers: each step denoises part of the way and adds fresh noise for the rest (`SeededNoise`, one
draw per step): Euler and DPM-Solver-2 ancestral (with their own steps for rectified-flow models, as ComfyUI
has), Euler ancestral CFG++ (and its noise-free form, euler_cfg_pp), DDPM's posterior step and LCM's
denoise-and-renoise.

Each reports one step per sigma interval with the estimate of the interval's first evaluation. Knows nothing of
models, guidance, nodes or files.
"""
from __future__ import annotations

import torch

from diffusion.sampling.noise import SeededNoise
from diffusion.sampling.samplers.common import (
    FlowAncestralStep,
    SamplingRun,
    ancestral_split,
    derivative,
    half_log_snr,
)


def euler_ancestral(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float,
                    s_noise: float) -> torch.Tensor:
    if run.rectified_flow:
        return _euler_ancestral_flow(run, x, sigmas, eta, s_noise)
    noise = SeededNoise(x, run.seed)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        sigma_down, sigma_up = ancestral_split(sigma, sigma_next, eta)
        if sigma_down == 0:
            x = denoised
        else:
            slope = derivative(x, sigma, denoised)
            x = x + slope * (sigma_down - sigma) + noise(sigma, sigma_next) * s_noise * sigma_up
        run.report(i, x, denoised)
    return x


def _euler_ancestral_flow(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, eta: float,
                          s_noise: float) -> torch.Tensor:
    noise = SeededNoise(x, run.seed)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            step = FlowAncestralStep.between(sigma, sigma_next, eta)
            kept = step.sigma_down / sigma
            x = kept * x + (1 - kept) * denoised
            if eta > 0:
                x = step.alpha_ratio * x + noise(sigma, sigma_next) * s_noise * step.renoise
        run.report(i, x, denoised)
    return x


def euler_ancestral_cfg_pp(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float,
                           s_noise: float) -> torch.Tensor:
    """CFG++ (Chung et al. 2024): step from the guided estimate along the unguided noise direction; the
    ancestral split is made in the variance-exploding scale sigma / alpha, which also covers flow models."""
    noise = SeededNoise(x, run.seed)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            alpha = sigma * half_log_snr(sigma, run.rectified_flow).exp()
            alpha_next = sigma_next * half_log_snr(sigma_next, run.rectified_flow).exp()
            noise_direction = derivative(x, sigma, alpha * run.unguided(denoised))
            sigma_down, sigma_up = ancestral_split(sigma / alpha, sigma_next / alpha_next, eta)
            x = alpha_next * denoised + alpha_next * sigma_down * noise_direction
            if eta > 0 and s_noise > 0:
                x = x + alpha_next * noise(sigma, sigma_next) * s_noise * sigma_up
        run.report(i, x, denoised)
    return x


def dpm_2_ancestral(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float,
                    s_noise: float) -> torch.Tensor:
    if run.rectified_flow:
        return _dpm_2_ancestral_flow(run, x, sigmas, eta, s_noise)
    noise = SeededNoise(x, run.seed)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        sigma_down, sigma_up = ancestral_split(sigma, sigma_next, eta)
        slope = derivative(x, sigma, denoised)
        if sigma_down == 0:
            x = x + slope * (sigma_down - sigma)
        else:
            x = _dpm_2_step(run, x, sigma, sigma_down, slope)
            x = x + noise(sigma, sigma_next) * s_noise * sigma_up
        run.report(i, x, denoised)
    return x


def _dpm_2_ancestral_flow(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, eta: float,
                          s_noise: float) -> torch.Tensor:
    noise = SeededNoise(x, run.seed)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        step = FlowAncestralStep.between(sigma, sigma_next, eta)
        slope = derivative(x, sigma, denoised)
        if step.sigma_down == 0:
            x = x + slope * (step.sigma_down - sigma)
        else:
            x = _dpm_2_step(run, x, sigma, step.sigma_down, slope)
            x = step.alpha_ratio * x + noise(sigma, sigma_next) * s_noise * step.renoise
        run.report(i, x, denoised)
    return x


def _dpm_2_step(run: SamplingRun, x: torch.Tensor, sigma: torch.Tensor, sigma_down: torch.Tensor,
                slope: torch.Tensor) -> torch.Tensor:
    """From sigma to sigma_down with the slope at their geometric midpoint."""
    sigma_mid = sigma.log().lerp(sigma_down.log(), 0.5).exp()
    x_mid = x + slope * (sigma_mid - sigma)
    slope_mid = derivative(x_mid, sigma_mid, run.denoise(x_mid, sigma_mid))
    return x + slope_mid * (sigma_down - sigma)


def ddpm(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """DDPM's ancestral step (Ho et al. 2020), taken in the variance-preserving scale x / sqrt(1 + sigma^2)."""
    noise = SeededNoise(x, run.seed)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        predicted_noise = (x - denoised) / sigma
        x = _ddpm_posterior(x / torch.sqrt(1.0 + sigma ** 2.0), sigma, sigma_next, predicted_noise, noise)
        if sigma_next != 0:
            x *= torch.sqrt(1.0 + sigma_next ** 2.0)
        run.report(i, x, denoised)
    return x


def _ddpm_posterior(x_vp: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
                    predicted_noise: torch.Tensor, noise: SeededNoise) -> torch.Tensor:
    """A draw from q(x_next | x, x0) in the variance-preserving scale; its mean alone when sigma_next is 0."""
    alpha_cumprod = 1 / ((sigma * sigma) + 1)
    alpha_cumprod_next = 1 / ((sigma_next * sigma_next) + 1)
    alpha = alpha_cumprod / alpha_cumprod_next
    mean = (1.0 / alpha).sqrt() * (x_vp - (1 - alpha) * predicted_noise / (1 - alpha_cumprod).sqrt())
    if sigma_next > 0:
        mean += ((1 - alpha) * (1. - alpha_cumprod_next) / (1. - alpha_cumprod)).sqrt() * noise(sigma, sigma_next)
    return mean


def lcm(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Latent consistency sampling: jump to the denoised estimate, then noise it afresh to the next sigma the way
    the model noises latents."""
    noise = SeededNoise(x, run.seed)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        x = denoised
        if sigma_next > 0:
            x = run.model_sampling.noise_scaling(sigma_next, noise(sigma, sigma_next), x)
        run.report(i, x, denoised)
    return x
