"""CLIP text encoders as the families with more than one of them use them (SDXL, SD3): each CLIP's hidden states
of a chosen layer and its pooled projection, with ComfyUI's emphasis syntax and 77-token chunks; and fitting a
CLIP file's tensors to transformers' key names.

Unlike SD1's CLIPTextEncode (diffusers' `clip_skip`, final layer norm applied), SDXL and SD3 read a hidden layer
as it is (diffusers' `hidden_states[-2]`, ComfyUI's "penultimate" without layer norm); layer -1 is the model's
normed last hidden state. Chunking and weighting are `diffusion.encoders.prompt`'s, so a prompt of up to 75
tokens without emphasis encodes exactly as diffusers' SDXL/SD3 pipelines encode it. Knows nothing of nodes,
files or which family the encoders belong to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from diffusion.contracts import LoraPatch
from diffusion.encoders.prompt import tokenize_weighted
from diffusion.lora import lora_applied

TokenChunks = list[list[tuple[Any, ...]]]  # (token, weight) or (token, weight, word id)


@dataclass(frozen=True, eq=False)
class TextEncoderSlot:
    """One CLIP of a multi-encoder family: tokenizer, model and its LoRA key prefix ("text_encoder", ...)."""

    tokenizer: Any
    model: Any
    lora_component: str

    def chunks(self, text: str, count: int = 0, word_ids: bool = False) -> TokenChunks:
        """77-token chunks of `text`, padded with empty-prompt chunks up to `count` (as ComfyUI pads SDXL's
        shorter prompt); with `word_ids`, (token, weight, word id) triples (`tokenize_weighted`)."""
        chunks = tokenize_weighted(self.tokenizer, text, word_ids)
        empty = tokenize_weighted(self.tokenizer, "", word_ids)[0]
        return chunks + [empty] * max(0, count - len(chunks))


@torch.inference_mode()
def encode_chunks(slot: TextEncoderSlot, chunks: TokenChunks, layer_index: int,
                  loras: Sequence[LoraPatch]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """([1, 77*chunks, width] hidden states of `layer_index`, [1, projection] pooled output of the first chunk or
    None for a model without projection), float32 on the CPU. A weight w moves a token's hidden state away from
    the empty prompt's at that position by w."""
    weights = torch.tensor([[entry[1] for entry in chunk] for chunk in chunks])
    ids = torch.tensor([[entry[0] for entry in chunk] for chunk in chunks])  # (token, weight[, word id])
    weighted = bool((weights != 1.0).any())
    if weighted:
        empty = slot.chunks("")[0]
        ids = torch.cat([ids, torch.tensor([[token for token, _ in empty]])])
    model = slot.model
    with lora_applied(model, slot.lora_component, loras):
        output = model(ids.to(model.device), output_hidden_states=True)
    hidden = output.last_hidden_state if layer_index == -1 else output.hidden_states[layer_index]
    hidden = hidden.float().cpu()
    pooled = getattr(output, "text_embeds", None)
    if weighted:
        empty_hidden = hidden[-1:]
        hidden = (hidden[:-1] - empty_hidden) * weights.unsqueeze(-1) + empty_hidden
    width = hidden.shape[-1]
    return hidden.reshape(1, -1, width), None if pooled is None else pooled[:1].float().cpu()


def check_layer(layer_index: int, slots: Sequence[TextEncoderSlot], name: str) -> int:
    """`layer_index` if every CLIP has that many layers (counted from the end, -1 the last), else ValueError."""
    layers = min(int(slot.model.config.num_hidden_layers) for slot in slots)
    if not -layers <= layer_index <= -1:
        raise ValueError(f"stop_at_clip_layer: {layer_index} is outside -1..-{layers} for {name}")
    return layer_index


def fit_keys(weights: Mapping[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights keyed as `model` names them (transformers 5 keys CLIPTextModel without "text_model.",
    CLIPTextModelWithProjection with it); position ids dropped."""
    wants_prefix = any(key.startswith("text_model.") for key in model.state_dict())
    fitted = {}
    for key, tensor in weights.items():
        if key.endswith("position_ids"):
            continue
        plain = key.removeprefix("text_model.")
        is_text_model = not plain.startswith("text_projection")
        fitted["text_model." + plain if wants_prefix and is_text_model else plain] = tensor
    return fitted
