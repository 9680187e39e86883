"""LoRA files for SDXL: keyed as Stable Diffusion's are (kohya `lora_unet_*`, `lora_te1_*`/`lora_te2_*`, or
diffusers/peft), read by the same diffusers reader. Knows nothing of nodes or files."""
from __future__ import annotations

from diffusion.families.sd.lora import read_lora

__all__ = ["read_lora"]
