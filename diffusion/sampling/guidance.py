"""Classifier-free guidance over CONDITIONING: the rows of one step's network calls and how their predictions are
combined (cfg, several weighted entries per side, InstructPix2Pix's three-way image guidance).

Entries of different token lengths share a call when the shorter ones, repeated to the least common multiple of
the lengths, grow by at most `MAX_REPEAT` times (ComfyUI's limit too); otherwise they go through the network in
separate calls. Unbounded repetition made an SD3 prompt of 410 tokens against a 333-token negative 136,530 tokens
long. Knows nothing of nodes, files or model families.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from diffusion.contracts import Conditioning, EmbeddingGroup, GuidanceBatch
from diffusion.sampling import editing, reference_latents

MAX_REPEAT = 4  # the most a sequence may be repeated to share a network call with longer ones


def _entries(conditioning: Conditioning, input_name: str) -> list[tuple[torch.Tensor, float, Mapping[str, Any]]]:
    if not conditioning:
        raise ValueError(f"{input_name}: empty conditioning")
    return [(entry[0], float(entry[1].get("strength", 1.0)) if len(entry) > 1 else 1.0,
             entry[1] if len(entry) > 1 else {}) for entry in conditioning]


def _repeat_factor(lengths: list[int]) -> int:
    return math.lcm(*lengths) // min(lengths)


def _call_groups(entries: list[tuple[torch.Tensor, Mapping[str, Any]]]) -> list[list[torch.Tensor]]:
    """Consecutive entries that can share a network call: token lengths within `MAX_REPEAT`, and the same
    reference latents' sizes (`reference_latents.call_key`)."""
    groups: list[list[torch.Tensor]] = []
    keys: list[tuple] = []
    for tensor, options in entries:
        key = reference_latents.call_key(options)
        if groups and keys[-1] == key and \
                _repeat_factor([t.shape[1] for t in groups[-1]] + [tensor.shape[1]]) <= MAX_REPEAT:
            groups[-1].append(tensor)
        else:
            groups.append([tensor])
            keys.append(key)
    return groups


def _lcm_repeat(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Repeat token sequences to a common length (their least common multiple), as ComfyUI does."""
    common = math.lcm(*[tensor.shape[1] for tensor in tensors])
    return [tensor.repeat(1, common // tensor.shape[1], 1) for tensor in tensors]


def guidance_batch(positive: Conditioning, negative: Conditioning, batch: int, cfg: float,
                   device: torch.device, dtype: torch.dtype, edit: editing.EditInputs | None = None) -> GuidanceBatch:
    positives = _entries(positive, "positive")
    image_cfg = edit.image_cfg if edit is not None else None
    negatives = _entries(negative, "negative") if cfg != 1.0 or image_cfg is not None else []
    unconditionals = negatives if image_cfg is not None else []  # negative text without the image
    groups, start = [], 0
    for tensors in _call_groups([(tensor, options) for tensor, _, options in negatives + positives + unconditionals]):
        rows = [tensor.expand(batch, -1, -1) if tensor.shape[0] == 1 else tensor for tensor in _lcm_repeat(tensors)]
        for row in rows:
            if row.shape[0] != batch:
                raise ValueError(f"conditioning batch {row.shape[0]} does not match the latent batch {batch}")
        embeddings = torch.cat(rows).to(device, dtype)
        groups.append(EmbeddingGroup(start, start + embeddings.shape[0], embeddings))
        start += embeddings.shape[0]
    concat = editing.concat_rows(edit, [options for _, _, options in negatives + positives], len(unconditionals))
    return GuidanceBatch(tuple(groups), [w for _, w, _ in negatives], [w for _, w, _ in positives], bool(negatives),
                         tuple(options for _, _, options in negatives + positives),
                         None if concat is None else concat.to(device, dtype), [w for _, w, _ in unconditionals],
                         image_cfg)


def input_rows(value: Any, rows: slice | torch.Tensor, total: int) -> Any:
    """The rows `rows` (a slice or an index tensor) of every per-row value (a tensor whose first dimension is
    `total`, or a `PerRow`) inside a network input."""
    if isinstance(value, torch.Tensor):
        return value[rows] if value.ndim and value.shape[0] == total else value
    if isinstance(value, reference_latents.PerRow):
        return value.take(rows)
    if isinstance(value, Mapping):
        return {key: input_rows(item, rows, total) for key, item in value.items()}
    return value


def _weighted_mean(predictions: torch.Tensor, weights: list[float], batch: int) -> torch.Tensor:
    groups = predictions.split(batch)
    total = sum(weight * group for weight, group in zip(weights, groups))
    return total / sum(weights)


def guided(noise_pred: torch.Tensor, guidance: GuidanceBatch, batch: int, cfg: float) -> torch.Tensor:
    """The guided prediction from the unguided predictions of every row of the guidance batch."""
    negative_count = len(guidance.negative_weights)
    negative_rows = negative_count * batch
    positive = _weighted_mean(noise_pred[negative_rows:], guidance.positive_weights, batch)
    if not guidance.uses_negative:
        return positive
    negative = _weighted_mean(noise_pred[:negative_rows], guidance.negative_weights, batch)
    if guidance.image_cfg is None:
        return negative + cfg * (positive - negative)
    unconditional_rows = noise_pred[negative_rows + len(guidance.positive_weights) * batch:]
    unconditional = _weighted_mean(unconditional_rows, guidance.unconditional_weights, batch)
    return unconditional + cfg * (positive - negative) + guidance.image_cfg * (negative - unconditional)
