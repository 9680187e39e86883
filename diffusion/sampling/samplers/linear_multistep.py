"""Linear multistep methods on the probability-flow ODE in sigma: each step combines the current slope with the
slopes of earlier steps. LMS (Adams-Bashforth weights integrated over the actual sigmas), iPNDM (fixed-step
Adams-Bashforth weights, up to fourth order) and its variable-step form iPNDM-v (Zhang & Chen 2023), and DEIS
(Zhang & Chen 2022, 'tab' mode: the exponential-integrator weights of a VP SDE spanning EDM's sigma range,
integrated numerically).

All are deterministic; each reports one step per sigma interval. Knows nothing of models, guidance, nodes or
files.
"""
from __future__ import annotations

import numpy as np
import torch

from diffusion.sampling.samplers.common import SamplingRun, derivative


def lms(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, order: int) -> torch.Tensor:
    """`order` slopes at most; the step to sigma 0 jumps to the denoised estimate."""
    sigma_values = sigmas.detach().cpu().numpy()
    slopes: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = run.denoise(x, sigmas[i])
        slopes = [*slopes, derivative(x, sigmas[i], denoised)][-order:]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            used = min(i + 1, order)
            weights = [_lms_weight(sigma_values, i, used, j) for j in range(used)]
            x = x + sum(weight * slope for weight, slope in zip(weights, reversed(slopes)))
        run.report(i, x, denoised)
    return x


def _lms_weight(sigma_values: np.ndarray, i: int, order: int, j: int) -> float:
    """The integral over [sigma_i, sigma_i+1] of the Lagrange basis polynomial of sigma_(i-j) on the nodes
    sigma_i, ..., sigma_(i-order+1) (float32 nodes, scipy's quadrature to 1e-4 relative, as ComfyUI)."""
    from scipy import integrate  # only lms needs scipy, which is slow to import

    def basis(tau: float) -> float:
        product = 1.
        for k in range(order):
            if k != j:
                product *= (tau - sigma_values[i - k]) / (sigma_values[i - j] - sigma_values[i - k])
        return product

    return integrate.quad(basis, sigma_values[i], sigma_values[i + 1], epsrel=1e-4)[0]


IPNDM_MAX_ORDER = 4
DEIS_MAX_ORDER = 3


def _remember(history: list[torch.Tensor], slope: torch.Tensor, length: int) -> list[torch.Tensor]:
    """The last `length` slopes, oldest first."""
    return [*history, slope][-length:]


def ipndm(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        slope = (x - denoised) / sigma
        x = denoised if sigma_next == 0 else x + _adams_bashforth_step(sigma_next - sigma, slope, history)
        history = _remember(history, slope, IPNDM_MAX_ORDER - 1)
        run.report(i, x, denoised)
    return x


def _adams_bashforth_step(dt: torch.Tensor, slope: torch.Tensor, history: list[torch.Tensor]) -> torch.Tensor:
    """The fixed-step Adams-Bashforth change of x over dt, of the order the history allows (up to
    `IPNDM_MAX_ORDER`)."""
    if not history:
        return dt * slope
    if len(history) == 1:
        return dt * (3 * slope - history[-1]) / 2
    if len(history) == 2:
        return dt * (23 * slope - 16 * history[-1] + 5 * history[-2]) / 12
    return dt * (55 * slope - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24


def ipndm_v(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        slope = (x - denoised) / sigma
        if sigma_next == 0:
            x = denoised
        else:
            weights = _variable_step_weights(sigmas, i, len(history) + 1)
            combined = weights[0] * slope
            for weight, earlier in zip(weights[1:], reversed(history)):
                combined = combined + weight * earlier
            x = x + (sigma_next - sigma) * combined
        history = _remember(history, slope, IPNDM_MAX_ORDER - 1)
        run.report(i, x, denoised)
    return x


def _variable_step_weights(sigmas: torch.Tensor, i: int, order: int) -> list:
    """The weights of the current slope and the earlier ones (newest first) of variable-step Adams-Bashforth
    of `order` (1 to 4) at step i; `third` and `fourth` are the corrections the third and fourth orders add."""
    if order == 1:
        return [1]
    h_n = sigmas[i + 1] - sigmas[i]
    h_n_1 = sigmas[i] - sigmas[i - 1]
    if order == 2:
        return [(2 + (h_n / h_n_1)) / 2, -(h_n / h_n_1) / 2]
    h_n_2 = sigmas[i - 1] - sigmas[i - 2]
    third = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
    if order == 3:
        return [(2 + (h_n / h_n_1)) / 2 + third,
                -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * third,
                third * h_n_1 / h_n_2]
    h_n_3 = sigmas[i - 2] - sigmas[i - 3]
    fourth_head = (1 - h_n / (3 * (h_n + h_n_1))) / 2
    fourth_tail = (1 - h_n / (2 * (h_n + h_n_1))) * h_n / (6 * (h_n + h_n_1 + h_n_2))
    fourth = ((fourth_head + fourth_tail) * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2))
              / (h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3)))
    ratio_2 = h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))
    return [(2 + (h_n / h_n_1)) / 2 + third + fourth,
            -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * third - (1 + (h_n_1 / h_n_2) + ratio_2) * fourth,
            third * h_n_1 / h_n_2 + ((h_n_1 / h_n_2) + ratio_2 * (1 + h_n_2 / h_n_3)) * fourth,
            -fourth * ratio_2 * h_n_1 / h_n_2]


