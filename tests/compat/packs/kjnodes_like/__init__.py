"""Imports what ComfyUI-KJNodes' mask, image, LoRA and sampling node modules import from ComfyUI (nodes/mask_nodes.py,
nodes/lora_nodes.py, nodes/sharpen_nodes.py and the parts of nodes/nodes.py, nodes/image_nodes.py and
nodes/model_optimization_nodes.py that nodeflow provides: not ComfyUI's model classes under `comfy.ldm`), with
small nodes of our own in its manner, classic and V3: a scheduled-CFG guider subclassing `CFGGuider`, a KSAMPLER
sampler of its own, a V3 node with a DynamicCombo and MatchType sockets, and one saving a video through
`InputImpl.VideoFromComponents`."""
from fractions import Fraction

import comfy.latent_formats  # noqa: F401 - imported as the pack imports it
import comfy.model_management
import comfy.utils  # noqa: F401
import folder_paths
import latent_preview  # noqa: F401
import node_helpers
import torch
import torch.nn.functional as F
from comfy import model_management
from comfy.cli_args import args  # noqa: F401
from comfy.comfy_types.node_typing import IO
from comfy.k_diffusion.sampling import to_d
from comfy.patcher_extension import CallbacksMP, WrappersMP  # noqa: F401
from comfy.sampler_helpers import prepare_mask  # noqa: F401
from comfy.samplers import KSAMPLER, CFGGuider, sampling_function
from comfy.sd import VAE  # noqa: F401
from comfy.utils import (  # noqa: F401
    ProgressBar,
    common_upscale,
    load_torch_file,
    save_torch_file,
    state_dict_prefix_replace,  # noqa: F401
)
from comfy_api.latest import InputImpl, Types, io, ui
from comfy_extras.nodes_mask import composite

from nodes import MAX_RESOLUTION, ConditioningCombine, ConditioningConcat, EmptyLatentImage, SaveImage  # noqa: F401
from server import BinaryEventTypes, PromptServer  # noqa: F401


class LikeGrowMaskWithBlur:
    """Grows a mask by `expand` pixels and blurs it, one progress step per mask."""

    RETURN_TYPES = ("MASK", "MASK")
    RETURN_NAMES = ("mask", "mask_inverted")
    FUNCTION = "expand_mask"
    CATEGORY = "kjnodes_like/masking"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",),
                             "expand": ("INT", {"default": 0, "min": -MAX_RESOLUTION, "max": MAX_RESOLUTION}),
                             "blur_radius": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1})}}

    def expand_mask(self, mask, expand, blur_radius):
        masks = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).to(model_management.get_torch_device())
        bar = ProgressBar(masks.shape[0])
        grown = []
        for single in masks:
            for _ in range(abs(expand)):
                pooled = F.max_pool2d(single[None] if expand > 0 else -single[None], 3, stride=1, padding=1)[0]
                single = pooled if expand > 0 else -pooled
            if blur_radius > 0:
                size = int(blur_radius) * 2 + 1
                single = F.avg_pool2d(single[None], size, stride=1, padding=size // 2, count_include_pad=False)[0]
            grown.append(single)
            bar.update(1)
        out = torch.cat(grown, dim=0).to(comfy.model_management.intermediate_device())
        return (out, 1.0 - out)


class LikeImageBatchMulti(io.ComfyNode):
    """Batches up to four images (KJNodes' ImageBatchMulti as a V3 node)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="LikeImageBatchMulti", display_name="Image Batch Multi (like)",
                         category="kjnodes_like/image",
                         inputs=[io.Image.Input("image_1"), io.Image.Input("image_2"),
                                 io.Image.Input("image_3", optional=True), io.Image.Input("image_4", optional=True)],
                         outputs=[io.Image.Output("images")])

    @classmethod
    def execute(cls, image_1, image_2, image_3=None, image_4=None):
        images = [image for image in (image_1, image_2, image_3, image_4) if image is not None]
        size = images[0].shape[1:3]
        resized = [image if image.shape[1:3] == size else common_upscale(
            image.movedim(-1, 1), size[1], size[0], "lanczos", "center").movedim(1, -1) for image in images]
        return io.NodeOutput(torch.cat(resized, dim=0))


class LikeCompositeMasked:
    RETURN_TYPES = (IO.IMAGE,)
    FUNCTION = "paste"
    CATEGORY = "kjnodes_like/image"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"destination": (IO.IMAGE,), "source": (IO.IMAGE,), "mask": (IO.MASK,),
                             "x": (IO.INT, {"default": 0, "min": 0, "max": MAX_RESOLUTION})}}

    def paste(self, destination, source, mask, x):
        pasted = composite(destination.movedim(-1, 1).clone(), source.movedim(-1, 1), x, 0, mask, 1)
        return (pasted.movedim(1, -1),)


class LikeConditioningStrength:
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "apply"
    CATEGORY = "kjnodes_like/conditioning"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "strength": ("FLOAT", {"default": 1.0})}}

    def apply(self, conditioning, strength):
        return (node_helpers.conditioning_set_values(conditioning, {"strength": strength}),)


class LikeScheduledCfgGuider(CFGGuider):
    """CFG inside a range of the steps, 1 (no negative) outside it, as KJNodes' Guider_ScheduledCFG."""

    def set_cfg(self, cfg, start_percent, end_percent):
        self.cfg, self.start_percent, self.end_percent = cfg, start_percent, end_percent

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        steps = model_options["transformer_options"]["sample_sigmas"]
        matched = torch.isclose(steps, timestep.reshape(-1)[0].to(steps)).nonzero()
        percent = (int(matched[0]) if len(matched) else 0) / (len(steps) - 1)
        if self.start_percent <= percent <= self.end_percent:
            cfg, uncond = self.cfg, self.conds.get("negative", None)
        else:
            cfg, uncond = 1.0, None
        return sampling_function(self.inner_model, x, timestep, uncond, self.conds.get("positive", None), cfg,
                                 model_options=model_options, seed=seed)


class LikeScheduledCFGGuidance:
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"
    CATEGORY = "kjnodes_like/experimental"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "cfg": ("FLOAT", {"default": 6.0, "min": 0.0, "max": 100.0, "step": 0.01}),
                             "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                             "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})}}

    def get_guider(self, model, positive, negative, cfg, start_percent, end_percent):
        guider = LikeScheduledCfgGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg, start_percent, end_percent)
        return (guider,)


