"""`comfy.samplers` for plugins: ComfyUI's sampler and scheduler names (what packs offer in their own widgets and
hand to our KSampler), `calculate_sigmas`, sampler objects for SamplerCustom, `KSampler`, and the extension points
packs build their own sampling on, all run by our one sampling core (`diffusion.sampling`):

- `CFGGuider`, to use or to subclass: its `predict_noise` (a pack's override calling `sampling_function(
  self.inner_model, ...)`, or `calc_cond_batch` and `cfg_function`) is the denoiser of every step, and the guider is
  a GUIDER our SamplerCustomAdvanced runs;
- `KSAMPLER(sampler_function, extra_options)`: a pack's k-diffusion-style sampler function (what
  `comfy.k_diffusion.sampling`'s `sample_*` functions are) as a SAMPLER; `ksampler(name)` gives ours that way.

During a run a guider's `inner_model` is a `RunModel` (ComfyUI's BaseModel: the model's facts and the run's
network) and its `conds` are the conditionings as CONDITIONING holds them, not ComfyUI's processed cond dicts.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch

from comfy.k_diffusion import sampling as k_diffusion_sampling
from diffusion.components import DiffusionModel
from diffusion.contracts import Conditioning
from diffusion.patcher_api import ModelView, comfy_guider
from diffusion.sampling import custom, guiders, run_seed, samplers, sigma_schedules
from diffusion.sampling import ksampler as ksampling
from diffusion.sampling.samplers.common import SamplingRun

SAMPLER_NAMES: list[str] = ksampling.sampler_names()  # ComfyUI's list in its order, then the diffusers-only ones
SCHEDULER_NAMES: list[str] = ksampling.scheduler_names()  # ComfyUI's list in its order, then "diffusers"
# the samplers ComfyUI runs through k-diffusion code (all but ddim and the UniPC ones)
KSAMPLER_NAMES: list[str] = [name for name in samplers.SAMPLER_NAMES if name not in ("ddim", "uni_pc", "uni_pc_bh2")]


def calculate_sigmas(model_sampling: Any, scheduler_name: str, steps: int) -> torch.Tensor:
    """The named scheduler's `steps` + 1 sigmas (the last 0) for a model's noise schedule."""
    return sigma_schedules.calculate_sigmas(model_sampling, scheduler_name, steps)


def sampler_object(name: str) -> custom.SamplerChoice:
    """The SAMPLER value of a sampler name, as KSamplerSelect gives it."""
    if name not in samplers.SAMPLER_NAMES:
        raise ValueError(f"comfy.samplers.sampler_object: unknown sampler {name!r}")
    return custom.SamplerChoice(name)


# -- the model inside a run ---------------------------------------------------------------------------------------


def run_model_options(model: Any, sigmas: torch.Tensor | None, disable_cfg1_optimization: bool) -> dict[str, Any]:
    """ComfyUI's per-run `model_options` of a guider: a copy of its (its `transformer_options` copied too) with the
    run's schedule as `transformer_options["sample_sigmas"]`, and `disable_cfg1_optimization` when the run needs
    the negative estimate at cfg 1 (a CFG++ sampler, a patch that reads the negative)."""
    options = dict(model.model_options)
    options["transformer_options"] = copy.copy(options.get("transformer_options", {}))
    if sigmas is not None:
        options["transformer_options"]["sample_sigmas"] = sigmas
    if disable_cfg1_optimization:
        options["disable_cfg1_optimization"] = True
    return options


class RunModel(ModelView):
    """ComfyUI's BaseModel inside one sampling run (a guider's `inner_model`): the MODEL's facts (`ModelView`:
    model_sampling, latent_format, process_latent_in/out, ...) and the run's network, on which `sampling_function`
    and `calc_cond_batch` evaluate conditionings. Each conditioning (or pair, or list) is prepared once per run;
    the objects are kept with their rows so that their ids stay theirs while the run lasts."""

    def __init__(self, model: DiffusionModel, network: Any, batch: int, edit: Any, model_sampling: Any,
                 before_call: Callable[[], None] | None) -> None:
        super().__init__(model)
        self.patcher, self.network, self.batch, self.edit = model, network, batch, edit
        self.run_model_sampling, self.before_call = model_sampling, before_call
        self.post_cfg = guiders.patches_for_run(model.post_cfg)
        self._guided: dict[tuple[int, int | None], tuple[Any, Any, guiders.CfgDenoiser]] = {}
        self._joint: dict[tuple[int | None, ...], tuple[Sequence[Any], guiders.JointEstimates]] = {}
        self.last_uncond: torch.Tensor | None = None

    @property
    def model_sampling(self) -> Any:
        return self.run_model_sampling

    def guided(self, cond: Conditioning, uncond: Conditioning | None, cond_scale: float, x: torch.Tensor,
               sigma: torch.Tensor) -> torch.Tensor:
        """Classifier-free guidance of `cond` against `uncond` (None: cond alone) at `cond_scale`, with the
        model's pre- and post-CFG patches, as ComfyUI's sampling_function computes it."""
        key = (id(cond), None if uncond is None else id(uncond))
        if key not in self._guided:
            if uncond is None:  # only the positive rows run
                guider = guiders.CFGGuider(self.patcher, cond, cond, 1.0)
                denoiser = guider.denoiser(self.network, self.batch, self.edit, self.run_model_sampling,
                                           self.before_call, cfg1_optimization=True)
            else:
                guider = guiders.CFGGuider(self.patcher, cond, uncond, cond_scale)
                denoiser = guider.denoiser(self.network, self.batch, self.edit, self.run_model_sampling,
                                           self.before_call, cfg1_optimization=False)
            self._guided[key] = (cond, uncond, denoiser)
        denoiser = self._guided[key][2]
        denoiser.cfg = cond_scale  # a guider may change its scale from step to step
        denoised = denoiser(x, sigma)
        self.last_uncond = denoiser.uncond_denoised
        return denoised

    def estimates(self, conds: Sequence[Conditioning | None], x: torch.Tensor,
                  sigma: torch.Tensor) -> list[torch.Tensor]:
        """Each conditioning's denoised estimate alone (no guidance; None: zeros), batched into as few network
        calls as their token lengths allow."""
        key = tuple(None if cond is None else id(cond) for cond in conds)
        if key not in self._joint:
            if all(cond is None for cond in conds):
                return [torch.zeros_like(x) for _ in conds]
            self._joint[key] = (list(conds), guiders.JointEstimates(
                self.patcher, self.network, list(conds), self.batch, self.edit, self.run_model_sampling,
                self.before_call))
        return self._joint[key][1](x, sigma)


def _run_model(model: Any, caller: str) -> RunModel:
    if not isinstance(model, RunModel):
        raise TypeError(f"comfy.samplers.{caller}: `model` must be the guider's `inner_model` during sampling "
                        f"(nodeflow runs the network only inside a sampling run), not {type(model).__name__}")
    return model


def _cfg1_skips_uncond(cond_scale: float, model_options: Mapping[str, Any]) -> bool:
    return math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False)


def sampling_function(model: RunModel, x: torch.Tensor, timestep: torch.Tensor, uncond: Conditioning | None,
                      cond: Conditioning, cond_scale: float, model_options: Mapping[str, Any] | None = None,
                      seed: int | None = None) -> torch.Tensor:
    """ComfyUI's sampling_function: the guided denoised estimate of `x` at sigma `timestep` ([batch]) for `cond`
    against `uncond` at `cond_scale`; the negative is skipped at scale 1 unless model_options has
    `disable_cfg1_optimization`. The model's cfg functions and pre-/post-CFG patches apply."""
    run_model = _run_model(model, "sampling_function")
    if cond is None:
        raise ValueError("comfy.samplers.sampling_function: `cond` is None; a positive conditioning is required")
    if _cfg1_skips_uncond(cond_scale, model_options or {}):
        uncond = None
    return run_model.guided(cond, uncond, cond_scale, x, timestep)


