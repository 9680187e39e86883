"""Guidance patches of a MODEL that compute what ComfyUI's nodes of the same names compute, as pre- and post-CFG
patches of the guiders (`diffusion.sampling.guiders`, which describes the hooks they use):

- `CfgNorm`: the guided estimate scaled down, pixel by pixel, to the positive estimate's norm over channels.
- `AdaptiveProjectedGuidance` (APG, Sadat et al. 2024): before guidance, the positive estimate moved so that the
  guidance direction is averaged over steps (momentum), capped in norm and split into its parts parallel and
  orthogonal to the positive estimate, the parallel part weighted by eta.
- `PerturbedAttentionGuidance` (PAG, Ahn et al. 2024): the positive estimate again with the self-attention of a
  UNet's middle block made the identity; the guided estimate moved away from that one.
- `SelfAttentionGuidance` (SAG, Hong et al. 2023): where the negative estimate's middle-block self-attention
  looks most, that estimate blurred, noised back and estimated again; the guided estimate moved away from that.
- `SkipLayerGuidance` (SLG, SD3's and ComfyUI's DiT version): the positive estimate again with some transformer
  blocks skipped, within a span of noise levels; the guided estimate moved away from it, optionally rescaled.

Knows nothing of nodes; the network changes live in `diffusion.sampling.network_changes`.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Mapping

import torch
import torch.nn.functional as F

from diffusion.sampling import network_changes

ROW_DIMS = (-1, -2, -3)  # a latent row's channels, height and width
SAG_THRESHOLD = 1.0  # a key counts as looked at when it gets more than the mean attention (ComfyUI's sag_threshold)
SAG_KERNEL_SIZE = 9
SAG_MIN_SIZE = 4  # latents this small on a side are left alone (no room for the blur's reflection padding)


@dataclass(frozen=True)
class CfgNorm:
    """Post-CFG: the guided estimate times `strength`, scaled per pixel by the ratio of the positive estimate's
    norm over channels to its own (at most 1)."""

    strength: float

    def __call__(self, args: Mapping[str, Any]) -> torch.Tensor:
        guided = args["denoised"]
        positive_norm = torch.norm(args["cond_denoised"], dim=1, keepdim=True)
        guided_norm = torch.norm(guided, dim=1, keepdim=True)
        scale = (positive_norm / (guided_norm + 1e-8)).clamp(min=0.0, max=1.0)
        return guided * scale * self.strength


def projected(vector: torch.Tensor, onto: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The parts of `vector` parallel and orthogonal to `onto`, row by row."""
    direction = onto / torch.linalg.vector_norm(onto, dim=ROW_DIMS, keepdim=True).clamp_min(1e-12)
    parallel = (vector * direction).sum(dim=ROW_DIMS, keepdim=True) * direction
    return parallel, vector - parallel


