"""The DALL-E 2 style unCLIP cascade as Kandinsky 2.2 runs it in diffusers: a diffusion prior turns a prompt's
CLIP text embedding into a CLIP image embedding, a decoder UNet denoises latents conditioned on that image
embedding (added to its time embedding), and a MoVQ autoencoder turns the latents into pixels.

IMAGE_EMBEDS values are float32 CPU tensors [batch, embedding width]. The prior's diffusion is
KandinskyV22PriorPipeline's loop; the decoder runs through the shared sampler (`nodes.models.sampler.sample`)
with `DecoderSampling` hooks, which give KandinskyV22Pipeline's (and its img2img pipeline's) loop step for
step. MoVQ latents are used unscaled, as Kandinsky does. Knows nothing of nodes or the node environment.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from engine.progress import report_progress
from nodes.models.components import DiffusionModel, Vae
from nodes.models.sampler import GuidanceBatch, UNetSampling

Place = Callable[[Any], Any]
PRIOR_PIPELINE, DECODER_PIPELINE = "KandinskyV22PriorPipeline", "KandinskyV22Pipeline"


@dataclass(frozen=True, eq=False)
class ClipVision:
    """CLIP_VISION: a CLIP image encoder with projection and the image processor it was trained with."""

    image_encoder: Any
    image_processor: Any
    name: str

    @property
    def device(self) -> torch.device:
        return self.image_encoder.device

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """IMAGE [B, H, W, C] in 0..1 -> image embeddings [B, width], preprocessed as diffusers does for PIL
        images (resize, centre crop, CLIP normalization)."""
        from PIL import Image

        pictures = [Image.fromarray(np.clip(255.0 * image[..., :3].numpy(), 0, 255).astype(np.uint8))
                    for image in images.cpu()]
        pixels = self.image_processor(pictures, return_tensors="pt").pixel_values
        pixels = pixels.to(self.device, self.image_encoder.dtype)
        return self.image_encoder(pixels).image_embeds.float().cpu()

    @torch.inference_mode()
    def zero_image_embeds(self) -> torch.Tensor:
        """The embedding of an all-zero image: the prior pipeline's negative when no negative prompt is given."""
        size = self.image_encoder.config.image_size
        zero = torch.zeros(1, 3, size, size, device=self.device, dtype=self.image_encoder.dtype)
        return self.image_encoder(zero).image_embeds.float().cpu()


