"""`comfy.controlnet` for plugins: ComfyUI's ControlNet loading on our own (`diffusion.controlnet`).

`load_controlnet(path, model=None)` loads a ControlNet or T2I-Adapter file inside the models folder as
ControlNetLoader (or, with `model`, DiffControlNetLoader) does; the value goes into ControlNetApply nodes. `ControlBase`
and `ControlNet` answer `isinstance` for every such value, `T2IAdapter` for T2I-Adapters. ComfyUI's in-place
`copy().set_cond_hint(...)` protocol of applying a ControlNet is not offered: conditioning carries our own applied
control, made by the ControlNetApply nodes.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from comfy.sd import model_path, refuse_options
from diffusion import controlnet
from nodes.environment import current_environment


class _OurControlNets(type):
    """Metaclass of ComfyUI's ControlNet class names: `isinstance` answers for our CONTROL_NET values of `_kinds`
    (None: every kind)."""

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, controlnet.ControlNet) and (cls._kinds is None or instance.kind in cls._kinds)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"comfy.controlnet.{cls.__name__}(...): building one from a network is not supported by "
                           "nodeflow; load a file with comfy.controlnet.load_controlnet")


class ControlBase(metaclass=_OurControlNets):
    """ComfyUI's base class of ControlNets and T2I-Adapters, for `isinstance` checks."""

    _kinds = None


class ControlNet(ControlBase):
    """ComfyUI's ControlNet class, for `isinstance` checks (T2I-Adapters are ControlBase but not ControlNet)."""

    _kinds = (controlnet.UNET, controlnet.UNION, controlnet.SD3, controlnet.FLUX)


class T2IAdapter(ControlBase):
    """ComfyUI's T2IAdapter class, for `isinstance` checks."""

    _kinds = (controlnet.T2I,)


def load_controlnet(ckpt_path: str | os.PathLike[str], model: Any = None,
                    model_options: Mapping[str, Any] | None = None) -> controlnet.ControlNet:
    """ComfyUI's `load_controlnet`: the ControlNet or T2I-Adapter of a file inside the models folder (a difference
    ControlNet gets `model`'s weights added, as DiffControlNetLoader does), cached by the model manager."""
    caller = "comfy.controlnet.load_controlnet"
    refuse_options(caller, model_options=model_options)
    path = model_path(ckpt_path, caller, "ckpt_path")
    return controlnet.load_controlnet(current_environment().models, path, "ckpt_path", model)
