"""A model's noise schedule as ComfyUI's samplers and schedulers see it (ComfyUI's `model_sampling`).

A `ModelSampling` says which noise levels the model was trained on (the ascending float32 table `sigmas`, its
ends `sigma_min` and `sigma_max`), how a noise level maps to the timestep the network is called with and back
(`timestep`, `sigma`), and which noise level lies a fraction of the way through sampling (`percent_to_sigma`).
Its `Prediction` says what the network outputs: how the network's input is scaled (`calculate_input`), how its
output becomes the denoised estimate (`calculate_denoised`), and how noise is mixed into a starting latent and
taken out of the result (`noise_scaling`, `inverse_noise_scaling`).

The kinds, each built from plain numbers:
- `DiscreteModelSampling`: a table of 1000 (or `timesteps`) sigmas from a beta schedule (SD1.x, SD2.x, SDXL),
  optionally rescaled to zero terminal SNR; `DistilledDiscreteModelSampling` keeps 50 of them (LCM).
- `DiscreteFlowModelSampling`: rectified flow with a time shift (SD3: shift 3.0, timesteps x1000; AuraFlow:
  shift 1.73, FLUX schnell: shift 1.0, both x1).
- `FluxModelSampling`: rectified flow with FLUX's exponential time shift `mu`.
- `ContinuousEDMModelSampling` / `ContinuousVModelSampling`: log-uniform sigmas between two bounds, with EDM's
  or a v-diffusion timestep.

The numbers are ComfyUI's: beta tables computed in float64 and stored as float32, the same float32 tensor
operations in the same order, Python floats where ComfyUI computes in Python floats. Knows nothing of networks,
families, nodes or files: a family hands in numbers or its diffusers scheduler config
(`ModelSampling.from_scheduler_config`).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping

import torch

# What percent_to_sigma answers for the very start of sampling: above every sigma a discrete model knows
BEFORE_FIRST_SIGMA = 999999999.9
COSINE_OFFSET = 8e-3  # the small offset s of the cosine beta schedule (improved DDPM)
# alphas_cumprod of the last timestep after a zero-terminal-SNR rescale: exactly zero would make its sigma infinite
ZSNR_LAST_ALPHA_CUMPROD = 4.8973451890853435e-08
LCM_SIGMA_DATA = 0.5
LCM_TIMESTEP_SCALING = 10.0


def _per_sample(sigma: torch.Tensor, ndim: int) -> torch.Tensor:
    """One sigma for the whole batch as a scalar, else one per row, broadcastable over an `ndim` tensor."""
    if sigma.nelement() == 1:
        return sigma.view(())
    return sigma.view(sigma.shape[:1] + (1,) * (ndim - 1))


class Prediction:
    """What the network predicts: the noise (epsilon), on a variance-exploding latent x = x0 + sigma * noise
    whose input to the network is scaled to unit variance. The other predictions override what differs."""

    name = "eps"
    is_flow_matching = False

    def calculate_input(self, sampling: ModelSampling, sigma: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        sigma = _per_sample(sigma, noisy.ndim)
        return noisy / (sigma ** 2 + sampling.sigma_data ** 2) ** 0.5

    def calculate_denoised(self, sampling: ModelSampling, sigma: torch.Tensor, model_output: torch.Tensor,
                           model_input: torch.Tensor) -> torch.Tensor:
        sigma = _per_sample(sigma, model_output.ndim)
        return model_input - model_output * sigma

    def noise_scaling(self, sigma: torch.Tensor, noise: torch.Tensor, latent_image: torch.Tensor,
                      max_denoise: bool = False) -> torch.Tensor:
        sigma = _per_sample(sigma, noise.ndim)
        # from pure noise: unit-variance noise of the model's variance-preserving space, which this
        # variance-exploding convention sees sqrt(1 + sigma^2) times larger
        scale = torch.sqrt(1.0 + sigma ** 2.0) if max_denoise else sigma
        return noise * scale + latent_image

    def inverse_noise_scaling(self, sigma: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return latent


class VPrediction(Prediction):
    """The network predicts v (Salimans & Ho): the denoised estimate mixes input and output by sigma."""

    name = "v_prediction"

    def calculate_denoised(self, sampling: ModelSampling, sigma: torch.Tensor, model_output: torch.Tensor,
                           model_input: torch.Tensor) -> torch.Tensor:
        sigma = _per_sample(sigma, model_output.ndim)
        sigma_data = sampling.sigma_data
        return (model_input * sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)
                - model_output * sigma * sigma_data / (sigma ** 2 + sigma_data ** 2) ** 0.5)


class EDMPrediction(Prediction):
    """Karras et al.'s EDM preconditioning (e.g. Playground v2.5): v prediction's mix with the output added."""

    name = "edm"

    def calculate_denoised(self, sampling: ModelSampling, sigma: torch.Tensor, model_output: torch.Tensor,
                           model_input: torch.Tensor) -> torch.Tensor:
        sigma = _per_sample(sigma, model_output.ndim)
        sigma_data = sampling.sigma_data
        return (model_input * sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)
                + model_output * sigma * sigma_data / (sigma ** 2 + sigma_data ** 2) ** 0.5)


class X0Prediction(Prediction):
    """The network predicts the clean latents themselves."""

    name = "x0"

    def calculate_denoised(self, sampling: ModelSampling, sigma: torch.Tensor, model_output: torch.Tensor,
                           model_input: torch.Tensor) -> torch.Tensor:
        return model_output


class ImgToImgPrediction(X0Prediction):
    """Clean-latent prediction from the unscaled noisy latents (image-to-image models such as Lotus)."""

    name = "img_to_img"

    def calculate_input(self, sampling: ModelSampling, sigma: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        return noisy


class LCMPrediction(Prediction):
    """Latent consistency models: the noise prediction's estimate blended with the input by the consistency
    boundary conditions at the (distilled) timestep."""

    name = "lcm"

    def calculate_denoised(self, sampling: ModelSampling, sigma: torch.Tensor, model_output: torch.Tensor,
                           model_input: torch.Tensor) -> torch.Tensor:
        per_row = sigma.shape[:1] + (1,) * (model_output.ndim - 1)
        timestep = sampling.timestep(sigma).view(per_row)
        sigma = sigma.view(per_row)
        eps_denoised = model_input - model_output * sigma
        scaled_timestep = timestep * LCM_TIMESTEP_SCALING
        skip_weight = LCM_SIGMA_DATA ** 2 / (scaled_timestep ** 2 + LCM_SIGMA_DATA ** 2)
        output_weight = scaled_timestep / (scaled_timestep ** 2 + LCM_SIGMA_DATA ** 2) ** 0.5
        return output_weight * eps_denoised + skip_weight * model_input


class FlowPrediction(Prediction):
    """Rectified flow (ComfyUI's CONST): x = sigma * noise + (1 - sigma) * x0, the network predicting the
    velocity noise - x0; the network sees the latents unscaled."""

    name = "flow"
    is_flow_matching = True

    def calculate_input(self, sampling: ModelSampling, sigma: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        return noisy

    def noise_scaling(self, sigma: torch.Tensor, noise: torch.Tensor, latent_image: torch.Tensor,
                      max_denoise: bool = False) -> torch.Tensor:
        sigma = _per_sample(sigma, noise.ndim)
        return sigma * noise + (1.0 - sigma) * latent_image

    def inverse_noise_scaling(self, sigma: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        sigma = _per_sample(sigma, latent.ndim)
        return latent / (1.0 - sigma)


EPS, V_PREDICTION, EDM = Prediction(), VPrediction(), EDMPrediction()
X0, IMG_TO_IMG, LCM, FLOW = X0Prediction(), ImgToImgPrediction(), LCMPrediction(), FlowPrediction()
# by ComfyUI's option names (the ModelSampling* nodes' `sampling` inputs; "flow" is ComfyUI's CONST)
PREDICTIONS: dict[str, Prediction] = {p.name: p for p in (EPS, V_PREDICTION, EDM, X0, IMG_TO_IMG, LCM, FLOW)}
# diffusers' `prediction_type` of discrete-time schedulers
DIFFUSERS_PREDICTIONS: dict[str, Prediction] = {"epsilon": EPS, "v_prediction": V_PREDICTION, "sample": X0}


class ModelSampling(ABC):
    """A noise schedule (the subclass) with a `Prediction`. `sigmas` is the ascending float32 table of the
    noise levels the model knows; `sigma_min` and `sigma_max` are its ends as 0-d tensors, as ComfyUI's
    schedulers read them."""

    sigmas: torch.Tensor

    def __init__(self, prediction: Prediction, sigma_data: float = 1.0):
        self.prediction = prediction
        self.sigma_data = sigma_data

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    @property
    def is_flow_matching(self) -> bool:
        """Whether latents interpolate between data and noise (sigma in [0, 1]), which changes some samplers'
        log-SNR (ComfyUI's `isinstance(model_sampling, CONST)`)."""
        return self.prediction.is_flow_matching

    @abstractmethod
    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The timestep the network is called with at noise level `sigma`."""

    @abstractmethod
    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """The noise level of a (possibly fractional) timestep."""

    @abstractmethod
    def percent_to_sigma(self, percent: float) -> float:
        """The noise level `percent` (0 = start, 1 = end) of the way through sampling."""

    def is_max_denoise(self, first_sigma: float) -> bool:
        """Whether sampling from `first_sigma` starts from pure noise (at or above `sigma_max`)."""
        max_sigma = float(self.sigma_max)
        return math.isclose(max_sigma, first_sigma, rel_tol=1e-05) or first_sigma > max_sigma

    def calculate_input(self, sigma: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        """The network's input for latents `noisy` at `sigma` ([B] or one value)."""
        return self.prediction.calculate_input(self, sigma, noisy)

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor,
                           model_input: torch.Tensor) -> torch.Tensor:
        """The denoised estimate from the network's output for the (unscaled) latents `model_input`."""
        return self.prediction.calculate_denoised(self, sigma, model_output, model_input)

    def noise_scaling(self, sigma: torch.Tensor, noise: torch.Tensor, latent_image: torch.Tensor,
                      max_denoise: bool = False) -> torch.Tensor:
        """The latents sampling starts from: `latent_image` noised to `sigma` with `noise`."""
        return self.prediction.noise_scaling(sigma, noise, latent_image, max_denoise)

    def inverse_noise_scaling(self, sigma: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """The sampler's final latents back in the model's latent space."""
        return self.prediction.inverse_noise_scaling(sigma, latent)

    @staticmethod
    def from_scheduler_config(config: Mapping[str, Any], flow_timestep_multiplier: float = 1000) -> ModelSampling:
        """What ComfyUI gives a model whose diffusers scheduler config is `config` (with or without
        `_class_name`): a beta table for discrete-time schedulers (DDIM, PNDM, Euler, ...; `beta_schedule`,
        `beta_start`, `beta_end`, `num_train_timesteps`, `trained_betas`, `prediction_type`,
        `rescale_betas_zero_snr`), FLUX's sampling at its default `mu` = `max_shift` for flow matching with
        `use_dynamic_shifting`, a shifted flow (`shift`) for other flow matching, EDM's continuous sigmas for
        EDM schedulers. The config cannot tell SD3 (timesteps x1000, the default) from AuraFlow and FLUX
        schnell (x1): pass `flow_timestep_multiplier=1.0` for those."""
        kind = _scheduler_kind(config)
        if kind == "edm":
            return _continuous_edm_from_scheduler_config(config)
        if kind == "flow":
            if config.get("use_dynamic_shifting", False):
                return FluxModelSampling(mu=config.get("max_shift", FluxModelSampling.DEFAULT_MU))
            return DiscreteFlowModelSampling(shift=config.get("shift", 1.0), multiplier=flow_timestep_multiplier)
        prediction_type = config.get("prediction_type", "epsilon")
        if prediction_type not in DIFFUSERS_PREDICTIONS:
            raise ValueError(f"prediction_type: unsupported {prediction_type!r}; "
                             f"known: {', '.join(DIFFUSERS_PREDICTIONS)}")
        return DiscreteModelSampling(BetaSchedule.from_scheduler_config(config),
                                     DIFFUSERS_PREDICTIONS[prediction_type],
                                     zsnr=bool(config.get("rescale_betas_zero_snr", False)))


BETA_KEYS = ("beta_schedule", "beta_start", "beta_end", "trained_betas")


def _scheduler_kind(config: Mapping[str, Any]) -> str:
    """Which kind of scheduler a config is ("edm", "flow" or "discrete"): by its class name, or where the
    project's family configs leave that out, by keys only that kind has (beta-based schedulers save their betas,
    and some of them a `use_dynamic_shifting` too)."""
    class_name = config.get("_class_name")
    if class_name is not None:
        return "edm" if class_name.startswith("EDM") else "flow" if class_name.startswith("FlowMatch") else "discrete"
    if "sigma_data" in config:
        return "edm"
    if any(key in config for key in BETA_KEYS):
        return "discrete"
    return "flow" if "shift" in config or "use_dynamic_shifting" in config else "discrete"


# diffusers' EDM schedulers' prediction_type -> ComfyUI's prediction (their "epsilon" is EDM preconditioning)
DIFFUSERS_EDM_PREDICTIONS: dict[str, Prediction] = {"epsilon": EDM, "v_prediction": V_PREDICTION}


def _continuous_edm_from_scheduler_config(config: Mapping[str, Any]) -> ContinuousEDMModelSampling:
    prediction_type = config.get("prediction_type", "epsilon")
    if prediction_type not in DIFFUSERS_EDM_PREDICTIONS:
        raise ValueError(f"prediction_type: unsupported {prediction_type!r} for an EDM scheduler; "
                         f"known: {', '.join(DIFFUSERS_EDM_PREDICTIONS)}")
    return ContinuousEDMModelSampling(DIFFUSERS_EDM_PREDICTIONS[prediction_type],
                                      sigma_min=config.get("sigma_min", 0.002), sigma_max=config.get("sigma_max", 80.0),
                                      sigma_data=config.get("sigma_data", 0.5))


# diffusers' beta_schedule names -> ComfyUI's (whose "linear" is linear in sqrt(beta), diffusers' "scaled_linear")
DIFFUSERS_BETA_SCHEDULES = {"scaled_linear": "linear", "linear": "sqrt_linear",
                            "squaredcos_cap_v2": "squaredcos_cap_v2"}


@dataclass(frozen=True)
class BetaSchedule:
    """The betas a discrete model was trained with, in ComfyUI's terms: `kind` is "linear" (linear in
    sqrt(beta): SD1.x, SD2.x, SDXL; diffusers' "scaled_linear"), "sqrt_linear" (linear in beta; diffusers'
    "linear"), "sqrt", "cosine" or "squaredcos_cap_v2"; `trained_betas` replaces the formula when given."""

    kind: str = "linear"
    linear_start: float = 0.00085
    linear_end: float = 0.012
    timesteps: int = 1000
    trained_betas: tuple[float, ...] | None = None

    @staticmethod
    def from_scheduler_config(config: Mapping[str, Any]) -> BetaSchedule:
        """From a diffusers discrete-time scheduler config, with diffusers' defaults for missing keys."""
        diffusers_kind = config.get("beta_schedule", "linear")
        if diffusers_kind not in DIFFUSERS_BETA_SCHEDULES:
            raise ValueError(f"beta_schedule: unsupported {diffusers_kind!r}; "
                             f"known: {', '.join(DIFFUSERS_BETA_SCHEDULES)}")
        trained = config.get("trained_betas")
        return BetaSchedule(kind=DIFFUSERS_BETA_SCHEDULES[diffusers_kind],
                            linear_start=config.get("beta_start", 0.0001), linear_end=config.get("beta_end", 0.02),
                            timesteps=int(config.get("num_train_timesteps", 1000)),
                            trained_betas=None if trained is None else tuple(float(b) for b in trained))

    def betas(self) -> torch.Tensor:
        """The betas in float64."""
        if self.trained_betas is not None:
            return torch.tensor(self.trained_betas, dtype=torch.float64)
        steps = self.timesteps
        if self.kind == "linear":
            return torch.linspace(self.linear_start ** 0.5, self.linear_end ** 0.5, steps, dtype=torch.float64) ** 2
        if self.kind == "sqrt_linear":
            return torch.linspace(self.linear_start, self.linear_end, steps, dtype=torch.float64)
        if self.kind == "sqrt":
            return torch.linspace(self.linear_start, self.linear_end, steps, dtype=torch.float64) ** 0.5
        if self.kind == "cosine":
            return _cosine_betas(steps)
        if self.kind == "squaredcos_cap_v2":
            return _squaredcos_cap_v2_betas(steps)
        raise ValueError(f"beta schedule: unknown kind {self.kind!r}")


def _cosine_betas(steps: int) -> torch.Tensor:
    progress = torch.arange(steps + 1, dtype=torch.float64) / steps + COSINE_OFFSET
    alphas_cumprod = torch.cos(progress / (1 + COSINE_OFFSET) * math.pi / 2).pow(2)
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    return torch.clamp(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], min=0, max=0.999)


def _squaredcos_cap_v2_betas(steps: int) -> torch.Tensor:
    """The cosine schedule evaluated in Python floats per step, capped at 0.999 (ComfyUI computes it this way
    only for unCLIP's noise augmentation, never for a sampling table)."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)],
                        dtype=torch.float64)


def rescale_to_zero_terminal_snr(sigmas: torch.Tensor) -> torch.Tensor:
    """Lin et al.'s zero-terminal-SNR rescale of a (float64) sigma table: sqrt(alphas_cumprod) shifted so that
    the last timestep carries no signal and scaled so that the first keeps its own."""
    alphas_cumprod = 1 / ((sigmas * sigmas) + 1)
    signal = alphas_cumprod.sqrt()
    first, last = signal[0].clone(), signal[-1].clone()
    signal = (signal - last) * (first / (first - last))
    alphas_cumprod = signal ** 2
    alphas_cumprod[-1] = ZSNR_LAST_ALPHA_CUMPROD
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


class DiscreteModelSampling(ModelSampling):
    """A discrete-time model (SD1.x, SD2.x, SDXL: ComfyUI's ModelSamplingDiscrete): one sigma per training
    timestep from the beta schedule, sigma_t = sqrt((1 - alphas_cumprod_t) / alphas_cumprod_t). Timesteps
    are table indices: `timestep` is the index of the nearest sigma in log space, `sigma` interpolates the
    table linearly in log sigma between integer timesteps."""

    def __init__(self, schedule: BetaSchedule = BetaSchedule(), prediction: Prediction = EPS, zsnr: bool = False):
        super().__init__(prediction)
        self.schedule = schedule
        self.zsnr = zsnr
        alphas_cumprod = torch.cumprod(1.0 - schedule.betas(), dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        if zsnr:
            sigmas = rescale_to_zero_terminal_snr(sigmas)
        self._set_table(sigmas)

    def _set_table(self, sigmas: torch.Tensor) -> None:
        # the log is taken at the table's own precision and then stored as float32
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return self._nearest_index(sigma).to(sigma.device)

    def _nearest_index(self, sigma: torch.Tensor) -> torch.Tensor:
        distances = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return distances.abs().argmin(dim=0).view(sigma.shape)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return self._interpolate(timestep.float().to(self.log_sigmas.device)).to(timestep.device)

    def _interpolate(self, index: torch.Tensor) -> torch.Tensor:
        index = torch.clamp(index, min=0, max=(len(self.sigmas) - 1))
        below, above, weight = index.floor().long(), index.ceil().long(), index.frac()
        return ((1 - weight) * self.log_sigmas[below] + weight * self.log_sigmas[above]).exp()

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return BEFORE_FIRST_SIGMA
        if percent >= 1.0:
            return 0.0
        # ComfyUI spans 999 timesteps whatever the table's length
        return self.sigma(torch.tensor((1.0 - percent) * 999.0)).item()


class DistilledDiscreteModelSampling(DiscreteModelSampling):
    """A model distilled to a few of its timesteps (LCM: ComfyUI's ModelSamplingDiscreteDistilled): the table
    keeps every `skip_steps`-th sigma of the full one, counted down from the last, and timesteps stay in the
    full table's numbering (the last of each skipped stretch)."""

    def __init__(self, schedule: BetaSchedule = BetaSchedule(), prediction: Prediction = LCM, zsnr: bool = False,
                 original_timesteps: int = 50):
        super().__init__(schedule, prediction, zsnr)
        full = self.sigmas
        self.skip_steps = len(full) // original_timesteps
        kept = torch.zeros(original_timesteps, dtype=torch.float32)
        for step in range(original_timesteps):
            kept[original_timesteps - 1 - step] = full[len(full) - 1 - step * self.skip_steps]
        self._set_table(kept)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return (self._nearest_index(sigma) * self.skip_steps + (self.skip_steps - 1)).to(sigma.device)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        index = ((timestep.float().to(self.log_sigmas.device) - (self.skip_steps - 1)) / self.skip_steps).float()
        return self._interpolate(index).to(timestep.device)


def shift_time(shift: float, t: Any) -> Any:
    """SD3's time shift of a flow time t in [0, 1] (a float or a float32 tensor): t' = shift t / (1 + (shift - 1) t),
    spending more of the schedule at high noise for shift > 1."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


class DiscreteFlowModelSampling(ModelSampling):
    """Rectified flow with SD3's time shift (ComfyUI's ModelSamplingDiscreteFlow, as ModelSamplingSD3 and
    ModelSamplingAuraFlow set it): sigma = shift_time(shift, timestep / multiplier); the table samples
    `timesteps` evenly spaced times in (0, 1]."""

    def __init__(self, shift: float = 1.0, multiplier: float = 1000, prediction: Prediction = FLOW,
                 timesteps: int = 1000):
        super().__init__(prediction)
        self.shift = shift
        self.multiplier = multiplier
        self.sigmas = self.sigma((torch.arange(1, timesteps + 1, 1) / timesteps) * multiplier)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma * self.multiplier

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return shift_time(self.shift, timestep / self.multiplier)

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return shift_time(self.shift, 1.0 - percent)


def flux_shift_time(mu: float, t: Any) -> Any:
    """FLUX's time shift of a flow time t (a float or a float32 tensor): e^mu / (e^mu + 1/t - 1)."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


class FluxModelSampling(ModelSampling):
    """Rectified flow with FLUX's exponential time shift (ComfyUI's ModelSamplingFlux): sigma =
    flux_shift_time(mu, t) over 10000 evenly spaced times; the network's timestep is sigma itself."""

    DEFAULT_MU = 1.15  # what ComfyUI gives FLUX dev without a ModelSamplingFlux node: the 1024x1024 shift
    # FLUX's linear fit of mu over the image's token count (ModelSamplingFlux's defaults)
    BASE_SEQUENCE_LENGTH, MAX_SEQUENCE_LENGTH = 256, 4096
    BASE_SHIFT, MAX_SHIFT = 0.5, 1.15
    LATENT_PIXELS_PER_TOKEN = 8 * 8 * 2 * 2  # the VAE's 8x downscale, then 2x2 latent patches

    def __init__(self, mu: float = DEFAULT_MU, prediction: Prediction = FLOW, timesteps: int = 10000):
        super().__init__(prediction)
        self.mu = mu
        self.sigmas = self.sigma(torch.arange(1, timesteps + 1, 1) / timesteps)

    @classmethod
    def for_image_size(cls, width: int, height: int, base_shift: float = BASE_SHIFT,
                       max_shift: float = MAX_SHIFT) -> FluxModelSampling:
        """As the ModelSamplingFlux node makes it for an image of `width` x `height` pixels: mu interpolated
        linearly in the token count between `base_shift` (256 tokens) and `max_shift` (4096 tokens)."""
        slope = (max_shift - base_shift) / (cls.MAX_SEQUENCE_LENGTH - cls.BASE_SEQUENCE_LENGTH)
        intercept = base_shift - slope * cls.BASE_SEQUENCE_LENGTH
        return cls(mu=(width * height / cls.LATENT_PIXELS_PER_TOKEN) * slope + intercept)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return flux_shift_time(self.mu, timestep)

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return flux_shift_time(self.mu, 1.0 - percent)


class ContinuousEDMModelSampling(ModelSampling):
    """A continuous-time model with EDM's timestep 0.25 log(sigma) (ComfyUI's ModelSamplingContinuousEDM:
    Playground v2.5 with EDM prediction and sigma_data 0.5, SDXL v-prediction EDM checkpoints, SVD): the
    table holds 1000 log-uniform sigmas between the bounds, as samplers and schedulers read it."""

    TABLE_SIZE = 1000

    def __init__(self, prediction: Prediction, sigma_min: float = 0.002, sigma_max: float = 120.0,
                 sigma_data: float = 1.0):
        super().__init__(prediction, sigma_data)
        self.sigmas = torch.linspace(math.log(sigma_min), math.log(sigma_max), self.TABLE_SIZE).exp()
        self.log_sigmas = self.sigmas.log()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return 0.25 * sigma.log()

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return (timestep / 0.25).exp()

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return BEFORE_FIRST_SIGMA
        if percent >= 1.0:
            return 0.0
        log_sigma_min = math.log(self.sigma_min)
        return math.exp((math.log(self.sigma_max) - log_sigma_min) * (1.0 - percent) + log_sigma_min)


class ContinuousVModelSampling(ContinuousEDMModelSampling):
    """A continuous-time v-diffusion model (ComfyUI's ModelSamplingContinuousV, e.g. Stable Audio): timestep =
    atan(sigma) * 2 / pi, in [0, 1)."""

    def __init__(self, prediction: Prediction = V_PREDICTION, sigma_min: float = 0.002, sigma_max: float = 120.0,
                 sigma_data: float = 1.0):
        super().__init__(prediction, sigma_min, sigma_max, sigma_data)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma.atan() / math.pi * 2

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return (timestep * math.pi / 2).tan()