@dataclass(frozen=True, eq=False)
class UnclipPrior:
    """PRIOR: the PriorTransformer, its CLIP text encoder (with projection) and tokenizer, its scheduler config,
    and the CLIP image encoder whose embedding space it predicts into."""

    prior: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: Mapping[str, Any]
    clip_vision: ClipVision
    name: str

    def _encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        device = self.text_encoder.device
        output = self.text_encoder(tokens.input_ids.to(device))
        return output.text_embeds, output.last_hidden_state, tokens.attention_mask.bool().to(device)

    @torch.inference_mode()
    def encode(self, text: str, negative_text: str, seed: int, steps: int,
               prior_cfg: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(image embedding of `text`, negative image embedding) as KandinskyV22PriorPipeline computes them: the
        negative is the prior's embedding of `negative_text`, or with an empty one the zero image's embedding."""
        from diffusers import UnCLIPScheduler
        from diffusers.utils.torch_utils import randn_tensor

        # 1. Prompts: the negative prompt is diffused too (and guides against itself), as in diffusers.
        prompts = [text, negative_text] if negative_text else [text]
        guided = prior_cfg > 1.0
        embeds, hidden, mask = self._encode_text(prompts)
        if guided:
            negative = self._encode_text([negative_text] * len(prompts))
            embeds, hidden, mask = (torch.cat([uncond, cond]) for uncond, cond in zip(negative, (embeds, hidden, mask)))

        # 2. Timesteps and starting noise.
        scheduler = UnCLIPScheduler.from_config(dict(self.scheduler_config))
        device, dtype = self.prior.device, self.prior.dtype
        scheduler.set_timesteps(steps, device=device)
        timesteps = scheduler.timesteps
        generator = torch.Generator("cpu").manual_seed(seed)
        shape = (len(prompts), self.prior.config.embedding_dim)
        latents = randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=torch.float32)
        latents = latents.to(device, dtype) * scheduler.init_noise_sigma

        # 3. The prior's denoising loop.
        for index, timestep in enumerate(timesteps):
            model_input = torch.cat([latents] * 2) if guided else latents
            predicted = self.prior(model_input, timestep=timestep, proj_embedding=embeds.to(dtype),
                                   encoder_hidden_states=hidden.to(dtype), attention_mask=mask).predicted_image_embedding
            if guided:
                uncond, cond = predicted.chunk(2)
                predicted = uncond + prior_cfg * (cond - uncond)
            previous = None if index + 1 == len(timesteps) else timesteps[index + 1]
            latents = scheduler.step(predicted, timestep=timestep, sample=latents, generator=generator,
                                     prev_timestep=previous).prev_sample
            report_progress(index + 1, len(timesteps))

        # 4. Un-normalize into CLIP's image-embedding space.
        image_embeds = self.prior.post_process_latents(latents).float().cpu()
        if negative_text:
            return image_embeds[:1], image_embeds[1:]
        return image_embeds, self.clip_vision.zero_image_embeds()


def mix_image_embeds(first: torch.Tensor, second: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - weight) * first + weight * second (the prior pipeline's `interpolate` for two inputs)."""
    if first.shape[-1] != second.shape[-1]:
        raise ValueError(f"image_embeds: widths {first.shape[-1]} and {second.shape[-1]} differ (embeddings from "
                         "different CLIP models)")
    return (1.0 - weight) * first + weight * second


def embeds_conditioning(image_embeds: torch.Tensor) -> list[list[Any]]:
    """IMAGE_EMBEDS as the shared sampler's CONDITIONING: one entry, embeddings [B, 1, width]."""
    return [[image_embeds[:, None, :], {}]]


class DecoderSampling(UNetSampling):
    """The shared loop's hooks for an unCLIP decoder UNet: no text, the image embedding added to the time
    embedding, and only the noise half of its learned-variance output used (as KandinskyV22Pipeline does for
    schedulers without learned variance)."""

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        if guidance.embeddings.shape[1] != 1:
            raise ValueError("positive: an unCLIP decoder is conditioned on image embeddings, not on encoded text; "
                             "sample it with UnCLIPDecoderSampler")
        return {}

    def predict(self, network: Any, scheduler: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        model_input = scheduler.scale_model_input(model_input, timestep)
        prediction = network(sample=model_input, timestep=timestep, encoder_hidden_states=None,
                             added_cond_kwargs={"image_embeds": embeddings[:, 0]}, return_dict=False)[0]
        return prediction[:, :model_input.shape[1]]


DECODER_SAMPLING = DecoderSampling()


class MovqVae(Vae):
    """VAE for the MoVQ autoencoder (a VQModel): latents unscaled, decoded without re-quantizing."""

    @property
    def scaling_factor(self) -> float:
        return 1.0

    @property
    def shift_factor(self) -> float:
        return 0.0

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


def _pipeline_class(folder: Path) -> str:
    index = folder / "model_index.json"
    if not index.is_file():
        raise ValueError(f"{folder.name} is not a diffusers model folder (no model_index.json)")
    return str(json.loads(index.read_text()).get("_class_name", ""))


def _expect(folder: Path, expected: str, input_name: str) -> None:
    found = _pipeline_class(folder)
    if found != expected:
        raise ValueError(f"{input_name}: {folder.name} holds a {found or 'unknown pipeline'}, not a {expected}")


def _scheduler_config(folder: Path) -> dict[str, Any]:
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    return {key: value for key, value in config.items() if not key.startswith("_")}


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
    _expect(folder, PRIOR_PIPELINE, input_name)
    try:
        prior = PriorTransformer.from_pretrained(folder, subfolder="prior", local_files_only=True)
        text_encoder = CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder",
                                                                   local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(folder, subfolder="image_encoder",
                                                                      local_files_only=True)
        processor = CLIPImageProcessor.from_pretrained(folder, subfolder="image_processor", local_files_only=True)
        scheduler_config = _scheduler_config(folder)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{input_name}: {folder.name} could not be loaded as an unCLIP prior: {error}") from error
    clip_vision = ClipVision(place(image_encoder).eval(), processor, folder.name)
    return UnclipPrior(place(prior).eval(), place(text_encoder).eval(), tokenizer, scheduler_config, clip_vision,
                       folder.name)


def load_decoder(folder: Path, place: Place, input_name: str) -> tuple[DiffusionModel, MovqVae]:
    """MODEL (the image-embedding UNet) and VAE (MoVQ) from a diffusers KandinskyV22Pipeline folder."""
    from diffusers import UNet2DConditionModel, VQModel

    folder = Path(folder)
    _expect(folder, DECODER_PIPELINE, input_name)
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
        movq = VQModel.from_pretrained(folder, subfolder="movq", local_files_only=True)
        scheduler_config = _scheduler_config(folder)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{input_name}: {folder.name} could not be loaded as an unCLIP decoder: {error}") from error
    if unet.config.addition_embed_type != "image":
        raise ValueError(f"{input_name}: {folder.name}'s UNet is not conditioned on image embeddings")
    return (DiffusionModel(place(unet).eval(), scheduler_config, folder.name, sampling=DECODER_SAMPLING),
            MovqVae(place(movq).eval(), folder.name))
