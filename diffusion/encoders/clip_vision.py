"""Image encoders from ComfyUI's `clip_vision` files (CLIP ViT-L/H/bigG with projection, SigLIP) on transformers'
CLIPVisionModelWithProjection / SiglipVisionModel, and what they give: CLIP_VISION_OUTPUT (`ClipVisionOutput`, the
attributes ComfyUI's has: last_hidden_state, image_embeds, penultimate_hidden_states).

The architecture is read off the file's tensors (widths, layer count, patch and image size; 16 attention heads, as
every ComfyUI clip_vision config has). Images are prepared as ComfyUI's clip_preprocess does: bicubic antialiased
resize (the short side to the model's size and a centre crop, or both sides without cropping), rounded to 8 bits,
normalised. Knows nothing of nodes or the node environment.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from diffusion.contracts import Place
from diffusion.files import block_indices, empty_weights, load_strict, read_safetensors

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
ATTENTION_HEADS = 16
LAYERS = "vision_model.encoder.layers."
OPENCLIP_KEY = "visual.transformer.resblocks.0.attn.in_proj_weight"


@dataclass(frozen=True, eq=False)
class ClipVisionOutput:
    """CLIP_VISION_OUTPUT: float32 CPU tensors. `image_embeds` [B, projection] (None for SigLIP, which has no
    projection), `last_hidden_state` and `penultimate_hidden_states` [B, tokens, width]. Readable as attributes
    or, as ComfyUI's, by key."""

    last_hidden_state: torch.Tensor
    image_embeds: torch.Tensor | None
    penultimate_hidden_states: torch.Tensor
    mm_projected: torch.Tensor | None = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def preprocess(images: torch.Tensor, size: int, mean: tuple[float, ...], std: tuple[float, ...],
               crop: bool) -> torch.Tensor:
    """IMAGE [B, H, W, C] in 0..1 -> normalised pixels [B, 3, size, size] (ComfyUI's clip_preprocess)."""
    pixels = images[..., :3].movedim(-1, 1).float()
    if pixels.shape[-2:] != (size, size):
        if crop:
            scale = size / min(pixels.shape[-2:])
            target = (round(scale * pixels.shape[-2]), round(scale * pixels.shape[-1]))
        else:
            target = (size, size)
        pixels = F.interpolate(pixels, size=target, mode="bicubic", antialias=True)
        top, left = (pixels.shape[-2] - size) // 2, (pixels.shape[-1] - size) // 2
        pixels = pixels[..., top:top + size, left:left + size]
    pixels = torch.clip(255.0 * pixels, 0, 255).round() / 255.0
    return (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


@dataclass(frozen=True, eq=False)
class ClipVisionEncoder:
    """CLIP_VISION: an image encoder with the image size and normalisation it was trained with."""

    model: Any  # CLIPVisionModelWithProjection or SiglipVisionModel
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str

    @property
    def image_mean(self) -> list[float]:
        """ComfyUI's `ClipVisionModel.image_mean`: the per-channel mean images are normalised with."""
        return list(self.mean)

    @property
    def image_std(self) -> list[float]:
        """ComfyUI's `ClipVisionModel.image_std`."""
        return list(self.std)

    def get_sd(self) -> dict[str, torch.Tensor]:
        """ComfyUI's `ClipVisionModel.get_sd`: the weights in transformers' key layout, which ComfyUI's files use."""
        return self.model.state_dict()

    @torch.inference_mode()
    def encode_image(self, images: torch.Tensor, crop: bool = True) -> ClipVisionOutput:
        """IMAGE [B, H, W, C] -> ClipVisionOutput (ComfyUI's ClipVisionModel.encode_image)."""
        parameter = next(self.model.parameters())
        pixels = preprocess(images.cpu(), self.image_size, self.mean, self.std, crop)
        out = self.model(pixel_values=pixels.to(parameter.device, parameter.dtype), output_hidden_states=True)
        embeds = getattr(out, "image_embeds", None)
        return ClipVisionOutput(out.last_hidden_state.float().cpu(),
                                None if embeds is None else embeds.float().cpu(),
                                out.hidden_states[-2].float().cpu())


def _architecture(weights: Mapping[str, torch.Tensor], input_name: str, name: str) -> tuple[Any, bool]:
    """The transformers config of the encoder a state dict holds, and whether it is SigLIP."""
    from transformers import CLIPVisionConfig, SiglipVisionConfig

    layers = block_indices(weights, LAYERS)
    needed = ("vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.position_embedding.weight")
    if not layers or any(key not in weights for key in needed):
        raise ValueError(f"{input_name}: {name} is not a CLIP vision model (no vision_model.* tensors in "
                         "transformers' layout)")
    width = weights[f"{LAYERS}0.layer_norm1.weight"].shape[0]
    patch = weights[needed[0]].shape[-1]
    positions = weights[needed[1]].shape[0]
    siglip = "vision_model.embeddings.class_embedding" not in weights
    side = math.isqrt(positions if siglip else positions - 1)
    common = {"hidden_size": width, "intermediate_size": weights[f"{LAYERS}0.mlp.fc1.weight"].shape[0],
              "num_hidden_layers": len(layers), "num_attention_heads": ATTENTION_HEADS, "patch_size": patch,
              "image_size": side * patch}
    if siglip:
        return SiglipVisionConfig(**common, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
                                  vision_use_head="vision_model.head.probe" in weights), True
    if "visual_projection.weight" not in weights:
        raise ValueError(f"{input_name}: {name} has no visual_projection; CLIPVisionLoader needs a CLIP vision model "
                         "with its projection")
    # OpenAI's ViT-L (1024 wide) uses quick GELU; OpenCLIP's ViT-H and bigG plain GELU
    return CLIPVisionConfig(**common, projection_dim=weights["visual_projection.weight"].shape[0],
                            hidden_act="quick_gelu" if width == 1024 else "gelu", layer_norm_eps=1e-5), False


def load_clip_vision(path: Path, place: Place, input_name: str) -> ClipVisionEncoder:
    """The image encoder of a ComfyUI clip_vision .safetensors file (transformers' key layout)."""
    weights = read_safetensors(path, input_name)
    if OPENCLIP_KEY in weights:
        raise ValueError(f"{input_name}: {path.name} is in OpenCLIP's layout (visual.transformer.*); use the "
                         "transformers-layout clip_vision file of the same model")
    return encoder_from_weights(weights, place, input_name, path.name)


def encoder_from_weights(weights: Mapping[str, torch.Tensor], place: Place, input_name: str,
                         name: str) -> ClipVisionEncoder:
    """The image encoder of CLIP or SigLIP vision weights in transformers' key layout (a clip_vision file's, or
    the image encoder of an all-in-one checkpoint re-keyed to it)."""
    from transformers import CLIPVisionModelWithProjection, SiglipVisionModel

    config, siglip = _architecture(weights, input_name, name)
    with empty_weights():
        model = (SiglipVisionModel if siglip else CLIPVisionModelWithProjection)(config)
    if "vision_model.embeddings.patch_embedding.weight" not in model.state_dict():  # transformers' SigLIP: no prefix
        weights = {key.removeprefix("vision_model."): value for key, value in weights.items()}
    load_strict(model, weights, f"{input_name}: {name}")
    mean, std = (SIGLIP_MEAN, SIGLIP_STD) if siglip else (CLIP_MEAN, CLIP_STD)
    return ClipVisionEncoder(place(model).eval(), config.image_size, mean, std, name)
