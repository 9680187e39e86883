"""More guidance patches of a MODEL, computing what ComfyUI's nodes of the same names compute, as pre- and post-CFG
patches of the guiders (`diffusion.sampling.guiders` describes the hooks):

- `TangentialDamping` (TCFG, Kwon et al. 2025, arXiv 2503.18137): before guidance, the negative's noise keeps only
  its part along the first right-singular vector of the [negative noise, positive noise] pair.
- `FrequencyScaledGuidance` (FreSca, Huang et al. 2025): before guidance, the guidance direction scaled by one
  factor at low spatial frequencies and another at high ones.
- `MahiroGuidance` (ComfyUI's Mahiro): after guidance, the guided estimate mixed with the positive estimate times
  the scale, by how alike the (square-rooted) negative and the merged leap are.
- `RenormalizedCfg` (Lumina 2's RenormCFG): classifier-free guidance whose result is scaled down to at most
  `renorm_cfg` times the positive estimate's norm, below a noise level (it replaces the cfg function).
- `PerpNegCfg` (the deprecated PerpNeg node): Perp-Neg guidance against an empty conditioning estimated on every
  step, replacing the cfg function.
- `SkipLayerNegative` (SkipLayerGuidanceDiTSimple): the negative estimated with some DiT blocks skipped.

A pre-CFG patch leaves the estimates alone when the negative was not computed (cfg 1: ComfyUI passes it as None;
here it arrives as zeros, the value ComfyUI's skipped estimate has). Knows nothing of nodes.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F

from diffusion.contracts import Conditioning
from diffusion.sampling import network_changes
from diffusion.sampling.guiders import perp_neg


def _skipped_negative(negative: torch.Tensor) -> bool:
    """Whether a pre-CFG patch's negative estimate is the zeros of a negative that was not computed."""
    return not bool(torch.any(negative))


def tangentially_damped(positive_noise: torch.Tensor, negative_noise: torch.Tensor) -> torch.Tensor:
    """TCFG's negative noise: per batch row, its projection onto the first right-singular vector of the 2 x N
    matrix [negative noise; positive noise] (the direction the two share most), computed in float32."""
    rows = positive_noise.shape[0]
    positive_flat = positive_noise.reshape(rows, 1, -1).float()
    negative_flat = negative_noise.reshape(rows, 1, -1).float()
    _, _, right = torch.linalg.svd(torch.cat((negative_flat, positive_flat), dim=1), full_matrices=False)
    direction = right[:, :1, :]
    damped = (negative_flat @ direction.transpose(-2, -1)) * direction
    return damped.reshape_as(negative_noise).to(negative_noise.dtype)


