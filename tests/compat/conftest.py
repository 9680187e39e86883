"""What the compat tests share: the tiny SD1 checkpoint with two prompts, and a short sampling run on it."""
from __future__ import annotations

from typing import Callable

import pytest
import torch

from diffusion.families.sd.demo import DEMO_CHECKPOINT
from nodes.conditioning import CLIPTextEncode
from nodes.latent import EmptyLatentImage
from nodes.loaders import CheckpointLoaderSimple
from nodes.sampling import common_ksampler


@pytest.fixture
def sd1(node_env):
    """(MODEL, positive, negative) of the tiny SD1 checkpoint: "a red cat" against "blurry"."""
    model, clip, _ = CheckpointLoaderSimple().load_checkpoint(DEMO_CHECKPOINT)
    return model, CLIPTextEncode().encode(clip, "a red cat")[0], CLIPTextEncode().encode(clip, "blurry")[0]


@pytest.fixture
def euler_sampled() -> Callable[..., torch.Tensor]:
    """The latents of two seeded euler steps (64x64) of a MODEL with a positive and a negative conditioning."""
    def sampled(model, positive, negative, cfg: float = 5.0) -> torch.Tensor:
        latent = EmptyLatentImage().generate(64, 64, 1)[0]
        return common_ksampler(model, 3, 2, cfg, "euler", "normal", positive, negative, latent)[0]["samples"]
    return sampled
