"""`comfy_extras.nodes_mask` for plugins: ComfyUI's mask node classes (ours, by the same names) and `composite`,
the paste-through-a-mask helper packs call on image or latent tensors."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nodes.latent_ops import LatentCompositeMasked, cycle_to_batch
from nodes.mask import (
    CropMask,
    FeatherMask,
    GrowMask,
    ImageColorToMask,
    ImageCompositeMasked,
    ImageToMask,
    InvertMask,
    MaskComposite,
    MaskPreview,
    MaskToImage,
    SolidMask,
    ThresholdMask,
    blend_into,
)


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: torch.Tensor | None = None,
              multiplier: int = 8, resize_source: bool = False) -> torch.Tensor:
    """Paste [B, C, h, w] `source` into [B, C, H, W] `destination` in place (and return it) with its top-left corner
    at (x, y) // `multiplier` (8 for latents given in pixels, 1 for images), through `mask` (1 = source), resized to
    the source's size. The source's batch is cycled to the destination's. A corner left of or above the destination
    cuts off the source's hidden part (ComfyUI's own arithmetic for negative offsets is not reproduced)."""
    source = source.to(destination.device, destination.dtype)
    if resize_source:
        source = F.interpolate(source, size=destination.shape[-2:], mode="bilinear")
    source = cycle_to_batch(source, destination.shape[0])
    if mask is None:
        weight = torch.ones_like(source[:, :1])
    else:
        weight = mask.to(destination.device, destination.dtype).reshape(-1, 1, *mask.shape[-2:])
        weight = cycle_to_batch(F.interpolate(weight, size=source.shape[-2:], mode="bilinear"), source.shape[0])
    left, top = int(x) // multiplier, int(y) // multiplier
    if left < 0:
        source, weight, left = source[..., -left:], weight[..., -left:], 0
    if top < 0:
        source, weight, top = source[..., -top:, :], weight[..., -top:, :], 0
    blend_into(destination, source, weight, left, top)
    return destination


NODE_CLASS_MAPPINGS = {
    "LatentCompositeMasked": LatentCompositeMasked, "ImageCompositeMasked": ImageCompositeMasked,
    "MaskToImage": MaskToImage, "ImageToMask": ImageToMask, "ImageColorToMask": ImageColorToMask,
    "SolidMask": SolidMask, "InvertMask": InvertMask, "CropMask": CropMask, "MaskComposite": MaskComposite,
    "FeatherMask": FeatherMask, "GrowMask": GrowMask, "ThresholdMask": ThresholdMask, "MaskPreview": MaskPreview,
}
