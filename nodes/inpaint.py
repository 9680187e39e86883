"""Inpainting and instruction-editing nodes: VAEEncodeForInpaint, SetLatentNoiseMask, InpaintModelConditioning,
InstructPixToPixConditioning and KSamplerDualCFG (InstructPix2Pix's text + image guidance).

The editing inputs travel as ComfyUI carries them (`LATENT["noise_mask"]`, `concat_latent_image` in conditioning
options); how the sampler uses them per model variant is described in `diffusion.sampling.editing`. Images whose sides
are not multiples of 8 are resized down to the nearest multiples of 8 (Lanczos), as diffusers' image processor
does, and masks with them. Knows nothing of HTTP or the executor.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from diffusion.components import DiffusionModel, Vae
from diffusion.contracts import Conditioning
from diffusion.sampling.ksampler import ksample
from nodes import resize
from nodes.mask import as_mask_batch, check_aspect, mask_for_size, repeat_to_batch, rgb_pixels
from nodes.sampling import KSampler

GROW_MASK_MAX = 64


def fit_to_latent_grid(images: torch.Tensor, scale: int, input_name: str) -> torch.Tensor:
    """[B, H, W, C] images resized down to sides that are multiples of `scale` (Lanczos through 8-bit PIL images,
    as diffusers' VaeImageProcessor does for PIL input); unchanged when they already are."""
    height, width = images.shape[1] // scale * scale, images.shape[2] // scale * scale
    if height == 0 or width == 0:
        raise ValueError(f"{input_name}: {images.shape[2]}x{images.shape[1]} is smaller than {scale} pixels")
    if (height, width) == tuple(images.shape[1:3]):
        return images
    return resize.upscale(images.movedim(-1, 1), width, height, "lanczos", "disabled").movedim(1, -1)


def check_not_empty(mask: torch.Tensor, input_name: str) -> None:
    if not bool((mask >= 0.5).any()):
        raise ValueError(f"{input_name}: the mask is empty (no value reaches 0.5), so nothing would be repainted; "
                         "white (1) marks what to change")


def grow_for_inpaint(mask: torch.Tensor, grow_mask_by: int) -> torch.Tensor:
    """ComfyUI's VAEEncodeForInpaint growth: a box of `grow_mask_by` pixels around every masked pixel."""
    if grow_mask_by == 0:
        return mask
    kernel = torch.ones((1, 1, grow_mask_by, grow_mask_by))
    padding = math.ceil((grow_mask_by - 1) / 2)
    grown = torch.clamp(F.conv2d(mask.unsqueeze(1), kernel, padding=padding), 0, 1).squeeze(1)
    return grown[:, :mask.shape[1], :mask.shape[2]]


class VAEEncodeForInpaint:
    DESCRIPTION = ("Encodes an image for inpainting: the masked part (mask >= 0.5) is set to grey before encoding, "
                   "and the mask, grown by grow_mask_by pixels, becomes the latent's noise mask. A dedicated "
                   "inpainting model sees the mask and this masked image; an ordinary model repaints only inside "
                   "the mask. A mask of another size with the same aspect ratio is resized to the image; another "
                   "aspect ratio or an empty mask is an error. Sides that are not multiples of 8 are resized down "
                   "to multiples of 8, as diffusers does.")
    CATEGORY = "latent/inpaint"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "pixels": ("IMAGE", {"tooltip": "The image to inpaint."}),
            "vae": ("VAE", {"tooltip": "The VAE to encode with."}),
            "mask": ("MASK", {"tooltip": "1 (white) where the image is to be repainted."}),
            "grow_mask_by": ("INT", {"default": 6, "min": 0, "max": GROW_MASK_MAX, "step": 1,
                                     "tooltip": "Grow the noise mask by this many pixels for seamless edges."}),
        }}

    def encode(self, vae: Vae, pixels: torch.Tensor, mask: torch.Tensor, grow_mask_by: int = 6) -> tuple[dict]:
        pixels, binary = _inpaint_inputs(vae, pixels, mask)
        masked = (pixels - 0.5) * (1.0 - binary).unsqueeze(-1) + 0.5
        noise_mask = grow_for_inpaint(binary, grow_mask_by)
        return ({"samples": vae.encode(masked), "noise_mask": noise_mask.unsqueeze(1)},)


