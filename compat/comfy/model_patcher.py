"""`comfy.model_patcher` for plugins: `ModelPatcher` is our MODEL class, which answers ComfyUI's ModelPatcher
names as far as `diffusion.patcher_api` maps them (clone, model facts, sampler cfg / post-cfg / pre-cfg functions);
for `isinstance` checks and type hints."""
from __future__ import annotations

from diffusion.components import DiffusionModel

ModelPatcher = DiffusionModel

__all__ = ["ModelPatcher"]
