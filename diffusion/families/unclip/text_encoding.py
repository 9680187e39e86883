"""The unCLIP cascade's prompt side (Kandinsky 2.2): the diffusion prior turns a prompt's CLIP text embedding into
a CLIP image embedding (`UnclipPrior`, KandinskyV22PriorPipeline's loop), the CLIP image encoder embeds images
(`ClipVision`), and IMAGE_EMBEDS values (float32 CPU tensors [batch, embedding width]) are mixed and handed to
the decoder as its conditioning. Knows nothing of nodes or files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from diffusion.encoders.clip_vision import ClipVisionOutput, preprocess
from engine.progress import report_progress


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
    def encode_image(self, images: torch.Tensor, crop: bool = True) -> ClipVisionOutput:
        """IMAGE [B, H, W, C] in 0..1 -> CLIP_VISION_OUTPUT (CLIPVisionEncode). Centre-cropped images are prepared
        as diffusers does for PIL images (its image processor: resize, centre crop, CLIP normalization), so the
        embeddings are the prior pipeline's; uncropped ones squeezed to the square as ComfyUI's clip_preprocess
        does."""
        from PIL import Image

        if crop:
            pictures = [Image.fromarray(np.clip(255.0 * image[..., :3].numpy(), 0, 255).astype(np.uint8))
                        for image in images.cpu()]
            pixels = self.image_processor(pictures, return_tensors="pt").pixel_values
        else:
            processor = self.image_processor
            pixels = preprocess(images.cpu(), self.image_encoder.config.image_size, tuple(processor.image_mean),
                                tuple(processor.image_std), crop=False)
        out = self.image_encoder(pixels.to(self.device, self.image_encoder.dtype), output_hidden_states=True)
        return ClipVisionOutput(out.last_hidden_state.float().cpu(), out.image_embeds.float().cpu(),
                                out.hidden_states[-2].float().cpu())

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
                                   encoder_hidden_states=hidden.to(dtype),
                                   attention_mask=mask).predicted_image_embedding
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


def image_embeds_of(value: torch.Tensor | ClipVisionOutput, input_name: str) -> torch.Tensor:
    """IMAGE_EMBEDS of an IMAGE_EMBEDS or CLIP_VISION_OUTPUT input (its projected image embedding)."""
    if isinstance(value, torch.Tensor):
        return value
    if value.image_embeds is None:
        raise ValueError(f"{input_name}: this image encoder has no image embedding (SigLIP); use a CLIP one")
    return value.image_embeds


def mix_image_embeds(first: torch.Tensor, second: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - weight) * first + weight * second (the prior pipeline's `interpolate` for two inputs)."""
    if first.shape[-1] != second.shape[-1]:
        raise ValueError(f"image_embeds: widths {first.shape[-1]} and {second.shape[-1]} differ (embeddings from "
                         "different CLIP models)")
    return (1.0 - weight) * first + weight * second


def embeds_conditioning(image_embeds: torch.Tensor) -> list[list[Any]]:
    """IMAGE_EMBEDS as the shared sampler's CONDITIONING: one entry, embeddings [B, 1, width]."""
    return [[image_embeds[:, None, :], {}]]