def calc_cond_batch(model: RunModel, conds: Sequence[Conditioning | None], x_in: torch.Tensor,
                    timestep: torch.Tensor, model_options: Mapping[str, Any] | None = None) -> list[torch.Tensor]:
    """ComfyUI's calc_cond_batch: each conditioning's denoised estimate of `x_in` at sigma `timestep` (zeros for
    None), areas, masks and timestep ranges honoured, one network call per group of compatible rows."""
    return _run_model(model, "calc_cond_batch").estimates(conds, x_in, timestep)


def cfg_function(model: RunModel, cond_pred: torch.Tensor, uncond_pred: torch.Tensor, cond_scale: float,
                 x: torch.Tensor, timestep: torch.Tensor, model_options: Mapping[str, Any] | None = None,
                 cond: Conditioning | None = None, uncond: Conditioning | None = None) -> torch.Tensor:
    """ComfyUI's cfg_function: guidance between two denoised estimates at `cond_scale`, then the model's post-CFG
    patches (a pack's `sampler_cfg_function` replaces the plain guidance, as in ComfyUI)."""
    run_model = _run_model(model, "cfg_function")
    guided = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    return guiders.apply_post_cfg(run_model.post_cfg, guided, cond_pred, uncond_pred, timestep, x, cond_scale,
                                  run_model.model_sampling, guiders.model_calls(cond, uncond, None))


