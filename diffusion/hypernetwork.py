"""Hypernetworks (A1111's `.pt` files) applied to a UNet's attention as ComfyUI's HypernetworkLoader applies them.

A file maps a context width (an int key: 320, 640, 768, ...) to two small MLPs, one for the keys' input and one for
the values' input of every attention layer whose context has that width: self-attention (`attn1`, the context is
the hidden states) and cross-attention (`attn2`, the text embeddings). With strength s, the key projection reads
`context + mlp_k(context) * s` and the value projection `context + mlp_v(context) * s`; queries are unchanged.

An MLP is read from its tensors in file order, as ComfyUI reads it: each 2-D `*.weight` is a Linear (with its
bias); with `is_layer_norm` the tensor after each Linear is its LayerNorm; the activation (`activation_func`:
linear, relu, leakyrelu, elu, swish (= Hardswish, as ComfyUI maps it), tanh, sigmoid, softsign, mish) follows each
Linear but the last entry of that list (also when `activate_output`), which with layer norms means after every
Linear, as ComfyUI computes. Dropout is left out: it is a no-op at inference (ComfyUI builds its dropout layers
in training mode, so its outputs are randomly perturbed where a file asks for dropout; ours are deterministic).

The patched MODEL gets a network of its own that shares every weight with the loaded one (no copy) and carries
the hypernetwork in attention processors of its own; the loaded network is unchanged. Knows nothing of nodes,
files or the node environment.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from diffusion.components import DiffusionModel
from diffusion.merging import network_with

ACTIVATIONS = {
    "linear": torch.nn.Identity, "relu": torch.nn.ReLU, "leakyrelu": torch.nn.LeakyReLU, "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "softsign": torch.nn.Softsign,
    "mish": torch.nn.Mish,
}

Hypernetwork = dict[int, tuple[torch.nn.Module, torch.nn.Module]]


def _mlp(tensors: Mapping[str, torch.Tensor], activation: str, layer_norm: bool, activate_output: bool) -> Any:
    names = [key[:-len(".weight")] for key in tensors if key.endswith(".weight")]
    layers: list[torch.nn.Module] = []
    index = 0
    while index < len(names):
        weight, bias = tensors[f"{names[index]}.weight"], tensors[f"{names[index]}.bias"]
        if weight.ndim != 2:
            raise ValueError(f"layer {names[index]} is not a linear layer (weight shape {tuple(weight.shape)})")
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        linear.load_state_dict({"weight": weight, "bias": bias})
        layers.append(linear)
        if activation != "linear" and (index != len(names) - 1 or activate_output):
            layers.append(ACTIVATIONS[activation]())
        if layer_norm:
            index += 1
            norm_weight, norm_bias = tensors[f"{names[index]}.weight"], tensors[f"{names[index]}.bias"]
            norm = torch.nn.LayerNorm(norm_weight.shape[0])
            norm.load_state_dict({"weight": norm_weight, "bias": norm_bias})
            layers.append(norm)
        index += 1
    return torch.nn.Sequential(*layers).eval().requires_grad_(False)


def read_hypernetwork(data: Mapping[Any, Any]) -> Hypernetwork:
    """The (key MLP, value MLP) per context width of a hypernetwork file's contents; ValueError if not one."""
    activation = data.get("activation_func", "linear") or "linear"
    if activation not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {activation!r} (supported: {', '.join(ACTIVATIONS)})")
    options = (bool(data.get("is_layer_norm", False)), bool(data.get("activate_output", False)))
    networks: Hypernetwork = {}
    for width, pair in data.items():
        try:
            width = int(width)
        except (TypeError, ValueError):
            continue
        try:
            networks[width] = (_mlp(pair[0], activation, *options), _mlp(pair[1], activation, *options))
        except (KeyError, IndexError, TypeError, RuntimeError) as error:
            raise ValueError(f"the MLPs for width {width} are incomplete or mis-shaped ({error})") from error
    if not networks:
        raise ValueError("no hypernetwork layers (no context-width keys) in the file")
    return networks


class HypernetworkAttention:
    """A diffusers attention processor computing attention with the hypernetwork applied to the key and value
    inputs (scaled dot-product attention, as diffusers' AttnProcessor2_0 for a UNet's transformer blocks)."""

    def __init__(self, networks: Hypernetwork, strength: float) -> None:
        self.networks = networks
        self.strength = strength

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        key_input = value_input = context
        pair = self.networks.get(context.shape[-1])
        if pair is not None:
            key_net, value_net = (net.to(context.device, context.dtype) for net in pair)
            key_input = context + key_net(context) * self.strength
            value_input = context + value_net(context) * self.strength
        batch = hidden_states.shape[0]
        query, key, value = attn.to_q(hidden_states), attn.to_k(key_input), attn.to_v(value_input)
        head_dim = key.shape[-1] // attn.heads

        def heads(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        attended = F.scaled_dot_product_attention(heads(query), heads(key), heads(value), attn_mask=attention_mask,
                                                  dropout_p=0.0, is_causal=False)
        attended = attended.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        output = attn.to_out[1](attn.to_out[0](attended))
        if attn.residual_connection:
            output = output + hidden_states
        return output / attn.rescale_output_factor


def transformer_attentions(network: Any) -> list[Any]:
    """Every `attn1` and `attn2` of a UNet's transformer blocks."""
    from diffusers.models.attention import BasicTransformerBlock

    return [attention for block in network.modules() if isinstance(block, BasicTransformerBlock)
            for attention in (block.attn1, block.attn2) if attention is not None]


def with_hypernetwork(model: DiffusionModel, networks: Hypernetwork, strength: float, name: str) -> DiffusionModel:
    """MODEL computing with the hypernetwork at `strength` (the loaded network unchanged, its weights shared)."""
    if model.lora_component != "unet" or not transformer_attentions(model.network):
        raise ValueError(f"hypernetwork_name: hypernetworks patch UNet attention (SD1/SD2/SDXL), not "
                         f"{model.sampling.family_title} models")
    widths = {attention.to_k.in_features for attention in transformer_attentions(model.network)}
    if not widths & set(networks):
        raise ValueError(f"hypernetwork_name: {name} is for context widths {sorted(networks)}, this model's "
                         f"attention has {sorted(widths)}")
    network = network_with(model.network, {})
    processor = HypernetworkAttention(networks, strength)
    for attention in transformer_attentions(network):
        attention.set_processor(processor)
    return dataclasses.replace(model, network=network, name=f"{model.name} + {name}")
