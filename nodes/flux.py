"""FLUX nodes with ComfyUI's names: UNETLoader, DualCLIPLoader, CLIPTextEncodeFlux, FluxGuidance and the
16-channel empty latents (EmptySD3LatentImage, shared with SD3, and EmptyFluxLatentImage).

Sampling goes through KSampler (cfg 1 for guidance-distilled models; the MODEL carries FLUX's sampling hooks),
decoding through VAEDecode, LoRAs through LoraLoader/LoraLoaderModelOnly. Loading and caching live in
`nodes.models.flux_files` and the model manager. Knows nothing of HTTP or the executor.
"""
from __future__ import annotations

from typing import Any

import torch

from nodes.environment import current_environment, release_text_encoders, resolve_inside
from nodes.latent import MAX_RESOLUTION
from nodes.models.checkpoint import read_safetensors
from nodes.models.components import DiffusionModel
from nodes.models.flux import DEFAULT_GUIDANCE, FluxTextEncoders
from nodes.models.flux_files import (
    TextEncoderFile,
    build_flux_transformer,
    flux_model,
    flux_text_encoders,
    text_encoder_from_state,
)
from nodes.models.text_encoding import Conditioning

FLUX_LATENT_CHANNELS = 16
CLIP_TYPES = ("flux",)


def _load_transformer(unet_name: str) -> DiffusionModel:
    environment = current_environment()
    path = resolve_inside(environment.folders.model_dir("diffusion_models"), unet_name, "unet_name")

    def load() -> DiffusionModel:
        transformer = build_flux_transformer(read_safetensors(path, "unet_name"), "unet_name")
        return flux_model(environment.models.place(transformer), path.name)

    return environment.models.cached("flux-transformer", path, "unet_name", load)


class UNETLoader:
    DESCRIPTION = ("Loads a diffusion model file alone (a FLUX transformer, diffusers or original layout) from "
                   "models/diffusion_models; pair it with DualCLIPLoader and VAELoader.")
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_unet"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("diffusion_models")
        return {"required": {
            "unet_name": (names, {"tooltip": "The model file in models/diffusion_models."}),
            "weight_dtype": (["default"], {"tooltip": "The precision to run in (default: the device's)."}),
        }}

    def load_unet(self, unet_name: str, weight_dtype: str = "default") -> tuple[DiffusionModel]:
        return (_load_transformer(unet_name),)


class DualCLIPLoader:
    DESCRIPTION = ("Loads two text encoder files from models/text_encoders as one CLIP: for type flux, CLIP-L and "
                   "T5 (in either order).")
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("text_encoders")
        return {"required": {
            "clip_name1": (names, {"tooltip": "The first text encoder file."}),
            "clip_name2": (names, {"tooltip": "The second text encoder file."}),
            "type": (list(CLIP_TYPES), {"tooltip": "The model family the encoders are for."}),
        }}

    def load_clip(self, clip_name1: str, clip_name2: str, type: str) -> tuple[Any]:
        environment = current_environment()
        folder = environment.folders.model_dir("text_encoders")
        paths = {name: resolve_inside(folder, file_name, name)
                 for name, file_name in (("clip_name1", clip_name1), ("clip_name2", clip_name2))}

        def encoder(input_name: str) -> TextEncoderFile:
            path = paths[input_name]
            return environment.models.cached("text_encoder", path, input_name, lambda: text_encoder_from_state(
                read_safetensors(path, input_name), input_name, environment.models.place,
                reread=lambda: read_safetensors(path, input_name)))

        files = {input_name: encoder(input_name) for input_name in paths}
        return (flux_text_encoders(files, f"{clip_name1}+{clip_name2}"),)


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

    def encode(self, clip: FluxTextEncoders, clip_l: str, t5xxl: str, guidance: float) -> tuple[Conditioning]:
        if not isinstance(clip, FluxTextEncoders):
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


def _empty_16_channel(width: int, height: int, batch_size: int) -> dict[str, Any]:
    return {"samples": torch.zeros([batch_size, FLUX_LATENT_CHANNELS, height // 8, width // 8])}


def _size_inputs(step: int) -> dict[str, Any]:
    return {
        "width": ("INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": step,
                          "tooltip": f"Image width in pixels (a multiple of {step})."}),
        "height": ("INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": step,
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
        return {"required": _size_inputs(16)}

    def generate(self, width: int, height: int, batch_size: int = 1) -> tuple[dict[str, Any]]:
        for name, value in (("width", width), ("height", height)):
            if value % 16:
                raise ValueError(f"{name}: {value} is not a multiple of 16")
        return (_empty_16_channel(width, height, batch_size),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "UNETLoader": UNETLoader,
    "DualCLIPLoader": DualCLIPLoader,
    "CLIPTextEncodeFlux": CLIPTextEncodeFlux,
    "FluxGuidance": FluxGuidance,
    "EmptySD3LatentImage": EmptySD3LatentImage,
    "EmptyFluxLatentImage": EmptyFluxLatentImage,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "UNETLoader": "Load Diffusion Model",
    "DualCLIPLoader": "DualCLIPLoader",
    "CLIPTextEncodeFlux": "CLIP Text Encode (FLUX)",
    "FluxGuidance": "FluxGuidance",
    "EmptySD3LatentImage": "EmptySD3LatentImage",
    "EmptyFluxLatentImage": "Empty FLUX Latent Image",
}
