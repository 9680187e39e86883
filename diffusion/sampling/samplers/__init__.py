"""The sigma-based samplers of ComfyUI's KSampler, every name of its list (`SAMPLER_NAMES`, in its order),
computing what ComfyUI computes for each: `sample` runs one from latents already noised to the first sigma,
`sample_from_noise` does what ComfyUI's KSAMPLER wraps around that (noising the latents with the model's noise
scaling, and undoing it at the end), `option_defaults` gives the options a sampler takes (ComfyUI's Sampler*
nodes set them) and `sampler_spec` what else callers must know of a name (CFG++ needs the unguided estimate,
schedules that drop their next-to-last sigma, ddim's inpainting noise).

The algorithms live in modules by family: `euler` (Euler, Heun, DPM-2, gradient estimation), `ancestral`,
`dpmpp` (DPM-Solver++ 2S/2M, RES multistep), `sde` (DPM-Solver++ SDEs, ER-SDE, SEEDS), `linear_multistep` (LMS,
iPNDM, DEIS), `dpm_solver` (dpm_fast, dpm_adaptive), `sa_solver` and `uni_pc`; their noise comes from
`diffusion.sampling.noise`. `NODE_SAMPLERS` are the samplers only a Sampler* node makes (`advanced`: LCM
upscale, the alternative CFG++ Euler), run like the others but not in KSampler's list. Knows nothing of models,
guidance, nodes or files.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from diffusion.sampling.denoising import Denoiser, StepCallback
from diffusion.sampling.samplers import (
    advanced,
    ancestral,
    dpm_solver,
    dpmpp,
    euler,
    linear_multistep,
    sa_solver,
    sde,
    uni_pc,
)
from diffusion.sampling.samplers.common import SamplingRun

_NOISE_OPTIONS = {"eta": 1.0, "s_noise": 1.0}


@dataclass(frozen=True)
class SamplerSpec:
    """How a sampler name runs. `run(sampling_run, x, sigmas, **options)` -> latents at the last sigma.

    `defaults`: the options it takes, with ComfyUI's defaults. `uses_unguided`: a CFG++ sampler, which steps
    with the unguided estimate, so guidance must compute the negative on every call even at cfg 1.
    `discards_penultimate_sigma`: KSampler computes its schedule for one step more and drops the next-to-last
    sigma. `random_inpaint_noise`: when inpainting, the kept area is re-noised with `noise.inpaint_noise`
    instead of the starting noise. `stops_above_zero_at`: a schedule ending at 0 ends here instead, which is
    also the sigma the model's noise scaling is undone at."""

    run: Callable[..., torch.Tensor]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    uses_unguided: bool = False
    discards_penultimate_sigma: bool = False
    random_inpaint_noise: bool = False
    stops_above_zero_at: float | None = None

    def settings(self, options: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(options) - set(self.defaults)
        if unknown:
            accepted = ", ".join(sorted(self.defaults)) or "none"
            raise ValueError(f"unknown sampler options {sorted(unknown)} (accepted: {accepted})")
        return {**self.defaults, **options}

    def final_sigma(self, sigmas: torch.Tensor) -> torch.Tensor:
        """The sigma the sampler's result is at."""
        if self.stops_above_zero_at is not None and sigmas[-1] == 0:
            return sigmas[-1].new_tensor(self.stops_above_zero_at)
        return sigmas[-1]


SAMPLERS: dict[str, SamplerSpec] = {
    "euler": SamplerSpec(euler.euler),
    "euler_cfg_pp": SamplerSpec(partial(ancestral.euler_ancestral_cfg_pp, eta=0.0, s_noise=0.0),
                                uses_unguided=True),
    "euler_ancestral": SamplerSpec(ancestral.euler_ancestral, _NOISE_OPTIONS),
    "euler_ancestral_cfg_pp": SamplerSpec(ancestral.euler_ancestral_cfg_pp, _NOISE_OPTIONS, uses_unguided=True),
    "heun": SamplerSpec(euler.heun),
    "heunpp2": SamplerSpec(euler.heunpp2),
    "dpm_2": SamplerSpec(euler.dpm_2, discards_penultimate_sigma=True),
    "dpm_2_ancestral": SamplerSpec(ancestral.dpm_2_ancestral, _NOISE_OPTIONS, discards_penultimate_sigma=True),
    "lms": SamplerSpec(linear_multistep.lms, {"order": 4}),
    "dpm_fast": SamplerSpec(dpm_solver.dpm_fast),
    "dpm_adaptive": SamplerSpec(dpm_solver.dpm_adaptive, {
        "order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05, "pcoeff": 0.0, "icoeff": 1.0, "dcoeff": 0.0,
        "accept_safety": 0.81, "eta": 0.0, "s_noise": 1.0}),
    "dpmpp_2s_ancestral": SamplerSpec(dpmpp.dpmpp_2s_ancestral, _NOISE_OPTIONS),
    "dpmpp_2s_ancestral_cfg_pp": SamplerSpec(dpmpp.dpmpp_2s_ancestral_cfg_pp, _NOISE_OPTIONS, uses_unguided=True),
    "dpmpp_sde": SamplerSpec(partial(sde.dpmpp_sde, cpu_tree=True), {**_NOISE_OPTIONS, "r": 0.5}),
    "dpmpp_sde_gpu": SamplerSpec(partial(sde.dpmpp_sde, cpu_tree=False), {**_NOISE_OPTIONS, "r": 0.5}),
    "dpmpp_2m": SamplerSpec(dpmpp.dpmpp_2m),
    "dpmpp_2m_cfg_pp": SamplerSpec(dpmpp.dpmpp_2m_cfg_pp, uses_unguided=True),
    "dpmpp_2m_sde": SamplerSpec(partial(sde.dpmpp_2m_sde, cpu_tree=True),
                                {**_NOISE_OPTIONS, "solver_type": "midpoint"}),
    "dpmpp_2m_sde_gpu": SamplerSpec(partial(sde.dpmpp_2m_sde, cpu_tree=False),
                                    {**_NOISE_OPTIONS, "solver_type": "midpoint"}),
    "dpmpp_2m_sde_heun": SamplerSpec(partial(sde.dpmpp_2m_sde, cpu_tree=True),
                                     {**_NOISE_OPTIONS, "solver_type": "heun"}),
    "dpmpp_2m_sde_heun_gpu": SamplerSpec(partial(sde.dpmpp_2m_sde, cpu_tree=False),
                                         {**_NOISE_OPTIONS, "solver_type": "heun"}),
    "dpmpp_3m_sde": SamplerSpec(partial(sde.dpmpp_3m_sde, cpu_tree=True), _NOISE_OPTIONS),
    "dpmpp_3m_sde_gpu": SamplerSpec(partial(sde.dpmpp_3m_sde, cpu_tree=False), _NOISE_OPTIONS),
    "ddpm": SamplerSpec(ancestral.ddpm),
    "lcm": SamplerSpec(ancestral.lcm),
    "ipndm": SamplerSpec(linear_multistep.ipndm),
    "ipndm_v": SamplerSpec(linear_multistep.ipndm_v),
    "deis": SamplerSpec(linear_multistep.deis),
    "res_multistep": SamplerSpec(partial(dpmpp.res_multistep, eta=0.0, cfg_pp=False), {"s_noise": 1.0}),
    "res_multistep_cfg_pp": SamplerSpec(partial(dpmpp.res_multistep, eta=0.0, cfg_pp=True), {"s_noise": 1.0},
                                        uses_unguided=True),
    "res_multistep_ancestral": SamplerSpec(partial(dpmpp.res_multistep, cfg_pp=False), _NOISE_OPTIONS),
    "res_multistep_ancestral_cfg_pp": SamplerSpec(partial(dpmpp.res_multistep, cfg_pp=True), _NOISE_OPTIONS,
                                                  uses_unguided=True),
    "gradient_estimation": SamplerSpec(partial(euler.gradient_estimation, ge_gamma=2.0, cfg_pp=False)),
    "gradient_estimation_cfg_pp": SamplerSpec(partial(euler.gradient_estimation, ge_gamma=2.0, cfg_pp=True),
                                              uses_unguided=True),
    "er_sde": SamplerSpec(sde.er_sde, {"solver_type": "ER-SDE", "max_stage": 3, **_NOISE_OPTIONS}),
    "seeds_2": SamplerSpec(partial(sde.seeds_2, r=0.5), _NOISE_OPTIONS),
    "seeds_3": SamplerSpec(partial(sde.seeds_3, r_1=1. / 3, r_2=2. / 3), _NOISE_OPTIONS),
    "sa_solver": SamplerSpec(sa_solver.sa_solver, {
        "eta": 1.0, "sde_start_percent": 0.2, "sde_end_percent": 0.8, "s_noise": 1.0, "predictor_order": 3,
        "corrector_order": 4, "use_pece": False, "simple_order_2": False}),
    "sa_solver_pece": SamplerSpec(partial(sa_solver.sa_solver, use_pece=True), {
        "eta": 1.0, "sde_start_percent": 0.2, "sde_end_percent": 0.8, "s_noise": 1.0, "predictor_order": 3,
        "corrector_order": 4, "simple_order_2": False}),
    "ddim": SamplerSpec(euler.euler, random_inpaint_noise=True),
    "uni_pc": SamplerSpec(partial(uni_pc.uni_pc, variant="bh1"), discards_penultimate_sigma=True,
                          stops_above_zero_at=uni_pc.FINAL_SIGMA),
    "uni_pc_bh2": SamplerSpec(partial(uni_pc.uni_pc, variant="bh2"), discards_penultimate_sigma=True,
                              stops_above_zero_at=uni_pc.FINAL_SIGMA),
}
SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)
# Samplers that only ComfyUI's Sampler* nodes make (their SAMPLER, not a name of KSampler's list)
NODE_SAMPLERS: dict[str, SamplerSpec] = {
    "lcm_upscale": SamplerSpec(advanced.lcm_upscale, {"total_upscale": 2.0, "upscale_method": "bislerp",
                                                      "upscale_steps": None}),
    "euler_cfg_pp_alternative": SamplerSpec(advanced.euler_cfg_pp_alternative, uses_unguided=True),
}


