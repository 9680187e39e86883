"""What the sampler adds for image editing: the extra UNet input channels of inpainting and InstructPix2Pix
models, keeping unmasked regions for ordinary models, and InstructPix2Pix's three-way guidance.

Model variants are told apart by the UNet's input channels, as ComfyUI and diffusers do: as many as it returns
(4 for SD) an ordinary model, 5 more (9) an inpainting model (latents + mask + masked-image latents), twice as
many (8) an InstructPix2Pix model (latents + source image latents). The editing inputs travel as ComfyUI
carries them:

- `LATENT["noise_mask"]` (MASK, 1 = repaint): an ordinary model keeps the source latents outside it after every
  step, exactly as diffusers' StableDiffusionInpaintPipeline does for 4-channel UNets (soft masks blend); an
  inpainting model gets it (binarized, nearest-resized as diffusers does) as its mask channel, with the latent
  samples (VAEEncodeForInpaint's masked image) as its masked-image channels, and is not blended, as in diffusers.
- conditioning options `concat_latent_image` (the VAE's raw latents, as ComfyUI keeps them) and `concat_mask`
  (MASK): the image an entry shows the model (InstructPixToPixConditioning, InpaintModelConditioning).
  InstructPix2Pix UNets take the raw latents, as in diffusers and ComfyUI; inpainting UNets take them in the
  model's sampling space (its latent format's `process_in`), as ComfyUI's concat_cond does.

LATENT samples are raw VAE latents; `EditInputs` holds the source in the model's sampling space (ComfyUI's
process_latent_in, an all-zero latent left at zero), where the mask blending happens.

Knows nothing of nodes, files or schedulers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from diffusion.components import DiffusionModel
from diffusion.latent_format import IDENTITY, LatentFormat

LATENT_CHANNELS = 4
MASK_AND_IMAGE_CHANNELS = 1 + LATENT_CHANNELS
BASE, INPAINT, INSTRUCT_PIX2PIX = "base", "inpaint", "instruct_pix2pix"
FAMILY_CHANNELS = "family_channels"  # extra input channels the family lays out (FLUX.1 Fill, Canny, Depth)
# The SD VAE's latents of a mid-grey image (ComfyUI's `blank_inpaint_image_like`): the masked image an
# inpainting model sees when nothing tells it what to keep.
BLANK_INPAINT_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)
HANDOFF_SOURCE = "noise_mask_source"  # LATENT key: the source latents behind leftover-noise samples


def model_variant(model: DiffusionModel) -> str:
    """`family_channels` for a network taking extra channels of its family's layout (FLUX.1 Fill, Canny, Depth),
    `inpaint` for a UNet taking 5 more input channels than it returns (mask + masked image), `instruct_pix2pix` for
    one taking twice as many (the source image latents), `base` otherwise."""
    config = getattr(model.network, "config", None)
    in_channels = int(getattr(config, "in_channels", 0) or 0)
    out_channels = int(getattr(config, "out_channels", None) or in_channels)
    if model.sampling.takes_extra_channels(in_channels, out_channels):
        return FAMILY_CHANNELS
    if in_channels == out_channels + MASK_AND_IMAGE_CHANNELS:
        return INPAINT
    if in_channels == 2 * out_channels and in_channels:
        return INSTRUCT_PIX2PIX
    return BASE


def _mask_batch(mask: torch.Tensor) -> torch.Tensor:
    """A MASK ([H, W], [B, H, W] or [B, 1, H, W]) as float [B, 1, H, W]."""
    return mask.float().reshape((-1, 1) + tuple(mask.shape[-2:]))


def _to_batch(tensor: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if tensor.shape[0] == batch:
        return tensor
    if batch % tensor.shape[0]:
        raise ValueError(f"{what}: batch of {tensor.shape[0]} does not divide the latent batch of {batch}")
    return tensor.repeat(batch // tensor.shape[0], *([1] * (tensor.ndim - 1)))


def blend_mask(noise_mask: torch.Tensor, latent_shape: torch.Size) -> torch.Tensor:
    """The noise mask at latent size for keeping the source (bilinear, so feathered masks blend softly)."""
    mask = F.interpolate(_mask_batch(noise_mask), size=tuple(latent_shape[-2:]), mode="bilinear")
    return _to_batch(mask, latent_shape[0], "noise_mask")


def inpaint_model_mask(mask: torch.Tensor, latent_shape: torch.Size) -> torch.Tensor:
    """The mask channel of an inpainting UNet: binarized at 0.5 and resized (nearest) as diffusers does."""
    binary = (_mask_batch(mask) >= 0.5).float()
    return _to_batch(F.interpolate(binary, size=tuple(latent_shape[-2:])), latent_shape[0], "mask")


@dataclass(frozen=True)
class EditInputs:
    """The editing parts of one sampling run: the model variant, the source latents (model space), the noise
    mask, the image guidance scale (None for ordinary two-way guidance) and the model's latent format."""

    variant: str
    source: torch.Tensor
    noise_mask: torch.Tensor | None
    image_cfg: float | None = None
    latent_format: LatentFormat = IDENTITY
    family: Any = None  # the FamilySampling, for FAMILY_CHANNELS' layout
    network: Any = None

    @classmethod
    def prepare(cls, model: DiffusionModel, latent_image: Mapping[str, Any],
                image_cfg: float | None = None) -> "EditInputs | None":
        """The editing inputs of a run for a LATENT (raw samples), or None when it is plain sampling (an ordinary
        model, no mask)."""
        variant = model_variant(model)
        noise_mask = latent_image.get("noise_mask")
        if variant == BASE and noise_mask is None and image_cfg is None:
            return None
        latent_format = model.latent_format
        return cls(variant, latent_format.sampling_input(source_latents(latent_image)), noise_mask, image_cfg,
                   latent_format, model.sampling, model.network)

    @property
    def keeps_source(self) -> bool:
        """Whether the diffusers-scheduler loop puts the unmasked latents back after every step: for ordinary models
        with a noise mask, as diffusers' inpaint pipeline does (ComfyUI's samplers keep them for every model)."""
        return self.variant == BASE and self.noise_mask is not None

    def keep_mask(self) -> torch.Tensor:
        assert self.noise_mask is not None
        return blend_mask(self.noise_mask, self.source.shape)

    def concat(self, options: Mapping[str, Any]) -> torch.Tensor | None:
        """Extra input channels [batch, C, h, w] for one conditioning entry (None for ordinary models)."""
        shape = self.source.shape
        if self.variant == INSTRUCT_PIX2PIX:
            image = options.get("concat_latent_image")
            if image is None:
                return torch.zeros(shape)
            return _to_batch(_fit(image, shape), shape[0], "concat_latent_image")
        if self.variant == FAMILY_CHANNELS:  # no image: zeros in the VAE's space, as ComfyUI's FLUX takes them
            image = options.get("concat_latent_image")
            image = torch.zeros(shape) if image is None else _fit(image, shape)
            image = _to_batch(self.latent_format.process_in(image.float()), shape[0], "concat_latent_image")
            return self.family.extra_channels(self.network, options.get("concat_mask", self.noise_mask), image,
                                              shape)
        if self.variant == INPAINT:
            mask = options.get("concat_mask", self.noise_mask)
            image = options.get("concat_latent_image")
            if image is not None:
                image = self.latent_format.process_in(image.float())
            else:
                image = self.source if mask is not None else _blank_inpaint_latent(shape)
            mask_channel = inpaint_model_mask(mask, shape) if mask is not None else torch.ones(shape[0], 1, *shape[2:])
            return torch.cat([mask_channel, _to_batch(_fit(image, shape), shape[0], "concat_latent_image")], dim=1)
        return None

    def unconditional_concat(self) -> torch.Tensor | None:
        """Extra channels of the "no image" prediction of three-way guidance (zeros, as in the paper)."""
        return torch.zeros(self.source.shape) if self.variant == INSTRUCT_PIX2PIX else None