def sample_euler_scaled(model, x, sigmas, extra_args=None, callback=None, disable=None, step_scale=1.0):
    """Euler steps with each step scaled (1: plain Euler)."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i]) * step_scale
    return x


class LikeSamplerEulerScaled:
    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"
    CATEGORY = "kjnodes_like/experimental"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"step_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.01})}}

    def get_sampler(self, step_scale):
        return (KSAMPLER(sample_euler_scaled, extra_options={"step_scale": step_scale}),)


class LikeImageSharpen(io.ComfyNode):
    """Sharpens an image or a mask by unsharp masking, or leaves it (KJNodes' sharpen node's sockets)."""

    @classmethod
    def define_schema(cls):
        template = io.MatchType.Template("img_or_mask", [io.Image, io.Mask])
        return io.Schema(
            node_id="LikeImageSharpen", category="kjnodes_like/image",
            inputs=[io.MatchType.Input("image", template),
                    io.DynamicCombo.Input("method", options=[
                        io.DynamicCombo.Option(key="none", inputs=[]),
                        io.DynamicCombo.Option(key="unsharp", inputs=[
                            io.Float.Input("strength", default=0.5, min=0.0, max=3.0, step=0.01),
                            io.Int.Input("radius", default=1, min=1, max=5)])])],
            outputs=[io.MatchType.Output(template, display_name="output")])

    @classmethod
    def execute(cls, image, method):
        if method["method"] == "none":
            return io.NodeOutput(image)
        is_mask = image.ndim == 3
        pixels = (image.unsqueeze(-1) if is_mask else image).movedim(-1, 1)
        size = 2 * method["radius"] + 1
        blurred = F.avg_pool2d(pixels, size, stride=1, padding=method["radius"], count_include_pad=False)
        sharpened = (pixels + method["strength"] * (pixels - blurred)).clamp(0, 1).movedim(1, -1)
        return io.NodeOutput(sharpened.squeeze(-1) if is_mask else sharpened)


class LikeSaveFramesAsVideo(io.ComfyNode):
    """Saves frames as an MP4 with `InputImpl.VideoFromComponents`, shown with `ui.PreviewVideo` (KJNodes'
    DecodeAndSaveVideo's saving part)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LikeSaveFramesAsVideo", category="kjnodes_like/video", is_output_node=True,
            inputs=[io.Image.Input("images"), io.Float.Input("fps", default=25.0, min=0.0, max=999.0, step=0.01),
                    io.String.Input("filename_prefix", default="video/kj_like"),
                    io.Combo.Input("format", options=Types.VideoContainer.as_input(), default="auto"),
                    io.Combo.Input("codec", options=Types.VideoCodec.as_input(), default="auto")],
            outputs=[])

    @classmethod
    def execute(cls, images, fps, filename_prefix, format, codec):
        video = InputImpl.VideoFromComponents(Types.VideoComponents(images=images, audio=None,
                                                                    frame_rate=Fraction(fps)))
        width, height = video.get_dimensions()
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), width, height)
        file = f"{filename}_{counter:05}_.{Types.VideoContainer.get_extension(format)}"
        video.save_to(f"{folder}/{file}", format=format, codec=codec)
        return io.NodeOutput(ui=ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)]))


NODE_CLASS_MAPPINGS = {"LikeImageSharpen": LikeImageSharpen, "LikeSaveFramesAsVideo": LikeSaveFramesAsVideo,
                       "LikeGrowMaskWithBlur": LikeGrowMaskWithBlur, "LikeImageBatchMulti": LikeImageBatchMulti,
                       "LikeCompositeMasked": LikeCompositeMasked,
                       "LikeConditioningStrengthKJ": LikeConditioningStrength,
                       "LikeScheduledCFGGuidance": LikeScheduledCFGGuidance,
                       "LikeSamplerEulerScaled": LikeSamplerEulerScaled}
