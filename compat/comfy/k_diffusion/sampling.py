"""`comfy.k_diffusion.sampling` for plugins: k-diffusion's schedule and step helpers, and every sampler of
ComfyUI's list as a k-diffusion-signature function, `sample_<name>(model, x, sigmas, extra_args=None,
callback=None, disable=None, **options)` (`sample_dpm_fast(model, x, sigma_min, sigma_max, n, ...)` and
`sample_dpm_adaptive(model, x, sigma_min, sigma_max, ...)` as in k-diffusion), each running our sampler of that
name (`diffusion.sampling.samplers`) on `model(x, sigma, **extra_args)`. ComfyUI's options we have no use for are
accepted at their defaults (`s_churn`, `s_tmin`, `s_tmax`, `noise_sampler`, ...); another value is refused with
an error naming it. Noise comes from `extra_args["seed"]`.

Not provided: the noise samplers (`default_noise_sampler`, `BrownianTreeNoiseSampler`) and the `_RF` variants
(our samplers switch to rectified flow by the model).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
from tqdm.auto import trange  # noqa: F401  (k-diffusion's progress range; packs' samplers import it from here)

from diffusion.sampling import samplers, sigma_schedules
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


# ComfyUI's options our samplers have no use for, at the values that change nothing (accepted, others refused)
_UNUSED_OPTIONS: dict[str, Any] = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0,
                                   "noise_sampler": None, "tau_func": None, "noise_scaler": None, "eta": 0.0,
                                   "deis_mode": "tab", "return_info": False}
_UNUSED_BY_NAME: dict[str, dict[str, Any]] = {"ipndm": {"max_order": 4}, "ipndm_v": {"max_order": 4},
                                              "deis": {"max_order": 3}}


class _CalledModel:
    """Our `Denoiser` over a k-diffusion `model(x, sigma, **extra_args)`. Its noise schedule is the model's
    `model_sampling` (nodeflow's sampler model) or ComfyUI's `model.inner_model.inner_model.model_sampling`."""

    def __init__(self, model: Callable[..., torch.Tensor], extra_args: Mapping[str, Any], caller: str) -> None:
        self._model, self._extra_args, self._caller = model, dict(extra_args), caller

    @property
    def model_sampling(self) -> Any:
        found = getattr(self._model, "model_sampling", None)
        if found is None:
            found = getattr(getattr(getattr(self._model, "inner_model", None), "inner_model", None),
                            "model_sampling", None)
        if found is None:
            raise TypeError(f"comfy.k_diffusion.sampling.{self._caller}: this sampler needs the model's noise "
                            "schedule, and the model given has no `model_sampling` (nor inner_model.inner_model's)")
        return found

    @property
    def uncond_denoised(self) -> torch.Tensor | None:
        return getattr(self._model, "uncond_denoised", None)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self._model(x, sigma, **self._extra_args)


def _our_options(name: str, caller: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """`options` without ComfyUI's options our sampler `name` does not take (at their no-op values)."""
    takes = samplers.option_defaults(name)
    unused = {**_UNUSED_OPTIONS, **_UNUSED_BY_NAME.get(name, {})}
    ours = {}
    for option, value in options.items():
        if option in takes:
            ours[option] = value
        elif option in unused and (value is unused[option] or value == unused[option]):
            continue
        elif option in unused:
            raise ValueError(f"comfy.k_diffusion.sampling.{caller}: {option}={value!r} is not supported by "
                             f"nodeflow (only {unused[option]!r})")
        else:
            raise ValueError(f"comfy.k_diffusion.sampling.{caller}: unknown option {option!r} "
                             f"(accepted: {', '.join(sorted(set(takes) | set(unused)))})")
    return ours


def _sample_named(name: str, model: Callable[..., torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor,
                  extra_args: Mapping[str, Any] | None = None, callback: Callable[[dict], None] | None = None,
                  disable: bool | None = None, **options: Any) -> torch.Tensor:
    """Our sampler `name` from `x` (noised to sigmas[0]) down `sigmas` on a k-diffusion model; ComfyUI's
    `callback({"x", "i", "sigma", "sigma_hat", "denoised"})` once per step."""
    caller = f"sample_{name}"
    ours = _our_options(name, caller, options)
    if samplers.sampler_spec(name).uses_unguided and not hasattr(model, "uncond_denoised"):
        raise TypeError(f"comfy.k_diffusion.sampling.{caller}: a CFG++ sampler needs the unguided estimate, which "
                        "only nodeflow's sampler model (the `model` a KSAMPLER function is given) provides")
    extra_args = extra_args or {}
    seed = extra_args.get("seed")

    def report(index: int, latents: torch.Tensor, denoised: torch.Tensor) -> None:
        if callback is not None:
            sigma = sigmas[min(index, len(sigmas) - 1)]
            callback({"x": latents, "i": index, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})

    return samplers.sample(name, _CalledModel(model, extra_args, caller), x, sigmas, 0 if seed is None else int(seed),
                           report, **ours)


def sampler_function(name: str) -> Callable[..., torch.Tensor]:
    """Our sampler `name` with the signature ComfyUI's KSAMPLER calls, `(model, x, sigmas, extra_args=,
    callback=, disable=, **options)` (for dpm_fast and dpm_adaptive too); marked `uses_unguided` for CFG++."""
    function = partial(_sample_named, name)
    function.uses_unguided = samplers.sampler_spec(name).uses_unguided  # type: ignore[attr-defined]
    return function


def _schedule_between(sigma_min: float, sigma_max: float, steps: int) -> torch.Tensor:
    """A schedule from sigma_max to sigma_min of `steps` steps: what dpm_fast and dpm_adaptive read of one."""
    return torch.linspace(float(sigma_max), float(sigma_min), steps + 1)


def sample_dpm_fast(model: Callable[..., torch.Tensor], x: torch.Tensor, sigma_min: float, sigma_max: float, n: int,
                    extra_args: Mapping[str, Any] | None = None, callback: Callable[[dict], None] | None = None,
                    disable: bool | None = None, **options: Any) -> torch.Tensor:
    """k-diffusion's DPM-Solver (fast) in `n` model calls from sigma_max to sigma_min."""
    return _sample_named("dpm_fast", model, x, _schedule_between(sigma_min, sigma_max, n).to(x.device), extra_args,
                         callback, disable, **options)


def sample_dpm_adaptive(model: Callable[..., torch.Tensor], x: torch.Tensor, sigma_min: float, sigma_max: float,
                        extra_args: Mapping[str, Any] | None = None, callback: Callable[[dict], None] | None = None,
                        disable: bool | None = None, **options: Any) -> torch.Tensor:
    """k-diffusion's adaptive DPM-Solver from sigma_max to sigma_min."""
    return _sample_named("dpm_adaptive", model, x, _schedule_between(sigma_min, sigma_max, 1).to(x.device),
                         extra_args, callback, disable, **options)


def _named_sampler(name: str) -> Callable[..., torch.Tensor]:
    def sample(model: Callable[..., torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor,
               extra_args: Mapping[str, Any] | None = None, callback: Callable[[dict], None] | None = None,
               disable: bool | None = None, **options: Any) -> torch.Tensor:
        return _sample_named(name, model, x, sigmas, extra_args, callback, disable, **options)

    sample.__name__ = sample.__qualname__ = f"sample_{name}"
    sample.__doc__ = f"nodeflow's {name} sampler with k-diffusion's signature."
    sample.uses_unguided = samplers.sampler_spec(name).uses_unguided  # type: ignore[attr-defined]
    return sample


# sample_euler, sample_dpmpp_2m, ...: every sampler of ComfyUI's KSAMPLER list but the two above
globals().update({f"sample_{name}": _named_sampler(name) for name in samplers.SAMPLER_NAMES
                  if name not in ("dpm_fast", "dpm_adaptive", "ddim", "uni_pc", "uni_pc_bh2")})
