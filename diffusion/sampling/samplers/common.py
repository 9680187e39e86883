"""What the sampler families share: the run a sampler works in (`SamplingRun`: the denoiser, the seed, the step
report), the Karras ODE derivative, the split of an ancestral step into a deterministic part and fresh noise
(for the k-diffusion parametrisation and for rectified flow), and the half-log-SNR time of the exponential
integrators with ComfyUI's handling of flow models.

Samplers see latents in the k-diffusion convention (x = x0 + sigma * noise for diffusion models; ComfyUI keeps
x = (1 - sigma) * x0 + sigma * noise for rectified flow, which some samplers step differently). Knows nothing of
models, guidance, nodes or files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from diffusion.sampling.denoising import Denoiser, StepCallback

if TYPE_CHECKING:
    from diffusion.sampling.model_sampling import ModelSampling


@dataclass
class SamplingRun:
    """One sampler call: what it denoises with, the seed its noise comes from, where its steps are reported."""

    denoiser: Denoiser
    seed: int
    report: StepCallback

    @property
    def model_sampling(self) -> ModelSampling:
        return self.denoiser.model_sampling

    @property
    def rectified_flow(self) -> bool:
        """Whether the model noises as rectified flow, x = (1 - sigma) * x0 + sigma * noise (ComfyUI's CONST
        models: SD3, FLUX, ...), which some samplers step differently."""
        return self.model_sampling.is_flow_matching

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """The denoised estimate of `x` at noise level `sigma`, asked for every row of the batch."""
        return self.denoiser(x, sigma * x.new_ones([x.shape[0]]))

    def unguided(self, denoised: torch.Tensor) -> torch.Tensor:
        """The negative (unguided) estimate of the last `denoise` call, for the CFG++ samplers. Without a negative
        ComfyUI's guidance leaves that row of the batch empty: zeros."""
        uncond = self.denoiser.uncond_denoised
        return torch.zeros_like(denoised) if uncond is None else uncond


def derivative(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """dx/dsigma of the probability-flow ODE: (x - denoised) / sigma."""
    return (x - denoised) / sigma


def ancestral_split(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float) -> tuple[Any, Any]:
    """(sigma_down, sigma_up): step deterministically down to sigma_down, then add noise of std sigma_up, so that
    sigma_down^2 + sigma_up^2 = sigma_next^2; eta scales how much of the step is fresh noise (0: none)."""
    if not eta:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5)
    sigma_down = (sigma_next ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


@dataclass(frozen=True)
class FlowAncestralStep:
    """An ancestral step of rectified flow: move to `sigma_down` (interpolating towards the denoised estimate),
    rescale by `alpha_ratio` = (1 - sigma_next) / (1 - sigma_down), add noise of std `renoise`."""

    sigma_down: torch.Tensor
    alpha_ratio: torch.Tensor
    renoise: torch.Tensor

    @classmethod
    def between(cls, sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float) -> FlowAncestralStep:
        downstep_ratio = 1 + (sigma_next / sigma - 1) * eta
        sigma_down = sigma_next * downstep_ratio
        alpha_next = 1 - sigma_next
        alpha_down = 1 - sigma_down
        renoise = (sigma_next ** 2 - sigma_down ** 2 * alpha_next ** 2 / alpha_down ** 2) ** 0.5
        return cls(sigma_down, alpha_next / alpha_down, renoise)


def half_log_snr(sigma: torch.Tensor, rectified_flow: bool) -> torch.Tensor:
    """lambda = log(alpha / sigma): -log(sigma) for diffusion models, log((1 - sigma) / sigma) for flow."""
    if rectified_flow:
        return sigma.logit().neg()
    return sigma.log().neg()


def sigma_at_half_log_snr(half_log_snr_value: torch.Tensor, rectified_flow: bool) -> torch.Tensor:
    """The inverse of `half_log_snr`."""
    if rectified_flow:
        return half_log_snr_value.neg().sigmoid()
    return half_log_snr_value.neg().exp()


def without_infinite_start(sigmas: torch.Tensor, run: SamplingRun) -> torch.Tensor:
    """A flow schedule starting at sigma 1 (pure noise, lambda = -inf) starts instead at the sigma of 0.01% of
    the schedule, where the half-log-SNR is finite; other schedules are returned as they are."""
    if len(sigmas) <= 1 or not run.rectified_flow or sigmas[0] < 1:
        return sigmas
    sigmas = sigmas.clone()
    sigmas[0] = run.model_sampling.percent_to_sigma(1e-4)
    return sigmas


def positive_range(sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(smallest non-zero sigma, largest sigma): the interval a Brownian tree must cover."""
    return sigmas[sigmas > 0].min(), sigmas.max()