def source_latents(latent_image: Mapping[str, Any]) -> torch.Tensor:
    """The latents a masked run keeps outside the mask (raw, as the LATENT holds them): the samples, or, after a
    hand-off with leftover noise, the source the earlier sampler kept (`HANDOFF_SOURCE`)."""
    samples = latent_image["samples"]
    source = latent_image.get(HANDOFF_SOURCE)
    return source if source is not None and source.shape == samples.shape else samples


def hand_off(result: dict[str, Any], latent_image: Mapping[str, Any], leftover_noise: bool) -> dict[str, Any]:
    """The LATENT a sampler returns: one that stops with leftover noise under a noise mask carries the source
    latents (the next sampler keeps the unmasked region from them, not from the noisy samples); others do not."""
    result = dict(result)
    if leftover_noise and latent_image.get("noise_mask") is not None:
        result[HANDOFF_SOURCE] = source_latents(latent_image)
    else:
        result.pop(HANDOFF_SOURCE, None)
    return result


def _fit(latents: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if latents.shape[-2:] != shape[-2:]:
        raise ValueError(f"concat_latent_image: {tuple(latents.shape[-2:])} latents do not match the latent image "
                         f"{tuple(shape[-2:])}; encode the source at the size being sampled")
    return latents.float()


def _blank_inpaint_latent(shape: torch.Size) -> torch.Tensor:
    return torch.tensor(BLANK_INPAINT_LATENT).reshape(1, LATENT_CHANNELS, 1, 1).expand(shape[0], -1, *shape[2:])


def keep_unmasked(latents: torch.Tensor, mask: torch.Tensor, source: torch.Tensor, noise: torch.Tensor,
                  scheduler: Any, next_timestep: torch.Tensor | None) -> torch.Tensor:
    """Latents with the source (noised to `next_timestep`, clean when None) where the mask is 0, as diffusers'
    StableDiffusionInpaintPipeline does after each step for 4-channel UNets."""
    if next_timestep is None:
        kept = source
    elif hasattr(scheduler, "add_noise"):
        kept = scheduler.add_noise(source, noise, next_timestep.reshape(1))
    else:  # flow-matching schedulers
        kept = scheduler.scale_noise(source, next_timestep.reshape(1), noise)
    return (1 - mask) * kept + mask * latents


def concat_rows(edit: EditInputs | None, options: list[Mapping[str, Any]],
                unconditional_count: int) -> torch.Tensor | None:
    """Extra input channels for every row of a guidance batch: one block per conditioning entry (in `options`
    order), then `unconditional_count` blocks of three-way guidance's "no image" rows; None for ordinary models."""
    if edit is None or edit.variant == BASE:
        return None
    blocks = [edit.concat(entry) for entry in options]
    blocks += [edit.unconditional_concat()] * unconditional_count
    return torch.cat(blocks)


class ExtraChannels:
    """A UNet stand-in that appends fixed channels (mask, masked or source image latents) to its input, after
    the scheduler has scaled the latents, as diffusers' inpaint and InstructPix2Pix pipelines do."""

    def __init__(self, unet: Any, channels: torch.Tensor) -> None:
        self.unet = unet
        self.channels = channels

    def __getattr__(self, name: str) -> Any:
        return getattr(self.unet, name)

    def __call__(self, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.unet(torch.cat([sample, self.channels], dim=1), *args, **kwargs)