class InpaintModelConditioning:
    DESCRIPTION = ("Prepares inpainting with the mask and the masked image in the conditioning (as newer ComfyUI "
                   "workflows do), so that denoise below 1 works with a dedicated inpainting model: the latent is "
                   "the whole source image (denoise < 1 starts from it), optionally with the mask as its noise "
                   "mask (ordinary models then repaint only inside it). Mask size, empty masks and sides that are "
                   "not multiples of 8 are handled as in VAEEncodeForInpaint.")
    CATEGORY = "conditioning/inpaint"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "positive": ("CONDITIONING", {"tooltip": "What the repainted part should show."}),
            "negative": ("CONDITIONING", {"tooltip": "What it should not show."}),
            "vae": ("VAE", {"tooltip": "The VAE to encode with."}),
            "pixels": ("IMAGE", {"tooltip": "The image to inpaint."}),
            "mask": ("MASK", {"tooltip": "1 (white) where the image is to be repainted."}),
            "noise_mask": ("BOOLEAN", {"default": True,
                                       "tooltip": "Also set the mask as the latent's noise mask."}),
        }}

    def encode(self, positive: Conditioning, negative: Conditioning, vae: Vae, pixels: torch.Tensor,
               mask: torch.Tensor, noise_mask: bool = True) -> tuple[Conditioning, Conditioning, dict[str, Any]]:
        pixels, binary = _inpaint_inputs(vae, pixels, mask)
        masked = (pixels - 0.5) * (1.0 - binary).unsqueeze(-1) + 0.5
        options = {"concat_latent_image": vae.encode(masked), "concat_mask": binary.unsqueeze(1)}
        latent = {"samples": vae.encode(pixels)}
        if noise_mask:
            latent["noise_mask"] = binary.unsqueeze(1)
        return _with_options(positive, options), _with_options(negative, options), latent


