"""ComfyUI's `node_helpers` for plugins: conditioning option edits, tolerant Pillow calls, the file hasher, dtype
names and alpha-channel matching, over our conditioning and image helpers."""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from comfy.cli_args import args
from PIL import ImageFile, UnidentifiedImageError

from nodes.conditioning_ops import with_options
from nodes.environment import dtype_from_name
from nodes.image_ops import pad_channels

HASHERS = {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


def conditioning_set_values(conditioning: list, values: Mapping[str, Any] | None = None,
                            append: bool = False) -> list:
    """A copy of `conditioning` with `values` set in every entry's options; with `append`, a value is added to
    (`old + new`) the entry's existing one where it has one."""
    values = values or {}
    result = []
    for entry in conditioning:
        options = entry[1] if len(entry) > 1 else {}
        own = {key: options[key] + value if append and options.get(key) is not None else value
               for key, value in values.items()}
        result.extend(with_options([entry], own))
    return result


def pillow(fn: Callable[[Any], Any], arg: Any) -> Any:
    """`fn(arg)`, retried once with truncated images allowed when Pillow cannot read the file whole."""
    try:
        return fn(arg)
    except (OSError, UnidentifiedImageError, ValueError):
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            return fn(arg)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def hasher() -> Callable[..., Any]:
    """The hashlib constructor of `args.default_hashing_function`."""
    return HASHERS[args.default_hashing_function]


def string_to_torch_dtype(string: str) -> torch.dtype | None:
    """fp32, fp16 or bf16 as a torch dtype; None for any other name, as in ComfyUI."""
    try:
        return dtype_from_name(string)
    except ValueError:
        return None


def image_alpha_fix(destination: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Match channel counts for compositing [..., C] images: a source with more channels than the destination
    loses the extra ones; a destination with fewer gains an opaque alpha channel."""
    if destination.shape[-1] < source.shape[-1]:
        source = source[..., :destination.shape[-1]]
    elif destination.shape[-1] > source.shape[-1]:
        destination = pad_channels(destination, destination.shape[-1] + 1)
    return destination, source