@dataclass(frozen=True)
class TangentialDamping:
    """Pre-CFG: TCFG. The negative estimate becomes x - `tangentially_damped`(x - positive, x - negative)."""

    def __call__(self, args: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        positive, negative, x = args["cond_denoised"], args["uncond_denoised"], args["input"]
        if _skipped_negative(negative):
            return positive, negative
        return positive, x - tangentially_damped(x - positive, x - negative)


def frequency_scaled(x: torch.Tensor, scale_low: float, scale_high: float, freq_cutoff: int) -> torch.Tensor:
    """`x` [B, C, H, W] with its 2-D spectrum (centred) multiplied by `scale_low` within `freq_cutoff` indices of
    the centre on both axes (at most half the size) and by `scale_high` elsewhere; computed in float32, returned
    in `x`'s dtype."""
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    scales = torch.full(spectrum.shape, float(scale_high), device=x.device)
    low = scales
    for dim in range(2, spectrum.ndim):
        centre = spectrum.shape[dim] // 2
        reach = min(freq_cutoff, centre)
        low = low.narrow(dim, centre - reach, reach * 2)
    low.fill_(float(scale_low))
    spectrum = torch.fft.ifftshift(spectrum * scales, dim=(-2, -1))
    return torch.fft.ifftn(spectrum, dim=(-2, -1)).real.to(x.dtype)


@dataclass(frozen=True)
class FrequencyScaledGuidance:
    """Pre-CFG: FreSca. The positive estimate becomes negative + `frequency_scaled`(positive - negative)."""

    scale_low: float
    scale_high: float
    freq_cutoff: int

    def __call__(self, args: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        positive, negative = args["cond_denoised"], args["uncond_denoised"]
        if _skipped_negative(negative):
            return positive, negative
        guidance = frequency_scaled(positive - negative, self.scale_low, self.scale_high, self.freq_cutoff)
        return guidance + negative, negative


def _signed_sqrt(x: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x.abs()) * x.sign()


@dataclass(frozen=True)
class MahiroGuidance:
    """Post-CFG: Mahiro. With leap = positive * scale and merge = (leap + guided) / 2, the similarity s is the
    mean cosine similarity over channels of the signed square roots of negative * scale and of merge; the result
    is (2 (s + 1) guided + (4 - 2 (s + 1)) leap) / 4: the guided estimate where they agree, the leap where they
    oppose."""

    def __call__(self, args: Mapping[str, Any]) -> torch.Tensor:
        scale, guided = args["cond_scale"], args["denoised"]
        leap = args["cond_denoised"] * scale
        negative_leap = args["uncond_denoised"] * scale
        merge = (leap + guided) / 2
        similarity = F.cosine_similarity(_signed_sqrt(negative_leap), _signed_sqrt(merge)).mean()
        weight = 2 * (similarity + 1)
        return (weight * guided + (4 - weight) * leap) / 4


@dataclass(frozen=True)
class RenormalizedCfg:
    """Lumina 2's RenormCFG, replacing the cfg function (`replaces_cfg`): while sigma is below `cfg_trunc`,
    classifier-free guidance whose result, per batch row, is scaled down to `renorm_cfg` times the positive
    estimate's norm when it is longer (no limit at `renorm_cfg` 0); from `cfg_trunc` up, the positive estimate
    alone. (ComfyUI guides only the network's input channels and keeps the positive for any further output
    channels; the estimates here have the latent channels only, all of them input channels.)"""

    cfg_trunc: float
    renorm_cfg: float
    replaces_cfg: ClassVar[bool] = True

    def __call__(self, args: Mapping[str, Any]) -> torch.Tensor:
        positive, negative = args["cond_denoised"], args["uncond_denoised"]
        if not float(args["sigma"].reshape(-1)[0]) < self.cfg_trunc:
            return positive
        guided = negative + args["cond_scale"] * (positive - negative)
        if self.renorm_cfg <= 0:
            return guided
        dims = tuple(range(1, positive.ndim))
        largest = torch.linalg.vector_norm(positive, dim=dims, keepdim=True) * self.renorm_cfg
        norm = torch.linalg.vector_norm(guided, dim=dims, keepdim=True)
        return torch.where(norm >= largest, guided * (largest / norm), guided)


@dataclass(frozen=True, eq=False)
class PerpNegCfg:
    """The deprecated PerpNeg node's cfg function (`replaces_cfg`): `empty_conditioning` estimated on every call
    and Perp-Neg guidance (`diffusion.sampling.guiders.perp_neg`) of the positive and negative estimates against
    it, with the guidance scale and `neg_scale`."""

    empty_conditioning: Conditioning
    neg_scale: float
    replaces_cfg: ClassVar[bool] = True

    def __call__(self, args: Mapping[str, Any]) -> torch.Tensor:
        empty = args["estimate"](self.empty_conditioning, args["input"], args["sigma"])
        return perp_neg(args["cond_denoised"], args["uncond_denoised"], empty, self.neg_scale, args["cond_scale"])


@dataclass(frozen=True, eq=False)
class SkipLayerNegative:
    """Post-CFG: SkipLayerGuidanceDiTSimple. While sigma lies in [sigma_end, sigma_start] and the negative was
    computed, the negative is estimated again with the DiT blocks `layers` skipped ({"double": (7, 8, 9), ...})
    and the guided estimate becomes the one classifier-free guidance gives with it: guided + (1 - scale) *
    (skipped - negative). (ComfyUI swaps the negative's network call itself; here the guiders' hooks see the
    estimates after the main pass, so the negative is estimated once more, and other patches still see the
    negative with every block.)"""

    layers: Mapping[str, tuple[int, ...]]
    sigma_start: float
    sigma_end: float

    def skipped(self, network: Any) -> contextlib.AbstractContextManager[None]:
        return network_changes.blocks_skipped(network, self.layers)

    def __call__(self, args: Mapping[str, Any]) -> torch.Tensor:
        guided = args["denoised"]
        sigma = float(args["sigma"][0])
        if args["uncond"] is None or not self.sigma_end <= sigma <= self.sigma_start:
            return guided
        skipped = args["estimate"](args["uncond"], args["input"], args["sigma"], self.skipped)
        return guided + (1 - args["cond_scale"]) * (skipped - args["uncond_denoised"])
