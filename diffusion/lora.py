"""Applying LoRA patches to a shared UNet or text encoder for the duration of one computation, via diffusers/peft.

The cached base module is never changed for good: adapters are injected with diffusers' own loaders, weighted
with `set_adapters`, and removed again (the original layers restored) when the block ends, even on error.
So two MODELs with different LoRA strengths on one cached UNet give two different results, and the base model
stays as it was loaded. Knows nothing of nodes, files or the node environment.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator, Sequence

from diffusion.contracts import LoraPatch

UNET = "unet"
TRANSFORMER = "transformer"  # the denoising network of transformer families (SD3, FLUX)
TEXT_ENCODER = "text_encoder"
TEXT_ENCODER_2 = "text_encoder_2"  # SDXL's and SD3's second CLIP
COMPONENTS = (UNET, TRANSFORMER, TEXT_ENCODER, TEXT_ENCODER_2)


def _component_keys(patch: LoraPatch, component: str) -> int:
    return sum(1 for key in patch.state_dict if key.startswith(component + "."))


def lora_targets(patch: LoraPatch) -> dict[str, int]:
    """How many LoRA tensors a patch has for each component (UNet, transformer, text encoders)."""
    return {component: _component_keys(patch, component) for component in COMPONENTS}


def _adapter_layer_count(module: Any, adapter_name: str) -> int:
    """How many layers of `module` carry the LoRA adapter `adapter_name`."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(1 for layer in module.modules()
               if isinstance(layer, BaseTunerLayer) and adapter_name in getattr(layer, "lora_A", {}))


def _inject(module: Any, component: str, patch: LoraPatch, adapter_name: str) -> None:
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    state = dict(patch.state_dict)
    alphas = dict(patch.network_alphas) if patch.network_alphas else None
    if component.startswith(TEXT_ENCODER):
        with _quiet_load_report():
            StableDiffusionLoraLoaderMixin.load_lora_into_text_encoder(
                state, alphas, module, prefix=component, adapter_name=adapter_name)
    else:  # a diffusers model (UNet or transformer): what diffusers' load_lora_into_unet/_transformer call
        module.load_lora_adapter(state, prefix=component, network_alphas=alphas, adapter_name=adapter_name)


@contextlib.contextmanager
def _quiet_load_report() -> Iterator[None]:
    """transformers 5 logs a "LOAD REPORT" table listing the base weights as missing whenever an adapter is
    loaded into a text encoder (the base weights are in fact kept); it is noise on every prompt encoding."""
    peft_logger = logging.getLogger("transformers.integrations.peft")
    level = peft_logger.level
    peft_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        peft_logger.setLevel(level)


def _activate(module: Any, component: str, names: list[str], weights: list[float]) -> None:
    if not component.startswith(TEXT_ENCODER):
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