# -- guiders ------------------------------------------------------------------------------------------------------


class _GuiderDenoiser:
    """Our core's `Denoiser` over a pack-facing guider: every call is the guider's `predict_noise` (through
    `__call__`, as ComfyUI calls it) with the run's model_options and seed."""

    def __init__(self, guider: "CFGGuider", model_options: dict[str, Any], seed: int) -> None:
        self.guider, self.model_options, self.seed = guider, model_options, seed
        self.uncond_denoised: torch.Tensor | None = None

    @property
    def model_sampling(self) -> Any:
        return self.guider.inner_model.model_sampling

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        inner = self.guider.inner_model
        inner.last_uncond = None
        denoised = self.guider(x, sigma, model_options=self.model_options, seed=self.seed)
        self.uncond_denoised = inner.last_uncond
        return denoised


class CFGGuider:
    """GUIDER: ComfyUI's CFGGuider for packs to use and subclass. `CFGGuider(model)`, `set_conds(positive,
    negative)`, `set_cfg(cfg)`, then `sample(noise, latent_image, sampler, sigmas, ...)` or hand it to
    SamplerCustomAdvanced. `predict_noise(x, timestep, model_options, seed)` gives the denoised estimate of each
    step (what subclasses override); during a run `inner_model` is the `RunModel` and `conds` the conditionings
    set ("positive", "negative", or a subclass's own keys through `inner_set_conds`)."""

    image_cfg = None  # no InstructPix2Pix three-way guidance (our core asks every GUIDER)

    def __init__(self, model_patcher: DiffusionModel) -> None:
        self.model_patcher = model_patcher
        self.model_options = model_patcher.model_options
        self.original_conds: dict[str, Conditioning] = {}
        self.cfg = 1.0

    @property
    def model(self) -> DiffusionModel:
        """The MODEL our core samples with."""
        return self.model_patcher

    def with_model(self, model: DiffusionModel) -> "CFGGuider":
        """This guider (its subclass, conds and settings) over another MODEL value: our core's per-run copy."""
        changed = copy.copy(self)
        changed.model_patcher, changed.model_options = model, model.model_options
        return changed

    def set_conds(self, positive: Conditioning, negative: Conditioning) -> None:
        self.inner_set_conds({"positive": positive, "negative": negative})

    def set_cfg(self, cfg: float) -> None:
        self.cfg = cfg

    def inner_set_conds(self, conds: Mapping[str, Conditioning]) -> None:
        for name, conditioning in conds.items():
            self.original_conds[name] = list(conditioning)

    def __call__(self, x: torch.Tensor, timestep: torch.Tensor, model_options: Mapping[str, Any] | None = None,
                 seed: int | None = None) -> torch.Tensor:
        return self.predict_noise(x, timestep, model_options or {}, seed)

    def predict_noise(self, x: torch.Tensor, timestep: torch.Tensor, model_options: Mapping[str, Any] | None = None,
                      seed: int | None = None) -> torch.Tensor:
        return sampling_function(self.inner_model, x, timestep, self.conds.get("negative"),
                                 self.conds.get("positive"), self.cfg, model_options=model_options or {}, seed=seed)

    def denoiser(self, network: Any, batch: int, edit: Any, model_sampling: Any,
                 before_call: Callable[[], None] | None = None, cfg1_optimization: bool = True) -> _GuiderDenoiser:
        """Our core's entry (as `diffusion.sampling.guiders.CFGGuider.denoiser`): the run's `inner_model` and
        `conds` set up, and the denoiser over `predict_noise`."""
        model = self.model_patcher
        self.inner_model = RunModel(model, network, batch, edit, model_sampling, before_call)
        self.conds = {name: list(conditioning) for name, conditioning in self.original_conds.items()}
        disable_cfg1 = not cfg1_optimization or guiders.needs_uncond(model)
        options = run_model_options(self, run_seed.current_sigmas(), disable_cfg1)
        return _GuiderDenoiser(self, options, run_seed.current_seed())

    def sample(self, noise: torch.Tensor, latent_image: torch.Tensor, sampler: Any, sigmas: torch.Tensor,
               denoise_mask: torch.Tensor | None = None, callback: Callable | None = None,
               disable_pbar: bool = False, seed: int | None = None) -> torch.Tensor:
        """The raw latents (as LATENT holds them) sampled from raw `latent_image` with the caller's `noise`;
        `latent_image` itself for no sigmas."""
        if sigmas.shape[-1] == 0:
            return latent_image
        return run(self, sampler, sigmas, noise, latent_image, denoise_mask, callback, seed)