@dataclass(eq=False)
class AdaptiveProjectedGuidance:
    """Pre-CFG: APG's positive estimate. The guidance direction (positive - negative) becomes a running sum
    decayed by `momentum` (off at 0; restarted with each run and whenever sigma goes up), is scaled down to a norm
    of at most `norm_threshold` per row (off at 0), and its part parallel to the positive estimate is weighted by
    `eta`. The positive estimate becomes negative + that direction + (positive - negative) / cfg, so that guidance
    at scale cfg gives positive + cfg * direction. Each run uses its own copy (`for_run`)."""

    eta: float
    norm_threshold: float
    momentum: float
    running: torch.Tensor | None = field(default=None, init=False)
    last_sigma: float | None = field(default=None, init=False)

    def for_run(self) -> "AdaptiveProjectedGuidance":
        return AdaptiveProjectedGuidance(self.eta, self.norm_threshold, self.momentum)

    def __call__(self, args: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        positive, negative = args["cond_denoised"], args["uncond_denoised"]
        sigma = float(args["sigma"][0])
        if self.last_sigma is not None and sigma > self.last_sigma:
            self.running = None
        self.last_sigma = sigma
        direction = positive - negative
        if self.momentum != 0:
            self.running = direction if self.running is None else self.momentum * self.running + direction
            direction = self.running
        if self.norm_threshold > 0:
            norm = torch.linalg.vector_norm(direction, dim=ROW_DIMS, keepdim=True)
            direction = direction * torch.minimum(torch.ones_like(norm), self.norm_threshold / norm)
        parallel, orthogonal = projected(direction, positive)
        moved = orthogonal + self.eta * parallel
        return (negative + moved) + (positive - negative) / args["cond_scale"], negative


def _middle_attentions(network: Any, node: str) -> list[Any]:
    attentions = network_changes.middle_self_attentions(network)
    if attentions is None:
        raise ValueError(f"model: {node} needs a UNet with self-attention in its middle block")
    return attentions


def identity_middle_attention(network: Any) -> contextlib.AbstractContextManager[None]:
    """PAG's perturbation: every self-attention of the UNet's middle block attends each token to itself."""
    attentions = _middle_attentions(network, "PerturbedAttentionGuidance")
    return network_changes.processors_replaced(attentions, network_changes.IdentitySelfAttention())


@dataclass(frozen=True)
class PerturbedAttentionGuidance:
    """Post-CFG: the guided estimate plus `scale` times (positive estimate - the positive estimated again with
    `identity_middle_attention`); nothing is run at scale 0."""

    scale: float

    def __call__(self, args: Mapping[str, Any]) -> torch.Tensor:
        guided = args["denoised"]
        if self.scale == 0:
            return guided
        perturbed = args["estimate"](args["cond"], args["input"], args["sigma"], identity_middle_attention)
        return guided + (args["cond_denoised"] - perturbed) * self.scale


def gaussian_blurred(image: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """`image` [B, C, H, W] blurred channel by channel with a normalized `kernel_size` square Gaussian kernel of
    standard deviation `sigma` pixels, edges reflected; sigma 0 is the limit of no blur."""
    if sigma == 0:
        return image
    offsets = torch.linspace(-(kernel_size - 1) / 2, (kernel_size - 1) / 2, steps=kernel_size)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights = (weights / weights.sum()).to(image.device, image.dtype)
    channels = image.shape[-3]
    kernel = (weights[:, None] * weights[None, :]).expand(channels, 1, kernel_size, kernel_size)
    padding = kernel_size // 2
    return F.conv2d(F.pad(image, [padding] * 4, mode="reflect"), kernel, groups=channels)


def token_grid(tokens: int, height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of a flattened attention map of `tokens` for latents of height x width: the divisor of
    `tokens` nearest the rows the aspect ratio suggests, searched above before below as ComfyUI does (which stops
    after sqrt(tokens) / 2 tries and fails where this goes on, down to 1 row)."""
    guess = round(math.sqrt(height / width * tokens))
    for offset in range(tokens + 1):
        for rows in (guess + offset, max(1, guess - offset)):
            if tokens % rows == 0:
                return rows, tokens // rows
    raise ValueError(f"no grid for {tokens} tokens")  # unreachable: 1 row divides any count


def attention_blurred(estimate: torch.Tensor, attention_received: torch.Tensor, blur_sigma: float) -> torch.Tensor:
    """SAG's degraded estimate: `estimate` [B, C, H, W] blurred (`gaussian_blurred`) where its self-attention
    map looks most, i.e. at the tokens whose attention received ([B, tokens], summed over queries, heads
    averaged) exceeds `SAG_THRESHOLD`, laid out on the latent grid (nearest) and kept as it is elsewhere."""
    batch, _, height, width = estimate.shape
    rows, columns = token_grid(attention_received.shape[-1], height, width)
    mask = (attention_received > SAG_THRESHOLD).reshape(batch, 1, rows, columns).to(estimate.dtype)
    mask = F.interpolate(mask, (height, width))
    return gaussian_blurred(estimate, SAG_KERNEL_SIZE, blur_sigma) * mask + estimate * (1 - mask)


@dataclass(eq=False)
class SelfAttentionGuidance:
    """Post-CFG: SAG. While the main pass runs (`observing`), the first self-attention of the UNet's middle block
    is computed explicitly and the attention each token received is kept for the negative's rows; afterwards
    the negative estimate is blurred where that attention is high (`attention_blurred`), noised back by the
    input's noise (x - negative estimate), estimated again with the negative conditioning, and the guided
    estimate gets `scale` times (blurred - that estimate). The negative is estimated even at cfg 1. Nothing is run
    at scale 0 or for latents of `SAG_MIN_SIZE` or less on a side. Each run uses its own copy (`for_run`)."""

    scale: float
    blur_sigma: float
    needs_uncond: ClassVar[bool] = True
    attention_received: list[torch.Tensor] = field(default_factory=list, init=False)

    def for_run(self) -> "SelfAttentionGuidance":
        return SelfAttentionGuidance(self.scale, self.blur_sigma)

    @contextlib.contextmanager
    def observing(self, network: Any, uncond_rows: slice) -> Iterator[None]:
        """Around a main pass: record the attention received by every token for the guidance rows
        `uncond_rows` (the network calls go through the rows in order)."""
        self.attention_received = []
        if self.scale == 0:
            yield
            return
        rows_seen = 0

        def record(probabilities: torch.Tensor, heads: int) -> None:
            nonlocal rows_seen
            rows = probabilities.shape[0] // heads
            first, stop = max(uncond_rows.start - rows_seen, 0), min(uncond_rows.stop - rows_seen, rows)
            rows_seen += rows
            if first < stop:
                maps = probabilities.reshape(rows, heads, *probabilities.shape[1:])[first:stop]
                self.attention_received.append(maps.mean(1).sum(1))

        first_attention = _middle_attentions(network, "SelfAttentionGuidance")[:1]
        with network_changes.processors_replaced(first_attention, network_changes.RecordingSelfAttention(record)):
            yield

    def __call__(self, args: Mapping[str, Any]) -> torch.Tensor:
        guided = args["denoised"]
        if self.scale == 0 or min(guided.shape[2:]) <= SAG_MIN_SIZE:
            return guided
        if not self.attention_received:
            raise RuntimeError("SelfAttentionGuidance: no self-attention of the negative was recorded")
        negative, x = args["uncond_denoised"], args["input"]
        degraded = attention_blurred(negative, torch.cat(self.attention_received), self.blur_sigma)
        estimate = args["estimate"](args["uncond"], degraded + x - negative, args["sigma"])
        return guided + (degraded - estimate) * self.scale


@dataclass(frozen=True, eq=False)
class SkipLayerGuidance:
    """Post-CFG: while sigma lies in [sigma_end, sigma_start], the guided estimate plus `scale` times (positive
    estimate - the positive estimated again with the DiT blocks `layers` skipped, {"double": (7, 8, 9), ...}),
    then, with a `rescaling_scale`, scaled towards the positive estimate's spread by that much. Nothing is run
    at scale 0 or outside the span."""

    layers: Mapping[str, tuple[int, ...]]
    scale: float
    sigma_start: float
    sigma_end: float
    rescaling_scale: float = 0.0

    def skipped(self, network: Any) -> contextlib.AbstractContextManager[None]:
        return network_changes.blocks_skipped(network, self.layers)

    def __call__(self, args: Mapping[str, Any]) -> torch.Tensor:
        guided = args["denoised"]
        sigma = float(args["sigma"][0])
        if not (self.scale > 0 and self.sigma_end <= sigma <= self.sigma_start):
            return guided
        positive = args["cond_denoised"]
        skipped = args["estimate"](args["cond"], args["input"], args["sigma"], self.skipped)
        guided = guided + (positive - skipped) * self.scale
        if self.rescaling_scale != 0:
            factor = positive.std() / guided.std()
            guided = guided * (self.rescaling_scale * factor + (1 - self.rescaling_scale))
        return guided
