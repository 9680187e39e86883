"""The built-in nodes: ComfyUI's core Stable Diffusion node set, on diffusers and transformers.

`NODE_CLASS_MAPPINGS` and `NODE_DISPLAY_NAME_MAPPINGS` have the shape plugins export; the engine registers
them with `registry.register_mappings(...)` like any plugin's. Node modules import torch and diffusers lazily
where they can; nodes read folders and models through `nodes.environment.current_environment()` and know
nothing of HTTP.
"""
from __future__ import annotations

from nodes.conditioning import CLIPSetLastLayer, CLIPTextEncode
from nodes.image import ImageScale, LoadImage, PreviewImage, SaveImage
from nodes.latent import EmptyLatentImage, LatentUpscale, LatentUpscaleBy, VAEDecode, VAEEncode
from nodes.loaders import CheckpointLoaderSimple, DiffusersLoader, LoraLoader, LoraLoaderModelOnly, VAELoader
from nodes.sampling import KSampler, KSamplerAdvanced

MAX_RESOLUTION = 16384  # ComfyUI's `nodes.MAX_RESOLUTION`, which plugins import

NODE_CLASS_MAPPINGS: dict[str, type] = {
    "CheckpointLoaderSimple": CheckpointLoaderSimple,
    "DiffusersLoader": DiffusersLoader,
    "VAELoader": VAELoader,
    "LoraLoader": LoraLoader,
    "LoraLoaderModelOnly": LoraLoaderModelOnly,
    "CLIPTextEncode": CLIPTextEncode,
    "CLIPSetLastLayer": CLIPSetLastLayer,
    "EmptyLatentImage": EmptyLatentImage,
    "LatentUpscale": LatentUpscale,
    "LatentUpscaleBy": LatentUpscaleBy,
    "VAEDecode": VAEDecode,
    "VAEEncode": VAEEncode,
    "KSampler": KSampler,
    "KSamplerAdvanced": KSamplerAdvanced,
    "LoadImage": LoadImage,
    "SaveImage": SaveImage,
    "PreviewImage": PreviewImage,
    "ImageScale": ImageScale,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "CheckpointLoaderSimple": "Load Checkpoint",
    "DiffusersLoader": "Load Diffusers Model",
    "VAELoader": "Load VAE",
    "LoraLoader": "Load LoRA",
    "LoraLoaderModelOnly": "Load LoRA (Model Only)",
    "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "CLIPSetLastLayer": "CLIP Set Last Layer",
    "EmptyLatentImage": "Empty Latent Image",
    "LatentUpscale": "Upscale Latent",
    "LatentUpscaleBy": "Upscale Latent By",
    "VAEDecode": "VAE Decode",
    "VAEEncode": "VAE Encode",
    "KSampler": "KSampler",
    "KSamplerAdvanced": "KSampler (Advanced)",
    "LoadImage": "Load Image",
    "SaveImage": "Save Image",
    "PreviewImage": "Preview Image",
    "ImageScale": "Upscale Image",
}
