"""FLUX nodes with ComfyUI's names: CLIPTextEncodeFlux, FluxGuidance, FluxDisableGuidance, FluxKontextImageScale,
FluxKontextMultiReferenceLatentMethod (FLUX.1 Kontext's reference images come from ReferenceLatent) and the
16-channel empty latents (EmptySD3LatentImage, shared with SD3, and EmptyFluxLatentImage).

FLUX files load with UNETLoader, DualCLIPLoader (type flux), VAELoader or DiffusersLoader (`nodes.loaders`);
sampling goes through KSampler (cfg 1 for guidance-distilled models; the MODEL carries FLUX's sampling hooks),
decoding through VAEDecode, LoRAs through LoraLoader/LoraLoaderModelOnly. The family lives in
`diffusion.families.flux`. Knows nothing of HTTP or the executor.
"""
from __future__ import annotations

from typing import Any

import torch

from diffusion.contracts import Conditioning
from diffusion.families.flux.sampling import DEFAULT_GUIDANCE
from diffusion.families.flux.text_encoding import FluxClip
from diffusion.sampling.reference_latents import METHOD
from nodes.environment import release_text_encoders
from nodes.latent import MAX_RESOLUTION
from nodes.model_facts import requires_family
from nodes.resize import upscale

FLUX_LATENT_CHANNELS = 16
# (width, height) of the images FLUX.1 Kontext was trained on (ComfyUI's PREFERED_KONTEXT_RESOLUTIONS)
KONTEXT_RESOLUTIONS = (
    (672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248), (880, 1184), (944, 1104),
    (1024, 1024), (1104, 944), (1184, 880), (1248, 832), (1328, 800), (1392, 752), (1456, 720), (1504, 688),
    (1568, 672),
)


class CLIPTextEncodeFlux:
    DESCRIPTION = "Encodes a prompt for FLUX: one text for CLIP-L, one for T5, and the distilled guidance."
    CATEGORY = "advanced/conditioning/flux"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "clip": ("CLIP", {"tooltip": "A FLUX CLIP (CLIP-L and T5)."}),
            "clip_l": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "The prompt for CLIP-L."}),
            "t5xxl": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "The prompt for T5."}),
            "guidance": ("FLOAT", {"default": DEFAULT_GUIDANCE, "min": 0.0, "max": 100.0, "step": 0.1,
                                   "tooltip": "The guidance a guidance-distilled model is asked to follow."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, input_facts: dict[str, Any], **widgets: Any) -> bool | str:
        return requires_family(input_facts, "clip", "flux", "CLIPTextEncodeFlux")

    def encode(self, clip: FluxClip, clip_l: str, t5xxl: str, guidance: float) -> tuple[Conditioning]:
        if not isinstance(clip, FluxClip):
            raise ValueError("clip: CLIPTextEncodeFlux needs a FLUX CLIP (CLIP-L and T5)")
        conditioning = clip.encode_prompt(clip_l, t5xxl)
        release_text_encoders(clip)
        return (FluxGuidance().append(conditioning, guidance)[0],)


class FluxGuidance:
    DESCRIPTION = ("Sets the guidance a guidance-distilled FLUX model (FLUX.1-dev) is asked to follow; it replaces "
                   "classifier-free guidance, so sample with cfg 1.")
    CATEGORY = "advanced/conditioning/flux"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "conditioning": ("CONDITIONING", {"tooltip": "The encoded prompt."}),
            "guidance": ("FLOAT", {"default": DEFAULT_GUIDANCE, "min": 0.0, "max": 100.0, "step": 0.1,
                                   "tooltip": "Higher follows the prompt more closely."}),
        }}

    def append(self, conditioning: Conditioning, guidance: float) -> tuple[Conditioning]:
        return ([[entry[0], {**entry[1], "guidance": guidance}] for entry in conditioning],)


class FluxDisableGuidance:
    DESCRIPTION = ("Turns the guidance embedding of FLUX and FLUX-like models off for this conditioning: the model "
                   "gets no guidance input at all (not guidance 0), as models trained without it expect.")
    CATEGORY = "advanced/conditioning/flux"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The conditioning with its guidance set to none.",)
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning": ("CONDITIONING", {"tooltip": "The encoded prompt."})}}

    def append(self, conditioning: Conditioning) -> tuple[Conditioning]:
        return ([[entry[0], {**entry[1], "guidance": None}] for entry in conditioning],)


