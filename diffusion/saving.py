"""MODEL, CLIP and VAE values written back as the single files people share: the state dicts (and safetensors
metadata) of ComfyUI's CheckpointSave, ModelSave and VAESave, in the original (LDM) key layout that our
CheckpointLoaderSimple / VAELoader and ComfyUI load.

- Stable Diffusion 1.x/2.x and SDXL (base and refiner) checkpoints: UNet under `model.diffusion_model.`, VAE under
  `first_stage_model.`, text encoders where each version keeps them (`diffusion.families.ldm_export` re-keys the
  diffusers modules; SDXL's added embedding and OpenCLIP-G projection are laid out here). SD1 and SD2 are told
  apart by the text encoder (CLIP ViT-L uses quick_gelu, SD2's OpenCLIP-H gelu). A v-prediction model gets
  ComfyUI's `v_pred` marker key.
- A diffusion model alone: SD/SDXL UNets in LDM keys; a FLUX transformer in diffusers keys (what our UNETLoader and
  ComfyUI both read). SD3 and unCLIP are not written yet: a ValueError says so.
- A VAE alone (any family's AutoencoderKL): LDM keys without prefix, as ComfyUI's VAESave writes them.

LoRAs on a MODEL or CLIP are merged into the saved weights, as ComfyUI saves patched weights. Tensors are the
modules' own where nothing is merged (no copy). Knows nothing of nodes, folders or files: callers write the dicts.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from diffusion.families import ldm_export
from diffusion.families.sd.detection import V_PREDICTION_MARKER
from diffusion.families.sdxl.detection import BASE_CLIP_G, CLIP_L, REFINER_CLIP_G
from diffusion.merging import effective_state_dict

CHECKPOINT_FAMILIES = ("sd", "sdxl")
DIFFUSION_MODEL_FAMILIES = ("sd", "sdxl", "flux")
# ComfyUI's modelspec architectures (comfy_extras/nodes_model_merging.py save_checkpoint)
SDXL_BASE_ARCHITECTURE = "stable-diffusion-xl-v1-base"
SDXL_REFINER_ARCHITECTURE = "stable-diffusion-xl-v1-refiner"
_SDXL_ADDED_EMBEDDING = {"add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2."}


def _network_state(model: Any) -> dict[str, torch.Tensor]:
    return effective_state_dict(model.network, model.lora_component, model.loras)


def unet_ldm_state(model: Any) -> dict[str, torch.Tensor]:
    """An SD1/SD2/SDXL MODEL's UNet under `model.diffusion_model.` in LDM keys (LoRAs merged in)."""
    state = _network_state(model)
    added = {}
    for key in [key for key in state if key.startswith("add_embedding.")]:
        for diffusers_prefix, ldm_prefix in _SDXL_ADDED_EMBEDDING.items():
            if key.startswith(diffusers_prefix):
                added[ldm_export.UNET_PREFIX + ldm_prefix + key[len(diffusers_prefix):]] = state.pop(key)
    converted = ldm_export.unet_to_ldm(state, model.network.config)
    converted.update(added)
    return converted


def vae_ldm_state(vae: Any, prefix: str = ldm_export.VAE_PREFIX) -> dict[str, torch.Tensor]:
    """A VAE's AutoencoderKL in LDM keys under `prefix` (a checkpoint's `first_stage_model.`, or "" alone)."""
    autoencoder = vae.autoencoder
    if type(autoencoder).__name__ != "AutoencoderKL":
        raise ValueError(f"vae: a {type(autoencoder).__name__} has no original (LDM) single-file layout to save in")
    return ldm_export.vae_to_ldm(autoencoder.state_dict(), autoencoder.config, prefix)


