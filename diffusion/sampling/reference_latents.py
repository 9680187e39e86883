"""Reference latents: images an edit model sees beside the latents it denoises (FLUX.1 Kontext, and edit models
after it), set on a conditioning by ComfyUI's ReferenceLatent node as the option "reference_latents" (a list of
raw VAE latents [batch or 1, C, h, w]) with an optional "reference_latents_method" (how their positions are
numbered; the family reads it).

Entries whose references differ in count, size or method cannot share a network call (their token sequences
differ), so `call_key` keeps them apart when the guidance batch is grouped into calls. The references travel to the
family's network call per row (`rows`), sliced with the other per-row inputs. Knows nothing of nodes or files.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from diffusion.latent_format import LatentFormat

REFERENCES = "reference_latents"
METHOD = "reference_latents_method"
DEFAULT_METHOD = "offset"  # ComfyUI's default numbering of reference positions


class PerRow(tuple):
    """A network input with one item per row of the guidance batch (not a tensor): sliced by rows as tensors are."""

    def take(self, rows: slice | torch.Tensor) -> PerRow:
        if isinstance(rows, slice):
            return PerRow(self[rows])
        return PerRow(self[int(index)] for index in rows.reshape(-1).tolist())


def call_key(options: Mapping[str, Any]) -> tuple:
    """What entries must share to run in one network call: the method and each reference's size."""
    references = options.get(REFERENCES) or ()
    if not references:
        return ()
    return (options.get(METHOD) or DEFAULT_METHOD, tuple(tuple(reference.shape[1:]) for reference in references))


def rows(entry_options: Sequence[Mapping[str, Any]], batch: int, latent_format: LatentFormat,
         device: torch.device, dtype: torch.dtype, default_method: str = DEFAULT_METHOD) -> PerRow | None:
    """Per row of the guidance batch (entries in order, `batch` rows each): (method, references in the model's
    sampling space, each [C, h, w]); None when no entry has references. A reference of batch 1 serves every row;
    otherwise row b takes the reference's item b (cycled). An entry without a method gets the family's
    `default_method`."""
    if not any(options.get(REFERENCES) for options in entry_options):
        return None
    per_row = []
    for options in entry_options:
        method = options.get(METHOD) or default_method
        references = [latent_format.process_in(reference.float()).to(device, dtype)
                      for reference in options.get(REFERENCES) or ()]
        for row in range(batch):
            per_row.append((method, tuple(reference[row % reference.shape[0]] for reference in references)))
    return PerRow(per_row)


def stacked(references: PerRow) -> tuple[str, list[torch.Tensor]]:
    """One call's references: its method and each reference stacked over the call's rows ([rows, C, h, w]). The
    rows of one call share method and sizes (`call_key`)."""
    method, first = references[0]
    return method, [torch.stack([row[1][index] for row in references]) for index in range(len(first))]
