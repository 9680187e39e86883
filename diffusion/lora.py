"""Applying LoRA patches to a shared UNet or text encoder for the duration of one computation, via diffusers/peft.

The cached base module is never changed for good: adapters are injected with diffusers' own loaders, weighted
with `set_adapters`, and removed again (the original layers restored) when the block ends, even on error.
So two MODELs with different LoRA strengths on one cached UNet give two different results, and the base model
stays as it was loaded. Knows nothing of nodes, files or the node environment.

A patch's state dict may also hold deferred keys (`diffusion.lora_formats`): whole weight and bias differences
and low-rank pairs named by the model's own layer names. They are resolved against the module's layers when the
LoRA is applied: the pairs join the peft adapter, and the differences are added to the weights they belong to for
the block (`W + strength * diff`, computed in float32; each parameter gets a new tensor, and its original tensor
is put back afterwards, so the base weights are never written to).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from diffusion.contracts import LoraPatch
from diffusion.lora_formats import DIFF, LORA_DOWN, LORA_UP, deferred_kind

UNET = "unet"
TRANSFORMER = "transformer"  # the denoising network of transformer families (SD3, FLUX)
TEXT_ENCODER = "text_encoder"
TEXT_ENCODER_2 = "text_encoder_2"  # SDXL's and SD3's second CLIP
COMPONENTS = (UNET, TRANSFORMER, TEXT_ENCODER, TEXT_ENCODER_2)

logger = logging.getLogger(__name__)


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


def _inject(module: Any, component: str, patch: LoraPatch, state: dict[str, Any], adapter_name: str) -> None:
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    alphas = dict(patch.network_alphas) if patch.network_alphas else None
    if component.startswith(TEXT_ENCODER):
        with _quiet_load_report():
            StableDiffusionLoraLoaderMixin.load_lora_into_text_encoder(
                state, alphas, module, prefix=component, adapter_name=adapter_name)
    else:  # a diffusers model (UNet or transformer): what diffusers' load_lora_into_unet/_transformer call
        module.load_lora_adapter(state, prefix=component, network_alphas=alphas, adapter_name=adapter_name)
        _lora_in_compute_dtype(module, component, state, adapter_name)


def _lora_in_compute_dtype(module: Any, component: str, state: dict[str, Any], adapter_name: str) -> None:
    """A model whose weights are stored in fp8 (UNETLoader's weight_dtype, diffusers' layerwise casting) gets LoRA
    layers in fp8 from peft, which cannot compute in it: they are made in the model's compute precision and given
    the LoRA's values again, unrounded."""
    from peft import set_peft_model_state_dict

    compute = module.dtype
    adapters = [parameter for name, parameter in module.named_parameters() if f".{adapter_name}." in name]
    if all(parameter.dtype == compute for parameter in adapters):
        return
    for parameter in adapters:
        parameter.data = parameter.data.to(compute)
    values = {key.removeprefix(f"{component}."): value.to(compute) for key, value in state.items()
              if key.startswith(f"{component}.")}
    set_peft_model_state_dict(module, values, adapter_name=adapter_name)


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


def ldm_layer_names(module: Any) -> dict[str, str]:
    """LDM layer name -> diffusers layer name of a diffusers UNet (`input_blocks.1.1.proj_in` ->
    `down_blocks.0.attentions.0.proj_in`), as our LDM checkpoint writer names them; {} for another module."""
    from diffusion.families.ldm_export import UNET_PREFIX, unet_to_ldm

    config = getattr(module, "config", None)
    if config is None or "layers_per_block" not in config:
        return {}
    names = {}
    for key in module.state_dict():
        try:
            (ldm_key,) = unet_to_ldm({key: torch.empty(0)}, config)
        except KeyError:  # a layer LDM files do not have under a name we know (SDXL's add_embedding)
            continue
        names[ldm_key.removeprefix(UNET_PREFIX).rpartition(".")[0]] = key.rpartition(".")[0]
    return names


def _layer_aliases(module: Any, component: str) -> dict[str, str]:
    """Every name a LoRA file may give one of the module's layers -> the layer's name: its own, kohya's (dots as
    underscores), CLIP's with and without `text_model.` (transformers versions differ), a UNet's LDM name."""
    aliases: dict[str, str] = {}

    def add(alias: str, name: str) -> None:
        aliases.setdefault(alias, name)
        aliases.setdefault(alias.replace(".", "_"), name)

    for name, _ in module.named_modules():
        if name:
            add(name, name)
            if component.startswith(TEXT_ENCODER):
                add(name.removeprefix("text_model.") if name.startswith("text_model.") else "text_model." + name,
                    name)
    if component == UNET:
        for ldm_name, name in ldm_layer_names(module).items():
            add(ldm_name, name)
    return aliases


