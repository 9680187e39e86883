"""Nodes for the DALL-E 2 style prior + decoder cascade (Kandinsky 2.2): load a prior and a decoder, turn a prompt
into IMAGE_EMBEDS (PriorEncode; images go through ComfyUI's CLIPVisionEncode, `nodes.clip_vision`, whose
CLIP_VISION_OUTPUT these nodes take as well), mix embeddings, and decode them with the decoder sampler. The
decoder's MoVQ autoencoder is a VAE, so VAEDecode/VAEEncode and the image and latent nodes build the cascade
(decode small, upscale, encode, denoise again at the higher resolution). Models live in
`diffusion.families.unclip`; the decoder samples as KSampler does (`diffusion.sampling.ksampler`: ComfyUI's
samplers and schedulers, or with scheduler `diffusers` KandinskyV22Pipeline's own loop). Knows nothing of HTTP.
"""
from __future__ import annotations

from typing import Any

import torch

from diffusion.components import DiffusionModel, Vae
from diffusion.encoders.clip_vision import ClipVisionOutput
from diffusion.families.unclip.loading import load_decoder, load_prior
from diffusion.families.unclip.text_encoding import (
    ClipVision,
    UnclipPrior,
    embeds_conditioning,
    image_embeds_of,
    mix_image_embeds,
)
from diffusion.sampling.editing import hand_off
from diffusion.sampling.ksampler import DIFFUSERS_SCHEDULER, ksample, sampler_names, scheduler_names
from nodes.environment import current_environment
from nodes.model_facts import sampler_choice
from nodes.sampling import MAX_SEED

# image embeddings: the prior's (IMAGE_EMBEDS) or an encoded image's (CLIPVisionEncode's CLIP_VISION_OUTPUT)
EMBEDS = "IMAGE_EMBEDS,CLIP_VISION_OUTPUT"
STEPS = {"default": 25, "min": 1, "max": 1000, "tooltip": "The number of denoising steps."}
# The decoder's defaults: DDPM with the decoder's own diffusers scheduler, KandinskyV22Pipeline's sampling
DECODER_SAMPLER, DECODER_SCHEDULER = "ddpm", DIFFUSERS_SCHEDULER


def _folder(name: str, input_name: str):
    return current_environment().folders.model_file("diffusers", name, input_name)


class UnCLIPPriorLoader:
    DESCRIPTION = ("Loads a diffusion prior (a diffusers Kandinsky 2.2 prior folder): the PriorTransformer with its "
                   "CLIP text encoder, and the CLIP image encoder whose embedding space it predicts into.")
    CATEGORY = "loaders/unclip"
    RETURN_TYPES = ("PRIOR", "CLIP_VISION")
    OUTPUT_TOOLTIPS = ("The prior, for PriorEncode.", "The CLIP image encoder, for CLIPVisionEncode.")
    FUNCTION = "load_prior"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_diffusers_models()
        return {"required": {"prior_name": (names, {"tooltip": "The prior folder in models/diffusers."})}}

    def load_prior(self, prior_name: str) -> tuple[UnclipPrior, ClipVision]:
        environment = current_environment()
        folder = _folder(prior_name, "prior_name")
        prior = environment.models.cached("unclip-prior", folder / "model_index.json", "prior_name",
                                          lambda: load_prior(folder, environment.models.place, "prior_name"))
        return prior, prior.clip_vision


class UnCLIPDecoderLoader:
    DESCRIPTION = ("Loads an unCLIP decoder (a diffusers Kandinsky 2.2 decoder folder): a UNet conditioned on image "
                   "embeddings, and its MoVQ autoencoder as the VAE.")
    CATEGORY = "loaders/unclip"
    RETURN_TYPES = ("MODEL", "VAE")
    OUTPUT_TOOLTIPS = ("The decoder, for UnCLIPDecoderSampler.", "The MoVQ autoencoder, for VAEDecode/VAEEncode.")
    FUNCTION = "load_decoder"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_diffusers_models()
        return {"required": {"decoder_name": (names, {"tooltip": "The decoder folder in models/diffusers."})}}

    def load_decoder(self, decoder_name: str) -> tuple[DiffusionModel, Vae]:
        environment = current_environment()
        folder = _folder(decoder_name, "decoder_name")
        return environment.models.cached("unclip-decoder", folder / "model_index.json", "decoder_name",
                                         lambda: load_decoder(folder, environment.models.place, "decoder_name"))


