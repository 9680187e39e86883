"""Imports what ComfyUI_IPAdapter_plus (cubiq) imports from ComfyUI, and registers a model folder at import time
as it does; small nodes of our own use those names."""
import os

import comfy.model_management as model_management
import comfy.utils
import folder_paths
import torch  # noqa: F401 - imported as the pack imports it
from comfy.clip_vision import Output, clip_preprocess
from comfy.clip_vision import load as load_clip_vision
from comfy.ldm.modules.attention import optimized_attention
from comfy.sd import load_lora_for_models
from node_helpers import conditioning_set_values

if "ipadapter" not in folder_paths.folder_names_and_paths:
    current_paths = [os.path.join(folder_paths.models_dir, "ipadapter")]
else:
    current_paths, _ = folder_paths.folder_names_and_paths["ipadapter"]
folder_paths.folder_names_and_paths["ipadapter"] = (current_paths, folder_paths.supported_pt_extensions)


class LikeIPAdapterFiles:
    """Lists the ipadapter folder this pack registered."""

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "ipadapter_like"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def run(self):
        return {"ui": {"files": folder_paths.get_filename_list("ipadapter")}}


class LikeClipVisionEmbeds:
    """Encodes an image with a CLIP vision file, as the pack's unified loader does, and mixes the embeds."""

    RETURN_TYPES = ("CLIP_VISION_OUTPUT", "IMAGE")
    FUNCTION = "encode"
    CATEGORY = "ipadapter_like"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_name": (folder_paths.get_filename_list("clip_vision"),), "image": ("IMAGE",)}}

    def encode(self, clip_name, image):
        clip_vision = load_clip_vision(folder_paths.get_full_path("clip_vision", clip_name))
        output = clip_vision.encode_image(image)
        assert isinstance(output, Output)
        pixels = clip_preprocess(image.to(model_management.get_torch_device()), size=clip_vision.image_size)
        embeds = output.last_hidden_state
        mixed = optimized_attention(embeds, embeds, embeds, heads=2)  # the pack's attention on its own tensors
        assert mixed.shape == embeds.shape
        return (output, comfy.utils.common_upscale(pixels, 8, 8, "bilinear", "disabled").movedim(1, -1))


class LikeConditioningStrength:
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "apply"
    CATEGORY = "ipadapter_like"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",),
                             "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})}}

    def apply(self, conditioning, strength):
        return (conditioning_set_values(conditioning, {"strength": strength}),)


class LikeLoraLoader:
    RETURN_TYPES = ("MODEL", "CLIP")
    FUNCTION = "load"
    CATEGORY = "ipadapter_like"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "clip": ("CLIP",), "lora_name": (folder_paths.get_filename_list(
            "loras"),), "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0})}}

    def load(self, model, clip, lora_name, strength):
        lora = comfy.utils.load_torch_file(folder_paths.get_full_path("loras", lora_name), safe_load=True)
        return load_lora_for_models(model, clip, lora, strength, strength)


class LikeAttn2Replace:
    """The pack's way of adding image attention: the text cross-attention plus `weight` times attention to the
    image embeds (zeros for the negative rows), keys and values projected by fixed seeded matrices."""

    def __init__(self, embeds, weight):
        self.embeds, self.weight = embeds, weight

    def _projected(self, width, device, dtype):
        generator = torch.Generator().manual_seed(width)
        matrix = torch.randn(width, self.embeds.shape[-1], generator=generator) / self.embeds.shape[-1] ** 0.5
        return torch.nn.functional.linear(self.embeds.float(), matrix).to(device, dtype)

    def __call__(self, q, k, v, extra_options):
        out = optimized_attention(q, k, v, extra_options["n_heads"])
        if self.weight == 0:
            return out
        cond_or_uncond = extra_options["cond_or_uncond"]
        rows_per_chunk = q.shape[0] // len(cond_or_uncond)
        ip = self._projected(k.shape[-1], q.device, q.dtype)
        ip_k = torch.cat([(ip if chunk == 0 else torch.zeros_like(ip)).repeat(rows_per_chunk, 1, 1)
                          for chunk in cond_or_uncond])
        return out + self.weight * optimized_attention(q, ip_k, ip_k, extra_options["n_heads"])


class LikeIPAdapterApply:
    """Patches every cross-attention of the UNet as the pack does: model_options' transformer_options copied,
    "patches_replace" "attn2" set per block and transformer index, and set back on the clone."""

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    CATEGORY = "ipadapter_like"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "clip_vision_output": ("CLIP_VISION_OUTPUT",),
                             "weight": ("FLOAT", {"default": 1.0, "min": -1.0, "max": 3.0, "step": 0.05})}}

    def apply(self, model, clip_vision_output, weight):
        patched = model.clone()
        patch = LikeAttn2Replace(clip_vision_output.image_embeds[:, None], weight)
        blocks = [("input", 4), ("input", 5), ("input", 7), ("input", 8), ("middle", 0)] + [
            ("output", index) for index in range(3, 9)]
        to = patched.model_options["transformer_options"].copy()
        to["patches_replace"] = {"attn2": {}} if "patches_replace" not in to else to["patches_replace"].copy()
        for block in blocks:
            to["patches_replace"]["attn2"][(*block, 0)] = patch
        patched.model_options["transformer_options"] = to
        return (patched,)


NODE_CLASS_MAPPINGS = {"LikeIPAdapterFiles": LikeIPAdapterFiles, "LikeClipVisionEmbeds": LikeClipVisionEmbeds,
                       "LikeConditioningStrength": LikeConditioningStrength, "LikeLoraLoader": LikeLoraLoader,
                       "LikeIPAdapterApply": LikeIPAdapterApply}
