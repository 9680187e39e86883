"""ComfyUI's `comfy_api.input`: the value types nodes receive, for type hints and isinstance checks. VIDEO values
are nodeflow's own (`nodes.video.Video`)."""
from __future__ import annotations

from typing import TypedDict

import torch

from nodes.video import Video as VideoInput

ImageInput = torch.Tensor  # [batch, height, width, channels] in 0..1
MaskInput = torch.Tensor  # [batch, height, width] in 0..1


class AudioInput(TypedDict):
    waveform: torch.Tensor  # [batch, channels, samples]
    sample_rate: int


class LatentInput(TypedDict, total=False):
    samples: torch.Tensor  # [batch, channels, height, width]
    noise_mask: torch.Tensor


__all__ = ["ImageInput", "AudioInput", "MaskInput", "LatentInput", "VideoInput"]
