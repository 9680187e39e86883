"""The Canny edge detector of ComfyUI's Canny node (kornia's `canny` as of kornia 0.9, which a ComfyUI install
gets, written again in plain torch): greyscale, a 5x5 Gaussian blur (sigma 1, reflected borders), Sobel gradients
(replicated borders, not normalised), the gradient direction rounded to 45 degrees, non-maximum suppression along
it (as OpenCV: strictly larger than the left/upper neighbour, at least as large as the right/lower one, strictly
larger than both along diagonals; beyond the border the magnitude of a flat pixel), the two thresholds, then
hysteresis: weak edges touching a strong one become strong, repeated until nothing changes, and the weak ones left
over dropped. Knows nothing of nodes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BLUR_SIZE, BLUR_SIGMA = 5, 1.0
EPS = 1e-6  # kornia's: keeps the magnitude's square root differentiable at 0
GREY = (0.299, 0.587, 0.114)
# the eight neighbours (row, column offset) in the order of the gradient directions 0, 45, ..., 315 degrees
NEIGHBOURS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))


def _gaussian(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    kernel = torch.exp(-x.pow(2) / (2 * sigma ** 2))
    return kernel / kernel.sum()


def _blur(images: torch.Tensor) -> torch.Tensor:
    """A separable Gaussian blur of [B, 1, H, W] with reflected borders."""
    kernel = _gaussian(BLUR_SIZE, BLUR_SIGMA).to(images)
    pad = BLUR_SIZE // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(rows, kernel.view(1, 1, -1, 1))


def _sobel(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    kernel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).to(images)
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, kernel_x.view(1, 1, 3, 3))
    gy = F.conv2d(padded, kernel_x.t().contiguous().view(1, 1, 3, 3))
    return gx, gy


def _neighbours(padded: torch.Tensor) -> torch.Tensor:
    """[B, 8, H, W]: each pixel's eight neighbours in `NEIGHBOURS` order, from values padded by one pixel."""
    height, width = padded.shape[-2] - 2, padded.shape[-1] - 2
    return torch.cat([padded[..., 1 + dy:1 + dy + height, 1 + dx:1 + dx + width] for dy, dx in NEIGHBOURS], dim=1)


def _beats(magnitude: torch.Tensor, neighbour: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Whether a pixel survives the comparison with one neighbour: ties count only towards the right and down."""
    accepts_tie = (direction == 0) | (direction == 2)
    return (magnitude > neighbour) | (accepts_tie & (magnitude == neighbour))


def canny(images: torch.Tensor, low_threshold: float, high_threshold: float) -> torch.Tensor:
    """Edges of [B, C, H, W] images (RGB: turned grey first; one channel as it is) as [B, 1, H, W] of 0 and 1."""
    if images.shape[1] == 3:
        red, green, blue = images.unbind(dim=1)
        grey = torch.addcmul(torch.addcmul(red * GREY[0], green, torch.tensor(GREY[1]).to(images)), blue,
                             torch.tensor(GREY[2]).to(images))
        images = grey.unsqueeze(1)
    gx, gy = _sobel(_blur(images))
    gx_padded, gy_padded = F.pad(gx, (1, 1, 1, 1)), F.pad(gy, (1, 1, 1, 1))
    padded = torch.sqrt(gx_padded * gx_padded + gy_padded * gy_padded + EPS)  # flat beyond the border
    magnitude = padded[..., 1:-1, 1:-1]
    direction = torch.round(torch.nan_to_num(torch.atan2(gy, gx)) * (4 / math.pi))
    forward, backward = (direction % 8).long(), ((direction + 4) % 8).long()
    neighbours = _neighbours(padded)
    is_max = (_beats(magnitude, neighbours.gather(1, forward), forward)
              & _beats(magnitude, neighbours.gather(1, backward), backward)
              & (magnitude > padded[..., :1, :1]))
    magnitude = magnitude * is_max
    edges = ((magnitude > low_threshold).to(images.dtype) + (magnitude > high_threshold).to(images.dtype)) * 0.5
    while True:
        weak, strong = (edges == 0.5).to(edges.dtype), (edges == 1).to(edges.dtype)
        touching = (_neighbours(F.pad(edges, (1, 1, 1, 1))) == 1).any(dim=1, keepdim=True).to(edges.dtype)
        grown = touching * weak + strong
        updated = grown + (grown == 0) * weak * 0.5
        if torch.equal(updated, edges):
            return (updated == 1).to(edges.dtype)
        edges = updated
