"""`comfy.cli_args` for plugins: ComfyUI's `args` namespace, answered from this server's real settings (the
current node environment's folders, device and dtype), and `LatentPreviewMethod`.

Only the attributes we can answer truthfully exist; ComfyUI flags of features we do not have (listen address and
port, VRAM modes, attention backends) are left out, so a plugin reading one fails with an AttributeError naming it.
"""
from __future__ import annotations

import enum
import logging

import torch

from nodes.environment import current_environment


class LatentPreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


class Args:
    """What plugins read of ComfyUI's command line, computed on access so it follows the running environment."""

    base_directory = None
    preview_method = LatentPreviewMethod.Latent2RGB  # our samplers' previews: the family's Latent2RGB factors
    preview_size = 512  # the websocket's preview frames are at most 512 pixels a side
    default_hashing_function = "sha256"  # ComfyUI's default; we have no flag to change it
    disable_metadata = False  # SaveImage always writes the prompt and workflow into its files

    @property
    def cpu(self) -> bool:
        return current_environment().device.type == "cpu"

    @property
    def force_fp32(self) -> bool:
        return current_environment().dtype == torch.float32

    @property
    def force_fp16(self) -> bool:
        return current_environment().dtype == torch.float16

    @property
    def bf16_unet(self) -> bool:
        return current_environment().dtype == torch.bfloat16

    @property
    def fp16_unet(self) -> bool:
        return current_environment().dtype == torch.float16

    @property
    def output_directory(self) -> str:
        return str(current_environment().folders.output_dir)

    @property
    def input_directory(self) -> str:
        return str(current_environment().folders.input_dir)

    @property
    def temp_directory(self) -> str:
        return str(current_environment().folders.temp_dir)

    @property
    def user_directory(self) -> str:
        return str(current_environment().folders.user_dir)

    @property
    def verbose(self) -> str:
        return logging.getLevelName(logging.getLogger().getEffectiveLevel())


args = Args()
