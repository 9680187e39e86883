"""`comfy_extras.nodes_custom_sampler` for plugins: the custom sampling node classes (ours, by ComfyUI's names) and
the NOISE classes packs build themselves (`Noise_RandomNoise(seed)`, `Noise_EmptyNoise()`) to hand to
SamplerCustomAdvanced."""
from __future__ import annotations

from comfy_extras import node_classes
from diffusion.sampling.custom import DisableNoise as Noise_EmptyNoise
from diffusion.sampling.custom import RandomNoise as Noise_RandomNoise

globals().update(node_classes("nodes_custom_sampler"))

__all__ = ["Noise_RandomNoise", "Noise_EmptyNoise", *node_classes("nodes_custom_sampler")]
