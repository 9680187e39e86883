"""The seed and the sigmas of the sampling run in progress, and which guidance rows the current network call
computes, for what ComfyUI derives from them inside a run: model inputs made while the conditioning is prepared
(the unCLIP image embedding's noise augmentation draws from the seed minus 10) and what node packs' guiders, model
wrappers and attention patches read (ComfyUI's `seed` argument, its `transformer_options["sample_sigmas"]` and
`["cond_or_uncond"]`). The samplers set them around a run (`seeded`, `sigmas_of_run`), the guidance around each
network call (`network_call`); readers call `current_seed`, `current_sigmas` and `current_cond_or_uncond`.
Context variables, so that two runs in two threads never see each other's. Knows nothing of models, nodes or
files.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch

_seed: contextvars.ContextVar[int | None] = contextvars.ContextVar("sampling_seed", default=None)
_sigmas: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar("sampling_sigmas", default=None)
_cond_or_uncond: contextvars.ContextVar[tuple[int, ...]] = contextvars.ContextVar("cond_or_uncond", default=())


def current_seed(default: int = 0) -> int:
    """The seed of the run in progress; `default` outside one (ComfyUI's when a sampler passes none)."""
    seed = _seed.get()
    return default if seed is None else seed


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """`seed` is the run's seed while the block runs."""
    token = _seed.set(int(seed))
    try:
        yield
    finally:
        _seed.reset(token)


def current_sigmas() -> torch.Tensor | None:
    """The whole schedule of the run in progress (its first to its last sigma); None outside a run."""
    return _sigmas.get()


@contextlib.contextmanager
def sigmas_of_run(sigmas: torch.Tensor) -> Iterator[None]:
    """`sigmas` are the run's schedule while the block runs."""
    token = _sigmas.set(sigmas)
    try:
        yield
    finally:
        _sigmas.reset(token)


def current_cond_or_uncond() -> tuple[int, ...]:
    """For each chunk of the current network call's rows, which conditioning it is (ComfyUI's numbering: 0 the
    positive, 1 the negative, then further conditionings in order); empty outside a call."""
    return _cond_or_uncond.get()


@contextlib.contextmanager
def network_call(cond_or_uncond: tuple[int, ...]) -> Iterator[None]:
    """The rows of the network call the block makes are the chunks `cond_or_uncond`."""
    token = _cond_or_uncond.set(tuple(cond_or_uncond))
    try:
        yield
    finally:
        _cond_or_uncond.reset(token)