def deis(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    times, beta_0, beta_1 = _deis_vp_times(sigmas)
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = run.denoise(x, sigma)
        slope = (x - denoised) / sigma
        order = 1 if sigma_next <= 0 else min(DEIS_MAX_ORDER, i + 1)
        if order == 1:
            x = x + (sigma_next - sigma) * slope
        else:
            weights = _deis_weights(times, beta_0, beta_1, i, order)
            x = x + weights[0] * slope
            for weight, earlier in zip(weights[1:], reversed(history)):
                x = x + weight * earlier
        history = _remember(history, slope, DEIS_MAX_ORDER - 1)
        run.report(i, x, denoised)
    return x


# DEIS maps sigmas to the time of a VP SDE whose schedule spans EDM's default sigma range, whatever the model
DEIS_SIGMA_MIN, DEIS_SIGMA_MAX, DEIS_EPSILON_S = 0.002, 80, 1e-3
DEIS_QUADRATURE_POINTS = 10000


def _deis_vp_times(sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(VP times of the sigmas, beta_0, beta_1) of the linear VP schedule through EDM's sigma range. The
    reference weights take log(sigma_min^2 + 1) in float32 and log(sigma_max^2 + 1) of the integer sigma_max in
    float64 (both by numpy), which makes the betas float64; the same here, for the same weights."""
    log_min = torch.tensor(np.log((torch.tensor(DEIS_SIGMA_MIN) ** 2 + 1).numpy()))
    log_max = torch.tensor(np.log(DEIS_SIGMA_MAX ** 2 + 1), dtype=torch.float64)
    beta_d = 2 * (log_min / DEIS_EPSILON_S - log_max) / (DEIS_EPSILON_S - 1)
    beta_min = log_max - 0.5 * beta_d
    sigmas = sigmas.detach().cpu()
    times = ((beta_min ** 2 + 2 * beta_d * (sigmas ** 2 + 1).log()).sqrt() - beta_min) / beta_d
    return times, beta_min, beta_d + beta_min


def _deis_weights(times: torch.Tensor, beta_0: torch.Tensor, beta_1: torch.Tensor, i: int,
                  order: int) -> list[torch.Tensor]:
    """The weights of the current slope and the earlier ones (newest first) for the step from times[i] to
    times[i + 1]: the exponential-integrator kernel times each Lagrange basis polynomial on the last `order`
    times, integrated by a Riemann sum."""
    taus = torch.linspace(times[i], times[i + 1], DEIS_QUADRATURE_POINTS)
    dtau = (times[i + 1] - times[i]) / DEIS_QUADRATURE_POINTS
    nodes = times[[i - k for k in range(order)]]
    kernel = _deis_kernel(beta_0, beta_1, taus)
    weights = []
    for j in range(order):
        basis = 1
        for k in range(order):
            if k != j:
                basis *= (taus - nodes[k]) / (nodes[j] - nodes[k])
        weights.append(torch.sum(kernel * basis) * dtau)
    return weights


def _deis_kernel(beta_0: torch.Tensor, beta_1: torch.Tensor, taus: torch.Tensor) -> torch.Tensor:
    """-1/2 d log(alpha)/dtau / sqrt(alpha (1 - alpha)) with alpha(tau) = exp(-tau^2 (beta_1 - beta_0) / 2 -
    tau beta_0); the derivative by autograd, whose rounding the reference weights carry."""
    with torch.inference_mode(False), torch.enable_grad():
        taus = taus.clone().requires_grad_(True)
        beta_0, beta_1 = beta_0.clone(), beta_1.clone()
        alpha = torch.exp(-0.5 * taus ** 2 * (beta_1 - beta_0) - taus * beta_0)
        alpha.log().sum().backward()
        log_alpha_slope = taus.grad
        return (-0.5 * log_alpha_slope / torch.sqrt(alpha * (1 - alpha))).detach()
