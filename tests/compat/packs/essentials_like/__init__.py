"""Imports what ComfyUI_essentials (cubiq) imports from ComfyUI at module level (its sampling node imports the
custom sampler nodes when it runs, as here); small nodes of our own in its manner."""
import comfy.model_management  # noqa: F401 - imported as the pack imports it
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths  # noqa: F401
import torch
from comfy.utils import ProgressBar
from comfy_execution.graph import ExecutionBlocker  # noqa: F401
from comfy_extras.nodes_latent import LatentBatch  # noqa: F401
from comfy_extras.nodes_model_advanced import ModelSamplingAuraFlow, ModelSamplingFlux  # noqa: F401
from node_helpers import conditioning_set_values, pillow  # noqa: F401

from nodes import (  # noqa: F401
    MAX_RESOLUTION,
    CLIPTextEncode,
    ConditioningCombine,
    ConditioningSetTimestepRange,
    ConditioningZeroOut,
    LoraLoader,
    SaveImage,
    common_ksampler,
)


class LikeImageResize:
    """Resizes to a size, keeping proportions, as essentials' ImageResize+ does in its simplest mode."""

    RETURN_TYPES = ("IMAGE", "INT", "INT")
    RETURN_NAMES = ("IMAGE", "width", "height")
    FUNCTION = "execute"
    CATEGORY = "essentials_like"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "width": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
                             "height": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
                             "interpolation": (["nearest", "bilinear", "bicubic", "area", "lanczos"],)}}

    def execute(self, image, width, height, interpolation):
        ratio = min(width / image.shape[2], height / image.shape[1])
        width, height = round(image.shape[2] * ratio), round(image.shape[1] * ratio)
        resized = comfy.utils.common_upscale(image.movedim(-1, 1), width, height, interpolation, "disabled")
        return (resized.movedim(1, -1).clamp(0, 1), width, height)


class LikeSimpleMath:
    RETURN_TYPES = ("INT", "FLOAT")
    FUNCTION = "execute"
    CATEGORY = "essentials_like"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("FLOAT", {"default": 0.0}), "b": ("FLOAT", {"default": 0.0})}}

    def execute(self, a, b):
        return (round(a + b), a + b)


class LikeNoiseInjectionSampler:
    """KSampler with the starting noise mixed with a second seed's, as essentials' variation sampler does."""

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "execute"
    CATEGORY = "essentials_like"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",), "latent_image": ("LATENT",), "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",), "noise_seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff}),
            "variation_seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff}),
            "variation_strength": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 1.0, "step": 0.05}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
            "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0}),
            "sampler_name": (comfy.samplers.KSampler.SAMPLERS,), "scheduler": (comfy.samplers.KSampler.SCHEDULERS,)}}

    def execute(self, model, latent_image, positive, negative, noise_seed, variation_seed, variation_strength, steps,
                cfg, sampler_name, scheduler):
        samples = latent_image["samples"]
        noise = comfy.sample.prepare_noise(samples, noise_seed)
        variation = comfy.sample.prepare_noise(samples, variation_seed)
        mixed = torch.lerp(noise, variation, variation_strength)
        bar = ProgressBar(1)
        out = comfy.sample.sample(model, mixed, steps, cfg, sampler_name, scheduler, positive, negative, samples,
                                  seed=noise_seed)
        bar.update(1)
        return ({**latent_image, "samples": out},)


class LikeSamplerSelectHelper:
    """Samples with the custom sampler nodes, imported when it runs, as essentials' sampler helper does."""

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "execute"
    CATEGORY = "essentials_like"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "conditioning": ("CONDITIONING",), "latent_image": ("LATENT",),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff}),
                             "steps": ("INT", {"default": 4, "min": 1, "max": 100})}}

    def execute(self, model, conditioning, latent_image, seed, steps):
        from comfy_extras.nodes_custom_sampler import (
            BasicGuider,
            BasicScheduler,
            Noise_RandomNoise,
            SamplerCustomAdvanced,
        )

        guider = BasicGuider().get_guider(model, conditioning)[0]
        sigmas = BasicScheduler().get_sigmas(model, "simple", steps, 1.0)[0]
        sampler = comfy.samplers.sampler_object("euler")
        return (SamplerCustomAdvanced().sample(Noise_RandomNoise(seed), guider, sampler, sigmas, latent_image)[0],)


NODE_CLASS_MAPPINGS = {"LikeImageResize+": LikeImageResize, "LikeSimpleMath+": LikeSimpleMath,
                       "LikeNoiseInjectionSampler+": LikeNoiseInjectionSampler,
                       "LikeSamplerSelectHelper+": LikeSamplerSelectHelper}
