"""Loader nodes: checkpoints, diffusers folders, VAEs and LoRAs from the current environment's models folder.

Each node is a thin ComfyUI-style class; loading and caching live in `nodes.models.manager`, LoRA application
in `nodes.models.lora`. Knows nothing of HTTP or the executor.
"""
from __future__ import annotations

from typing import Any

from nodes.environment import current_environment, resolve_inside
from nodes.models.components import ClipTextEncoder, DiffusionModel, LoraPatch, Vae
from nodes.models.lora import lora_applied, lora_targets

STRENGTH = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}


def _model_file(kind: str, name: str, input_name: str):
    return resolve_inside(current_environment().folders.model_dir(kind), name, input_name)


class CheckpointLoaderSimple:
    DESCRIPTION = ("Loads a single-file checkpoint (.safetensors, original layout): Stable Diffusion 1.x/2.x, SDXL "
                   "base or refiner, or SD3; the family and prediction type are detected from the tensors.")
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = ("The denoising model (UNet).", "The text encoder for prompts.",
                       "The VAE that turns latents into images and back.")
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("checkpoints")
        return {"required": {"ckpt_name": (names, {"tooltip": "The checkpoint file in models/checkpoints."})}}

    def load_checkpoint(self, ckpt_name: str) -> tuple[DiffusionModel, ClipTextEncoder, Vae]:
        path = _model_file("checkpoints", ckpt_name, "ckpt_name")
        return current_environment().models.checkpoint(path, "ckpt_name")


class DiffusersLoader:
    DESCRIPTION = ("Loads a model saved in diffusers format (a folder with model_index.json): Stable Diffusion, "
                   "SDXL, SD3 or FLUX, detected from the folder.")
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_diffusers_models()
        return {"required": {"model_path": (names, {"tooltip": "The model folder in models/diffusers."})}}

    def load_checkpoint(self, model_path: str) -> tuple[DiffusionModel, ClipTextEncoder, Vae]:
        folder = _model_file("diffusers", model_path, "model_path")
        return current_environment().models.diffusers(folder, "model_path")


class VAELoader:
    DESCRIPTION = "Loads a standalone VAE (.safetensors in the original layout) to use instead of a checkpoint's."
    CATEGORY = "loaders"
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load_vae"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("vae")
        return {"required": {"vae_name": (names, {"tooltip": "The VAE file in models/vae."})}}

    def load_vae(self, vae_name: str) -> tuple[Vae]:
        path = _model_file("vae", vae_name, "vae_name")
        return (current_environment().models.vae(path, "vae_name"),)


def _lora_patch(lora_name: str, strength: float, lora_format: str = "sd") -> LoraPatch:
    """The LoRA file read with the key conventions of the family it is applied to (`lora_format`)."""
    path = _model_file("loras", lora_name, "lora_name")
    state, alphas = current_environment().models.lora(path, "lora_name", lora_format)
    patch = LoraPatch(lora_name, state, alphas, strength)
    if not any(lora_targets(patch).values()):
        raise ValueError(f"lora_name: {lora_name} matches no UNet, transformer or text encoder layers")
    return patch


def _check_fits(module: Any, component: str, patch: LoraPatch) -> None:
    """Inject and remove the LoRA once, so a LoRA for another architecture fails here, naming the input."""
    try:
        with lora_applied(module, component, [patch]):
            pass
    except ValueError as error:
        raise ValueError(f"lora_name: {error}") from error


def lora_model(model: DiffusionModel, lora_name: str, strength: float, required: bool) -> DiffusionModel:
    """A MODEL that applies the LoRA's UNet part at `strength` while it computes (unchanged at strength 0)."""
    if strength == 0:
        return model
    patch = _lora_patch(lora_name, strength, getattr(model.sampling, "lora_format", "sd"))
    component = model.lora_component
    if not lora_targets(patch)[component]:
        if required:
            raise ValueError(f"lora_name: {lora_name} has no {component} layers")
        return model
    _check_fits(model.unet, component, patch)
    return model.with_lora(patch)


def lora_clip(clip: ClipTextEncoder, lora_name: str, strength: float) -> ClipTextEncoder:
    """A CLIP that applies the LoRA's text-encoder part at `strength` while it encodes."""
    if strength == 0:
        return clip
    patch = _lora_patch(lora_name, strength, getattr(clip, "lora_format", "sd"))
    targets = lora_targets(patch)
    modules = [(component, module) for component, module in clip.lora_modules() if targets[component]]
    if not modules:
        return clip
    for component, module in modules:
        _check_fits(module, component, patch)
    return clip.with_lora(patch)


class LoraLoader:
    DESCRIPTION = ("Applies a LoRA (kohya or diffusers layout) to a model and its text encoder. The loaded base "
                   "model is not changed: other nodes using it still see it without the LoRA.")
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP")
    OUTPUT_TOOLTIPS = ("The model with the LoRA applied.", "The text encoder with the LoRA applied.")
    FUNCTION = "load_lora"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("loras")
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model the LoRA is applied to."}),
            "clip": ("CLIP", {"tooltip": "The text encoder the LoRA is applied to."}),
            "lora_name": (names, {"tooltip": "The LoRA file in models/loras."}),
            "strength_model": ("FLOAT", {**STRENGTH, "tooltip": "How strongly to change the model; 0 leaves it."}),
            "strength_clip": ("FLOAT", {**STRENGTH, "tooltip": "How strongly to change the text encoder."}),
        }}

    def load_lora(self, model: DiffusionModel, clip: ClipTextEncoder, lora_name: str, strength_model: float,
                  strength_clip: float) -> tuple[DiffusionModel, ClipTextEncoder]:
        return lora_model(model, lora_name, strength_model, False), lora_clip(clip, lora_name, strength_clip)


class LoraLoaderModelOnly:
    DESCRIPTION = "Applies a LoRA to the model (UNet) only; the loaded base model is not changed."
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_lora_model_only"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = current_environment().folders.list_models("loras")
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model the LoRA is applied to."}),
            "lora_name": (names, {"tooltip": "The LoRA file in models/loras."}),
            "strength_model": ("FLOAT", {**STRENGTH, "tooltip": "How strongly to change the model; 0 leaves it."}),
        }}

    def load_lora_model_only(self, model: DiffusionModel, lora_name: str,
                             strength_model: float) -> tuple[DiffusionModel]:
        return (lora_model(model, lora_name, strength_model, True),)