# -- samplers -----------------------------------------------------------------------------------------------------


class KDiffusionModel:
    """The `model` a k-diffusion sampler function is called with (ComfyUI's KSamplerX0Inpaint): `model(x, sigma,
    **extra_args)` is the guided denoised estimate of `x` at `sigma` ([batch]); `inner_model` is the guider as
    ComfyUI's (`inner_model.inner_model.model_sampling`, `inner_model.model_patcher`), `sigmas` the run's schedule.
    The extra args are those of the run (its noise mask is kept by our core around this call)."""

    def __init__(self, run: SamplingRun, guider: Any, sigmas: torch.Tensor) -> None:
        self._run, self.inner_model, self.sigmas = run, guider, sigmas

    @property
    def model_sampling(self) -> Any:
        return self._run.model_sampling

    @property
    def uncond_denoised(self) -> torch.Tensor | None:
        """The last call's unguided negative estimate (what CFG++ samplers step with)."""
        return self._run.denoiser.uncond_denoised

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args: Any) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device)
        return self._run.denoiser(x, sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma)


class KSAMPLER:
    """SAMPLER: ComfyUI's KSAMPLER, a k-diffusion-style `sampler_function(model, x, sigmas, extra_args=,
    callback=, disable=, **extra_options)` run as any sampler of our core: it gets the latents already noised to
    sigmas[0] and returns them at the last sigma; `model` is a `KDiffusionModel`, `extra_args` has ComfyUI's
    "model_options" (with `transformer_options["sample_sigmas"]`) and "seed", `callback` takes ComfyUI's step dict
    ("i", "x", "denoised", "sigma", "sigma_hat") and reports progress and previews."""

    def __init__(self, sampler_function: Callable[..., torch.Tensor], extra_options: Mapping[str, Any] | None = None,
                 inpaint_options: Mapping[str, Any] | None = None) -> None:
        if (inpaint_options or {}).get("random", False):
            raise ValueError("comfy.samplers.KSAMPLER: inpaint_options {'random': True} (fresh noise for the kept "
                             "area) is not supported by nodeflow: the kept area is noised with the run's noise")
        self.sampler_function = sampler_function
        self.extra_options = dict(extra_options or {})
        self.inpaint_options = dict(inpaint_options or {})

    @property
    def options(self) -> dict[str, Any]:
        """Options our core passes on: none, the function gets `extra_options` itself."""
        return {}

    def spec(self, guider: Any) -> samplers.SamplerSpec:
        """How our core runs this sampler under `guider` (see `custom.SamplerChoice.spec`)."""
        return samplers.SamplerSpec(partial(self._run, guider),
                                    uses_unguided=getattr(self.sampler_function, "uses_unguided", False))

    def _run(self, guider: Any, run: SamplingRun, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        face = comfy_guider(guider)
        disable_cfg1 = getattr(self.sampler_function, "uses_unguided", False)
        extra_args = {"model_options": run_model_options(face, sigmas, disable_cfg1), "seed": run.seed}

        def k_callback(step: Mapping[str, Any]) -> None:
            run.report(step["i"], step["x"], step["denoised"])

        return self.sampler_function(KDiffusionModel(run, face, sigmas), x, sigmas, extra_args=extra_args,
                                     callback=k_callback, disable=True, **self.extra_options)


def ksampler(sampler_name: str, extra_options: Mapping[str, Any] | None = None,
             inpaint_options: Mapping[str, Any] | None = None) -> KSAMPLER:
    """ComfyUI's `ksampler(name, extra_options)`: our sampler of that name as a KSAMPLER (its `sampler_function`
    is `comfy.k_diffusion.sampling.sample_<name>`; dpm_fast and dpm_adaptive take the schedule's ends)."""
    if sampler_name not in KSAMPLER_NAMES:
        raise ValueError(f"comfy.samplers.ksampler: unknown sampler {sampler_name!r} (one of KSAMPLER_NAMES)")
    function = k_diffusion_sampling.sampler_function(sampler_name)
    samplers.sampler_spec(sampler_name).settings(extra_options or {})  # unknown options named now, not mid-run
    return KSAMPLER(function, extra_options, inpaint_options)


class GivenNoise:
    """NOISE made by the caller (a pack's `comfy.sample.prepare_noise`), with the seed ancestral samplers use."""

    def __init__(self, noise: torch.Tensor, seed: int | None) -> None:
        self.noise = noise
        self.seed = 0 if seed is None else int(seed)

    def generate(self, latent: Mapping[str, Any]) -> torch.Tensor:
        if self.noise.shape != latent["samples"].shape:
            raise ValueError(f"noise of shape {tuple(self.noise.shape)} does not fit latents of shape "
                             f"{tuple(latent['samples'].shape)}")
        return self.noise.float()


def run(guider: Any, sampler: Any, sigmas: torch.Tensor, noise: torch.Tensor, latent_image: torch.Tensor,
        denoise_mask: torch.Tensor | None, callback: Callable | None, seed: int | None) -> torch.Tensor:
    """Sample raw `latent_image` from the caller's `noise` along `sigmas`; ComfyUI's `callback(step, x0, x,
    total_steps)` sees the model's sampling-space latents."""
    latent = {"samples": latent_image}
    if denoise_mask is not None:
        latent["noise_mask"] = denoise_mask
    steps = len(sigmas) - 1
    latent_format = guider.model.latent_format

    def on_step(index: int, latents: torch.Tensor, denoised: torch.Tensor) -> None:
        callback(index, latent_format.process_in(denoised), latent_format.process_in(latents), steps)

    return custom.sample(guider, sampler, sigmas, latent, GivenNoise(noise, seed),
                         on_step if callback is not None else None)


def sample(model: DiffusionModel, noise: torch.Tensor, positive: Conditioning, negative: Conditioning, cfg: float,
           device: Any, sampler: Any, sigmas: torch.Tensor, model_options: Mapping[str, Any] | None = None,
           latent_image: torch.Tensor | None = None, denoise_mask: torch.Tensor | None = None,
           callback: Callable | None = None, disable_pbar: bool = False, seed: int | None = None) -> torch.Tensor:
    """ComfyUI's `comfy.samplers.sample`: a CFGGuider of the model, conditionings and scale sampling with
    `sampler` along `sigmas` (raw latents in and out)."""
    guider = CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    latent_image = torch.zeros_like(noise) if latent_image is None else latent_image
    return guider.sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)


