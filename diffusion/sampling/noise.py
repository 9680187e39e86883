"""Every random draw of ComfyUI-compatible sampling, made the way ComfyUI makes it so that a seed gives the same
latents here as there: the starting noise of a latent batch (`initial_noise`), the fresh noise an ancestral
sampler adds each step (`SeededNoise`), the Brownian-motion increments of the SDE samplers (`BrownianTreeNoise`)
and the separate noise the ddim sampler keeps for inpainting (`inpaint_noise`).

All of it comes from generators seeded on the spot and owned by the caller, never from torch's global generator.
Knows nothing of samplers, models, nodes or files.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def initial_noise(latent: torch.Tensor, seed: int, batch_index: Sequence[int] | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The starting noise of `latent` for `seed`: one draw of the latents' shape from a CPU generator seeded
    with the seed. With `batch_index` (rows picked from a larger batch), rows are drawn one at a time and row k
    gets draw number `batch_index[k]`; that is the whole batch's row when a row holds a multiple of 16 values
    (torch draws normals 16 at a time), as latents do. A `generator` given is seeded and used (afterwards it is
    where ComfyUI's global generator is after its noise, for the random choices of UNet patches)."""
    generator = (generator or torch.Generator("cpu")).manual_seed(seed)
    if batch_index is None:
        return torch.randn(latent.size(), dtype=latent.dtype, layout=latent.layout, generator=generator,
                           device="cpu")
    row_shape = [1, *latent.shape[1:]]
    wanted = set(batch_index)
    rows: dict[int, torch.Tensor] = {}
    for index in range(max(wanted) + 1):
        row = torch.randn(row_shape, dtype=latent.dtype, layout=latent.layout, generator=generator, device="cpu")
        if index in wanted:
            rows[index] = row
    return torch.cat([rows[index] for index in batch_index], dim=0)


def inpaint_noise(like: torch.Tensor, seed: int) -> torch.Tensor:
    """The noise ComfyUI's ddim sampler re-noises the kept (unmasked) area with when inpainting, instead of the
    starting noise: a float32 CPU draw from a generator seeded with `seed + 1`."""
    generator = torch.Generator("cpu").manual_seed(seed + 1)
    return torch.randn(like.shape, generator=generator, device="cpu").to(like.dtype).to(like.device)


class SeededNoise:
    """The per-step noise of ancestral samplers: a generator on the latents' device seeded once with the seed,
    one standard-normal draw of the latents' shape per call, whatever the sigmas."""

    def __init__(self, like: torch.Tensor, seed: int):
        self._shape = like.size()
        self._dtype, self._layout, self._device = like.dtype, like.layout, like.device
        self._generator = torch.Generator(device=like.device).manual_seed(seed)

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return torch.randn(self._shape, dtype=self._dtype, layout=self._layout, device=self._device,
                           generator=self._generator)


def _ascending(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(low, high, +1) when a < b, else (b, a, -1)."""
    return (a, b, 1) if a < b else (b, a, -1)


class BrownianTreeNoise:
    """The noise of the SDE samplers: increments of one Brownian motion over [sigma_min, sigma_max]
    (a torchsde `BrownianTree` with the seed as its entropy), normalised to unit variance. The path is fixed by
    the seed alone, so noise between two sigmas is the same whatever other sigmas are asked for and in any
    order; steps that split an interval see consistent halves.

    `cpu_tree` builds the tree on the CPU and asks it with float32 times (ComfyUI's plain SDE samplers); without
    it the tree lives on the latents' device and is asked at the sigmas' own precision (the `_gpu` samplers). On
    a CPU with float32 sigmas the two are the same numbers; on a GPU they differ, as the generators do."""

    def __init__(self, like: torch.Tensor, sigma_min: torch.Tensor | float, sigma_max: torch.Tensor | float,
                 seed: int, cpu_tree: bool = True):
        import torchsde  # only the SDE samplers need it, and it is slow to import

        start, end, self._orientation = _ascending(torch.as_tensor(sigma_min), torch.as_tensor(sigma_max))
        origin = torch.zeros_like(like)
        if cpu_tree:
            start, origin, end = start.detach().cpu(), origin.detach().cpu(), end.detach().cpu()
        self._cpu_tree = cpu_tree
        self._tree = torchsde.BrownianTree(start, origin, end, entropy=seed)

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        start, end = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        return self._increment(start, end) / (end - start).abs().sqrt()

    def _increment(self, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        """W(end) - W(start), in the dtype and on the device of the sigmas asked with."""
        low, high, direction = _ascending(start, end)
        device, dtype = low.device, low.dtype
        if self._cpu_tree:
            low, high = low.detach().cpu().float(), high.detach().cpu().float()
        return self._tree(low, high).to(device=device, dtype=dtype) * (self._orientation * direction)
