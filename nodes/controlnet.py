"""ControlNet nodes: loading ControlNets from models/controlnet (and models/t2i_adapter, as ComfyUI lists both),
attaching them to conditioning with a hint image, choosing a union ControlNet's control type, inpainting
ControlNets, and the Canny edge preprocessor. ComfyUI's class names, inputs, defaults and outputs, so its
workflows run unchanged.

The apply nodes do what ComfyUI's do to CONDITIONING: every entry gets a `control` option (a
`diffusion.controlnet.AppliedControl`, chained onto the control it had), and the sampler adds the ControlNet's
residuals while it runs. Loading and running ControlNets is `diffusion.controlnet`'s; the edge detector is
`nodes.canny`'s. IMAGE is float [B, H, W, C] in 0..1, MASK [B, H, W]. Knows nothing of HTTP or the executor.
"""
from __future__ import annotations

from typing import Any

import torch

from diffusion.controlnet import (
    CONTROLNET_EXTENSIONS,
    UNION,
    UNION_TYPES,
    AppliedControl,
    ControlNet,
    center_resize,
    load_controlnet,
)
from nodes.canny import canny
from nodes.environment import current_environment

CONTROLNET_FOLDERS = ("controlnet", "t2i_adapter")  # ComfyUI's "controlnet" names both folders
CONDITIONING_CATEGORY = "conditioning/controlnet"
STRENGTH = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01,
                      "tooltip": "How strongly the ControlNet steers the image (its residuals are multiplied by "
                                 "this; 0 leaves the conditioning unchanged)."})
START = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001,
                   "tooltip": "Where in the run (0 = first step) the ControlNet starts acting."})
END = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001,
                 "tooltip": "Where in the run (1 = last step) the ControlNet stops acting."})


def controlnet_names() -> list[str]:
    folders = current_environment().folders
    return sorted({name for kind in CONTROLNET_FOLDERS for name in folders.list_models(kind, CONTROLNET_EXTENSIONS)})


def load_named(control_net_name: str, model: Any = None) -> ControlNet:
    """The ControlNet file of that name from models/controlnet, else models/t2i_adapter (`model`: the one a
    difference ControlNet is added to)."""
    environment = current_environment()
    try:
        path = environment.folders.model_file(CONTROLNET_FOLDERS[0], control_net_name, "control_net_name")
    except ValueError:
        path = environment.folders.model_file(CONTROLNET_FOLDERS[1], control_net_name, "control_net_name")
    return load_controlnet(environment.models, path, "control_net_name", model)


def _name_input() -> tuple[list[str], dict[str, str]]:
    return (controlnet_names(), {"tooltip": "The ControlNet file (models/controlnet or models/t2i_adapter)."})


class ControlNetLoader:
    DESCRIPTION = ("Loads a ControlNet or T2I-Adapter: SD1.x/SD2.x ControlNets in the original layout (control_v11 "
                   ".pth or .safetensors), SDXL ControlNets and union ControlNets in the diffusers layout, diffusers "
                   "SD3 and FLUX ControlNets, and full T2I-Adapters for SD1.x and SDXL.")
    CATEGORY = "loaders"
    RETURN_TYPES = ("CONTROL_NET",)
    OUTPUT_TOOLTIPS = ("The ControlNet, for Apply ControlNet.",)
    FUNCTION = "load_controlnet"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"control_net_name": _name_input()}}

    def load_controlnet(self, control_net_name: str) -> tuple[ControlNet]:
        return (load_named(control_net_name),)


class DiffControlNetLoader:
    DESCRIPTION = ("Loads a ControlNet for a model: a 'difference' ControlNet (stored as differences from an SD1.5 "
                   "UNet) gets the model's weights added; any other loads as with Load ControlNet Model.")
    CATEGORY = "loaders"
    RETURN_TYPES = ("CONTROL_NET",)
    OUTPUT_TOOLTIPS = ("The ControlNet, for Apply ControlNet.",)
    FUNCTION = "load_controlnet"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL", {"tooltip": "The model the ControlNet is for."}),
                             "control_net_name": _name_input()}}

    def load_controlnet(self, model: Any, control_net_name: str) -> tuple[ControlNet]:
        return (load_named(control_net_name, model),)


def _hint(image: torch.Tensor) -> torch.Tensor:
    if image.ndim != 4:
        raise ValueError(f"image: expected an IMAGE [batch, height, width, channels], got shape {tuple(image.shape)}")
    return image.movedim(-1, 1)


