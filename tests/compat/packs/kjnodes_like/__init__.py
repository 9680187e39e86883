"""Imports what ComfyUI-KJNodes' mask, image and LoRA node modules import from ComfyUI (nodes/mask_nodes.py,
nodes/lora_nodes.py and the parts of nodes/nodes.py and nodes/image_nodes.py that nodeflow provides: not
`comfy.samplers.sampling_function`/`CFGGuider`, `comfy.patcher_extension`, `comfy.sampler_helpers`, or the video
types `InputImpl`/`Types`), with small nodes of our own in its manner, classic and V3."""
import comfy.latent_formats  # noqa: F401 - imported as the pack imports it
import comfy.model_management
import comfy.utils  # noqa: F401
import folder_paths  # noqa: F401
import latent_preview  # noqa: F401
import node_helpers
import torch
import torch.nn.functional as F
from comfy import model_management
from comfy.cli_args import args  # noqa: F401
from comfy.comfy_types.node_typing import IO
from comfy.sd import VAE  # noqa: F401
from comfy.utils import (  # noqa: F401
    ProgressBar,
    common_upscale,
    load_torch_file,
    save_torch_file,
    state_dict_prefix_replace,  # noqa: F401
)
from comfy_api.latest import io, ui  # noqa: F401
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


NODE_CLASS_MAPPINGS = {"LikeGrowMaskWithBlur": LikeGrowMaskWithBlur, "LikeImageBatchMulti": LikeImageBatchMulti,
                       "LikeCompositeMasked": LikeCompositeMasked,
                       "LikeConditioningStrengthKJ": LikeConditioningStrength}
