"""How the shared sampling loop drives an SDXL UNet: the discrete-schedule hooks plus the UNet's added inputs,
`text_embeds` (the pooled OpenCLIP-G projection) and `time_ids` (six size/crop numbers for the base, five
size/aesthetic-score numbers for the refiner), read from the CONDITIONING options as ComfyUI stores them.
Knows nothing of nodes or files."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from diffusion.contracts import GuidanceBatch
from diffusion.files import config_beside
from diffusion.latent_format import LatentFormat
from diffusion.sampling.discrete import DiscreteSampling

BASE_TIME_IDS = 6  # height, width, crop top, crop left, target height, target width
REFINER_TIME_IDS = 5  # height, width, crop top, crop left, aesthetic score


@dataclass(frozen=True)
class SdxlSampling(DiscreteSampling):
    """SDXL's UNet call: added `text_embeds` (pooled OpenCLIP-G) and `time_ids` from each conditioning entry.

    Missing sizes default as in ComfyUI (768, no crop, target = size; aesthetic score 6 for positive and 2.5 for
    negative prompts), so plain CLIPTextEncode conditioning works too."""

    refiner: bool
    pooled_width: int
    family_title = "SDXL"
    latent_format = LatentFormat.from_config(config_beside(__file__)["vae"])

    def time_ids(self, options: Mapping[str, Any], negative: bool) -> list[float]:
        defaults = config_beside(__file__)
        width = float(options.get("width", defaults["default_size"]))
        height = float(options.get("height", defaults["default_size"]))
        crop = [float(options.get("crop_h", 0)), float(options.get("crop_w", 0))]
        if self.refiner:
            score = defaults["aesthetic_score"]["negative" if negative else "positive"]
            return [height, width, *crop, float(options.get("aesthetic_score", score))]
        return [height, width, *crop, float(options.get("target_height", height)),
                float(options.get("target_width", width))]

    def network_inputs(self, guidance: GuidanceBatch, batch: int, device: torch.device,
                       dtype: torch.dtype) -> dict[str, Any]:
        negatives = len(guidance.negative_weights)
        pooled_rows, time_rows = [], []
        for index, options in enumerate(guidance.options):
            pooled = options.get("pooled_output")
            if pooled is None or pooled.shape[-1] != self.pooled_width:
                found = "none" if pooled is None else f"{pooled.shape[-1]} values"
                raise ValueError(f"conditioning: this SDXL model needs a pooled text embedding of {self.pooled_width} "
                                 f"values (encode prompts with the SDXL checkpoint's CLIP); found {found}")
            pooled_rows.append(pooled.reshape(-1, pooled.shape[-1]).expand(batch, -1))
            time_rows.append(torch.tensor([self.time_ids(options, index < negatives)]).expand(batch, -1))
        return {"added_cond_kwargs": {"text_embeds": torch.cat(pooled_rows).to(device, dtype),
                                      "time_ids": torch.cat(time_rows).to(device, dtype)}}


def sampling_for(unet: Any, refiner: bool) -> SdxlSampling:
    time_ids = REFINER_TIME_IDS if refiner else BASE_TIME_IDS
    added = unet.add_embedding.linear_1.in_features
    return SdxlSampling(refiner, added - time_ids * int(unet.config.addition_time_embed_dim))
