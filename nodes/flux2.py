"""FLUX.2's latent and schedule nodes with ComfyUI's names and inputs: EmptyFlux2LatentImage (FLUX.2's 128-channel
latents at 1/16 of the image's side) and Flux2Scheduler (FLUX.2's sigmas for a step count and image size, for the
custom samplers). Knows nothing of HTTP or the executor."""
from __future__ import annotations

from typing import Any

import torch

from diffusion.families.flux2.sampling import Flux2Sampling, schedule
from nodes.latent import MAX_RESOLUTION

LATENT_CHANNELS = Flux2Sampling.latent_format.latent_channels
LATENT_SCALE = 16  # pixels per latent pixel on each side


class EmptyFlux2LatentImage:
    DESCRIPTION = ("An empty batch of FLUX.2 latents (128 channels, one per 16x16 pixels) to start text-to-image "
                   "sampling from.")
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The empty latent batch.",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        def side(name: str) -> tuple[str, dict[str, Any]]:
            return ("INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 16,
                            "tooltip": f"Image {name} in pixels (a multiple of 16)."})

        return {"required": {"width": side("width"), "height": side("height"),
                             "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096,
                                                    "tooltip": "Images in the batch."})}}

    def generate(self, width: int, height: int, batch_size: int = 1) -> tuple[dict[str, Any]]:
        return ({"samples": torch.zeros([batch_size, LATENT_CHANNELS, height // LATENT_SCALE,
                                         width // LATENT_SCALE])},)


class Flux2Scheduler:
    DESCRIPTION = ("FLUX.2's noise schedule: steps + 1 sigmas from 1 to 0, shifted more for larger images and for "
                   "fewer steps (its empirical shift), for SamplerCustom and SamplerCustomAdvanced.")
    CATEGORY = "sampling/custom_sampling/schedulers"
    RETURN_TYPES = ("SIGMAS",)
    OUTPUT_TOOLTIPS = ("The sigmas, highest first, ending at 0.",)
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        def side(name: str) -> tuple[str, dict[str, Any]]:
            return ("INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 1,
                            "tooltip": f"The image's {name} in pixels (the shift grows with the image's area)."})

        return {"required": {"steps": ("INT", {"default": 20, "min": 1, "max": 4096,
                                               "tooltip": "How many denoising steps."}),
                             "width": side("width"), "height": side("height")}}

    def get_sigmas(self, steps: int, width: int, height: int) -> tuple[torch.Tensor]:
        return (schedule(steps, width, height),)


NODE_CLASS_MAPPINGS = {"EmptyFlux2LatentImage": EmptyFlux2LatentImage, "Flux2Scheduler": Flux2Scheduler}
NODE_DISPLAY_NAME_MAPPINGS = {"EmptyFlux2LatentImage": "Empty Flux 2 Latent", "Flux2Scheduler": "Flux2Scheduler"}
