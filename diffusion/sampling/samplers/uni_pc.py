"""UniPC (Zhao et al. 2023): a multistep predictor-corrector on the data prediction, in ComfyUI's form: the
sigmas read as a variance-preserving schedule (alpha = 1 / sqrt(1 + sigma^2)), third order at most, lower order
for the first and last steps, the B(h) coefficients of variant 'bh1' (B(h) = h) or 'bh2' (B(h) = e^h - 1). The
corrector's network evaluation is the next step's estimate, so a schedule of N steps costs N evaluations.

A final sigma of 0 is replaced by `FINAL_SIGMA` (the step lands just above 0 and is rescaled as if there). Each
step reports the latents at the sigma it reached and the newest estimate. Knows nothing of models, guidance,
nodes or files.
"""
from __future__ import annotations

import torch

from diffusion.sampling.samplers.common import SamplingRun

FINAL_SIGMA = 0.001  # where UniPC stops instead of 0
MAX_ORDER = 3


def _log_alpha(sigma: torch.Tensor) -> torch.Tensor:
    """log(alpha) of the variance-preserving reading of sigma."""
    return 0.5 * torch.log(1 / ((sigma * sigma) + 1))


def _alpha(sigma: torch.Tensor) -> torch.Tensor:
    return torch.exp(_log_alpha(sigma))


def _std(sigma: torch.Tensor) -> torch.Tensor:
    """The variance-preserving noise std sqrt(1 - alpha^2)."""
    return torch.sqrt(1. - torch.exp(2. * _log_alpha(sigma)))


def _half_log_snr(sigma: torch.Tensor) -> torch.Tensor:
    log_alpha = _log_alpha(sigma)
    return log_alpha - 0.5 * torch.log(1. - torch.exp(2. * log_alpha))


def _per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] values broadcastable against [B, ...] latents."""
    return values[(...,) + (None,) * (like.dim() - 1)]


def uni_pc(run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor, *, variant: str) -> torch.Tensor:
    times = sigmas.clone()
    if times[-1] == 0:
        times[-1] = FINAL_SIGMA
    solver = _UniPC(run, variant)
    steps = len(times) - 1
    order = min(MAX_ORDER, len(times) - 2)
    batch = x.shape[0]
    x = x / torch.sqrt(1.0 + times[0] ** 2.0)
    for step_index in range(steps):
        if step_index == 0:
            start = times[0].expand(batch)
            estimates, known_times = [solver.data_prediction(x, start)], [start]
        elif step_index < order:
            t = times[step_index].expand(batch)
            x, estimate = solver.update(x, estimates, known_times, t, step_index, use_corrector=True)
            estimates, known_times = [*estimates, estimate], [*known_times, t]
        else:
            # the last step also takes the extra step to the final sigma, without a corrector (no evaluation)
            for step in range(step_index, steps + 1 if step_index == steps - 1 else step_index + 1):
                t = times[step].expand(batch)
                use_corrector = step != steps
                x, estimate = solver.update(x, estimates, known_times, t, min(order, steps + 1 - step),
                                            use_corrector=use_corrector)
                known_times = [*known_times[1:], t]
                if use_corrector:
                    estimates = [*estimates[1:], estimate]
        reached = times[-1] if step_index == steps - 1 else times[step_index]
        run.report(step_index, x / _alpha(reached), estimates[-1])
    return x / _alpha(times[-1])


class _UniPC:
    """UniPC's data prediction and multistep update, in the variance-preserving scale."""

    def __init__(self, run: SamplingRun, variant: str):
        if variant not in {"bh1", "bh2"}:
            raise ValueError("UniPC variant must be 'bh1' or 'bh2'")
        self._run, self._variant = run, variant

    def data_prediction(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0 from VP-scaled latents at per-row sigmas `t`, through the denoiser's noise estimate."""
        sigma = _per_row(t, x)
        x_k = x * ((sigma ** 2 + 1.0) ** 0.5)
        noise = (x_k - self._run.denoiser(x_k, t)) / sigma
        return (x - _per_row(_std(t), x) * noise) / _per_row(_alpha(t), x)

    def update(self, x: torch.Tensor, estimates: list[torch.Tensor], known_times: list[torch.Tensor],
               t: torch.Tensor, order: int, use_corrector: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x at t, the estimate at t from the corrector's evaluation or None without corrector), using the
        newest `order` estimates."""
        time_0, estimate_0 = known_times[-1], estimates[-1]
        lambda_0, lambda_t = _half_log_snr(time_0), _half_log_snr(t)
        alpha_t = torch.exp(_log_alpha(t))
        h = lambda_t - lambda_0

        ratios, differences = [], []
        for i in range(1, order):
            ratio = ((_half_log_snr(known_times[-(i + 1)]) - lambda_0) / h)[0]
            ratios.append(float(ratio))
            differences.append((estimates[-(i + 1)] - estimate_0) / ratio)
        rks = torch.tensor([*ratios, 1.], device=x.device)

        hh = -h[0]
        h_phi_1 = torch.expm1(hh)
        b_h = hh if self._variant == "bh1" else torch.expm1(hh)
        powers, targets = _order_conditions(rks, hh, h_phi_1, b_h, order)

        x_base = _per_row(_std(t) / _std(time_0), x) * x - _per_row(alpha_t * h_phi_1, x) * estimate_0
        step_scale = _per_row(alpha_t * b_h, x)
        stacked = torch.stack(differences, dim=1) if differences else None
        x_t = x_base
        if stacked is not None:
            rhos_p = torch.tensor([0.5], device=x.device) if order == 2 else torch.linalg.solve(
                powers[:-1, :-1], targets[:-1])
            x_t = x_base - step_scale * torch.tensordot(stacked, rhos_p, dims=([1], [0]))
        if not use_corrector:
            return x_t, None

        estimate_t = self.data_prediction(x_t, t)
        rhos_c = torch.tensor([0.5], device=x.device) if order == 1 else torch.linalg.solve(powers, targets)
        correction = rhos_c[-1] * (estimate_t - estimate_0)
        if stacked is not None:
            correction = torch.tensordot(stacked, rhos_c[:-1], dims=([1], [0])) + correction
        return x_base - step_scale * correction, estimate_t


def _order_conditions(rks: torch.Tensor, hh: torch.Tensor, h_phi_1: torch.Tensor, b_h: torch.Tensor,
                      order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, b) of UniPC's order conditions: R[k] = rks^k, b[k] = k! h phi_(k+2)(h) / B(h)."""
    powers, targets = [], []
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    for k in range(1, order + 1):
        powers.append(torch.pow(rks, k - 1))
        targets.append(float(h_phi_k * factorial / b_h))
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(powers), torch.tensor(targets, device=rks.device)
