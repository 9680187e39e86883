"""Imports what rgthree-comfy imports from ComfyUI, and registers a route at import time as it does; small nodes
of our own in its manner (a seed, a sampler config feeding KSampler's combos, an any-switch, an image comparer)."""
import comfy  # noqa: F401 - imported as the pack imports it
import comfy.samplers
import comfy.utils  # noqa: F401
import execution  # noqa: F401
import folder_paths  # noqa: F401
from comfy_extras.nodes_clip_sdxl import CLIPTextEncodeSDXL  # noqa: F401
from comfy_extras.nodes_latent import LatentBatch

import nodes  # noqa: F401
from nodes import MAX_RESOLUTION, CLIPTextEncode, EmptyLatentImage, ImageBatch, LoraLoader, PreviewImage  # noqa: F401
from server import PromptServer

routes = PromptServer.instance.routes if PromptServer.instance is not None else None
if routes is not None:
    @routes.get("/rgthree-like/api/config")
    async def api_config(request):
        from aiohttp import web

        return web.json_response({"max_resolution": MAX_RESOLUTION})


class AnyType(str):
    """A socket type that connects to anything (rgthree's trick: never unequal)."""

    def __ne__(self, other):
        return False


ANY = AnyType("*")


class LikeSeed:
    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("SEED",)
    FUNCTION = "main"
    CATEGORY = "rgthree_like"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF})}}

    def main(self, seed):
        return (seed,)


class LikeKSamplerConfig:
    RETURN_TYPES = ("INT", "FLOAT", comfy.samplers.KSampler.SAMPLERS, comfy.samplers.KSampler.SCHEDULERS)
    RETURN_NAMES = ("STEPS", "CFG", "SAMPLER", "SCHEDULER")
    FUNCTION = "main"
    CATEGORY = "rgthree_like"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps_total": ("INT", {"default": 30, "min": 1, "max": MAX_RESOLUTION}),
                             "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0}),
                             "sampler_name": (comfy.samplers.KSampler.SAMPLERS,),
                             "scheduler": (comfy.samplers.KSampler.SCHEDULERS,)}}

    def main(self, steps_total, cfg, sampler_name, scheduler):
        return (steps_total, cfg, sampler_name, scheduler)


class LikeAnySwitch:
    RETURN_TYPES = (ANY,)
    FUNCTION = "switch"
    CATEGORY = "rgthree_like"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": {f"any_{index:02d}": (ANY,) for index in range(1, 4)}}

    def switch(self, **inputs):
        return (next((value for value in inputs.values() if value is not None), None),)


class LikeImageComparer(PreviewImage):
    """Saves two images for the browser to compare, as rgthree's comparer does."""

    FUNCTION = "compare"
    CATEGORY = "rgthree_like"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": {"image_a": ("IMAGE",), "image_b": ("IMAGE",)},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def compare(self, image_a=None, image_b=None, prompt=None, extra_pnginfo=None):
        result = {"ui": {"a_images": [], "b_images": []}}
        for key, image in (("a_images", image_a), ("b_images", image_b)):
            if image is not None:
                saved = self.save_images(image, "rgthree.compare.", prompt, extra_pnginfo)
                result["ui"][key] = saved["ui"]["images"]
        return result


class LikeLatentDouble:
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "double"
    CATEGORY = "rgthree_like"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    def double(self, samples):
        return LatentBatch().batch(samples, samples)


NODE_CLASS_MAPPINGS = {"Like Seed (rgthree)": LikeSeed, "Like KSampler Config (rgthree)": LikeKSamplerConfig,
                       "Like Any Switch (rgthree)": LikeAnySwitch, "Like Image Comparer (rgthree)": LikeImageComparer,
                       "Like Latent Double (rgthree)": LikeLatentDouble}
