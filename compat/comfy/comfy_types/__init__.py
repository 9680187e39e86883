"""`comfy.comfy_types` for plugins: the node typing of `node_typing`, and the typing of a UNet wrapper function
(`MODEL.set_model_unet_function_wrapper`): it gets the model's apply function and a dict of its parameters."""
from __future__ import annotations

from typing import Any, Callable, Protocol, TypedDict

import torch

from comfy.comfy_types.node_typing import IO, CheckLazyMixin, ComfyNodeABC, FileLocator, InputTypeDict


class UnetApplyFunction(Protocol):
    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor: ...


class UnetApplyConds(TypedDict, total=False):
    c_concat: torch.Tensor | None
    c_crossattn: torch.Tensor | None
    control: torch.Tensor | None
    transformer_options: dict | None


class UnetParams(TypedDict):
    input: torch.Tensor  # [B, C, H, W]
    timestep: torch.Tensor  # [B]
    c: UnetApplyConds
    cond_or_uncond: list[int]  # per batch chunk: 0 conditional, 1 unconditional


UnetWrapperFunction = Callable[[UnetApplyFunction, UnetParams], torch.Tensor]

__all__ = ["IO", "InputTypeDict", "ComfyNodeABC", "CheckLazyMixin", "FileLocator", "UnetApplyFunction",
           "UnetApplyConds", "UnetParams", "UnetWrapperFunction"]