def _open_clip_g(state: Mapping[str, torch.Tensor], layers: int, prefix: str) -> dict[str, torch.Tensor]:
    """SDXL's OpenCLIP-G in its checkpoint layout under `prefix`: all its layers (SDXL keeps the last one),
    with OpenCLIP's [width, projection] `text_projection`."""
    state = dict(state)
    projection = state.pop("text_projection.weight")
    converted = ldm_export.open_clip_to_ldm(state)
    copied_layer = f"{ldm_export.OPEN_CLIP_PREFIX}transformer.resblocks.{layers}."
    renamed = {prefix + key[len(ldm_export.OPEN_CLIP_PREFIX):]: tensor for key, tensor in converted.items()
               if not key.startswith(copied_layer)}
    renamed[prefix + "text_projection"] = projection.T.contiguous()
    return renamed


def text_encoder_ldm_state(clip: Any, family: str) -> dict[str, torch.Tensor]:
    """A CLIP's text encoders where an SD1/SD2 or SDXL checkpoint keeps them (LoRAs merged in)."""
    if family == "sd":
        encoder = clip.text_encoder
        state = effective_state_dict(encoder, "text_encoder", clip.loras)
        if encoder.config.hidden_act == "quick_gelu":  # SD1's CLIP ViT-L
            return ldm_export.clip_to_ldm(state)
        return ldm_export.open_clip_to_ldm(state)
    converted: dict[str, torch.Tensor] = {}
    clip_g = effective_state_dict(clip.clip_g.model, clip.clip_g.lora_component, clip.loras)
    layers = clip.clip_g.model.config.num_hidden_layers
    if clip.clip_l is None:  # the refiner
        return _open_clip_g(clip_g, layers, REFINER_CLIP_G)
    clip_l = effective_state_dict(clip.clip_l.model, clip.clip_l.lora_component, clip.loras)
    converted.update({CLIP_L + key.removeprefix("text_model."): tensor for key, tensor in clip_l.items()
                      if not key.endswith("position_ids")})
    converted.update(_open_clip_g(clip_g, layers, BASE_CLIP_G))
    return converted


def _is_refiner(model: Any) -> bool:
    return bool(getattr(model.sampling, "refiner", False))


def _require(model: Any, families: tuple[str, ...], what: str) -> None:
    if model.family not in families:
        raise ValueError(f"model: saving {model.sampling.family_title} models as {what} is not supported yet "
                         f"(supported: {', '.join(families)})")


def checkpoint_metadata(model: Any) -> dict[str, str]:
    """The model-describing safetensors metadata ComfyUI's save_checkpoint writes: modelspec for SDXL, and the
    prediction type of noise- and v-prediction models."""
    metadata: dict[str, str] = {}
    if model.family == "sdxl":
        metadata["modelspec.architecture"] = SDXL_REFINER_ARCHITECTURE if _is_refiner(model) \
            else SDXL_BASE_ARCHITECTURE
        metadata.update({"modelspec.sai_model_spec": "1.0.0", "modelspec.implementation": "sgm"})
    if model.family in ("sd", "sdxl"):
        metadata["modelspec.predict_key"] = "v" if model.prediction_type == "v_prediction" else "epsilon"
    return metadata


def _prediction_keys(model: Any) -> dict[str, torch.Tensor]:
    return {V_PREDICTION_MARKER: torch.tensor([])} if model.prediction_type == "v_prediction" else {}


def checkpoint_state(model: Any, clip: Any, vae: Any) -> dict[str, torch.Tensor]:
    """MODEL, CLIP and VAE as one SD1/SD2 or SDXL single-file checkpoint's tensors."""
    _require(model, CHECKPOINT_FAMILIES, "a single-file checkpoint")
    if clip is None or getattr(clip, "family", None) != model.family:
        raise ValueError(f"clip: the text encoder of a {model.family} model is needed "
                         f"(got {getattr(clip, 'family', None)})")
    state = {**unet_ldm_state(model), **vae_ldm_state(vae), **text_encoder_ldm_state(clip, model.family)}
    state.update(_prediction_keys(model))
    return state


def diffusion_model_state(model: Any) -> dict[str, torch.Tensor]:
    """MODEL's network alone: SD/SDXL UNets in LDM keys, a FLUX transformer in diffusers keys."""
    _require(model, DIFFUSION_MODEL_FAMILIES, "a diffusion model file")
    if model.family == "flux":
        return _network_state(model)
    return {**unet_ldm_state(model), **_prediction_keys(model)}