class FluxKontextMultiReferenceLatentMethod:
    DESCRIPTION = ("Chooses how an edit model numbers the positions of several reference latents: 'offset' places "
                   "them beside each other (FLUX.1 Kontext's way), 'index' gives each its own index (Qwen-Image-Edit's "
                   "way), 'uxo/uno' places them past the image (UXO and UNO models), 'index_timestep_zero' is "
                   "'index' with the references seen at time zero (Qwen-Image-Edit 2511).")
    CATEGORY = "advanced/conditioning/flux"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The conditioning with the method set.",)
    FUNCTION = "append"
    EXPERIMENTAL = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "conditioning": ("CONDITIONING", {"tooltip": "The conditioning with reference latents."}),
            "reference_latents_method": (["offset", "index", "uxo/uno", "index_timestep_zero"],
                                         {"tooltip": "How to number them."}),
        }}

    def append(self, conditioning: Conditioning, reference_latents_method: str) -> tuple[Conditioning]:
        method = "uxo" if "uxo" in reference_latents_method or "uso" in reference_latents_method \
            else reference_latents_method
        return ([[entry[0], {**entry[1], METHOD: method}] for entry in conditioning],)


def kontext_size(width: int, height: int) -> tuple[int, int]:
    """The (width, height) of `KONTEXT_RESOLUTIONS` closest in aspect ratio to width x height (ties: the
    narrower, as ComfyUI picks)."""
    aspect = width / height
    _, best_width, best_height = min((abs(aspect - w / h), w, h) for w, h in KONTEXT_RESOLUTIONS)
    return best_width, best_height


class FluxKontextImageScale:
    DESCRIPTION = ("Resizes images to the FLUX.1 Kontext resolution closest in aspect ratio (about one megapixel), "
                   "cropping the rest from the centre, with Lanczos filtering.")
    CATEGORY = "advanced/conditioning/flux"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The images at a size Kontext works best with.",)
    FUNCTION = "scale"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE", {"tooltip": "The images to resize (one size for the batch)."})}}

    def scale(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        if image.ndim != 4:
            raise ValueError(f"image: expected [batch, height, width, channels], got shape {list(image.shape)}")
        width, height = kontext_size(image.shape[2], image.shape[1])
        return (upscale(image.movedim(-1, 1), width, height, "lanczos", "center").movedim(1, -1),)


def _empty_16_channel(width: int, height: int, batch_size: int) -> dict[str, Any]:
    return {"samples": torch.zeros([batch_size, FLUX_LATENT_CHANNELS, height // 8, width // 8])}


def _size_inputs(step: int, **enforced: Any) -> dict[str, Any]:
    return {
        "width": ("INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": step, **enforced,
                          "tooltip": f"Image width in pixels (a multiple of {step})."}),
        "height": ("INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": step, **enforced,
                           "tooltip": f"Image height in pixels (a multiple of {step})."}),
        "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "Images in the batch."}),
    }


class EmptySD3LatentImage:
    DESCRIPTION = "An empty batch of 16-channel latents (SD3 and FLUX) to start text-to-image sampling from."
    CATEGORY = "latent/sd3"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": _size_inputs(16)}

    def generate(self, width: int, height: int, batch_size: int = 1) -> tuple[dict[str, Any]]:
        return (_empty_16_channel(width, height, batch_size),)


class EmptyFluxLatentImage:
    DESCRIPTION = ("An empty batch of FLUX latents; sides must be multiples of 16 pixels, since FLUX packs 2x2 "
                   "latent patches into tokens.")
    CATEGORY = "latent/flux"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": _size_inputs(16, multiple_of=16)}

    def generate(self, width: int, height: int, batch_size: int = 1) -> tuple[dict[str, Any]]:
        return (_empty_16_channel(width, height, batch_size),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "CLIPTextEncodeFlux": CLIPTextEncodeFlux,
    "FluxGuidance": FluxGuidance,
    "FluxDisableGuidance": FluxDisableGuidance,
    "FluxKontextImageScale": FluxKontextImageScale,
    "FluxKontextMultiReferenceLatentMethod": FluxKontextMultiReferenceLatentMethod,
    "EmptySD3LatentImage": EmptySD3LatentImage,
    "EmptyFluxLatentImage": EmptyFluxLatentImage,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "CLIPTextEncodeFlux": "CLIP Text Encode (FLUX)",
    "FluxGuidance": "FluxGuidance",
    "FluxDisableGuidance": "FluxDisableGuidance",
    "FluxKontextImageScale": "FluxKontextImageScale",
    "FluxKontextMultiReferenceLatentMethod": "FluxKontextMultiReferenceLatentMethod",
    "EmptySD3LatentImage": "EmptySD3LatentImage",
    "EmptyFluxLatentImage": "Empty FLUX Latent Image",
}
