"""ComfyUI's older loaders (nodes.py CheckpointLoader, comfy_extras/nodes_hypernetwork.py HypernetworkLoader), kept
so that old workflows run: a checkpoint with an original (LDM) yaml config from models/configs, and A1111
hypernetworks from models/hypernetworks.

The checkpoint is loaded exactly as CheckpointLoaderSimple loads it (the family and prediction type read from the
tensors); the config then changes what ComfyUI lets it change: `parameterization: "v"` makes the model a
v-prediction one, and the text encoder's `layer_idx` picks the CLIP layer prompts are read from. A config of a
model kind we do not run (its `model.target`) is refused. The hypernetwork maths are `diffusion.hypernetwork`.
Knows nothing of HTTP or the executor.
"""
from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import torch

from diffusion import hypernetwork
from diffusion.components import DiffusionModel
from nodes.environment import current_environment
from nodes.loaders import CheckpointLoaderSimple

CONFIG_EXTENSIONS = (".yaml",)
HYPERNETWORK_EXTENSIONS = (".pt", ".pth")
# `model.target` of the original configs whose models this engine runs (SD1.x/2.x incl. inpainting, SDXL)
CONFIG_TARGETS = ("ldm.models.diffusion.ddpm.LatentDiffusion", "ldm.models.diffusion.ddpm.LatentInpaintDiffusion",
                  "sgm.models.diffusion.DiffusionEngine")


def read_config(path: Path) -> dict[str, Any]:
    """The `model.params` of an original yaml config, checked to be of a model kind we run."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text())
        model = config["model"]
        params = model.get("params") or {}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"config_name: {path.name} is not an original model config ({error})") from error
    target = model.get("target")
    if target not in CONFIG_TARGETS:
        raise ValueError(f"config_name: {path.name} describes a {target} model, which this engine does not run "
                         f"(configs of: {', '.join(CONFIG_TARGETS)})")
    parameterization = params.get("parameterization", "eps")
    if parameterization not in ("eps", "v"):
        raise ValueError(f"config_name: {path.name} asks for {parameterization!r} parameterization; "
                         "only eps and v are run")
    return params


class CheckpointLoader:
    DESCRIPTION = ("Loads a checkpoint as Load Checkpoint does, then applies what its original yaml config from "
                   "models/configs says: v-prediction (parameterization: v) and the CLIP layer (layer_idx). "
                   "Deprecated: Load Checkpoint detects both from the file.")
    CATEGORY = "advanced/loaders"
    DEPRECATED = True
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = CheckpointLoaderSimple.OUTPUT_TOOLTIPS
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        folders = current_environment().folders
        return {"required": {
            "config_name": (folders.list_models("configs", CONFIG_EXTENSIONS),
                            {"tooltip": "The yaml config in models/configs."}),
            "ckpt_name": (folders.list_models("checkpoints"),
                          {"tooltip": "The checkpoint file in models/checkpoints."}),
        }}

    def load_checkpoint(self, config_name: str, ckpt_name: str) -> tuple[Any, Any, Any]:
        params = read_config(current_environment().folders.model_file("configs", config_name, "config_name"))
        model, clip, vae = CheckpointLoaderSimple().load_checkpoint(ckpt_name)
        if params.get("parameterization") == "v" and model.prediction_type != "v_prediction":
            model = dataclasses.replace(model, scheduler_config={**model.scheduler_config,
                                                                 "prediction_type": "v_prediction"})
        layer_index = ((params.get("cond_stage_config") or {}).get("params") or {}).get("layer_idx")
        if layer_index is not None and clip is not None:
            clip = clip.with_layer(int(layer_index))
        return model, clip, vae


def read_hypernetwork_file(path: Path, input_name: str) -> hypernetwork.Hypernetwork:
    """A hypernetwork file: a pickled dict, read with torch's weights-only loader (no code runs)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(data, dict):
            raise ValueError("not a hypernetwork dictionary")
        return hypernetwork.read_hypernetwork(data)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as error:
        raise ValueError(f"{input_name}: {path.name}: {error}") from error


class HypernetworkLoader:
    DESCRIPTION = ("Applies a hypernetwork (A1111 .pt file from models/hypernetworks) to a model: small networks "
                   "that change the key and value inputs of every attention layer. The loaded model is unchanged.")
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with the hypernetwork applied.",)
    FUNCTION = "load_hypernetwork"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model the hypernetwork is applied to."}),
            "hypernetwork_name": (current_environment().folders.list_models("hypernetworks", HYPERNETWORK_EXTENSIONS),
                                  {"tooltip": "The hypernetwork file in models/hypernetworks."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                                   "tooltip": "How strongly the hypernetwork changes the attention inputs."}),
        }}

    def load_hypernetwork(self, model: DiffusionModel, hypernetwork_name: str,
                          strength: float) -> tuple[DiffusionModel]:
        path = current_environment().folders.model_file("hypernetworks", hypernetwork_name, "hypernetwork_name")
        networks = read_hypernetwork_file(path, "hypernetwork_name")
        return (hypernetwork.with_hypernetwork(model, networks, strength, hypernetwork_name),)


NODE_CLASS_MAPPINGS = {
    "CheckpointLoader": CheckpointLoader,
    "HypernetworkLoader": HypernetworkLoader,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "CheckpointLoader": "Load Checkpoint With Config (DEPRECATED)",
    "HypernetworkLoader": "HypernetworkLoader",
}
