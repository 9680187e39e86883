"""Temporary changes of a denoising network for the guidance patches that run it again or watch it run (PAG, SAG,
SLG): diffusers attention processors swapped on chosen self-attention layers, and transformer blocks skipped.

Each change is a context manager on the network module, which the model cache shares: it applies the change on
entry and restores exactly what was there on exit, also when the call inside raises. The layers are named as
ComfyUI names them: a UNet's "middle" block 0 is diffusers' `mid_block.attentions[0]` (its transformer blocks'
`attn1` are ComfyUI's "attn1" patches of ("middle", 0), the first of them ("middle", 0, 0)); a DiT's "double"
blocks are `transformer_blocks` (SD3's joint blocks, FLUX's double-stream blocks) and its "single" blocks
FLUX's `single_transformer_blocks`. Knows nothing of nodes, guiders or samplers.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

# What ComfyUI's "dit" block patches are called, and the diffusers attribute holding those blocks
DIT_BLOCKS = {"double": "transformer_blocks", "single": "single_transformer_blocks"}


def middle_self_attentions(network: Any) -> list[Any] | None:
    """The self-attention (`attn1`) of every transformer block in a UNet's middle block, in order; None for a
    network without one (a transformer family, a UNet whose middle block has no attention or no transformer
    blocks, as the unCLIP decoder's)."""
    attentions = getattr(getattr(network, "mid_block", None), "attentions", None)
    blocks = getattr(attentions[0], "transformer_blocks", None) if attentions else None
    if not blocks:
        return None
    return [block.attn1 for block in blocks]


def dit_block_counts(network: Any) -> dict[str, int]:
    """How many "double" and "single" blocks a DiT network has (a kind it lacks is left out; a UNet has none)."""
    counts = {}
    for kind, attribute in DIT_BLOCKS.items():
        blocks = getattr(network, attribute, None)
        if isinstance(blocks, torch.nn.ModuleList):
            counts[kind] = len(blocks)
    return counts


@contextlib.contextmanager
def processors_replaced(attentions: Sequence[Any], processor: Any) -> Iterator[None]:
    """`processor` on every diffusers `Attention` of `attentions` while the block runs; their own after."""
    saved = [attention.processor for attention in attentions]
    try:
        for attention in attentions:
            attention.set_processor(processor)
        yield
    finally:
        for attention, original in zip(attentions, saved):
            attention.set_processor(original)


@contextlib.contextmanager
def blocks_skipped(network: Any, layers: Mapping[str, Sequence[int]]) -> Iterator[None]:
    """The DiT blocks `layers` ({"double": [7, 8, 9], "single": [...]}) pass their inputs through unchanged while
    the block runs, as ComfyUI's skip patch and diffusers' SD3 `skip_layers` leave them: both streams (image and
    text) as they came in."""
    skipped = [getattr(network, DIT_BLOCKS[kind])[index] for kind, indices in layers.items() for index in indices]
    saved = [block.__dict__.get("forward") for block in skipped]  # an instance forward (accelerate's hooks) or none
    try:
        for block in skipped:
            block.forward = _pass_through
        yield
    finally:
        for block, original in zip(skipped, saved):
            if original is None:
                del block.forward
            else:
                block.forward = original


def _pass_through(hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, *args: Any,
                  **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A skipped diffusers SD3 or FLUX block: (text stream, image stream) as they came in."""
    return encoder_hidden_states, hidden_states


def _projected_out(attention: Any, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """The attention layer's output projection and dropout, residual and rescaling, as diffusers' processors end."""
    hidden_states = attention.to_out[1](attention.to_out[0](hidden_states))
    if attention.residual_connection:
        hidden_states = hidden_states + residual
    return hidden_states / attention.rescale_output_factor


class IdentitySelfAttention:
    """A diffusers attention processor for self-attention that attends each token to itself only: the values
    through the output projection (Perturbed-Attention Guidance's perturbation; ComfyUI's PAG returns v)."""

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        return _projected_out(attn, attn.to_v(hidden_states), hidden_states)


class RecordingSelfAttention:
    """A diffusers attention processor for self-attention that computes the attention probabilities explicitly
    (as ComfyUI's SAG does) and hands them to `record` ([rows * heads, queries, keys], each row's heads
    together) before attending with them."""

    def __init__(self, record: Callable[[torch.Tensor, int], None]) -> None:
        self.record = record  # (probabilities, heads)

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(hidden_states))
        probabilities = attn.get_attention_scores(query, key, None)
        self.record(probabilities, attn.heads)
        attended = attn.batch_to_head_dim(torch.bmm(probabilities, value))
        return _projected_out(attn, attended, hidden_states)
