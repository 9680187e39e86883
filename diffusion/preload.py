"""Importing diffusers' and transformers' model classes takes about 3 s on a small CPU machine, and the nodes
import them only when a model is first loaded, so that start-up stays fast. A server calls
`import_model_libraries` while it waits for its first prompt, so that prompt does not pay for the imports.
"""
from __future__ import annotations


def import_model_libraries() -> None:
    """Import the modules that loading and running a Stable Diffusion checkpoint needs."""
    import diffusers.loaders.single_file_utils  # noqa: F401  (the LDM key converters)
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel  # noqa: F401
    from transformers import CLIPTextModel  # noqa: F401
