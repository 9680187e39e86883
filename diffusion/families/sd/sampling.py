"""How the shared sampling loop drives an SD1.x/SD2.x UNet: the discrete-schedule hooks unchanged (noise or v
prediction, every sampler and scheduler of the shared tables), and for SD2.1 unCLIP UNets their image-embedding input.
SD1.x UNets also take GLIGEN's boxes when the conditioning carries them (`diffusion.gligen`).

SD2.1 unCLIP (sd21-unclip-h / -l) takes a CLIP image embedding through the UNet's class embedding (LDM `label_emb`,
diffusers' `class_embed_type="projection"`), as ComfyUI's SD21UNCLIP gives it (StableUnCLIPImg2ImgPipeline's
`noise_image_embeddings` for one embedding): each conditioning entry's `unclip_conditioning` items (appended by
unCLIPConditioning: a CLIP_VISION_OUTPUT, a strength and a noise augmentation in 0..1) are noised to level
round(999 * noise_augmentation) of a 1000-step squared-cosine DDPM schedule (after normalising with the data mean
and std: zeros and ones, as ComfyUI and diffusers use for these models), the level's sinusoidal embedding appended,
and the result scaled by the strength; several embeddings (several items, or a batch of images in one) are summed
and augmented once more at the level of the entry's `unclip_noise_augment_merge` (default 0.05). An entry without
items gets zeros. The augmentation noise is drawn on the CPU from a generator seeded with the sampling seed minus 10
for every embedding (ComfyUI reseeds torch's global generator each time; the seed comes from
`diffusion.sampling.run_seed`), and the merge's noise continues that generator, as ComfyUI's does on the CPU (on a
GPU ComfyUI draws the merge noise from the GPU's generator instead). Knows nothing of nodes or files.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping, Sequence

import torch

from diffusion import gligen
from diffusion.contracts import GuidanceBatch
from diffusion.files import config_beside
from diffusion.latent_format import LatentFormat
from diffusion.sampling import run_seed
from diffusion.sampling.discrete import DiscreteSampling

UNCLIP_OPTION = "unclip_conditioning"  # the conditioning option unCLIPConditioning appends to
NOISE_LEVELS = 1000  # ComfyUI's CLIPEmbeddingNoiseAugmentation: 1000 steps, squaredcos_cap_v2
NOISE_SCHEDULE = "squaredcos_cap_v2"
SEED_OFFSET = -10  # ComfyUI seeds the augmentation noise with the sampling seed minus 10
MERGE_AUGMENTATION = 0.05  # ComfyUI's default `unclip_noise_augment_merge`


class SdSampling(DiscreteSampling):
    family_title = "SD1.x/SD2.x"
    latent_format = LatentFormat.from_config(config_beside(__file__, "sd1.json")["vae"])  # SD2's is the same

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        """GLIGEN's boxes where the conditioning has any (`diffusion.gligen`). A plain UNet takes no image
        embedding, so unCLIP conditioning is refused with an error naming the input (ComfyUI ignores it silently)."""
        negatives = len(guidance.negative_weights)
        for index, options in enumerate(guidance.options):
            if options.get(UNCLIP_OPTION):
                side = "negative" if index < negatives else "positive"
                raise ValueError(f"{side}: it carries unCLIP image embeddings (unCLIPConditioning), which this "
                                 f"{self.family_title} model cannot take; load an SD2.1 unCLIP checkpoint "
                                 "(unCLIPCheckpointLoader)")
        return gligen.network_inputs(guidance.options, negatives, len(guidance.unconditional_weights), batch,
                                     device, dtype)

    def network_output(self, network: Any, model_input: torch.Tensor, timestep: torch.Tensor,
                       embeddings: torch.Tensor, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The UNet's output, with GLIGEN's layers for the rows whose conditioning carries boxes
        (`diffusion.gligen`)."""
        return gligen.grounded_output(super().network_output, network, model_input, timestep, embeddings, inputs)


SD_SAMPLING = SdSampling()


def noise_level(noise_augmentation: float) -> int:
    """ComfyUI's level for a 0..1 noise augmentation (Python's round, as ComfyUI's)."""
    return round((NOISE_LEVELS - 1) * noise_augmentation)


