"""The execution part of ComfyUI's `ComfyAPI`: progress (and a preview) of the running node, through the engine."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.progress import current_node_context


def _preview_image(preview: Any) -> Any:
    """A PIL image from a PIL image or an IMAGE tensor ([B,H,W,C] or [H,W,C] in 0..1; the first image)."""
    if preview is None or not isinstance(preview, torch.Tensor):
        return preview
    from PIL import Image

    image = preview[0] if preview.ndim == 4 else preview
    return Image.fromarray(np.clip(image.detach().float().cpu().numpy() * 255.0, 0, 255).astype(np.uint8))


def set_progress(value: float, max_value: float, node_id: str | None = None, preview_image: Any = None,
                 ignore_size_limit: bool = False) -> None:
    """Report `value` of `max_value` for the running node (or `node_id`), with an optional preview image; checks
    for an interrupt first. Outside a running node it does nothing, so nodes stay callable from scripts."""
    context = current_node_context()
    if context is None:
        return
    context.interrupt.raise_if_set()
    context.on_progress(str(node_id) if node_id is not None else context.node_id, int(value), int(max_value),
                        _preview_image(preview_image))


class Execution:
    async def set_progress(self, value: float, max_value: float, node_id: str | None = None,
                           preview_image: Any = None, ignore_size_limit: bool = False) -> None:
        set_progress(value, max_value, node_id, preview_image, ignore_size_limit)


class ExecutionSync:
    def set_progress(self, value: float, max_value: float, node_id: str | None = None, preview_image: Any = None,
                     ignore_size_limit: bool = False) -> None:
        set_progress(value, max_value, node_id, preview_image, ignore_size_limit)
