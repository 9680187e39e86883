"""Applying LoRA patches to a shared UNet or text encoder for the duration of one computation, via diffusers/peft.

The cached base module is never changed for good: adapters are injected with diffusers' own loaders, weighted
with `set_adapters`, and removed again (the original layers restored) when the block ends, even on error.
So two MODELs with different LoRA strengths on one cached UNet give two different results, and the base model
stays as it was loaded. Knows nothing of nodes, files or the node environment.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

from nodes.models.components import LoraPatch

UNET = "unet"
TEXT_ENCODER = "text_encoder"


def _component_keys(patch: LoraPatch, component: str) -> int:
    return sum(1 for key in patch.state_dict if key.startswith(component + "."))


def lora_targets(patch: LoraPatch) -> dict[str, int]:
    """How many LoRA tensors a patch has for the UNet and for the text encoder."""
    return {UNET: _component_keys(patch, UNET), TEXT_ENCODER: _component_keys(patch, TEXT_ENCODER)}


def _adapter_layer_count(module: Any, adapter_name: str) -> int:
    """How many layers of `module` carry the LoRA adapter `adapter_name`."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(1 for layer in module.modules()
               if isinstance(layer, BaseTunerLayer) and adapter_name in getattr(layer, "lora_A", {}))


def _inject(module: Any, component: str, patch: LoraPatch, adapter_name: str) -> None:
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    state = dict(patch.state_dict)
    alphas = dict(patch.network_alphas) if patch.network_alphas else None
    if component == UNET:
        StableDiffusionLoraLoaderMixin.load_lora_into_unet(state, alphas, module, adapter_name=adapter_name)
    else:
        StableDiffusionLoraLoaderMixin.load_lora_into_text_encoder(
            state, alphas, module, prefix=TEXT_ENCODER, adapter_name=adapter_name)


def _activate(module: Any, component: str, names: list[str], weights: list[float]) -> None:
    if component == UNET:
        module.set_adapters(names, weights)
    else:
        from diffusers.loaders.lora_base import set_adapters_for_text_encoder

        set_adapters_for_text_encoder(names, module, weights)


def _remove_all(module: Any) -> None:
    from diffusers.utils import recurse_remove_peft_layers

    recurse_remove_peft_layers(module)
    if hasattr(module, "peft_config"):
        del module.peft_config
    if hasattr(module, "_hf_peft_config_loaded"):
        module._hf_peft_config_loaded = None


@contextlib.contextmanager
def lora_applied(module: Any, component: str, patches: Sequence[LoraPatch]) -> Iterator[Any]:
    """Inside the block `module` (a UNet for `component="unet"`, a CLIP text encoder for `"text_encoder"`)
    computes with the patches' LoRAs at their strengths; afterwards its original layers are back."""
    relevant = [patch for patch in patches if _component_keys(patch, component)]
    if not relevant:
        yield module
        return
    names = []
    try:
        for index, patch in enumerate(relevant):
            name = f"lora_{index}"
            try:
                _inject(module, component, patch, name)
            except (ValueError, RuntimeError, KeyError) as error:
                problem = "matches no layers of" if "not found in the base model" in str(error) else "does not fit"
                raise ValueError(f"LoRA {patch.name} {problem} this model's {component}: {error}") from error
            if _adapter_layer_count(module, name) == 0:
                raise ValueError(f"LoRA {patch.name} matches no layers of this model's {component}")
            names.append(name)
        _activate(module, component, names, [patch.strength for patch in relevant])
        yield module
    finally:
        _remove_all(module)