class PriorEncode:
    DESCRIPTION = ("Runs the prior's own diffusion: the prompt's CLIP text embedding becomes a CLIP image embedding. "
                   "Also returns the negative embedding (of the negative prompt, or of an empty image if none).")
    CATEGORY = "conditioning/unclip"
    RETURN_TYPES = ("IMAGE_EMBEDS", "IMAGE_EMBEDS")
    RETURN_NAMES = ("image_embeds", "negative_image_embeds")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "prior": ("PRIOR", {"tooltip": "The diffusion prior."}),
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "What the image should show."}),
            "negative_text": ("STRING", {"multiline": True, "default": "",
                                         "tooltip": "What to steer away from; empty uses an empty image."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                             "tooltip": "The seed of the prior's noise."}),
            "steps": ("INT", STEPS),
            "prior_cfg": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 100.0, "step": 0.1,
                                    "tooltip": "Classifier-free guidance of the prior (1 or less: none)."}),
        }}

    def encode(self, prior: UnclipPrior, text: str, negative_text: str, seed: int, steps: int,
               prior_cfg: float) -> tuple[torch.Tensor, torch.Tensor]:
        return prior.encode(text, negative_text, seed, steps, prior_cfg)


class ImageEmbedsMix:
    DESCRIPTION = "Interpolates two image embeddings (prompts and images alike): (1 - weight) * a + weight * b."
    CATEGORY = "conditioning/unclip"
    RETURN_TYPES = ("IMAGE_EMBEDS",)
    FUNCTION = "mix"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "a": (EMBEDS, {"tooltip": "The first embedding (or encoded image)."}),
            "b": (EMBEDS, {"tooltip": "The second embedding (or encoded image)."}),
            "weight": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                 "tooltip": "0 gives a, 1 gives b."}),
        }}

    def mix(self, a: torch.Tensor | ClipVisionOutput, b: torch.Tensor | ClipVisionOutput,
            weight: float) -> tuple[torch.Tensor]:
        return (mix_image_embeds(image_embeds_of(a, "a"), image_embeds_of(b, "b"), weight),)


class UnCLIPDecoderSampler:
    DESCRIPTION = ("Denoises latents with an unCLIP decoder conditioned on image embeddings, as KSampler samples "
                   "(scheduler diffusers: KandinskyV22Pipeline's own sampling). denoise below 1 keeps part of the "
                   "input latents: the cascade's second, larger pass.")
    CATEGORY = "sampling/unclip"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": ("MODEL", {"tooltip": "The decoder (from UnCLIPDecoderLoader)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                             "tooltip": "The seed of the initial noise."}),
            "steps": ("INT", STEPS),
            "cfg": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 100.0, "step": 0.1,
                              "tooltip": "Guidance towards image_embeds, away from negative_image_embeds (1: none)."}),
            "sampler_name": (sampler_names(), {"default": DECODER_SAMPLER,
                                               "tooltip": "The sampling algorithm (ddpm is Kandinsky's own)."}),
            "scheduler": (scheduler_names(), {
                "default": DECODER_SCHEDULER,
                "tooltip": "How the noise levels are spaced over the steps; diffusers: the decoder's own diffusers "
                           "scheduler (with ddpm, KandinskyV22Pipeline's results)."}),
            "image_embeds": (EMBEDS, {"tooltip": "What the image should look like."}),
            "negative_image_embeds": (EMBEDS, {"tooltip": "What it should not look like."}),
            "latent_image": ("LATENT", {"tooltip": "The latents to denoise (empty, or encoded for a second pass)."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "How much of the latents to replace with noise and denoise."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, input_facts: dict[str, Any], **widgets: Any) -> bool | str:
        return sampler_choice(input_facts, widgets)

    def sample(self, model: DiffusionModel, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
               image_embeds: torch.Tensor | ClipVisionOutput, negative_image_embeds: torch.Tensor | ClipVisionOutput,
               latent_image: dict[str, Any], denoise: float = 1.0) -> tuple[dict[str, Any]]:
        positive = embeds_conditioning(image_embeds_of(image_embeds, "image_embeds"))
        negative = embeds_conditioning(image_embeds_of(negative_image_embeds, "negative_image_embeds"))
        samples = ksample(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise)
        return (hand_off({**latent_image, "samples": samples}, latent_image, False),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "UnCLIPPriorLoader": UnCLIPPriorLoader,
    "UnCLIPDecoderLoader": UnCLIPDecoderLoader,
    "PriorEncode": PriorEncode,
    "ImageEmbedsMix": ImageEmbedsMix,
    "UnCLIPDecoderSampler": UnCLIPDecoderSampler,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "UnCLIPPriorLoader": "Load unCLIP Prior",
    "UnCLIPDecoderLoader": "Load unCLIP Decoder",
    "PriorEncode": "Prior Encode (text to image embedding)",
    "ImageEmbedsMix": "Mix Image Embeddings",
    "UnCLIPDecoderSampler": "Decoder Sampler (image embeddings)",
}
