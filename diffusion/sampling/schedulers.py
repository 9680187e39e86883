"""ComfyUI's sampler and scheduler names mapped onto diffusers' discrete-time schedulers (noise and v prediction).

Scheduler names are diffusers' timestep/sigma spacing options under ComfyUI's names: `normal` keeps the model's
own scheduler config (what diffusers uses by default), `karras`/`exponential`/`beta` space sigmas (only for
sigma-based samplers), `sgm_uniform` is "trailing" spacing, `simple` "linspace", `ddim_uniform` "leading".
Timesteps are diffusers', not bit-identical to ComfyUI's own samplers. Flow-matching families have their own
table (`diffusion.sampling.flow`). Knows nothing of nodes, files or model families.
"""
from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class SamplerChoice:
    scheduler_class: str
    options: Mapping[str, Any]
    requires: tuple[str, ...] = ()  # optional packages the diffusers scheduler imports


SAMPLERS: dict[str, SamplerChoice] = {
    "euler": SamplerChoice("EulerDiscreteScheduler", {}),
    "euler_ancestral": SamplerChoice("EulerAncestralDiscreteScheduler", {}),
    "heun": SamplerChoice("HeunDiscreteScheduler", {}),
    "dpm_2": SamplerChoice("KDPM2DiscreteScheduler", {}),
    "dpm_2_ancestral": SamplerChoice("KDPM2AncestralDiscreteScheduler", {}),
    "lms": SamplerChoice("LMSDiscreteScheduler", {}, ("scipy",)),
    "dpmpp_2m": SamplerChoice("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_sde": SamplerChoice("DPMSolverMultistepScheduler",
                                  {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "dpmpp_sde": SamplerChoice("DPMSolverSDEScheduler", {}, ("scipy", "torchsde")),
    "deis": SamplerChoice("DEISMultistepScheduler", {}),
    "uni_pc": SamplerChoice("UniPCMultistepScheduler", {}),
    "ddim": SamplerChoice("DDIMScheduler", {}),
    "ddpm": SamplerChoice("DDPMScheduler", {}),
    "pndm": SamplerChoice("PNDMScheduler", {}),
    "lcm": SamplerChoice("LCMScheduler", {}),
}

SCHEDULER_REQUIRES = {"beta": ("scipy",)}
SCHEDULERS: dict[str, dict[str, Any]] = {
    "normal": {},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "beta": {"use_beta_sigmas": True},
    "sgm_uniform": {"timestep_spacing": "trailing"},
    "simple": {"timestep_spacing": "linspace"},
    "ddim_uniform": {"timestep_spacing": "leading"},
}


def installed(packages: tuple[str, ...]) -> bool:
    return all(importlib.util.find_spec(package) is not None for package in packages)


def available_samplers() -> list[str]:
    """Sampler names whose diffusers scheduler can be built here (lms and dpmpp_sde need scipy/torchsde)."""
    return [name for name, choice in SAMPLERS.items() if installed(choice.requires)]


def available_schedulers() -> list[str]:
    return [name for name in SCHEDULERS if installed(SCHEDULER_REQUIRES.get(name, ()))]


def make_scheduler(model_config: Mapping[str, Any], sampler_name: str, scheduler_name: str, seed: int) -> Any:
    """A fresh diffusers scheduler for a sampler/scheduler pair, built from the model's scheduler config."""
    import diffusers

    if sampler_name not in available_samplers():
        raise ValueError(f"sampler_name: unknown sampler {sampler_name!r}; known: {', '.join(available_samplers())}")
    if scheduler_name not in available_schedulers():
        raise ValueError(f"scheduler: unknown scheduler {scheduler_name!r}; known: {', '.join(available_schedulers())}")
    choice = SAMPLERS[sampler_name]
    scheduler_class = getattr(diffusers, choice.scheduler_class)
    accepted = inspect.signature(scheduler_class.__init__).parameters
    overrides = dict(choice.options)
    for option, value in SCHEDULERS[scheduler_name].items():
        if option not in accepted:
            raise ValueError(f"scheduler: {scheduler_name!r} is not available with sampler {sampler_name!r}")
        overrides[option] = value
    if "noise_sampler_seed" in accepted:
        overrides["noise_sampler_seed"] = seed
    return scheduler_class.from_config(dict(model_config), **overrides)
