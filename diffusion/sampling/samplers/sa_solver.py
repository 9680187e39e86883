"""SA-Solver (Xue et al. 2023): a stochastic Adams predictor-corrector in half-log-SNR. Each step corrects the
state with the new estimate (Adams-Moulton-like, up to `corrector_order` estimates), then predicts the next one
(Adams-Bashforth-like, up to `predictor_order`), with noise of strength tau = eta only while sigma lies between
the sigmas at `sde_start_percent` and `sde_end_percent` of the model's schedule. `use_pece` re-evaluates the
network on the corrected state (sa_solver_pece).

Noise is `SeededNoise`. Each step reports the next state and the step's first estimate. Knows nothing of models,
guidance, nodes or files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffusion.sampling.noise import SeededNoise
from diffusion.sampling.samplers.common import (
    SamplingRun,
    half_log_snr,
    without_infinite_start,
)


@dataclass(frozen=True)
class _StochasticInterval:
    """tau(sigma): eta within [end_sigma, start_sigma], 0 outside (and everywhere when eta is 0)."""

    start_sigma: float
    end_sigma: float
    eta: float

    def tau(self, sigma: torch.Tensor) -> float:
        if self.eta <= 0:
            return 0.0
        return self.eta if self.start_sigma >= sigma.item() >= self.end_sigma else 0.0


def sa_solver(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float, sde_start_percent: float,
              sde_end_percent: float, s_noise: float, predictor_order: int, corrector_order: int, use_pece: bool,
              simple_order_2: bool) -> torch.Tensor:
    """Orders are lowered near the end of a schedule ending at 0. A schedule not ending at 0 returns the
    corrected state at its last evaluated sigma, not the final prediction, as ComfyUI does."""
    if len(sigmas) <= 1:
        return x
    noise = SeededNoise(x, run.seed)
    sigmas = without_infinite_start(sigmas, run)
    lambdas = half_log_snr(sigmas, run.rectified_flow)
    model_sampling = run.model_sampling
    interval = _StochasticInterval(model_sampling.percent_to_sigma(sde_start_percent),
                                   model_sampling.percent_to_sigma(sde_end_percent), eta)
    history_length = max(predictor_order, corrector_order)
    lower_order_to_end = sigmas[-1].item() == 0
    x_predicted, estimates = x, []
    h, tau, predictor_noise = 0.0, 0.0, 0.0
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        first_estimate = denoised = run.denoise(x_predicted, sigma)
        estimates = [*estimates, denoised][-history_length:]
        predictor_used = min(predictor_order, len(estimates))
        no_corrector = i == 0 or (sigma_next == 0 and not use_pece)
        corrector_used = 0 if no_corrector else min(corrector_order, len(estimates))
        if lower_order_to_end:
            predictor_used = min(predictor_used, len(sigmas) - 2 - i)
            corrector_used = min(corrector_used, len(sigmas) - 1 - i)

        if corrector_used == 0:
            x = x_predicted
        else:
            weights = _adams_weights(sigma, lambdas[i - corrector_used + 1:i + 1], lambdas[i - 1], lambdas[i], tau,
                                     simple_order_2, corrector=True)
            x = sigma / sigmas[i - 1] * (-(tau ** 2) * h).exp() * x + _weighted(estimates[-corrector_used:], weights)
            if tau > 0 and s_noise > 0:
                x = x + predictor_noise  # the corrector keeps the noise its prediction drew
            if use_pece:
                denoised = run.denoise(x, sigma)
                estimates[-1] = denoised

        if sigma_next == 0:
            x = x_predicted = denoised
        else:
            tau = interval.tau(sigma_next)
            weights = _adams_weights(sigma_next, lambdas[i - predictor_used + 1:i + 1], lambdas[i], lambdas[i + 1],
                                     tau, simple_order_2, corrector=False)
            h = lambdas[i + 1] - lambdas[i]
            x_predicted = (sigma_next / sigma * (-(tau ** 2) * h).exp() * x
                           + _weighted(estimates[-predictor_used:], weights))
            if tau > 0 and s_noise > 0:
                predictor_noise = (noise(sigma, sigma_next) * sigma_next * (-2 * tau ** 2 * h).expm1().neg().sqrt()
                                   * s_noise)
                x_predicted = x_predicted + predictor_noise
        run.report(i, x_predicted, first_estimate)
    return x


def _weighted(estimates: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """sum_k weights[k] * estimates[k]."""
    return torch.tensordot(torch.stack(estimates, dim=1), weights, dims=([1], [0]))


def _adams_weights(sigma_next: torch.Tensor, nodes: torch.Tensor, lambda_s: torch.Tensor, lambda_t: torch.Tensor,
                   tau: float, simple_order_2: bool, corrector: bool) -> torch.Tensor:
    """The weights of the estimates at the lambdas `nodes` for a step from lambda_s to lambda_t: alpha_t times
    the integrals of their Lagrange basis polynomials against the SDE's exponential kernel (the paper's eqs.
    15 and 18), or its simplified second-order weights (Appendix D)."""
    if simple_order_2 and len(nodes) == 2:
        return _simple_order_2_weights(sigma_next, nodes, lambda_s, lambda_t, tau, corrector)
    moments = _exponential_moments(lambda_s, lambda_t, len(nodes), tau)
    vandermonde_transposed = torch.vander(nodes, len(nodes), increasing=True).T
    return sigma_next * lambda_t.exp() * torch.linalg.solve(vandermonde_transposed, moments)


def _exponential_moments(s: torch.Tensor, t: torch.Tensor, count: int, tau: float) -> torch.Tensor:
    """(1 + tau^2) * integral from s to t of exp((1 + tau^2) * (l - t)) * l^p dl for p = 0 .. count-1, from the
    integration-by-parts recursion written as a lower-triangular matrix of signed factorial ratios."""
    growth = 1 + tau ** 2
    powers = torch.arange(count, dtype=s.dtype, device=s.device)
    boundary_terms = t ** powers - s ** powers * (-growth * (t - s)).exp()
    depth = powers.unsqueeze(1) - powers.unsqueeze(0)
    log_factorials = (powers + 1).lgamma()
    log_ratios = log_factorials.unsqueeze(1) - log_factorials.unsqueeze(0)
    if tau > 0:
        log_ratios = log_ratios - depth * math.log(growth)
    signs = torch.where(depth % 2 == 0, 1.0, -1.0)
    return (log_ratios.exp() * signs).tril() @ boundary_terms


def _simple_order_2_weights(sigma_next: torch.Tensor, nodes: torch.Tensor, lambda_s: torch.Tensor,
                            lambda_t: torch.Tensor, tau: float, corrector: bool) -> torch.Tensor:
    growth = 1 + tau ** 2
    h = lambda_t - lambda_s
    alpha_t = sigma_next * lambda_t.exp()
    if corrector:
        newest = alpha_t * (0.5 * growth * h)
        older = alpha_t * (-h * growth).expm1().neg() - newest
    else:
        older = alpha_t * (0.5 * growth * h ** 2) / (nodes[-2] - lambda_s)
        newest = alpha_t * (-h * growth).expm1().neg() - older
    return torch.stack([older, newest])