class KSampler:
    """ComfyUI's KSampler object: the names packs offer (`SAMPLERS`, `SCHEDULERS`), the schedule of `steps` for a
    sampler and scheduler (`sigmas`), and `sample` from the caller's noise."""

    SAMPLERS = SAMPLER_NAMES
    SCHEDULERS = SCHEDULER_NAMES

    def __init__(self, model: DiffusionModel, steps: int, device: Any = None, sampler: str | None = None,
                 scheduler: str | None = None, denoise: float | None = None,
                 model_options: Mapping[str, Any] | None = None) -> None:
        sampler, scheduler = sampler or SAMPLER_NAMES[0], scheduler or SCHEDULER_NAMES[0]
        problem = ksampling.choice_problem(model.sampling, sampler, scheduler)
        if problem is None and scheduler == ksampling.DIFFUSERS_SCHEDULER:
            problem = "scheduler: the 'diffusers' scheduler makes its own noise; use one of ComfyUI's schedulers"
        if problem is not None:
            raise ValueError(f"comfy.samplers.KSampler: {problem}")
        self.model, self.steps, self.sampler, self.scheduler = model, steps, sampler, scheduler
        self.denoise = 1.0 if denoise is None else denoise
        self.sigmas = sigma_schedules.ksampler_sigmas(model.model_sampling, scheduler, steps, self.denoise, sampler)

    def sample(self, noise: torch.Tensor, positive: Conditioning, negative: Conditioning, cfg: float,
               latent_image: torch.Tensor | None = None, start_step: int | None = None, last_step: int | None = None,
               force_full_denoise: bool = False, denoise_mask: torch.Tensor | None = None,
               sigmas: torch.Tensor | None = None, callback: Callable | None = None, disable_pbar: bool = False,
               seed: int | None = None) -> torch.Tensor:
        """The denoised raw latents (as LATENT holds them) of `latent_image` (zeros when None) from `noise`."""
        sigmas = self.sigmas if sigmas is None else sigmas
        sigmas = ksampling.steps_window(sigmas, start_step, last_step, force_full_denoise)
        latent_image = torch.zeros_like(noise) if latent_image is None else latent_image
        guider = guiders.CFGGuider(self.model, positive, negative, cfg)
        return run(guider, custom.SamplerChoice(self.sampler), sigmas, noise, latent_image, denoise_mask, callback,
                   seed)
