"""ComfyUI's `latent_preview` for plugins: the Latent2RGB previewer and the sampling callback that reports
progress with a preview, over our previews (`diffusion.sampling.preview`: computed only when the server's
websocket asks for the picture).

ComfyUI's TAESD previews are left out: our samplers preview with each family's Latent2RGB factors.
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import torch
from comfy.cli_args import LatentPreviewMethod, args
from PIL import Image

from diffusion.latent_format import LatentFormat as FamilyFormat
from diffusion.sampling.preview import LatentPreview
from engine.progress import ProgressBar

MAX_PREVIEW_RESOLUTION = args.preview_size


def preview_to_image(latent_image: torch.Tensor) -> Image.Image:
    """An [H, W, 3] tensor in -1..1 as an RGB picture."""
    pixels = ((latent_image.detach().float().cpu() + 1.0) / 2.0).clamp(0, 1).mul(255).to(torch.uint8)
    return Image.fromarray(pixels.numpy())


def _first_frame(x0: torch.Tensor) -> torch.Tensor:
    return x0[:, :, 0] if x0.ndim == 5 else x0


class LatentPreviewer(abc.ABC):
    """A previewer: `decode_latent_to_preview(x0)` makes a picture of the first latent of a batch."""

    @abc.abstractmethod
    def decode_latent_to_preview(self, x0: torch.Tensor) -> Image.Image:
        """The picture of the first latent of `x0`."""

    def decode_latent_to_preview_image(self, preview_format: str, x0: torch.Tensor) -> tuple[str, Image.Image, int]:
        return ("JPEG", self.decode_latent_to_preview(x0), MAX_PREVIEW_RESOLUTION)


class Latent2RGBPreviewer(LatentPreviewer):
    """Latent channels mapped linearly to RGB (rows of `latent_rgb_factors`: channels; columns: R, G, B)."""

    def __init__(self, latent_rgb_factors: Sequence[Sequence[float]],
                 latent_rgb_factors_bias: Sequence[float] | None = None) -> None:
        self.latent_format = FamilyFormat(rgb_factors=tuple(tuple(row) for row in latent_rgb_factors),
                                          rgb_bias=tuple(latent_rgb_factors_bias) if latent_rgb_factors_bias else None)

    def preview(self, x0: torch.Tensor) -> LatentPreview:
        """The lazy preview our progress events carry."""
        return LatentPreview(_first_frame(x0), self.latent_format)

    def decode_latent_to_preview(self, x0: torch.Tensor) -> Image.Image:
        return self.preview(x0).to_image()


def _rgb_factors(latent_format: Any) -> tuple[Any, Any]:
    if isinstance(latent_format, FamilyFormat):
        return latent_format.rgb_factors, latent_format.rgb_bias
    return getattr(latent_format, "latent_rgb_factors", None), getattr(latent_format, "latent_rgb_factors_bias", None)


def get_previewer(device: Any, latent_format: Any) -> Latent2RGBPreviewer | None:
    """The previewer of a latent format (ComfyUI's `comfy.latent_formats` classes or a model's own format);
    None when previews are off or the format has no RGB factors."""
    factors, bias = _rgb_factors(latent_format)
    if args.preview_method == LatentPreviewMethod.NoPreviews or factors is None:
        return None
    return Latent2RGBPreviewer(factors, bias)


def prepare_callback(model: Any, steps: int,
                     x0_output_dict: dict[str, torch.Tensor] | None = None) -> Callable[..., None]:
    """A sampling callback `callback(step, x0, x, total_steps)` for a MODEL: reports progress to the running
    node with a preview of the denoised estimate `x0`, and keeps the last `x0` in `x0_output_dict["x0"]`."""
    latent_format = getattr(model, "latent_format", None)
    if latent_format is None:
        raise ValueError(f"latent_preview.prepare_callback: a {type(model).__name__} has no latent format; "
                         "pass a MODEL")
    previewer = get_previewer(None, latent_format)
    bar = ProgressBar(steps)

    def callback(step: int, x0: torch.Tensor, x: torch.Tensor, total_steps: int) -> None:
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0
        bar.update_absolute(step + 1, total_steps, previewer.preview(x0) if previewer is not None else None)

    return callback
