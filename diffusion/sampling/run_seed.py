"""The seed of the sampling run in progress, for model inputs that ComfyUI derives from it while it prepares the
conditioning (the unCLIP image embedding's noise augmentation draws from the seed minus 10): the samplers set it
around a run (`seeded`), a family's `network_inputs` reads it (`current_seed`). A context variable, so that two
runs in two threads never see each other's. Knows nothing of models, nodes or files.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

_seed: contextvars.ContextVar[int | None] = contextvars.ContextVar("sampling_seed", default=None)


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
