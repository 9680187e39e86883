"""Which folders are the unCLIP cascade's: diffusers folders saved from Kandinsky 2.2's prior and decoder pipelines
(each loads with its own node, not as a MODEL/CLIP/VAE triple). Knows nothing of nodes."""
from __future__ import annotations

from pathlib import Path

from diffusion.files import pipeline_class

PRIOR_PIPELINE, DECODER_PIPELINE = "KandinskyV22PriorPipeline", "KandinskyV22Pipeline"


def expect_pipeline(folder: Path, expected: str, input_name: str) -> None:
    """Nothing when `folder` was saved from the `expected` pipeline; a ValueError naming the input otherwise."""
    found = pipeline_class(folder)
    if found != expected:
        raise ValueError(f"{input_name}: {folder.name} holds a {found or 'unknown pipeline'}, not a {expected}")