def apply_advanced(positive: list, negative: list, control_net: ControlNet, image: torch.Tensor, strength: float,
                   start_percent: float, end_percent: float, vae: Any = None,
                   mask: torch.Tensor | None = None) -> tuple[list, list]:
    """ComfyUI's ControlNetApplyAdvanced: every entry of both conditionings gets the control, chained onto the one
    it had; entries that had the same control share one new control."""
    if strength == 0:
        return positive, negative
    if control_net.needs_vae and vae is None:
        raise ValueError("vae: this ControlNet encodes its image with the VAE; connect the model's VAE")
    hint = _hint(image)
    shared: dict[int, AppliedControl] = {}
    results = []
    for conditioning in (positive, negative):
        entries = []
        for embeddings, options in conditioning:
            previous = options.get("control")
            key = id(previous)
            if key not in shared:
                shared[key] = AppliedControl(control_net, hint, strength, start_percent, end_percent, vae, mask,
                                             previous)
            entries.append([embeddings, {**options, "control": shared[key], "control_apply_to_uncond": False}])
        results.append(entries)
    return results[0], results[1]


class ControlNetApplyAdvanced:
    DESCRIPTION = ("Applies a ControlNet to the positive and negative conditioning: the sampler adds the residuals "
                   "it computes from the image (an edge map, a depth map, a pose, ...) while it runs, within the "
                   "part of the run given by start and end. Chained apply nodes add up.")
    CATEGORY = CONDITIONING_CATEGORY
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("The positive conditioning with the ControlNet.", "The negative conditioning with it.")
    FUNCTION = "apply_controlnet"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "The positive conditioning."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative conditioning."}),
                "control_net": ("CONTROL_NET", {"tooltip": "The ControlNet from Load ControlNet Model."}),
                "image": ("IMAGE", {"tooltip": "The hint image (resized to the latents' size at sampling)."}),
                "strength": STRENGTH, "start_percent": START, "end_percent": END,
            },
            "optional": {"vae": ("VAE", {"tooltip": "The model's VAE; SD3 and FLUX ControlNets need it to encode "
                                                    "the image."})},
        }

    def apply_controlnet(self, positive: list, negative: list, control_net: ControlNet, image: torch.Tensor,
                         strength: float, start_percent: float, end_percent: float,
                         vae: Any = None) -> tuple[list, list]:
        return apply_advanced(positive, negative, control_net, image, strength, start_percent, end_percent, vae)


class ControlNetApplySD3(ControlNetApplyAdvanced):
    DESCRIPTION = "Applies a ControlNet that encodes its image with the VAE (SD3, FLUX); deprecated in ComfyUI."
    DEPRECATED = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        inputs = super().INPUT_TYPES()
        required = dict(inputs["required"])
        ordered = {name: required[name] for name in ("positive", "negative", "control_net")}
        ordered["vae"] = ("VAE", {"tooltip": "The model's VAE, which encodes the image."})
        ordered.update({name: required[name] for name in ("image", "strength", "start_percent", "end_percent")})
        return {"required": ordered}


class ControlNetApply:
    DESCRIPTION = ("Applies a ControlNet to one conditioning for the whole run (deprecated in ComfyUI: use Apply "
                   "ControlNet with positive and negative). Negative conditioning without a ControlNet gets this "
                   "one too, as in ComfyUI.")
    CATEGORY = CONDITIONING_CATEGORY
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("The conditioning with the ControlNet.",)
    FUNCTION = "apply_controlnet"
    DEPRECATED = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "conditioning": ("CONDITIONING", {"tooltip": "The conditioning to steer."}),
            "control_net": ("CONTROL_NET", {"tooltip": "The ControlNet from Load ControlNet Model."}),
            "image": ("IMAGE", {"tooltip": "The hint image (resized to the latents' size at sampling)."}),
            "strength": STRENGTH,
        }}

    def apply_controlnet(self, conditioning: list, control_net: ControlNet, image: torch.Tensor,
                         strength: float) -> tuple[list]:
        if strength == 0:
            return (conditioning,)
        if control_net.needs_vae:
            raise ValueError("control_net: this ControlNet encodes its image with a VAE; use Apply ControlNet "
                             "with its vae input")
        hint = _hint(image)
        entries = [[embeddings, {**options, "control": AppliedControl(control_net, hint, strength,
                                                                     previous=options.get("control")),
                                 "control_apply_to_uncond": True}]
                   for embeddings, options in conditioning]
        return (entries,)


