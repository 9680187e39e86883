"""The values that flow between nodes as MODEL and VAE for every family: small immutable wrappers around diffusers
modules. (Each family's CLIP value lives in its own package: `diffusion.families.<family>.text_encoding`.)

A wrapper shares its module with the model cache, so it never changes the module's weights: derived values
(a LoRA applied, another CLIP layer chosen) are new wrappers that record what to apply while running.
Tensor conventions are ComfyUI's: IMAGE is float [batch, height, width, channels] in 0..1 on the CPU, latents
are the VAE's raw latents, float32 [batch, channels, height/8, width/8] on the CPU (the model's latent format,
`DiffusionModel.latent_format`, maps them to its sampling space and back). Knows nothing of nodes, files or the
node environment.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from diffusion.contracts import FamilySampling, LoraPatch
from diffusion.latent_format import LatentFormat
from diffusion.patcher_api import ComfyModelPatcherApi
from diffusion.speedups import NO_SPEEDUPS, Speedups

VAE_ACTIVATION_FACTOR = 3  # see Vae.activation_bytes


@dataclass(frozen=True, eq=False)
class DiffusionModel(ComfyModelPatcherApi):
    """MODEL: the denoising `network` (a UNet, or the transformer of transformer families), the scheduler config
    it was trained with (prediction type included), the `family` it belongs to (`diffusion.registry`), how the
    sampling loop drives it (`sampling`, the family's `FamilySampling`), LoRAs to apply, and the optional speed-ups
    to switch on while sampling (`diffusion.speedups`). Packs also reach it through ComfyUI's ModelPatcher names
    (`diffusion.patcher_api`)."""

    network: Any
    scheduler_config: Mapping[str, Any]
    name: str
    family: str
    sampling: FamilySampling
    loras: tuple[LoraPatch, ...] = ()
    speedups: Speedups = NO_SPEEDUPS
    # The sigma core's noise schedule when a ModelSampling* node set one (else the family's, from the config).
    schedule_override: Any = None
    # Patches of the guided estimate (RescaleCFG, CFGZeroStar, PAG, ...), applied in order after guidance, and of
    # the positive and negative estimates (APG), applied in order before it (`diffusion.sampling.guiders`).
    post_cfg: tuple[Any, ...] = ()
    pre_cfg: tuple[Any, ...] = ()
    # Patches of the UNet's blocks and self-attention (FreeU, deep shrink, HyperTile, ToMe), in place while a sampler
    # runs, and the function that turns a LATENT noise mask into each step's (Differential Diffusion), both
    # `diffusion.sampling.unet_patches`.
    unet_patches: tuple[Any, ...] = ()
    denoise_mask_function: Any = None
    # Wrappers of each network call or of the guided prediction, with state per sampling run (EasyCache,
    # LazyCache: `diffusion.sampling.caching`).
    sampling_wrappers: tuple[Any, ...] = ()
    # ComfyUI's model_options as node packs read and write it: {"transformer_options": {"patches", "patches_replace",
    # "wrappers", and the packs' own keys}, "model_function_wrapper", ...}; `clone()` copies it and a sampling run
    # applies what is in it (`diffusion.patcher_api`)
    model_options: dict = field(default_factory=lambda: {"transformer_options": {}})
    # ComfyUI's patcher callbacks {kind: {key: [callback, ...]}} (ON_CLONE, ON_PRE_RUN, ON_CLEANUP): `clone()` copies
    # them and runs ON_CLONE, a sampling run runs the others (`diffusion.patcher_api`)
    callbacks: dict = field(default_factory=dict)

    @property
    def model_sampling(self) -> Any:
        """The `diffusion.sampling.model_sampling.ModelSampling` the sigma-based samplers use for this model."""
        if self.schedule_override is not None:
            return self.schedule_override
        from diffusion.sampling.model_sampling import ModelSampling

        return ModelSampling.from_scheduler_config(self.scheduler_config)

    @property
    def latent_format(self) -> LatentFormat:
        """How the raw VAE latents of a LATENT map to this model's sampling space and back (its family's)."""
        return self.sampling.latent_format

    @property
    def lora_component(self) -> str:
        """The LoRA key prefix of the network: "unet", or "transformer" for transformer families."""
        return self.sampling.lora_component

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler_config.get("prediction_type", "epsilon"))

    @property
    def device(self) -> torch.device:
        return self.network.device

    @property
    def dtype(self) -> torch.dtype:
        return self.network.dtype

    def with_lora(self, patch: LoraPatch) -> "DiffusionModel":
        return dataclasses.replace(self, loras=self.loras + (patch,))

    def with_speedups(self, speedups: Speedups) -> "DiffusionModel":
        return dataclasses.replace(self, speedups=speedups)



def sigma_timestep_flow_model(network: Any, scheduler_config: Mapping[str, Any], name: str, family: str,
                              sampling: FamilySampling) -> DiffusionModel:
    """MODEL of a flow-matching transformer called with its sigmas as timesteps (ComfyUI's sampling multiplier 1,
    as ModelSamplingAuraFlow samples), shifted as `scheduler_config` says (Lumina 2, Z-Image, Qwen-Image)."""
    from diffusion.files import public_config
    from diffusion.sampling.model_sampling import ModelSampling

    settings = public_config(scheduler_config)
    schedule = ModelSampling.from_scheduler_config(settings, flow_timestep_multiplier=1.0)
    return DiffusionModel(network, settings, name, family, sampling, schedule_override=schedule)

@dataclass(frozen=True, eq=False)
class Vae:
    """VAE: a diffusers AutoencoderKL converting between IMAGE tensors and its raw latents (ComfyUI's LATENT; the
    config's scaling and shift factors are not applied here but by the sampling model's latent format)."""

    autoencoder: Any
    name: str
    # Tile side in pixels when tiling switches on automatically (None: the model config's `sample_size`).
    AUTO_TILE_SIZE = None

    @property
    def scaling_factor(self) -> float:
        return float(self.autoencoder.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        """The autoencoder config's shift factor (SD3's and FLUX's VAEs have one; SD's has none)."""
        return float(getattr(self.autoencoder.config, "shift_factor", None) or 0.0)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.autoencoder.config.block_out_channels) - 1)

    @property
    def autoencoder_downscale(self) -> int:
        """The autoencoder's own downscale (a VAE value that patches its latents further has a larger one)."""
        return 2 ** (len(self.autoencoder.config.block_out_channels) - 1)

    def activation_bytes(self, batch: int, height: int, width: int) -> int:
        """A simple estimate of the peak activation memory to encode or decode images of height x width pixels:
        VAE_ACTIVATION_FACTOR full-resolution feature maps of the widest block (max of `block_out_channels`)
        at the VAE's dtype. Conservative on purpose (the real peak is spread over narrower full-resolution maps)."""
        channels = max(self.autoencoder.config.block_out_channels)
        itemsize = torch.empty((), dtype=self.autoencoder.dtype).element_size()
        return VAE_ACTIVATION_FACTOR * batch * height * width * channels * itemsize

    def needs_tiling(self, batch: int, height: int, width: int) -> bool:
        """Whether images of this size would not fit: the activation estimate exceeds the device's free memory
        (`diffusion.memory.free_memory_bytes`: free VRAM on CUDA, available RAM on the CPU)."""
        from diffusion import memory

        if not hasattr(self.autoencoder, "enable_tiling"):
            return False
        return self.activation_bytes(batch, height, width) > memory.free_memory_bytes(self.autoencoder.device)

    @contextlib.contextmanager
    def _tiling(self, tile_size: int | None, overlap_factor: float | None = None):
        """diffusers' own AutoencoderKL tiling for one call: tiles of `tile_size` pixels (None: the model config's
        `sample_size`, as `enable_tiling` uses), overlapping by `overlap_factor` of a tile (None: diffusers'
        tile_overlap_factor); restored after."""
        autoencoder = self.autoencoder
        saved = {name: getattr(autoencoder, name) for name in ("use_tiling", "tile_sample_min_size",
                                                                "tile_latent_min_size", "tile_overlap_factor")}
        sample = tile_size or autoencoder.config.sample_size
        sample = int(sample[0] if isinstance(sample, (list, tuple)) else sample)
        try:
            if overlap_factor is not None:
                autoencoder.tile_overlap_factor = overlap_factor
            autoencoder.use_tiling = True
            autoencoder.tile_sample_min_size = sample
            autoencoder.tile_latent_min_size = max(1, sample // self.autoencoder_downscale)
            yield
        finally:
            for name, value in saved.items():
                setattr(autoencoder, name, value)

    def _tiling_for(self, tile_size: int | None, force: bool, batch: int, height: int, width: int,
                    overlap_factor: float | None = None):
        if force:
            return self._tiling(tile_size, overlap_factor)
        if self.needs_tiling(batch, height, width):
            return self._tiling(tile_size or self.AUTO_TILE_SIZE, overlap_factor)
        return contextlib.nullcontext()

    def crop_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """IMAGE centre-cropped so both sides are multiples of `downscale` (ComfyUI's `vae_encode_crop_pixels`)."""
        scale = self.downscale
        height, width = pixels.shape[1] // scale * scale, pixels.shape[2] // scale * scale
        if height == 0 or width == 0:
            raise ValueError(f"pixels: images of {pixels.shape[2]}x{pixels.shape[1]} are smaller than {scale} pixels")
        top, left = (pixels.shape[1] - height) // 2, (pixels.shape[2] - width) // 2
        return pixels[:, top:top + height, left:left + width, :]

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor, tile_size: int | None = None, force_tiling: bool = False,
               overlap_factor: float | None = None) -> torch.Tensor:
        """IMAGE [B, H, W, C] in 0..1 -> raw latents (the posterior's mode, unscaled), sides first centre-cropped to
        multiples of `downscale` as ComfyUI's `VAE.encode` does. Tiled (diffusers' tiled encoder, tiles overlapping
        by `overlap_factor` when given) when forced or when the image would not fit in free memory."""
        autoencoder = self.autoencoder
        pixels = self.crop_pixels(pixels)
        images = pixels[..., :3].movedim(-1, 1).to(autoencoder.device, autoencoder.dtype) * 2.0 - 1.0
        with self._tiling_for(tile_size, force_tiling, pixels.shape[0], pixels.shape[1], pixels.shape[2],
                              overlap_factor):
            latents = autoencoder.encode(images).latent_dist.mode()
        return latents.float().cpu()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, tile_size: int | None = None, force_tiling: bool = False,
               overlap_factor: float | None = None) -> torch.Tensor:
        """Raw latents -> IMAGE [B, H, W, 3] in 0..1 (as diffusers' image processor denormalizes). Tiled
        (diffusers' tiled decoder, tiles overlapping by `overlap_factor` when given) when forced or when the image
        would not fit in free memory; untiled otherwise."""
        autoencoder = self.autoencoder
        raw = latents.to(autoencoder.device, autoencoder.dtype)
        height, width = latents.shape[-2] * self.downscale, latents.shape[-1] * self.downscale
        with self._tiling_for(tile_size, force_tiling, latents.shape[0], height, width, overlap_factor):
            images = autoencoder.decode(raw, return_dict=False)[0]
        return (images / 2 + 0.5).clamp(0, 1).float().cpu().movedim(1, -1)

    # ComfyUI's `comfy.sd.VAE` names, for node packs (the same encode and decode as VAEEncode and VAEDecode)

    @property
    def downscale_ratio(self) -> int:
        return self.downscale

    @property
    def upscale_ratio(self) -> int:
        return self.downscale

    def spacial_compression_encode(self) -> int:
        return self.downscale

    def spacial_compression_decode(self) -> int:
        return self.downscale

    @property
    def latent_channels(self) -> int:
        return int(self.autoencoder.config.latent_channels)

    @property
    def first_stage_model(self) -> Any:
        """The autoencoder module (diffusers' AutoencoderKL, not ComfyUI's AutoencoderKL class)."""
        return self.autoencoder

    @property
    def device(self) -> torch.device:
        return self.autoencoder.device

    @property
    def vae_dtype(self) -> torch.dtype:
        return self.autoencoder.dtype

    def memory_used_encode(self, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> int:
        """Bytes to encode IMAGE of `shape` [B, H, W, C] (`activation_bytes`; `dtype` unused: the VAE's own)."""
        return self.activation_bytes(shape[0], shape[1], shape[2])

    def memory_used_decode(self, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> int:
        """Bytes to decode latents of `shape` [B, C, h, w] (`activation_bytes`; `dtype` unused: the VAE's own)."""
        return self.activation_bytes(shape[0], shape[-2] * self.downscale, shape[-1] * self.downscale)

    def encode_tiled(self, pixel_samples: torch.Tensor, tile_x: int | None = None, tile_y: int | None = None,
                     overlap: int | None = None, tile_t: int | None = None,
                     overlap_t: int | None = None) -> torch.Tensor:
        """ComfyUI's `VAE.encode_tiled`: square tiles of `tile_x` pixels (default 512) overlapping by `overlap`
        pixels (default 64), on diffusers' tiled encoder (seams blended its way). `tile_t`/`overlap_t` are for
        video VAEs; as ComfyUI does for image VAEs, they are not used."""
        tile, overlap = self._square_tile("encode_tiled", tile_x, tile_y, overlap, 512, 64)
        return self.encode(pixel_samples, tile_size=tile, force_tiling=True, overlap_factor=overlap / tile)

    def decode_tiled(self, samples: torch.Tensor, tile_x: int | None = None, tile_y: int | None = None,
                     overlap: int | None = None, tile_t: int | None = None,
                     overlap_t: int | None = None) -> torch.Tensor:
        """ComfyUI's `VAE.decode_tiled`: square tiles of `tile_x` latent pixels (default 64) overlapping by
        `overlap` latent pixels (default 16), on diffusers' tiled decoder (seams blended its way). `tile_t`/
        `overlap_t` are for video VAEs; as ComfyUI does for image VAEs, they are not used."""
        tile, overlap = self._square_tile("decode_tiled", tile_x, tile_y, overlap, 64, 16)
        return self.decode(samples, tile_size=tile * self.downscale, force_tiling=True, overlap_factor=overlap / tile)


    def _square_tile(self, method: str, tile_x: int | None, tile_y: int | None, overlap: int | None,
                     default_tile: int, default_overlap: int) -> tuple[int, int]:
        """(tile side, overlap) of a ComfyUI tiled call; a RuntimeError for what diffusers' tiling cannot do."""
        if not hasattr(self.autoencoder, "enable_tiling"):
            raise RuntimeError(f"vae.{method}: not supported by nodeflow for {self.name}: its autoencoder "
                               f"({type(self.autoencoder).__name__}) has no tiled mode")
        tile_x, tile_y = tile_x or tile_y or default_tile, tile_y or tile_x or default_tile
        overlap = default_overlap if overlap is None else overlap
        if tile_x != tile_y:
            raise RuntimeError(f"vae.{method}: tiles of {tile_x}x{tile_y} are not supported by nodeflow: its VAE "
                               "tiling (diffusers') uses square tiles; pass tile_x equal to tile_y")
        if not 0 <= overlap < tile_x:
            raise ValueError(f"vae.{method}: overlap {overlap} must be at least 0 and smaller than the tile ({tile_x})")
        return tile_x, overlap


@dataclass(frozen=True, eq=False)
class UnscaledVae(Vae):
    """A VAE value whose autoencoder has no scaling or shift factor (its family's latent format, or the value
    itself, normalizes the latents)."""

    @property
    def scaling_factor(self) -> float:
        return 1.0

    @property
    def shift_factor(self) -> float:
        return 0.0


@dataclass(frozen=True, eq=False)
class FrameVae(UnscaledVae):
    """VAE of a video-style causal 3D autoencoder (diffusers' AutoencoderKLWan and AutoencoderKLQwenImage: Wan 2.1's
    network, Qwen-Image's VAE; AutoencoderKLQwenImage21, whose images are RGBA: IMAGE's pixels go in opaque and its
    colour comes out) that sees each image as a one-frame video, so IMAGE and LATENT keep their image
    shapes ([B, H, W, C] and [B, C, h, w]); latents of a single frame in ComfyUI's video shape [B, C, 1, h, w]
    decode too. Tiles are the autoencoder's own (square). Raw latents: the family's latent format applies the
    per-channel statistics."""

    AUTO_TILE_SIZE = 256  # the autoencoder's own tile side

    @property
    def downscale(self) -> int:
        return int(self.autoencoder.spatial_compression_ratio)

    @property
    def latent_channels(self) -> int:
        return int(self.autoencoder.config.z_dim)

    @property
    def image_channels(self) -> int:
        """3, or 4 for an RGBA autoencoder (Qwen-Image 2.1's)."""
        return 4 if getattr(self.autoencoder.config, "in_channels", None) == 4 else 3

    def activation_bytes(self, batch: int, height: int, width: int) -> int:
        """As `Vae.activation_bytes`, with the widest block's channels from the base width and multipliers."""
        config = self.autoencoder.config
        itemsize = torch.empty((), dtype=self.autoencoder.dtype).element_size()
        return VAE_ACTIVATION_FACTOR * batch * height * width * config.base_dim * max(config.dim_mult) * itemsize

    @contextlib.contextmanager
    def _tiling(self, tile_size: int | None, overlap_factor: float | None = None):
        """The autoencoder's tiling for one call: square tiles of `tile_size` pixels (None: its own 256),
        overlapping by `overlap_factor` of a tile (None: its own quarter); restored after."""
        autoencoder = self.autoencoder
        names = ("use_tiling", "tile_sample_min_height", "tile_sample_min_width", "tile_sample_stride_height",
                 "tile_sample_stride_width")
        saved = {name: getattr(autoencoder, name) for name in names}
        tile = int(tile_size or self.AUTO_TILE_SIZE)
        overlap = 0.25 if overlap_factor is None else overlap_factor
        stride = max(self.downscale, int(tile * (1 - overlap)) // self.downscale * self.downscale)
        try:
            autoencoder.use_tiling = True
            autoencoder.tile_sample_min_height = autoencoder.tile_sample_min_width = tile
            autoencoder.tile_sample_stride_height = autoencoder.tile_sample_stride_width = stride
            yield
        finally:
            for name, value in saved.items():
                setattr(autoencoder, name, value)

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor, tile_size: int | None = None, force_tiling: bool = False,
               overlap_factor: float | None = None) -> torch.Tensor:
        """IMAGE [B, H, W, C] in 0..1 -> raw latents [B, C, h, w] (each image a one-frame video; the posterior's
        mode), sides first centre-cropped to multiples of `downscale`."""
        autoencoder = self.autoencoder
        pixels = self.crop_pixels(pixels)[..., :3]
        if self.image_channels == 4:  # an RGBA autoencoder sees IMAGE's pixels opaque
            pixels = torch.cat([pixels, torch.ones_like(pixels[..., :1])], dim=-1)
        frames = pixels.movedim(-1, 1).unsqueeze(2).to(autoencoder.device, autoencoder.dtype) * 2.0 - 1.0
        with self._tiling_for(tile_size, force_tiling, pixels.shape[0], pixels.shape[1], pixels.shape[2],
                              overlap_factor):
            latents = autoencoder.encode(frames).latent_dist.mode()
        return latents[:, :, 0].float().cpu()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, tile_size: int | None = None, force_tiling: bool = False,
               overlap_factor: float | None = None) -> torch.Tensor:
        """Raw latents [B, C, h, w] (or one frame [B, C, 1, h, w]) -> IMAGE [B, H, W, 3] in 0..1."""
        if latents.ndim == 5:
            if latents.shape[2] != 1:
                raise ValueError(f"samples: {self.name} decodes images here (one frame); got {latents.shape[2]} "
                                 "frames")
            latents = latents[:, :, 0]
        autoencoder = self.autoencoder
        raw = latents.unsqueeze(2).to(autoencoder.device, autoencoder.dtype)
        height, width = latents.shape[-2] * self.downscale, latents.shape[-1] * self.downscale
        with self._tiling_for(tile_size, force_tiling, latents.shape[0], height, width, overlap_factor):
            images = autoencoder.decode(raw, return_dict=False)[0][:, :3, 0]  # an RGBA autoencoder's colour
        return (images / 2 + 0.5).clamp(0, 1).float().cpu().movedim(1, -1)


@dataclass(frozen=True, eq=False)
class PatchedVae(UnscaledVae):
    """VAE whose latents are the autoencoder's in 2x2 patches (4x the channels, half the side), normalized by the
    autoencoder's batch-norm running statistics (FLUX.2's AutoencoderKLFlux2): what ComfyUI's LATENT holds for
    FLUX.2 and what its transformer samples in."""

    @property
    def downscale(self) -> int:
        return 2 * self.autoencoder_downscale

    @property
    def latent_channels(self) -> int:
        return 4 * int(self.autoencoder.config.latent_channels)

    def _statistics(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        norm = self.autoencoder.bn
        mean = norm.running_mean.view(1, -1, 1, 1).to(like)
        return mean, torch.sqrt(norm.running_var.view(1, -1, 1, 1) + norm.eps).to(like)

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor, tile_size: int | None = None, force_tiling: bool = False,
               overlap_factor: float | None = None) -> torch.Tensor:
        """IMAGE -> the autoencoder's latents (the posterior's mode) in 2x2 patches, normalized."""
        latents = super().encode(pixels, tile_size, force_tiling, overlap_factor)
        batch, channels, height, width = latents.shape
        patches = latents.view(batch, channels, height // 2, 2, width // 2, 2).permute(0, 1, 3, 5, 2, 4)
        patches = patches.reshape(batch, channels * 4, height // 2, width // 2)
        mean, std = self._statistics(patches)
        return (patches - mean) / std

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, tile_size: int | None = None, force_tiling: bool = False,
               overlap_factor: float | None = None) -> torch.Tensor:
        """Normalized 2x2-patch latents -> IMAGE."""
        mean, std = self._statistics(latents.float())
        patches = latents.float() * std + mean
        batch, channels, height, width = patches.shape
        unpatched = patches.reshape(batch, channels // 4, 2, 2, height, width).permute(0, 1, 4, 2, 5, 3)
        return super().decode(unpatched.reshape(batch, channels // 4, height * 2, width * 2), tile_size,
                              force_tiling, overlap_factor)
