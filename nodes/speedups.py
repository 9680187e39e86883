"""Nodes that switch on optional speed-ups of a model's denoising network (`diffusion.speedups`): one node
with every option, and ComfyUI's `TorchCompileModel` so that workflows using it load unchanged."""
from __future__ import annotations

import dataclasses
from typing import Any

from diffusion.components import DiffusionModel
from diffusion.speedups import ATTENTION_SLICING, COMPILE_BACKENDS, Speedups, unsupported


def _checked(model: DiffusionModel, speedups: Speedups, input_names: dict[str, str]) -> tuple[DiffusionModel]:
    problems = unsupported(model.network, speedups)
    if problems:
        raise ValueError("; ".join(f"{input_names[field]}: {reason}" for field, reason in problems.items()))
    return (model.with_speedups(speedups),)


class ModelSpeedups:
    DESCRIPTION = ("Switches on optional speed-ups of the model's denoising network while it samples. Each changes "
                   "results slightly (other kernels); bench/speedups.py measures speed and difference on this "
                   "machine. The model itself is shared and stays unchanged for other nodes.")
    CATEGORY = "advanced/model"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model, sampling with the chosen speed-ups.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model whose network gets the speed-ups."}),
            "compile": (list(COMPILE_BACKENDS), {
                "default": "off", "tooltip": "torch.compile the network with this backend. The first sampling "
                "compiles (minutes for a large model on a CPU); later ones at the same size reuse it."}),
            "channels_last": ("BOOLEAN", {
                "default": False, "tooltip": "Keep convolution weights in channels-last memory format while "
                "sampling (often faster on GPUs and recent CPUs)."}),
            "attention_slicing": (list(ATTENTION_SLICING), {
                "default": "off", "tooltip": "Compute attention a few heads at a time: less peak memory, slower. "
                "auto: half the heads at a time; max: one. UNet models only."}),
        }}

    def apply(self, model: DiffusionModel, compile: str = "off", channels_last: bool = False,
              attention_slicing: str = "off") -> tuple[DiffusionModel]:
        speedups = Speedups(compile, bool(channels_last), attention_slicing)
        return _checked(model, speedups, {"compile_backend": "compile", "attention_slicing": "attention_slicing"})


class TorchCompileModel:
    DESCRIPTION = ("torch.compile the model's denoising network while it samples (ComfyUI's node). The first "
                   "sampling compiles; later ones at the same size reuse it.")
    CATEGORY = "advanced/model"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model, sampling with its network compiled.",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model whose network is compiled."}),
            "backend": ([name for name in COMPILE_BACKENDS if name != "off"], {
                "default": "inductor", "tooltip": "inductor: CPUs and GPUs (needs a C++ compiler on the CPU); "
                "cudagraphs: CUDA only."}),
        }}

    def patch(self, model: DiffusionModel, backend: str) -> tuple[DiffusionModel]:
        speedups = dataclasses.replace(model.speedups, compile_backend=backend)
        return _checked(model, speedups, {"compile_backend": "backend", "attention_slicing": "model"})


NODE_CLASS_MAPPINGS = {"ModelSpeedups": ModelSpeedups, "TorchCompileModel": TorchCompileModel}
NODE_DISPLAY_NAME_MAPPINGS = {"ModelSpeedups": "Model Speed-ups", "TorchCompileModel": "TorchCompileModel"}