@dataclass(frozen=True, eq=False)
class ImageEmbeddingAugmentor:
    """The noise augmentation of image embeddings `width` wide (diffusers' StableUnCLIPImageNormalizer and image
    noising DDPMScheduler; ComfyUI's CLIPEmbeddingNoiseAugmentation)."""

    width: int

    @cached_property
    def data_mean(self) -> torch.Tensor:
        return torch.zeros(1, self.width)

    @cached_property
    def data_std(self) -> torch.Tensor:
        return torch.ones(1, self.width)

    @cached_property
    def scheduler(self) -> Any:
        from diffusers import DDPMScheduler

        return DDPMScheduler(num_train_timesteps=NOISE_LEVELS, beta_schedule=NOISE_SCHEDULE)

    def augment(self, embeds: torch.Tensor, level: int, noise: torch.Tensor) -> torch.Tensor:
        """[n, width] embeddings noised to `level` with `noise`, their level's embedding appended: [n, 2 width]."""
        from diffusers.models.embeddings import get_timestep_embedding

        levels = torch.tensor([level] * embeds.shape[0])
        scaled = (embeds - self.data_mean) / self.data_std
        noised = self.scheduler.add_noise(scaled, noise, levels)
        noised = noised * self.data_std + self.data_mean
        level_embedding = get_timestep_embedding(levels, self.width, flip_sin_to_cos=True, downscale_freq_shift=0)
        return torch.cat([noised, level_embedding.to(noised.dtype)], dim=1)

    def class_labels(self, items: Sequence[Mapping[str, Any]], seed: int, merge_augmentation: float,
                     input_name: str) -> torch.Tensor:
        """The UNet's image-embedding input [1, 2 width] for one conditioning entry's unCLIP items."""
        rows, generator = [], None
        for item in items:
            embeds = item["clip_vision_output"].image_embeds
            if embeds is None or embeds.shape[-1] != self.width:
                found = "no image embedding" if embeds is None else f"{embeds.shape[-1]}-wide image embeddings"
                raise ValueError(f"{input_name}: this unCLIP model takes {self.width}-wide CLIP image embeddings; "
                                 f"its unCLIP conditioning has {found} (encode the image with the CLIP_VISION of "
                                 "the same unCLIP checkpoint)")
            level = noise_level(item["noise_augmentation"])
            for embed in embeds.float().cpu().reshape(-1, self.width):
                generator = torch.Generator("cpu").manual_seed(seed)
                noise = torch.randn((1, self.width), generator=generator)
                rows.append(self.augment(embed[None], level, noise) * item["strength"])
        if not rows:
            return torch.zeros(1, 2 * self.width)
        if len(rows) == 1:
            return rows[0]
        merged = torch.stack(rows).sum(0)
        noise = torch.randn((1, self.width), generator=generator)
        return self.augment(merged[:, :self.width], noise_level(merge_augmentation), noise)


@dataclass(frozen=True, eq=False)
class UnclipSampling(SdSampling):
    """SD2.1 unCLIP's UNet call: the discrete-schedule hooks plus `class_labels`, each conditioning entry's image
    embeddings augmented (`ImageEmbeddingAugmentor`), zeros for entries without."""

    augmentor: ImageEmbeddingAugmentor
    family_title = "SD2.1 unCLIP"

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        seed = run_seed.current_seed() + SEED_OFFSET
        negatives = len(guidance.negative_weights)
        rows = []
        for index, entry in enumerate(guidance.options):
            input_name = "negative" if index < negatives else "positive"
            items = entry.get(UNCLIP_OPTION) or ()
            merge = float(entry.get("unclip_noise_augment_merge", MERGE_AUGMENTATION))
            rows.append(self.augmentor.class_labels(items, seed, merge, input_name).expand(batch, -1))
        rows += rows[:len(guidance.unconditional_weights)]  # the unconditional rows are the negatives again
        return {"class_labels": torch.cat(rows).to(device, dtype)}


def unclip_sampling_for(unet: Any) -> UnclipSampling:
    """The sampling hooks of an unCLIP UNet (its class embedding takes the embedding and the level's embedding)."""
    return UnclipSampling(ImageEmbeddingAugmentor(int(unet.config.projection_class_embeddings_input_dim) // 2))