def sampler_spec(name: str) -> SamplerSpec:
    spec = SAMPLERS.get(name, NODE_SAMPLERS.get(name))
    if spec is None:
        raise ValueError(f"unknown sampler {name!r}")
    return spec


def option_defaults(name: str) -> dict[str, Any]:
    """The options sampler `name` takes, with ComfyUI's defaults."""
    return dict(sampler_spec(name).defaults)


def _no_report(index: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
    return None


def _spec_of(sampler: str | SamplerSpec) -> SamplerSpec:
    return sampler if isinstance(sampler, SamplerSpec) else sampler_spec(sampler)


def sample(sampler: str | SamplerSpec, denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, seed: int,
           callback: StepCallback | None = None, **options: Any) -> torch.Tensor:
    """Run `sampler` (a name, or a spec of its own: a node pack's sampler function) from latents `x` at
    sigmas[0] down the schedule `sigmas` (ending at 0 or not) -> the latents at the last sigma. `seed` seeds the
    noise of samplers that draw any. `callback` is called once per step as ComfyUI calls its own (most samplers
    once per sigma interval; dpm_fast once per solver step, dpm_adaptive once per tried step) with the step index,
    the latents after the step and the step's denoised estimate."""
    spec = _spec_of(sampler)
    run = SamplingRun(denoiser, seed, callback or _no_report)
    with torch.no_grad():
        return spec.run(run, x, sigmas, **spec.settings(options))


def starts_from_pure_noise(model_sampling: Any, sigmas: torch.Tensor) -> bool:
    """Whether the schedule starts at (or above) the model's largest sigma, where diffusion models scale the
    starting noise to the variance-preserving sqrt(1 + sigma^2) instead of sigma."""
    max_sigma, first = float(model_sampling.sigma_max), float(sigmas[0])
    return math.isclose(max_sigma, first, rel_tol=1e-05) or first > max_sigma


def sample_from_noise(sampler: str | SamplerSpec, denoiser: Denoiser, noise: torch.Tensor, latent_image: torch.Tensor,
                      sigmas: torch.Tensor, seed: int, callback: StepCallback | None = None,
                      **options: Any) -> torch.Tensor:
    """ComfyUI's KSAMPLER around `sample`: `latent_image` noised with `noise` to sigmas[0] by the model's noise
    scaling, sampled, and brought back from the model's scaling at the sigma the sampler ended at. No sigmas:
    `latent_image` as it is."""
    if len(sigmas) == 0:
        return latent_image
    model_sampling = denoiser.model_sampling
    x = model_sampling.noise_scaling(sigmas[0], noise, latent_image, starts_from_pure_noise(model_sampling, sigmas))
    x = sample(sampler, denoiser, x, sigmas, seed, callback, **options)
    return model_sampling.inverse_noise_scaling(_spec_of(sampler).final_sigma(sigmas), x)