class SetUnionControlNetType:
    DESCRIPTION = "Tells a union ControlNet (ControlNet++) which kind of hint image it is given."
    CATEGORY = CONDITIONING_CATEGORY
    RETURN_TYPES = ("CONTROL_NET",)
    OUTPUT_TOOLTIPS = ("The ControlNet set to that type.",)
    FUNCTION = "set_controlnet_type"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "control_net": ("CONTROL_NET", {"tooltip": "A union ControlNet."}),
            "type": (["auto", *UNION_TYPES], {"tooltip": "The kind of hint image; auto lets the ControlNet tell."}),
        }}

    def set_controlnet_type(self, control_net: ControlNet, type: str) -> tuple[ControlNet]:
        if control_net.kind != UNION:
            return (control_net,)  # ComfyUI sets the argument on any ControlNet; only union ones read it
        if type == "auto":
            return (control_net.with_union_type(None),)
        index, supported = UNION_TYPES.index(type), int(control_net.network.config.num_control_type)
        if index >= supported:
            raise ValueError(f"type: {type!r} is not one of the {supported} control types this union ControlNet "
                             "knows; the ProMax union ControlNet has them all")
        return (control_net.with_union_type(index),)


class ControlNetInpaintingAliMamaApply(ControlNetApplyAdvanced):
    DESCRIPTION = ("Applies an inpainting ControlNet (Alimama's for FLUX and SD3): the image with the masked part "
                   "blanked and the mask itself steer the sampler to fill the masked part.")
    FUNCTION = "apply_inpaint_controlnet"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        required = dict(super().INPUT_TYPES()["required"])
        ordered = {name: required[name] for name in ("positive", "negative", "control_net")}
        ordered["vae"] = ("VAE", {"tooltip": "The model's VAE, which encodes the image."})
        ordered["image"] = required["image"]
        ordered["mask"] = ("MASK", {"tooltip": "The part to repaint (1 = repaint)."})
        ordered.update({name: required[name] for name in ("strength", "start_percent", "end_percent")})
        return {"required": ordered}

    def apply_inpaint_controlnet(self, positive: list, negative: list, control_net: ControlNet, vae: Any,
                                 image: torch.Tensor, mask: torch.Tensor, strength: float, start_percent: float,
                                 end_percent: float) -> tuple[list, list]:
        kept = None
        if control_net.concat_mask:
            kept = 1.0 - mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
            keep = center_resize(kept, image.shape[2], image.shape[1], "bilinear").round()
            image = image * keep.movedim(1, -1)
        return apply_advanced(positive, negative, control_net, image, strength, start_percent, end_percent, vae,
                              kept)


class Canny:
    DESCRIPTION = ("Finds the edges of images with the Canny detector (as ComfyUI's, kornia's algorithm): white "
                   "edges on black, the hint a canny ControlNet expects.")
    CATEGORY = "image/preprocessors"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The edge map (white edges on black).",)
    FUNCTION = "detect_edge"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The images to find edges in."}),
            "low_threshold": ("FLOAT", {"default": 0.4, "min": 0.01, "max": 0.99, "step": 0.01,
                                        "tooltip": "Gradient strength above which a pixel is a weak edge (kept "
                                                   "only when it touches a strong one)."}),
            "high_threshold": ("FLOAT", {"default": 0.8, "min": 0.01, "max": 0.99, "step": 0.01,
                                         "tooltip": "Gradient strength above which a pixel is a strong edge."}),
        }}

    def detect_edge(self, image: torch.Tensor, low_threshold: float, high_threshold: float) -> tuple[torch.Tensor]:
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold: {low_threshold} is above high_threshold {high_threshold}")
        edges = canny(image[..., :3].movedim(-1, 1).float(), low_threshold, high_threshold)
        return (edges.repeat(1, 3, 1, 1).movedim(1, -1),)


NODE_CLASS_MAPPINGS = {
    "ControlNetLoader": ControlNetLoader,
    "DiffControlNetLoader": DiffControlNetLoader,
    "ControlNetApply": ControlNetApply,
    "ControlNetApplyAdvanced": ControlNetApplyAdvanced,
    "ControlNetApplySD3": ControlNetApplySD3,
    "SetUnionControlNetType": SetUnionControlNetType,
    "ControlNetInpaintingAliMamaApply": ControlNetInpaintingAliMamaApply,
    "Canny": Canny,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "ControlNetLoader": "Load ControlNet Model",
    "DiffControlNetLoader": "Load ControlNet Model (diff)",
    "ControlNetApply": "Apply ControlNet (OLD)",
    "ControlNetApplyAdvanced": "Apply ControlNet",
    "ControlNetApplySD3": "Apply Controlnet with VAE",
    "SetUnionControlNetType": "SetUnionControlNetType",
    "ControlNetInpaintingAliMamaApply": "ControlNetInpaintingAliMamaApply",
    "Canny": "Canny",
}
