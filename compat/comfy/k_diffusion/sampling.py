"""`comfy.k_diffusion.sampling` for plugins: k-diffusion's schedule and step helpers that packs' own samplers call,
over our sampling core (`diffusion.sampling`).

Not provided: the `sample_*` functions as k-diffusion-signature callables and the noise samplers
(`default_noise_sampler`, `BrownianTreeNoiseSampler`); our samplers run inside our core, not on a wrapped model.
"""
from __future__ import annotations

import torch
from tqdm.auto import trange  # noqa: F401  (k-diffusion's progress range; packs' samplers import it from here)

from diffusion.sampling import sigma_schedules
from diffusion.sampling.samplers.common import ancestral_split, derivative


def append_zero(x: torch.Tensor) -> torch.Tensor:
    """`x` with a final 0 appended (how k-diffusion ends every schedule)."""
    return torch.cat([x, x.new_zeros([1])])


def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """`x` with trailing singleton dimensions up to `target_dims`, so a per-sample sigma broadcasts over latents."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"comfy.k_diffusion.sampling.append_dims: input has {x.ndim} dims but target_dims is "
                         f"{target_dims}, which is less")
    return x[(...,) + (None,) * missing]


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """k-diffusion's `to_d`: the ODE derivative (x - denoised) / sigma, with sigma broadcast per sample."""
    return derivative(x, append_dims(torch.as_tensor(sigma), x.ndim), denoised)


def get_ancestral_step(sigma_from, sigma_to, eta: float = 1.0):
    """k-diffusion's `get_ancestral_step`: (sigma_down, sigma_up) of an ancestral step from sigma_from to sigma_to."""
    return ancestral_split(sigma_from, sigma_to, eta)


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                      device: str | torch.device = "cpu") -> torch.Tensor:
    """Karras et al.'s schedule of `n` sigmas plus the final 0, on `device`."""
    return sigma_schedules.karras_sigmas(n, sigma_min, sigma_max, rho).to(device)


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float,
                           device: str | torch.device = "cpu") -> torch.Tensor:
    """`n` sigmas evenly spaced in log sigma plus the final 0, on `device`."""
    return sigma_schedules.exponential_sigmas(n, sigma_min, sigma_max).to(device)


def get_sigmas_polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0,
                               device: str | torch.device = "cpu") -> torch.Tensor:
    """`n` sigmas with log sigma along a ramp raised to `rho`, plus the final 0, on `device`."""
    return sigma_schedules.polyexponential_sigmas(n, sigma_min, sigma_max, rho).to(device)


def get_sigmas_vp(n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """The continuous VP schedule's `n` sigmas plus the final 0, on `device`."""
    return sigma_schedules.vp_sigmas(n, beta_d, beta_min, eps_s).to(device)