def _conv_shaped(tensor: torch.Tensor, layer: Any) -> torch.Tensor:
    """A factor shaped for its layer: flat for a linear layer, [.., .., 1, 1] for a 1x1 convolution."""
    if isinstance(layer, torch.nn.Linear):
        return tensor.flatten(1)
    return tensor.reshape(*tensor.shape[:2], 1, 1) if tensor.ndim == 2 else tensor


@dataclass
class _Resolved:
    """A patch's tensors for one module: peft keys to inject (its deferred pairs resolved), the whole differences
    to add (parameter, difference), and the deferred keys that name no layer of the module."""

    peft: dict[str, torch.Tensor]
    differences: list[tuple[torch.nn.Parameter, torch.Tensor]]
    unmatched: list[str]


def _resolve(module: Any, component: str, patch: LoraPatch) -> _Resolved:
    own = {key: tensor for key, tensor in patch.state_dict.items() if key.startswith(component + ".")}
    deferred = {key: tensor for key, tensor in own.items() if deferred_kind(key)}
    resolved = _Resolved({key: tensor for key, tensor in own.items() if key not in deferred}, [], [])
    if not deferred:
        return resolved
    aliases, layers = _layer_aliases(module, component), dict(module.named_modules())
    for key, tensor in deferred.items():
        written, _, kind = key[len(component) + 1:].rpartition(".")
        name = aliases.get(written)
        if name is None:
            resolved.unmatched.append(key)
        elif kind in (LORA_DOWN, LORA_UP):
            factor = "lora_A" if kind == LORA_DOWN else "lora_B"
            resolved.peft[f"{component}.{name}.{factor}.weight"] = _conv_shaped(tensor, layers[name])
        else:
            what = "weight" if kind == DIFF else "bias"
            parameter = getattr(layers[name], what, None)
            if not isinstance(parameter, torch.nn.Parameter):
                raise ValueError(f"{key}: layer {name} has no {what}")
            if tuple(tensor.shape) != tuple(parameter.shape):
                raise ValueError(f"{key}: a {tuple(tensor.shape)} difference for the {tuple(parameter.shape)} "
                                 f"{what} of {name}")
            resolved.differences.append((parameter, tensor))
    return resolved


@contextlib.contextmanager
def _differences_added(differences: Sequence[tuple[torch.nn.Parameter, torch.Tensor, float]]) -> Iterator[None]:
    """Each parameter computes with its weight plus strength * difference (summed over patches) for the block."""
    totals: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = {}
    for parameter, difference, strength in differences:
        previous = totals.get(id(parameter), (parameter, torch.zeros(parameter.shape, device=parameter.device)))[1]
        totals[id(parameter)] = (parameter, previous + strength * difference.to(parameter.device, torch.float32))
    originals = []
    try:
        with torch.no_grad():
            for parameter, total in totals.values():
                originals.append((parameter, parameter.data))
                parameter.data = (parameter.data.float() + total).to(parameter.dtype)
        yield
    finally:
        for parameter, original in originals:
            parameter.data = original


@contextlib.contextmanager
def lora_applied(module: Any, component: str, patches: Sequence[LoraPatch]) -> Iterator[Any]:
    """Inside the block `module` (a UNet for `component="unet"`, a CLIP text encoder for `"text_encoder"`)
    computes with the patches' LoRAs at their strengths; afterwards its original layers and weights are back."""
    relevant = [patch for patch in patches if _component_keys(patch, component)]
    if not relevant:
        yield module
        return
    resolved = []
    for patch in relevant:
        try:
            found = _resolve(module, component, patch)
        except ValueError as error:
            raise ValueError(f"LoRA {patch.name} does not fit this model's {component}: {error}") from error
        if not found.peft and not found.differences:
            raise ValueError(f"LoRA {patch.name} matches no layers of this model's {component}")
        if found.unmatched:
            logger.warning("LoRA %s: %d tensors match no layer of this model's %s (%s, ...)", patch.name,
                           len(found.unmatched), component, found.unmatched[0])
        resolved.append((patch, found))
    differences = [(parameter, difference, patch.strength) for patch, found in resolved
                   for parameter, difference in found.differences]
    injects = any(found.peft for _, found in resolved)
    names = []
    with _differences_added(differences):
        try:
            for patch, found in resolved:
                if not found.peft:
                    continue
                name = f"lora_{len(names)}"
                try:
                    _inject(module, component, patch, found.peft, name)
                except (ValueError, RuntimeError, KeyError) as error:
                    problem = "matches no layers of" if "not found in the base model" in str(error) else "does not fit"
                    raise ValueError(f"LoRA {patch.name} {problem} this model's {component}: {error}") from error
                if _adapter_layer_count(module, name) == 0:
                    raise ValueError(f"LoRA {patch.name} matches no layers of this model's {component}")
                names.append((name, patch.strength))
            if names:
                _activate(module, component, [name for name, _ in names], [strength for _, strength in names])
            yield module
        finally:
            if injects:
                _remove_all(module)