def _inpaint_inputs(vae: Vae, pixels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB pixels and the binary mask (mask >= 0.5), checked, batched and resized to multiples of 8."""
    pixels = rgb_pixels(pixels, "pixels")
    mask = mask_for_size(mask, pixels.shape[1], pixels.shape[2], "mask")
    check_not_empty(mask, "mask")
    mask = repeat_to_batch(mask, pixels.shape[0], "mask")
    pixels = fit_to_latent_grid(pixels, vae.downscale, "pixels")
    mask = fit_to_latent_grid(mask.unsqueeze(-1), vae.downscale, "mask").squeeze(-1)
    return pixels, (mask >= 0.5).float()


def _with_options(conditioning: Conditioning, options: dict[str, Any]) -> Conditioning:
    return [[entry[0], {**(entry[1] if len(entry) > 1 else {}), **options}] for entry in conditioning]


class SetLatentNoiseMask:
    DESCRIPTION = ("Limits sampling to the masked part of a latent (1 = repaint): an ordinary model keeps the rest "
                   "of the source at every step; soft masks blend. A mask of another size with the latent's aspect "
                   "ratio is resized; another aspect ratio or an empty mask is an error.")
    CATEGORY = "latent/inpaint"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "set_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "samples": ("LATENT", {"tooltip": "The latent to repaint part of."}),
            "mask": ("MASK", {"tooltip": "1 (white) where the latent is to be repainted."}),
        }}

    def set_mask(self, samples: dict[str, Any], mask: torch.Tensor) -> tuple[dict[str, Any]]:
        mask = as_mask_batch(mask, "mask")
        check_not_empty(mask, "mask")
        check_aspect(mask, *samples["samples"].shape[-2:], "mask")
        return ({**samples, "noise_mask": mask.unsqueeze(1)},)


class InstructPixToPixConditioning:
    DESCRIPTION = ("Prepares InstructPix2Pix editing: both conditionings show the model the source image (its VAE "
                   "latents), and the latent output is an empty latent of the image's size to sample from. Sides "
                   "that are not multiples of 8 are resized down to multiples of 8, as diffusers does.")
    CATEGORY = "conditioning/instructpix2pix"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "positive": ("CONDITIONING", {"tooltip": "The edit instruction."}),
            "negative": ("CONDITIONING", {"tooltip": "What the result should not show."}),
            "vae": ("VAE", {"tooltip": "The VAE to encode the source image with."}),
            "pixels": ("IMAGE", {"tooltip": "The image (or batch of images) to edit."}),
        }}

    def encode(self, positive: Conditioning, negative: Conditioning, vae: Vae,
               pixels: torch.Tensor) -> tuple[Conditioning, Conditioning, dict[str, Any]]:
        pixels = fit_to_latent_grid(rgb_pixels(pixels, "pixels"), vae.downscale, "pixels")
        latents = vae.encode(pixels)
        image = {"concat_latent_image": latents}
        return _with_options(positive, image), _with_options(negative, image), {"samples": torch.zeros_like(latents)}


class KSamplerDualCFG:
    DESCRIPTION = ("KSampler with InstructPix2Pix's three-way guidance (as in the paper and diffusers' "
                   "StableDiffusionInstructPix2PixPipeline): uncond + cfg * (positive - negative) + image_cfg * "
                   "(negative - uncond), where positive and negative come from InstructPixToPixConditioning (they "
                   "show the source image) and uncond is the negative text without the image. cfg follows the "
                   "instruction, image_cfg stays close to the source image. (diffusers skips guidance altogether "
                   "when guidance_scale <= 1 or image_guidance_scale < 1; here the formula always applies.)")
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        inputs = KSampler.INPUT_TYPES()["required"]
        ordered = {}
        for name, spec in inputs.items():
            ordered[name] = spec
            if name == "cfg":
                ordered["image_cfg"] = ("FLOAT", {"default": 1.5, "min": 0.0, "max": 100.0, "step": 0.05,
                                                  "round": 0.01,
                                                  "tooltip": "Image guidance: how closely to keep the source image."})
        ordered["cfg"] = ("FLOAT", {**inputs["cfg"][1], "default": 7.5,
                                    "tooltip": "Text guidance: how strongly to follow the instruction."})
        return {"required": ordered}

    VALIDATE_INPUTS = KSampler.VALIDATE_INPUTS

    def sample(self, model: DiffusionModel, seed: int, steps: int, cfg: float, image_cfg: float, sampler_name: str,
               scheduler: str, positive: Conditioning, negative: Conditioning, latent_image: dict[str, Any],
               denoise: float = 1.0) -> tuple[dict[str, Any]]:
        samples = ksample(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
                          image_cfg=image_cfg)
        return ({**latent_image, "samples": samples},)


NODE_CLASS_MAPPINGS = {
    "VAEEncodeForInpaint": VAEEncodeForInpaint,
    "SetLatentNoiseMask": SetLatentNoiseMask,
    "InpaintModelConditioning": InpaintModelConditioning,
    "InstructPixToPixConditioning": InstructPixToPixConditioning,
    "KSamplerDualCFG": KSamplerDualCFG,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VAEEncodeForInpaint": "VAE Encode (for Inpainting)",
    "SetLatentNoiseMask": "Set Latent Noise Mask",
    "InpaintModelConditioning": "InpaintModelConditioning",
    "InstructPixToPixConditioning": "InstructPixToPixConditioning",
    "KSamplerDualCFG": "KSampler (Dual CFG, InstructPix2Pix)",
}
