"""The written contracts between the shared machinery and the model families: what every family implements.

- `FamilySampling` (an ABC): how the one sampling loop (`diffusion.sampling.loop`) drives a family's denoising
  network: its scheduler, starting noise, extra network inputs, one prediction and the clean estimate. A
  `DiffusionModel` (the MODEL value, `diffusion.components`) carries one; `DiscreteSampling` (noise/v prediction
  over diffusers' discrete schedulers) and `FlowSampling` (flow matching) are the two bases families extend.
- `TextEncoder` (a Protocol): the CLIP value of a family, which turns a prompt into CONDITIONING and can carry
  LoRAs and a layer choice.
- `VaeModel` (a Protocol): the VAE value, between IMAGE tensors and LATENT samples (raw VAE latents).

Also the plain values these contracts speak of: CONDITIONING, a LoRA patch, the guidance rows of one step's
network calls. Knows nothing of files, nodes or any particular family.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import torch

from diffusion.latent_format import IDENTITY, LatentFormat

# [[embeddings [1, tokens, width] float32 CPU, {"pooled_output": [1, width], ...options}], ...]
Conditioning = list[list[Any]]
# Puts a freshly built module on the model manager's device and dtype (`ModelManager.place`).
Place = Callable[[Any], Any]


@dataclass(frozen=True, eq=False)
class LoraPatch:
    """One LoRA file to apply at a strength: its state dict in diffusers/peft keys (`unet.*`, `transformer.*`,
    `text_encoder.*`), read with the key conventions of the family it is applied to, plus deferred keys (whole
    differences, layers by the model's own names) that `diffusion.lora` resolves when applying it."""

    name: str
    state_dict: Mapping[str, torch.Tensor]
    network_alphas: Mapping[str, float] | None
    strength: float


@dataclass(frozen=True)
class EmbeddingGroup:
    """Consecutive rows [start, stop) of a guidance batch whose text embeddings have one token length (shorter
    sequences repeated up to it), so that they go through the network in one call."""

    start: int
    stop: int
    embeddings: torch.Tensor


@dataclass(frozen=True)
class GuidanceBatch:
    """Text embeddings for the network calls of one step: negatives first, then positives, each `batch` rows, in
    `groups` of rows that share one call (usually one group); `options` are the conditioning entries' option
    dicts (pooled output, sizes, ...) in the same order."""

    groups: tuple[EmbeddingGroup, ...]
    negative_weights: list[float]
    positive_weights: list[float]
    uses_negative: bool
    options: tuple[Mapping[str, Any], ...] = ()
    concat: torch.Tensor | None = None  # extra input channels per row (inpainting and InstructPix2Pix UNets)
    unconditional_weights: list[float] = field(default_factory=list)  # three-way guidance rows, last
    image_cfg: float | None = None

    @property
    def rows(self) -> int:
        return self.groups[-1].stop


class FamilySampling(ABC):
    """How the shared sampling loop drives one family's denoising network. `lora_component` is the LoRA key prefix
    of the network ("unet" or "transformer"); `sampler_names`/`scheduler_names` are the ComfyUI sampler and
    scheduler names the family can run (None: every one the shared tables offer), so that a prompt asking for
    another is refused while it is validated, before any model is loaded. `latent_format` maps the raw VAE
    latents a LATENT holds to the space the network samples in and back (`diffusion.latent_format`)."""

    lora_component: str
    family_title: str  # how error messages name the family's models ("SD3")
    latent_format: LatentFormat = IDENTITY
    sampler_names: tuple[str, ...] | None = None
    scheduler_names: tuple[str, ...] | None = None
    limit_reason: str = ""  # why the sampler names are limited, for error messages (" (flow matching)")

    @classmethod
    def choice_problem(cls, sampler_name: str, scheduler_name: str) -> str | None:
        """Why this family cannot run a sampler/scheduler pair, naming the input; None when it can."""
        if cls.sampler_names is not None and sampler_name not in cls.sampler_names:
            return (f"sampler_name: {sampler_name!r} is not available for {cls.family_title} models"
                    f"{cls.limit_reason}; use one of: {', '.join(cls.sampler_names)}")
        if cls.scheduler_names is not None and scheduler_name not in cls.scheduler_names:
            return (f"scheduler: {scheduler_name!r} is not available for {cls.family_title} models; use one of: "
                    f"{', '.join(cls.scheduler_names)}")
        return None

    @abstractmethod
    def make_scheduler(self, config: Mapping[str, Any], sampler_name: str, scheduler_name: str, seed: int) -> Any:
        """A fresh diffusers scheduler for the pair, from the MODEL's scheduler config."""

    def set_timesteps(self, scheduler: Any, total: int, latents: torch.Tensor, device: torch.device) -> None:
        """The schedule of `total` steps (FLUX's depends on the image size, so the latents are passed)."""
        scheduler.set_timesteps(total, device=device)

    @abstractmethod
    def noised(self, scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, first_timestep: torch.Tensor,
               start: int) -> torch.Tensor:
        """Latents with the starting noise: txt2img's for a full schedule, img2img's for a later `start`."""

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        """Network inputs besides the text embeddings, from the conditioning entries' options
        (`guidance.options`, negatives first)."""
        return {}

    def takes_extra_channels(self, in_channels: int, out_channels: int) -> bool:
        """Whether a network of this family with these channel counts takes extra input channels laid out by the
        family (FLUX.1 Fill, Canny, Depth); False leaves the UNet rules of `diffusion.sampling.editing` to decide."""
        return False

    def extra_channels(self, network: Any, mask: torch.Tensor | None, image: torch.Tensor,
                       shape: torch.Size) -> torch.Tensor:
        """Those extra channels for latents of `shape`: from the image's latents (model space; the masked image
        for inpainting, the control image for Canny/Depth) and the mask [B, 1, H, W] (None: everything)."""
        raise NotImplementedError(f"{self.family_title} has no network with extra channels of its own layout")

    @abstractmethod
    def network_output(self, network: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                       embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """One call of the network: its raw output for every row of `model_input`, which is already scaled for
        the network, at `timestep` in the network's own convention (the sigma core's `ModelSampling.timestep`:
        a discrete schedule's index, sigma times the flow multiplier)."""

    @abstractmethod
    def predict(self, network: Any, scheduler: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """One call of the network in the diffusers-scheduler loop: its prediction for every row of
        `model_input` (unguided) at the scheduler's `timestep`."""

    @abstractmethod
    def denoised(self, scheduler: Any, output: Any, latents: torch.Tensor, prediction: torch.Tensor,
                 sampler_name: str) -> torch.Tensor:
        """The fully denoised estimate after the last step run (`latents`: the input of that step)."""


@runtime_checkable
class TextEncoder(Protocol):
    """CLIP: what CLIPTextEncode, CLIPSetLastLayer and the LoRA loaders need of every family's text encoders.
    `family` names the family (`diffusion.registry`), whose LoRA key conventions a LoRA for it follows."""

    name: str
    family: str
    loras: tuple[LoraPatch, ...]

    def encode_prompt(self, text: str) -> Conditioning:
        """CONDITIONING for a prompt, as the family's pipeline encodes it."""

    def with_layer(self, layer_index: int) -> "TextEncoder":
        """The encoder reading prompts from another layer (-1 the last); ValueError naming `stop_at_clip_layer`."""

    def with_lora(self, patch: LoraPatch) -> "TextEncoder":
        """The encoder applying one more LoRA while it encodes (the loaded modules stay unchanged)."""

    def lora_modules(self) -> list[tuple[str, Any]]:
        """(LoRA key prefix, module) of each text encoder a LoRA can patch."""

    def offloadable(self) -> list[Any]:
        """The big text encoders that may be freed after encoding (`diffusion.lazy_module`); often none."""


@runtime_checkable
class VaeModel(Protocol):
    """VAE: converts IMAGE [B, H, W, C] in 0..1 to LATENT samples (the VAE's raw latents, unscaled, as ComfyUI's
    LATENT holds them) and back, on CPU float32 tensors. `scaling_factor` and `shift_factor` are the autoencoder
    config's; sampling applies the model family's own (`FamilySampling.latent_format`)."""

    name: str
    autoencoder: Any

    @property
    def scaling_factor(self) -> float: ...

    @property
    def shift_factor(self) -> float: ...

    @property
    def downscale(self) -> int: ...

    def encode(self, pixels: torch.Tensor, tile_size: int | None = None, force_tiling: bool = False) -> torch.Tensor:
        """Pixels to raw latents."""

    def decode(self, latents: torch.Tensor, tile_size: int | None = None, force_tiling: bool = False) -> torch.Tensor:
        """Raw latents to pixels."""
