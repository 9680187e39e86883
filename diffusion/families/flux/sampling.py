"""How the shared sampling loop drives a FLUX transformer: flow matching with FluxPipeline's schedule (sigmas
1 .. 1/steps, shifted by `mu` computed from the image's token count), latents packed into 2x2 patches only for the
transformer call (the scheduler's Euler step is elementwise, so it runs on the unpacked latents), the distilled
guidance from the conditioning (`FluxGuidance`; None, from FluxDisableGuidance, leaves the guidance term out of the
time embedding, as ComfyUI's FLUX does), and true classifier-free guidance when cfg is not 1
(FluxPipeline's `true_cfg_scale`). Reference latents (FLUX.1 Kontext: ReferenceLatent) are packed like the latents
and appended to the image tokens, numbered as ComfyUI's FLUX numbers them ("offset": all at index 1, placed beside
each other; "index": index 1, 2, ...; "uxo": index 0, past the image), and their outputs dropped. Sampling runs on
the VAE's latents shifted and scaled as FluxPipeline samples them (the family's latent format; LATENT holds them
raw). Knows nothing of nodes or files.
"""
from __future__ import annotations

import contextlib
import inspect
import threading
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from diffusion.contracts import GuidanceBatch
from diffusion.files import config_beside
from diffusion.latent_format import LatentFormat
from diffusion.sampling import editing, reference_latents
from diffusion.sampling.flow import FlowSampling, padded_to_patches
from diffusion.sampling.model_sampling import ModelSampling

DEFAULT_GUIDANCE = 3.5  # ComfyUI's FLUX guidance when no FluxGuidance node sets one
NO_GUIDANCE = float("nan")  # a row's guidance when its conditioning's is None (FluxDisableGuidance)
# FLUX.1-schnell's scheduler config differs from FLUX.1-dev's (`config.json`) in these: a plain flow schedule
SCHNELL_SCHEDULER_CHANGES = {"shift": 1.0, "use_dynamic_shifting": False}
FLUX_REFERENCE_METHODS = ("offset", "index", "uxo")
MASK_PATCH = 8  # FLUX.1 Fill sees its mask at pixel size, each latent pixel's 8x8 pixels as 64 channels


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


