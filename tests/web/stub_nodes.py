"""Test-only node classes with the input shapes of ComfyUI's core nodes, for the editor's conversion tests.

Their catalogue (`/object_info` shape) is what the JS unit tests load from tests/web/unit/fixtures, and the
parity test converts the same workflows with the server's converter and the editor's to compare. Never run.
After changing a class, rewrite the fixture with `python -m tests.web.stub_nodes`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.registry import NodeRegistry

CHECKPOINTS = ["tiny-sd1.safetensors", "v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors"]
LORAS = ["detail_tweaker.safetensors"]
SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m"]
SCHEDULERS = ["normal", "karras", "simple"]
INPUT_FILES = ["example.png", "mask.png"]


class _Stub:
    FUNCTION = "run"
    CATEGORY = "testing"

    def run(self, **kwargs: Any) -> tuple:
        raise AssertionError("conversion tests never run nodes")


class CheckpointLoaderSimple(_Stub):
    CATEGORY = "loaders"
    DESCRIPTION = "Loads a checkpoint."
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (CHECKPOINTS, {"tooltip": "The checkpoint to load."})}}


class LoraLoader(_Stub):
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP")

    @classmethod
    def INPUT_TYPES(cls):
        strength = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}
        return {"required": {"model": ("MODEL",), "clip": ("CLIP",), "lora_name": (LORAS,),
                             "strength_model": ("FLOAT", strength), "strength_clip": ("FLOAT", strength)}}


class CLIPTextEncode(_Stub):
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True, "dynamicPrompts": True}), "clip": ("CLIP",)}}


class EmptyLatentImage(_Stub):
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 512, "min": 16, "max": 16384, "step": 8}),
                             "height": ("INT", {"default": 512, "min": 16, "max": 16384, "step": 8}),
                             "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096})}}


class KSampler(_Stub):
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
            "sampler_name": (SAMPLERS,), "scheduler": (SCHEDULERS,),
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "latent_image": ("LATENT",),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
        }}


class VAEDecode(_Stub):
    CATEGORY = "latent"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "vae": ("VAE",)}}


class SaveImage(_Stub):
    CATEGORY = "image"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}


class PreviewImage(_Stub):
    CATEGORY = "image"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}


class LoadImage(_Stub):
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (INPUT_FILES, {"image_upload": True})}}


class LoadImageFrame(_Stub):
    """An upload node with an optional widget after the upload button."""
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (INPUT_FILES, {"image_upload": True})},
                "optional": {"frame": ("INT", {"default": 0, "min": 0})}}


class ImageInvert(_Stub):
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}


class ComboWithControl(_Stub):
    RETURN_TYPES = ("STRING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"choice": (["a", "b", "c"], {"control_after_generate": True}),
                             "count": ("INT", {"default": 1})}}


class MixedInputs(_Stub):
    """forceInput, optional widgets, a widget without default, a union type and a hidden input."""
    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True}), "scale": ("FLOAT", {"default": 1.0})},
                "optional": {"offset": ("INT", {"default": 0}), "label": ("STRING", {"multiline": False}),
                             "anything": ("IMAGE,MASK",), "toggle": ("BOOLEAN", {"default": True})},
                "hidden": {"unique_id": "UNIQUE_ID"}}


class TagList(_Stub):
    RETURN_TYPES = ("STRING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tags": ("STRING", {"default": ""})}}


CLASSES = [CheckpointLoaderSimple, LoraLoader, CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode, SaveImage,
           PreviewImage, LoadImage, LoadImageFrame, ImageInvert, ComboWithControl, MixedInputs, TagList]
DISPLAY_NAMES = {"CheckpointLoaderSimple": "Load Checkpoint", "CLIPTextEncode": "CLIP Text Encode (Prompt)",
                 "EmptyLatentImage": "Empty Latent Image", "VAEDecode": "VAE Decode", "SaveImage": "Save Image",
                 "PreviewImage": "Preview Image", "LoadImage": "Load Image", "ImageInvert": "Invert Image"}


def make_stub_registry() -> NodeRegistry:
    registry = NodeRegistry()
    registry.register_mappings({cls.__name__: cls for cls in CLASSES}, DISPLAY_NAMES, source="tests")
    return registry


FIXTURE = Path(__file__).parent / "unit" / "fixtures" / "object_info.json"

if __name__ == "__main__":
    FIXTURE.write_text(json.dumps(make_stub_registry().object_info(), indent=1) + "\n")
    print(f"wrote {FIXTURE}")
