"""LoRA files for the unCLIP decoder: a UNet keyed as Stable Diffusion's LoRAs are (`unet.*`), read by the same
diffusers reader. Knows nothing of nodes or files."""
from __future__ import annotations

from diffusion.families.sd.lora import read_lora

__all__ = ["read_lora"]
