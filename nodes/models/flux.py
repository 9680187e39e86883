"""FLUX.1: how the shared sampler drives a FLUX transformer, and its CLIP-L + T5 prompt encoding.

`FluxSampling` is the family's `DiffusionModel.sampling`: flow matching with FluxPipeline's schedule (sigmas
1 .. 1/steps, shifted by `mu` computed from the image's token count), latents packed into 2x2 patches only
for the transformer call (the scheduler's Euler step is elementwise, so it runs on the unpacked latents),
the distilled guidance from the conditioning (`FluxGuidance`), and true classifier-free guidance when cfg is
not 1 (FluxPipeline's `true_cfg_scale`). LATENT holds the VAE's latents shifted and scaled as FluxPipeline
samples them. `FluxTextEncoders` is the family's CLIP: T5 hidden states as the sequence, CLIP-L's pooled
output as `pooled_output`, tokenized as FluxPipeline does (no emphasis syntax, T5 padded to 512 tokens).
Knows nothing of nodes or files.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from nodes.models.components import LoraPatch
from nodes.models.lazy_module import resolve
from nodes.models.lora import TEXT_ENCODER, TRANSFORMER, lora_applied
from nodes.models.sampler import GuidanceBatch, UNetSampling
from nodes.models.t5 import MAX_LENGTH as T5_MAX_LENGTH
from nodes.models.text_encoding import Conditioning

DEFAULT_GUIDANCE = 3.5  # ComfyUI's FLUX guidance when no FluxGuidance node sets one
CLIP_MAX_LENGTH = 77
FLOW_SCHEDULERS = {  # ComfyUI scheduler names -> FlowMatchEulerDiscreteScheduler sigma spacing options
    "simple": {}, "normal": {}, "sgm_uniform": {}, "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True}, "beta": {"use_beta_sigmas": True},
}
FLOW_SAMPLERS = ("euler",)  # the flow-matching scheduler of diffusers that takes FLUX's shifted sigmas


def calculate_shift(image_tokens: int, config: Mapping[str, Any]) -> float:
    """FluxPipeline's `mu`: the schedule shift grows linearly with the number of image tokens."""
    base_tokens, max_tokens = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    return image_tokens * slope + base_shift - slope * base_tokens


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H/2 * W/2, C*4]: 2x2 patches as tokens (FluxPipeline._pack_latents)."""
    batch, channels, height, width = latents.shape
    patches = latents.view(batch, channels, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(batch, (height // 2) * (width // 2), channels * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `pack` for latents of `height` x `width`."""
    batch, _, features = tokens.shape
    patches = tokens.view(batch, height // 2, width // 2, features // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(batch, features // 4, height, width)


def image_ids(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Each patch's (0, row, column) position for the rotary embedding (FluxPipeline._prepare_latent_image_ids)."""
    ids = torch.zeros(height // 2, width // 2, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(height // 2)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(width // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


class FluxSampling(UNetSampling):
    """The shared sampling loop's hooks for a FluxTransformer2DModel."""

    lora_component = TRANSFORMER
    lora_format = "flux"

    def make_scheduler(self, config: Mapping[str, Any], sampler_name: str, scheduler_name: str, seed: int) -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler

        if sampler_name not in FLOW_SAMPLERS:
            raise ValueError(f"sampler_name: {sampler_name!r} is not available for FLUX models (flow matching); "
                             f"use one of: {', '.join(FLOW_SAMPLERS)}")
        if scheduler_name not in FLOW_SCHEDULERS:
            raise ValueError(f"scheduler: {scheduler_name!r} is not available for FLUX models; "
                             f"use one of: {', '.join(FLOW_SCHEDULERS)}")
        return FlowMatchEulerDiscreteScheduler.from_config(dict(config), **FLOW_SCHEDULERS[scheduler_name])

    def set_timesteps(self, scheduler: Any, total: int, latents: torch.Tensor, device: torch.device) -> None:
        height, width = latents.shape[-2:]
        if height % 2 or width % 2:
            raise ValueError(f"latent_image: FLUX needs an even latent size (images in multiples of 16 pixels), "
                             f"got {width}x{height} latents")
        sigmas = np.linspace(1.0, 1 / total, total)
        mu = calculate_shift((height // 2) * (width // 2), scheduler.config)
        scheduler.set_timesteps(sigmas=sigmas, mu=mu, device=device)

    def noised(self, scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, first_timestep: torch.Tensor,
               start: int) -> torch.Tensor:
        """Flow matching mixes: sigma * noise + (1 - sigma) * latents (pure noise at the first sigma, 1)."""
        return scheduler.scale_noise(latents, first_timestep, noise)

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        pooled, distilled = [], []
        for options in guidance.options:
            if options.get("pooled_output") is None:
                raise ValueError("conditioning: FLUX needs CLIP-L's pooled output; encode the prompt with a FLUX "
                                 "CLIP (DualCLIPLoader type flux, or a FLUX model folder)")
            pooled.append(options["pooled_output"].to(device, dtype).expand(batch, -1))
            distilled.append(torch.full([batch], float(options.get("guidance", DEFAULT_GUIDANCE))))
        return {"pooled_projections": torch.cat(pooled), "guidance": torch.cat(distilled).to(device)}

    def predict(self, network: Any, scheduler: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        rows, _, height, width = model_input.shape
        guidance = inputs["guidance"] if network.config.guidance_embeds else None
        text_ids = torch.zeros(embeddings.shape[1], 3, device=model_input.device, dtype=embeddings.dtype)
        prediction = network(
            hidden_states=pack(model_input), timestep=timestep.expand(rows).to(model_input.dtype) / 1000,
            guidance=guidance, pooled_projections=inputs["pooled_projections"], encoder_hidden_states=embeddings,
            txt_ids=text_ids, img_ids=image_ids(height, width, model_input.device, model_input.dtype),
            return_dict=False)[0]
        return unpack(prediction, height, width)

    def denoised(self, scheduler: Any, output: Any, latents: torch.Tensor, prediction: torch.Tensor,
                 sampler_name: str) -> torch.Tensor:
        """x0 = x_t - sigma * v: the flow model predicts the velocity from data to noise."""
        sigma = scheduler.sigmas[scheduler.step_index - 1]
        return latents - sigma * prediction


FLUX_SAMPLING = FluxSampling()


@dataclass(frozen=True, eq=False)
class FluxTextEncoders:
    """CLIP for FLUX: CLIP-L (pooled output) and T5 (hidden states), with their tokenizers and LoRAs to apply."""

    clip_tokenizer: Any
    clip_model: Any
    t5_tokenizer: Any
    t5_model: Any
    name: str
    loras: tuple[LoraPatch, ...] = ()
    lora_format = "flux"

    def lora_modules(self) -> list[tuple[str, Any]]:
        return [(TEXT_ENCODER, self.clip_model)]

    def offloadable(self) -> list[Any]:
        """The big text encoders that may be freed after encoding (T5; CLIP-L is small)."""
        return [self.t5_model]

    def with_lora(self, patch: LoraPatch) -> "FluxTextEncoders":
        return dataclasses.replace(self, loras=self.loras + (patch,))

    def with_layer(self, layer_index: int) -> "FluxTextEncoders":
        """CLIPSetLastLayer: FLUX reads only CLIP-L's pooled output (from the last layer, as in ComfyUI) and T5's
        last layer, so a valid layer choice changes nothing."""
        layers = int(self.clip_model.config.num_hidden_layers)
        if not -layers <= layer_index <= -1:
            raise ValueError(f"stop_at_clip_layer: {layer_index} is outside -1..-{layers} for {self.name}")
        return self

    @torch.inference_mode()
    def encode_prompt(self, text: str, t5_text: str | None = None) -> Conditioning:
        """[[T5 hidden states [1, 512, width], {"pooled_output": CLIP-L pooled [1, width]}]], float32 CPU;
        `t5_text` gives T5 a different prompt than CLIP-L (CLIPTextEncodeFlux)."""
        clip_ids = self.clip_tokenizer(text, padding="max_length", max_length=CLIP_MAX_LENGTH, truncation=True,
                                       return_tensors="pt").input_ids
        with lora_applied(self.clip_model, TEXT_ENCODER, self.loras):
            pooled = self.clip_model(clip_ids.to(self.clip_model.device), output_hidden_states=False).pooler_output
        t5_ids = self.t5_tokenizer(text if t5_text is None else t5_text, padding="max_length",
                                   max_length=T5_MAX_LENGTH, truncation=True, return_tensors="pt").input_ids
        t5_model = resolve(self.t5_model)
        hidden = t5_model(t5_ids.to(t5_model.device), output_hidden_states=False)[0]
        return [[hidden.float().cpu(), {"pooled_output": pooled.float().cpu()}]]
