"""How the shared sampling loop drives a FLUX.2 transformer: flow matching over 128-channel latents (the VAE's
2x2 patches, normalized: the family's VAE value gives LATENT in this space, as ComfyUI's does, so the latent format
is the identity), each latent pixel one token with its (frame, row, column, index) position and each text token
its own index, the network given sigma as its time. Reference images (FLUX.2's editing: ReferenceLatent, latents
in the same space) are appended as tokens of their own frames, 10, 20, ..., as Flux2KleinPipeline numbers its
condition images, and their outputs dropped. The schedule is Flux2KleinPipeline's: sigmas 1 .. 1/steps
shifted by FLUX.2's empirical `mu` (from the image's token count and the step count; ComfyUI's Flux2Scheduler
node makes the same schedule for the custom samplers). Classifier-free guidance by cfg; a transformer with a
guidance embedding (FLUX.2 [dev]) takes the conditioning's FluxGuidance value. Knows nothing of nodes or files."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

from diffusion.contracts import GuidanceBatch
from diffusion.files import config_beside
from diffusion.latent_format import LatentFormat
from diffusion.sampling import reference_latents
from diffusion.sampling.flow import FlowSampling

DEFAULT_GUIDANCE = 4.0  # FLUX.2 [dev]'s guidance when no FluxGuidance node sets one
PATCH_AREA = 16 * 16  # pixels per latent token
REFERENCE_METHOD = "index"  # FLUX.2 numbers reference images by frame: the i-th at frame 10 * (i + 1)
REFERENCE_FRAMES = 10


def empirical_mu(image_tokens: int, steps: int) -> float:
    """FLUX.2's schedule shift: fitted to the token count, and to the step count up to 4300 tokens."""
    slope_10, intercept_10 = 8.73809524e-05, 1.89833333
    slope_200, intercept_200 = 0.00016927, 0.45666666
    at_200 = slope_200 * image_tokens + intercept_200
    if image_tokens > 4300:
        return float(at_200)
    at_10 = slope_10 * image_tokens + intercept_10
    per_step = (at_200 - at_10) / 190.0
    return float(per_step * steps + at_200 - 200.0 * per_step)


def schedule(steps: int, width: int, height: int) -> torch.Tensor:
    """ComfyUI's Flux2Scheduler: `steps` + 1 sigmas from 1 to 0, shifted by `empirical_mu` for an image of
    width x height pixels."""
    mu = empirical_mu(round(width * height / PATCH_AREA), steps)
    times = torch.linspace(1, 0, steps + 1)
    return math.exp(mu) / (math.exp(mu) + (1 / times - 1))


def positions(height: int, width: int, device: torch.device, frame: int = 0) -> torch.Tensor:
    """Each latent pixel's (frame, row, column, index 0), row-major."""
    rows, columns = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    zeros = torch.zeros_like(rows)
    return torch.stack([zeros + frame, rows, columns, zeros], dim=-1).reshape(-1, 4).to(device)


def text_positions(tokens: int, device: torch.device) -> torch.Tensor:
    """Each text token's (0, 0, 0, index)."""
    ids = torch.zeros(tokens, 4, dtype=torch.long)
    ids[:, 3] = torch.arange(tokens)
    return ids.to(device)


class Flux2Sampling(FlowSampling):
    """The shared sampling loop's hooks for a Flux2Transformer2DModel."""

    family_title = "FLUX.2"
    latent_format = LatentFormat(latent_channels=config_beside(__file__)["vae"]["latent_channels"],
                                 spatial_downscale=16)  # the VAE's 8x, then 2x2 patches
    FLOW_SAMPLERS = {"euler": "FlowMatchEulerDiscreteScheduler"}
    sampler_names = tuple(FLOW_SAMPLERS)

    def set_timesteps(self, scheduler: Any, total: int, latents: torch.Tensor, device: torch.device) -> None:
        """Flux2KleinPipeline's schedule: sigmas 1 .. 1/steps, shifted by the empirical mu."""
        sigmas = np.linspace(1.0, 1 / total, total)
        scheduler.set_timesteps(sigmas=sigmas, mu=empirical_mu(latents.shape[-2] * latents.shape[-1], total),
                                device=device)

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        scales = [options.get("guidance", DEFAULT_GUIDANCE) for options in guidance.options for _ in range(batch)]
        inputs: dict[str, Any] = {"guidance": torch.tensor([float(scale) if scale is not None else 0.0
                                                            for scale in scales], device=device)}
        references = reference_latents.rows(guidance.options, batch, self.latent_format, device, dtype,
                                            default_method=REFERENCE_METHOD)
        if references is not None:
            inputs[reference_latents.REFERENCES] = references
        return inputs

    def predict(self, network: Any, scheduler: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The pipeline hands the transformer the scheduler's timestep (sigma * 1000) over 1000: sigma."""
        rows = model_input.shape[0]
        return self.network_output(network, model_input, timestep.expand(rows).to(model_input.dtype) / 1000,
                                   embeddings, inputs)

    def network_output(self, network: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                       embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The velocity for the 128-channel latents, one token a latent pixel."""
        rows, channels, height, width = model_input.shape
        tokens = model_input.reshape(rows, channels, height * width).transpose(1, 2)
        image_ids = positions(height, width, model_input.device)
        image_tokens = tokens.shape[1]
        references = inputs.get(reference_latents.REFERENCES)
        if references and references[0][1]:
            method, stacked = reference_latents.stacked(references)
            if method != REFERENCE_METHOD:
                raise ValueError(f"conditioning: reference latents numbered by {method!r} are not supported by "
                                 f"FLUX.2, whose references are numbered by {REFERENCE_METHOD!r}")
            for number, reference in enumerate(stacked):
                reference_height, reference_width = reference.shape[-2:]
                tokens = torch.cat([tokens, reference.reshape(rows, channels, -1).transpose(1, 2).to(tokens)], dim=1)
                image_ids = torch.cat([image_ids, positions(reference_height, reference_width, model_input.device,
                                                            frame=REFERENCE_FRAMES * (number + 1))])
        image_ids = image_ids.expand(rows, -1, -1)
        text_ids = text_positions(embeddings.shape[1], model_input.device).expand(rows, -1, -1)
        guidance = inputs["guidance"].to(model_input.dtype) if network.config.guidance_embeds else None
        output = network(hidden_states=tokens, encoder_hidden_states=embeddings,
                         timestep=timestep.reshape(-1).expand(rows).to(model_input.dtype), img_ids=image_ids,
                         txt_ids=text_ids, guidance=guidance, return_dict=False)[0]
        return output[:, :image_tokens].transpose(1, 2).reshape(rows, -1, height, width)


FLUX2_SAMPLING = Flux2Sampling()