def image_ids(height: int, width: int, device: torch.device, dtype: torch.dtype, index: int = 0,
              row_offset: int = 0, column_offset: int = 0) -> torch.Tensor:
    """Each patch's (index, row, column) position for the rotary embedding (FluxPipeline._prepare_latent_image_ids;
    a reference image's patches have their own index and offsets, given in latent pixels)."""
    ids = torch.zeros(height // 2, width // 2, 3)
    ids[..., 0] = index
    ids[..., 1] = ids[..., 1] + torch.arange(height // 2)[:, None] + (row_offset + 1) // 2
    ids[..., 2] = ids[..., 2] + torch.arange(width // 2)[None, :] + (column_offset + 1) // 2
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def reference_tokens(references: list[torch.Tensor], method: str, height: int, width: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference latents ([rows, C, h, w] each, model space) as tokens and their position ids, numbered as
    ComfyUI's FLUX numbers them for `method` beside latents of `height` x `width` (padded to whole patches)."""
    if method not in FLUX_REFERENCE_METHODS:
        raise ValueError(f"conditioning: reference latents numbered by {method!r} are not supported by FLUX.1 "
                         f"(its numberings: {', '.join(FLUX_REFERENCE_METHODS)})")
    tokens, ids = [], []
    placed_height = placed_width = 0
    index = 0
    for reference in references:
        reference_height, reference_width = reference.shape[-2:]
        row_offset = column_offset = 0
        if method == "index":
            index += 1
        elif method == "uxo":
            index, row_offset, column_offset = 0, height + placed_height, width + placed_width
            placed_height, placed_width = placed_height + reference_height, placed_width + reference_width
        else:  # "offset": beside the references so far, along the side that keeps the arrangement squarer
            index = 1
            if reference_height + placed_height > reference_width + placed_width:
                column_offset = placed_width
            else:
                row_offset = placed_height
            placed_height = max(placed_height, reference_height + row_offset)
            placed_width = max(placed_width, reference_width + column_offset)
        padded = padded_to_patches(reference)
        tokens.append(pack(padded))
        ids.append(image_ids(padded.shape[-2], padded.shape[-1], reference.device, reference.dtype, index,
                             row_offset, column_offset))
    return torch.cat(tokens, dim=1), torch.cat(ids)


def flux_model_sampling(config: Mapping[str, Any]) -> ModelSampling:
    """The sigma core's noise schedule of a FLUX model whose scheduler config is `config`, as ComfyUI samples
    FLUX: with dynamic shifting (FLUX.1-dev) FLUX's time shift (ModelSamplingFlux), without (FLUX.1-schnell)
    rectified flow with the config's shift whose timesteps are the sigmas themselves (ComfyUI's FluxSchnell:
    multiplier 1), because the transformer is always called with sigma."""
    return ModelSampling.from_scheduler_config(config, flow_timestep_multiplier=1.0)


class FluxSampling(FlowSampling):
    """The shared sampling loop's hooks for a FluxTransformer2DModel."""

    family_title = "FLUX"
    latent_format = LatentFormat.from_config(config_beside(__file__)["vae"])
    # FlowMatchEulerDiscreteScheduler is the flow-matching scheduler of diffusers that takes FLUX's shifted sigmas
    FLOW_SAMPLERS = {"euler": "FlowMatchEulerDiscreteScheduler"}
    sampler_names = tuple(FLOW_SAMPLERS)

    def set_timesteps(self, scheduler: Any, total: int, latents: torch.Tensor, device: torch.device) -> None:
        height, width = latents.shape[-2:]
        if height % 2 or width % 2:
            raise ValueError(f"latent_image: FLUX needs an even latent size (images in multiples of 16 pixels), "
                             f"got {width}x{height} latents")
        sigmas = np.linspace(1.0, 1 / total, total)
        mu = calculate_shift((height // 2) * (width // 2), scheduler.config)
        scheduler.set_timesteps(sigmas=sigmas, mu=mu, device=device)

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        pooled, distilled = [], []
        for options in guidance.options:
            if options.get("pooled_output") is None:
                raise ValueError("conditioning: FLUX needs CLIP-L's pooled output; encode the prompt with a FLUX "
                                 "CLIP (DualCLIPLoader type flux, or a FLUX model folder)")
            pooled.append(options["pooled_output"].to(device, dtype).expand(batch, -1))
            scale = options.get("guidance", DEFAULT_GUIDANCE)
            distilled.append(torch.full([batch], NO_GUIDANCE if scale is None else float(scale)))
        inputs = {"pooled_projections": torch.cat(pooled), "guidance": torch.cat(distilled).to(device)}
        references = reference_latents.rows(guidance.options, batch, self.latent_format, device, dtype)
        if references is not None:
            inputs[reference_latents.REFERENCES] = references
        return inputs

    def takes_extra_channels(self, in_channels: int, out_channels: int) -> bool:
        """FLUX.1 Canny and Depth: the latents and the control image's latents, packed; FLUX.1 Fill: those and the
        packed 64-channel mask."""
        return in_channels in (2 * out_channels, 2 * out_channels + 4 * MASK_PATCH * MASK_PATCH)

    def extra_channels(self, network: Any, mask: torch.Tensor | None, image: torch.Tensor,
                       shape: torch.Size) -> torch.Tensor:
        """As ComfyUI's Flux concat_cond and diffusers' FluxFill/FluxControl pipelines make them: the image's
        latents, then for FLUX.1 Fill the mask at 8x the latent size, each latent pixel's 8x8 block as 64
        channels (ones when none)."""
        batch, channels, height, width = shape
        if network.config.in_channels <= 2 * 4 * channels:
            return image.float()
        if mask is None:
            mask = torch.ones(batch, 1, height * MASK_PATCH, width * MASK_PATCH)
        mask = mask.float().reshape(-1, 1, *mask.shape[-2:]).mean(dim=1, keepdim=True)
        mask = torch.nn.functional.interpolate(mask, size=(height * MASK_PATCH, width * MASK_PATCH), mode="bilinear")
        if mask.shape[0] != batch:  # one mask for the batch, or one per image repeated (as the image's latents)
            mask = mask.repeat(batch // mask.shape[0], 1, 1, 1)
        blocks = mask.view(batch, height, MASK_PATCH, width, MASK_PATCH).permute(0, 2, 4, 1, 3)
        return torch.cat([image.float(), blocks.reshape(batch, MASK_PATCH * MASK_PATCH, height, width)], dim=1)

    def predict(self, network: Any, scheduler: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """FluxPipeline hands the transformer the scheduler's timestep (sigma * 1000) over 1000: sigma."""
        rows = model_input.shape[0]
        return self.network_output(network, model_input, timestep.expand(rows).to(model_input.dtype) / 1000,
                                   embeddings, inputs)

    def network_output(self, network: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                       embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The transformer's velocity for latents of any size: an odd height or width (an area's crop) is padded
        to whole 2x2 patches and the output cropped back, as ComfyUI's FLUX does. A FLUX.1 Fill network's extra
        channels (`editing.ExtraChannels`) join the latents before they are packed."""
        rows, _, height, width = model_input.shape
        if isinstance(network, editing.ExtraChannels):
            model_input = torch.cat([model_input, network.channels.to(model_input)], dim=1)
            network = network.unet
        padded = padded_to_patches(model_input)
        padded_height, padded_width = padded.shape[-2:]
        text_ids = torch.zeros(embeddings.shape[1], 3, device=model_input.device, dtype=embeddings.dtype)
        tokens = pack(padded)
        ids = image_ids(padded_height, padded_width, model_input.device, model_input.dtype)
        image_token_count = tokens.shape[1]
        references = inputs.get(reference_latents.REFERENCES)
        if references and references[0][1]:
            method, stacked = reference_latents.stacked(references)
            extra_tokens, extra_ids = reference_tokens(stacked, method, padded_height, padded_width)
            tokens, ids = torch.cat([tokens, extra_tokens.to(tokens.dtype)], dim=1), torch.cat([ids, extra_ids])
        prediction = self.call_transformer(network, tokens, timestep.expand(rows).to(model_input.dtype), embeddings,
                                           text_ids, ids, inputs)
        return unpack(prediction[:, :image_token_count], padded_height, padded_width)[..., :height, :width]

    def call_transformer(self, network: Any, tokens: torch.Tensor, timestep: torch.Tensor, embeddings: torch.Tensor,
                         text_ids: torch.Tensor, ids: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The transformer's output tokens for the packed image tokens (FLUX's: with the pooled CLIP-L output and
        the distilled guidance, and ControlNet residuals when there are any)."""
        with guidance_left_out(network, inputs["guidance"] if network.config.guidance_embeds else None) as guidance:
            return network(
                hidden_states=tokens, timestep=timestep, guidance=guidance,
                pooled_projections=inputs["pooled_projections"], encoder_hidden_states=embeddings, txt_ids=text_ids,
                img_ids=ids, controlnet_block_samples=inputs.get("controlnet_block_samples"),
                controlnet_single_block_samples=inputs.get("controlnet_single_block_samples"), return_dict=False)[0]


@contextlib.contextmanager
def guidance_left_out(network: Any, guidance: torch.Tensor | None) -> Iterator[torch.Tensor | None]:
    """The `guidance` to call a FLUX transformer or ControlNet with, its `NO_GUIDANCE` rows left out of the time
    embedding while the context is open: ComfyUI's FLUX adds no guidance term for a conditioning whose guidance is
    None, but diffusers' networks with guidance_embeds always add one, so their time embedding is recomputed for
    the call with the term zeroed in those rows (the other rows' sums unchanged)."""
    if guidance is None or not torch.isnan(guidance).any():
        yield guidance
        return
    kept = ~torch.isnan(guidance)
    embedding = network.time_text_embed
    caller = threading.get_ident()  # another run calling the same network meanwhile is left alone

    def without_guidance(module: Any, args: tuple, kwargs: dict, output: torch.Tensor) -> torch.Tensor | None:
        if threading.get_ident() != caller:
            return None
        named = inspect.signature(module.forward).bind(*args, **kwargs).arguments
        timestep, scaled, pooled = named["timestep"], named["guidance"], named["pooled_projection"]
        time = module.timestep_embedder(module.time_proj(timestep).to(dtype=pooled.dtype))
        guided = module.guidance_embedder(module.time_proj(scaled).to(dtype=pooled.dtype))
        guided = torch.where(kept.to(guided.device)[:, None], guided, torch.zeros_like(guided))
        return time + guided + module.text_embedder(pooled)

    handle = embedding.register_forward_hook(without_guidance, with_kwargs=True)
    try:
        yield torch.nan_to_num(guidance, nan=0.0)
    finally:
        handle.remove()


FLUX_SAMPLING = FluxSampling()
