"""Latent nodes: empty latents, latent resizing, and the VAE nodes between IMAGE and LATENT.

LATENT is ComfyUI's dict {"samples": float32 [batch, channels, height/8, width/8]} holding the VAE's raw latents,
exactly as ComfyUI's LATENT does (the sampler applies the model's latent format; `.latent` files:
`nodes.latent_files`); IMAGE is float [batch, height, width, channels] in 0..1. Knows nothing of HTTP or the
executor.
"""
from __future__ import annotations

from typing import Any

import torch

from diffusion.contracts import VaeModel
from nodes import resize

MAX_RESOLUTION = 16384
LATENT_CHANNELS = 4
LATENT_SCALE = 8


class EmptyLatentImage:
    DESCRIPTION = "An empty (all-zero) batch of latent images to start text-to-image sampling from."
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The empty latent image batch.",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "width": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8, "multiple_of": 8,
                              "tooltip": "Image width in pixels (a multiple of 8)."}),
            "height": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8, "multiple_of": 8,
                               "tooltip": "Image height in pixels (a multiple of 8)."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "Images in the batch."}),
        }}

    def generate(self, width: int, height: int, batch_size: int = 1) -> tuple[dict[str, Any]]:
        samples = torch.zeros([batch_size, LATENT_CHANNELS, height // LATENT_SCALE, width // LATENT_SCALE])
        return ({"samples": samples},)


class LatentUpscale:
    DESCRIPTION = "Resizes latent images to a size in pixels (0 keeps the aspect ratio)."
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"
    upscale_methods = list(resize.LATENT_METHODS)  # ComfyUI's class attributes, which plugins read
    crop_methods = list(resize.CROP_MODES)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples": ("LATENT", {"tooltip": "The latents to resize."}),
            "upscale_method": (list(cls.upscale_methods), {"tooltip": "The interpolation method."}),
            "width": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 8, "multiple_of": 8,
                              "tooltip": "Target width in pixels (a multiple of 8; 0 follows the height)."}),
            "height": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 8, "multiple_of": 8,
                               "tooltip": "Target height in pixels (a multiple of 8; 0 follows the width)."}),
            "crop": (list(cls.crop_methods), {"tooltip": "Crop to the target aspect ratio first."}),
        }}

    def upscale(self, samples: dict[str, Any], upscale_method: str, width: int, height: int,
                crop: str) -> tuple[dict[str, Any]]:
        latents = resize.upscale(samples["samples"], width // LATENT_SCALE, height // LATENT_SCALE,
                                 upscale_method, crop)
        return ({**samples, "samples": latents},)


class LatentUpscaleBy:
    DESCRIPTION = "Resizes latent images by a factor."
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"
    upscale_methods = list(resize.LATENT_METHODS)  # ComfyUI's class attribute, which plugins read

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples": ("LATENT", {"tooltip": "The latents to resize."}),
            "upscale_method": (list(cls.upscale_methods), {"tooltip": "The interpolation method."}),
            "scale_by": ("FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01,
                                   "tooltip": "The factor to scale both sides by."}),
        }}

    def upscale(self, samples: dict[str, Any], upscale_method: str, scale_by: float) -> tuple[dict[str, Any]]:
        latents = samples["samples"]
        width = max(1, round(latents.shape[-1] * scale_by))
        height = max(1, round(latents.shape[-2] * scale_by))
        return ({**samples, "samples": resize.upscale(latents, width, height, upscale_method, "disabled")},)


class VAEDecode:
    DESCRIPTION = "Decodes latent images into pixel images with the VAE."
    CATEGORY = "latent"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The decoded images.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples": ("LATENT", {"tooltip": "The latents to decode."}),
            "vae": ("VAE", {"tooltip": "The VAE to decode with."}),
        }}

    def decode(self, vae: VaeModel, samples: dict[str, Any]) -> tuple[torch.Tensor]:
        return (vae.decode(samples["samples"]),)


