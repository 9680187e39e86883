"""ComfyUI's V3 UI outputs (`from comfy_api.latest import ui`): what a node shows in the browser and history,
returned as `io.NodeOutput(..., ui=ui.PreviewImage(images, cls=cls))`. Images are written by our SaveImage
machinery (temp folder for previews), in ComfyUI's history shape."""
from __future__ import annotations

from typing import Any

import torch

from nodes.image import PreviewImage as _Preview


class SavedResult(dict):
    """One file entry of history: filename, subfolder and folder type."""

    def __init__(self, filename: str, subfolder: str, type: str) -> None:
        super().__init__(filename=filename, subfolder=subfolder, type=getattr(type, "value", type))


class SavedImages:
    def __init__(self, results: list[dict[str, str]], is_animated: bool = False) -> None:
        self.results, self.is_animated = list(results), is_animated

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.results, "animated": (self.is_animated,)}


class PreviewImage:
    """IMAGE [B,H,W,C] (or [B,H,W] greyscale) written to the temp folder and shown on the node."""

    def __init__(self, image: torch.Tensor, animated: bool = False, cls: Any = None, **kwargs: Any) -> None:
        hidden = getattr(cls, "hidden", None)
        prompt = getattr(hidden, "prompt", None)
        extra_pnginfo = getattr(hidden, "extra_pnginfo", None)
        self.values = _Preview().save_images(image, "ComfyUI", prompt, extra_pnginfo)["ui"]["images"]
        self.animated = animated

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.values, "animated": (self.animated,)}


class PreviewMask(PreviewImage):
    """MASK [B,H,W] (or [H,W]) shown as a greyscale image."""

    def __init__(self, mask: torch.Tensor, animated: bool = False, cls: Any = None, **kwargs: Any) -> None:
        mask = mask.reshape(-1, mask.shape[-2], mask.shape[-1])
        super().__init__(mask.unsqueeze(-1).expand(-1, -1, -1, 3), animated, cls, **kwargs)


class PreviewVideo:
    """Saved videos (SavedResult entries) shown on the node, as ComfyUI's video nodes return them."""

    def __init__(self, values: list[dict[str, str]], **kwargs: Any) -> None:
        self.values = list(values)

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.values, "animated": (True,)}


class PreviewText:
    def __init__(self, value: str, **kwargs: Any) -> None:
        self.value = value

    def as_dict(self) -> dict[str, Any]:
        return {"text": (self.value,)}


__all__ = ["SavedResult", "SavedImages", "PreviewImage", "PreviewMask", "PreviewVideo", "PreviewText"]
