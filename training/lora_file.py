"""Writing trained LoRA adapters as kohya-layout safetensors files, atomically, with training metadata.

Keys are kohya's (`lora_unet_<module>.lora_down.weight`, `.lora_up.weight`, `.alpha`; `lora_te_text_model_...`
for the text encoder), which ComfyUI, A1111, diffusers' `load_lora_weights` and our `LoraLoader` all read.
A file is written under a hidden temporary name in the same folder and renamed into place, so a crash or an
interrupt never leaves a half-written LoRA where loaders look. Knows nothing of nodes or training loops.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

UNET_PREFIX = "lora_unet"
TEXT_ENCODER_PREFIX = "lora_te"


def kohya_module_name(prefix: str, module_name: str) -> str:
    if prefix == TEXT_ENCODER_PREFIX and not module_name.startswith("text_model."):
        module_name = "text_model." + module_name  # transformers 5 flattens CLIPTextModel's module names
    return f"{prefix}_{module_name.replace('.', '_')}"


def lora_layers(module: Any) -> Iterator[tuple[str, Any]]:
    """(module name, peft LoRA layer) for every layer of `module` carrying the "default" adapter."""
    from peft.tuners.lora import LoraLayer

    for name, layer in module.named_modules():
        if isinstance(layer, LoraLayer) and "default" in layer.lora_A:
            yield name, layer


def kohya_state_dict(module: Any, prefix: str) -> dict[str, torch.Tensor]:
    """The "default" peft adapter of `module` in kohya keys, as contiguous float32 CPU tensors."""
    state: dict[str, torch.Tensor] = {}
    for name, layer in lora_layers(module):
        key = kohya_module_name(prefix, name)
        state[f"{key}.lora_down.weight"] = layer.lora_A["default"].weight.detach().float().cpu().contiguous()
        state[f"{key}.lora_up.weight"] = layer.lora_B["default"].weight.detach().float().cpu().contiguous()
        state[f"{key}.alpha"] = torch.tensor(float(layer.lora_alpha["default"]))
    return state


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A hidden temporary path beside `path`; renamed to `path` when the block succeeds, deleted otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    with atomic_path(path) as temporary:
        write(temporary)
    return path


def save_lora(path: Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
    """Write a LoRA state dict with string metadata (non-strings are stringified) to `path`, atomically."""
    from safetensors.torch import save_file

    text = {str(key): value if isinstance(value, str) else str(value) for key, value in metadata.items()}
    return write_atomically(path, lambda temporary: save_file(dict(state), str(temporary), metadata=text))