class VAEEncode:
    DESCRIPTION = ("Encodes pixel images into latent images with the VAE (the posterior's mode). Sides that are not "
                   "multiples of 8 are centre-cropped down to one, as ComfyUI does.")
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "pixels": ("IMAGE", {"tooltip": "The images to encode."}),
            "vae": ("VAE", {"tooltip": "The VAE to encode with."}),
        }}

    def encode(self, vae: VaeModel, pixels: torch.Tensor) -> tuple[dict[str, Any]]:
        return ({"samples": vae.encode(crop_to_vae_multiple(vae, pixels))},)


def crop_to_vae_multiple(vae: VaeModel, pixels: torch.Tensor) -> torch.Tensor:
    """Centre-crop images so both sides are multiples of the VAE's downscale factor, as ComfyUI does."""
    scale = vae.downscale
    height, width = pixels.shape[1] // scale * scale, pixels.shape[2] // scale * scale
    if height == 0 or width == 0:
        raise ValueError(f"pixels: images of {pixels.shape[2]}x{pixels.shape[1]} are smaller than {scale} pixels")
    top, left = (pixels.shape[1] - height) // 2, (pixels.shape[2] - width) // 2
    return pixels[:, top:top + height, left:left + width, :]


# Seam tolerance: max abs difference of tiled vs untiled results, measured on the tiny random-weight SD1 VAE at
# 128x128 with 64-pixel tiles (tests/nodes/test_vae_tiling.py): decode 0.716 (pixels, 0..1), encode 0.599
# (raw latents; 0.109 in SD's sampling space); set a little above. Tiles overlap by 1/4 and are blended (diffusers'
# tile_overlap_factor). Random weights have no spatial smoothness, so this is a loose bound: another random VAE
# measured 0.631/0.450 (0.082 in sampling space).
TILED_DECODE_TOLERANCE = 0.75
TILED_ENCODE_TOLERANCE = 0.66
TILE_SIZE_OPTIONS = {"default": 512, "min": 64, "max": 4096, "step": 32,
                     "tooltip": "Tile side in pixels (diffusers' tiling; tiles overlap by a quarter and are blended)."}


class VAEDecodeTiled:
    DESCRIPTION = ("Decodes latent images into pixel images with the VAE, tile by tile (diffusers' AutoencoderKL "
                   "tiling), to decode images too large to decode at once. Seams are blended; the result differs "
                   f"from VAE Decode by at most {TILED_DECODE_TOLERANCE} per pixel value (0..1), the documented seam "
                   "tolerance measured at the seams of the tiny random-weight test VAE. VAE Decode itself switches "
                   "to tiling when an image would not fit.")
    CATEGORY = "latent"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The decoded images.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples": ("LATENT", {"tooltip": "The latents to decode."}),
            "vae": ("VAE", {"tooltip": "The VAE to decode with."}),
            "tile_size": ("INT", dict(TILE_SIZE_OPTIONS)),
        }}

    def decode(self, vae: VaeModel, samples: dict[str, Any], tile_size: int = 512) -> tuple[torch.Tensor]:
        return (vae.decode(samples["samples"], tile_size=tile_size, force_tiling=True),)


class VAEEncodeTiled:
    DESCRIPTION = ("Encodes pixel images into latent images with the VAE, tile by tile (diffusers' AutoencoderKL "
                   "tiling), to encode images too large to encode at once. Seams are blended; the latents differ "
                   f"from VAE Encode's by at most {TILED_ENCODE_TOLERANCE} (the documented seam tolerance, measured on "
                   "the tiny test VAE). Sides that "
                   "are not multiples of 8 are centre-cropped down to one. VAE Encode itself switches to tiling "
                   "when an image would not fit.")
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "pixels": ("IMAGE", {"tooltip": "The images to encode."}),
            "vae": ("VAE", {"tooltip": "The VAE to encode with."}),
            "tile_size": ("INT", dict(TILE_SIZE_OPTIONS)),
        }}

    def encode(self, vae: VaeModel, pixels: torch.Tensor, tile_size: int = 512) -> tuple[dict[str, Any]]:
        cropped = crop_to_vae_multiple(vae, pixels)
        return ({"samples": vae.encode(cropped, tile_size=tile_size, force_tiling=True)},)

