"""The unCLIP cascade (Kandinsky 2.2) read from diffusers folders, offline: the prior with its CLIP text and image
encoders, and the decoder UNet with its MoVQ autoencoder, a VAE whose latents are used unscaled
(`MovqVae`). Knows nothing of nodes or the node environment.
"""
from __future__ import annotations

from pathlib import Path

import torch

from diffusion.components import DiffusionModel, UnscaledVae
from diffusion.contracts import Place
from diffusion.families.unclip.detection import DECODER_PIPELINE, PRIOR_PIPELINE, expect_pipeline
from diffusion.families.unclip.sampling import DECODER_SAMPLING
from diffusion.families.unclip.text_encoding import ClipVision, UnclipPrior
from diffusion.files import scheduler_config

FAMILY = "unclip"


class MovqVae(UnscaledVae):
    """VAE for the MoVQ autoencoder (a VQModel): latents unscaled, decoded without re-quantizing."""

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor, tile_size: int | None = None, force_tiling: bool = False) -> torch.Tensor:
        """Untiled always (MoVQ has no diffusers tiling); the tiling arguments are accepted and ignored."""
        movq = self.autoencoder
        images = pixels[..., :3].movedim(-1, 1).to(movq.device, movq.dtype) * 2.0 - 1.0
        return movq.encode(images).latents.float().cpu()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, tile_size: int | None = None, force_tiling: bool = False) -> torch.Tensor:
        """Untiled always (MoVQ has no diffusers tiling); the tiling arguments are accepted and ignored."""
        movq = self.autoencoder
        images = movq.decode(latents.to(movq.device, movq.dtype), force_not_quantize=True).sample
        return (images * 0.5 + 0.5).clamp(0, 1).float().cpu().movedim(1, -1)


def load_prior(folder: Path, place: Place, input_name: str) -> UnclipPrior:
    """PRIOR (with its CLIP_VISION) from a diffusers KandinskyV22PriorPipeline folder."""
    from diffusers import PriorTransformer
    from transformers import (
        CLIPImageProcessor,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionModelWithProjection,
    )

    folder = Path(folder)
    expect_pipeline(folder, PRIOR_PIPELINE, input_name)
    try:
        prior = PriorTransformer.from_pretrained(folder, subfolder="prior", local_files_only=True)
        text_encoder = CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder",
                                                                   local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(folder, subfolder="image_encoder",
                                                                      local_files_only=True)
        processor = CLIPImageProcessor.from_pretrained(folder, subfolder="image_processor", local_files_only=True)
        settings = scheduler_config(folder)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{input_name}: {folder.name} could not be loaded as an unCLIP prior: {error}") from error
    clip_vision = ClipVision(place(image_encoder).eval(), processor, folder.name)
    return UnclipPrior(place(prior).eval(), place(text_encoder).eval(), tokenizer, settings, clip_vision,
                       folder.name)


def load_decoder(folder: Path, place: Place, input_name: str) -> tuple[DiffusionModel, MovqVae]:
    """MODEL (the image-embedding UNet) and VAE (MoVQ) from a diffusers KandinskyV22Pipeline folder."""
    from diffusers import UNet2DConditionModel, VQModel

    folder = Path(folder)
    expect_pipeline(folder, DECODER_PIPELINE, input_name)
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
        movq = VQModel.from_pretrained(folder, subfolder="movq", local_files_only=True)
        settings = scheduler_config(folder)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{input_name}: {folder.name} could not be loaded as an unCLIP decoder: {error}") from error
    if unet.config.addition_embed_type != "image":
        raise ValueError(f"{input_name}: {folder.name}'s UNet is not conditioned on image embeddings")
    return (DiffusionModel(place(unet).eval(), settings, folder.name, FAMILY, DECODER_SAMPLING),
            MovqVae(place(movq).eval(), folder.name))
