"""Loads model files once and hands out the same MODEL/CLIP/VAE objects however many nodes ask for them.

Entries are keyed by the file's resolved path, size and modification time, so a replaced file is read again.
Modules are placed on the manager's device and dtype when loaded. Knows nothing of nodes or folders: callers
pass resolved paths and the input name to use in error messages.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from nodes.models import checkpoint as ckpt
from nodes.models.components import ClipTextEncoder, DiffusionModel, Vae
from nodes.models.tokenizer import clip_tokenizer

ModelTriple = tuple[DiffusionModel, ClipTextEncoder, Vae]


def _file_key(kind: str, path: Path) -> tuple[Any, ...]:
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return kind, str(resolved), stat.st_size, stat.st_mtime_ns


class ModelManager:
    """A cache of loaded models for one device/dtype; `loads` counts real loads per (kind, path)."""

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self._entries: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.RLock()
        self.loads: dict[tuple[str, str], int] = {}

    def _cached(self, kind: str, path: Path, input_name: str, load: Callable[[], Any]) -> Any:
        if not Path(path).exists():
            raise ValueError(f"{input_name}: {path} not found")
        key = _file_key(kind, path)
        with self._lock:
            if key not in self._entries:
                self._entries[key] = load()
                count_key = (kind, key[1])
                self.loads[count_key] = self.loads.get(count_key, 0) + 1
            return self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _place(self, module: Any) -> Any:
        """Move to the device/dtype and give every tensor its own freshly allocated storage: tensors read from
        safetensors sit at arbitrary offsets of the file's buffer, and CPU kernels round differently (at the
        1e-7 level) for differently aligned weights, which would make results depend on how a file was read."""
        module = module.to(device=self.device, dtype=self.dtype)
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                tensor.data = tensor.data.clone()
        return module

    def checkpoint(self, path: Path, input_name: str = "ckpt_name") -> ModelTriple:
        """MODEL, CLIP and VAE from a single-file LDM-layout .safetensors checkpoint."""
        return self._cached("checkpoint", path, input_name, lambda: self._load_checkpoint(Path(path), input_name))

    def _load_checkpoint(self, path: Path, input_name: str) -> ModelTriple:
        state = ckpt.read_safetensors(path, input_name)
        try:
            layout = ckpt.inspect_checkpoint(state)
            unet = self._place(ckpt.build_unet(state, layout))
            vae = self._place(ckpt.build_vae(state, layout.vae_config))
            text_encoder = self._place(ckpt.build_text_encoder(state, layout))
            tokenizer = clip_tokenizer(layout.text_encoder_config["vocab_size"], layout.pad_token)
        except ValueError as error:
            raise ValueError(f"{input_name}: {path.name}: {error}") from error
        name = path.name
        return (DiffusionModel(unet, dict(layout.scheduler_config), name),
                ClipTextEncoder(tokenizer, text_encoder, name), Vae(vae, name))

    def diffusers(self, folder: Path, input_name: str = "model_path") -> ModelTriple:
        """MODEL, CLIP and VAE from a diffusers StableDiffusionPipeline folder."""
        folder = Path(folder)
        index = folder / "model_index.json"
        if not index.is_file():
            raise ValueError(f"{input_name}: {folder} is not a diffusers model folder (no model_index.json)")
        return self._cached("diffusers", index, input_name, lambda: self._load_diffusers(folder, input_name))

    def _load_diffusers(self, folder: Path, input_name: str) -> ModelTriple:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        try:
            unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
            vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
            text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True)
            tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
            scheduler_config = _read_scheduler_config(folder)
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{input_name}: {folder.name} could not be loaded as a diffusers model: {error}") from error
        name = folder.name
        return (DiffusionModel(self._place(unet).eval(), scheduler_config, name),
                ClipTextEncoder(tokenizer, self._place(text_encoder).eval(), name),
                Vae(self._place(vae).eval(), name))

    def vae(self, path: Path, input_name: str = "vae_name") -> Vae:
        """A VAE from a standalone LDM-layout .safetensors file (or the VAE of a full checkpoint)."""
        return self._cached("vae", path, input_name, lambda: self._load_vae(Path(path), input_name))

    def _load_vae(self, path: Path, input_name: str) -> Vae:
        state = ckpt.read_safetensors(path, input_name)
        prefix = ckpt.VAE if ckpt.VAE + "encoder.conv_in.weight" in state else ""
        if prefix + "encoder.conv_in.weight" not in state or prefix + "encoder.down.0.block.0.conv1.weight" not in state:
            raise ValueError(f"{input_name}: {path.name} is not a VAE in the original (LDM) layout")
        try:
            autoencoder = ckpt.build_vae(state, ckpt.vae_config_for_file(state))
        except (KeyError, IndexError) as error:
            raise ValueError(f"{input_name}: {path.name}: VAE tensors incomplete ({error})") from error
        except ValueError as error:
            raise ValueError(f"{input_name}: {path.name}: {error}") from error
        return Vae(self._place(autoencoder), path.name)

    def lora(self, path: Path, input_name: str = "lora_name") -> tuple[Mapping[str, torch.Tensor], Any]:
        """A LoRA file's state dict in diffusers/peft keys and its network alphas (kohya files converted)."""
        return self._cached("lora", path, input_name, lambda: _load_lora(Path(path), input_name))


def _read_scheduler_config(folder: Path) -> dict[str, Any]:
    import json

    path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    return {key: value for key, value in config.items() if not key.startswith("_")}


def _load_lora(path: Path, input_name: str) -> tuple[Mapping[str, torch.Tensor], Any]:
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    state = ckpt.read_safetensors(path, input_name)
    if not state or not all("lora" in key or key.endswith(".alpha") for key in state):
        raise ValueError(f"{input_name}: {path.name} is not a LoRA file (no lora_* tensors)")
    try:
        converted, alphas = StableDiffusionLoraLoaderMixin.lora_state_dict(state)
    except (ValueError, KeyError) as error:
        raise ValueError(f"{input_name}: {path.name}: unsupported LoRA layout ({error})") from error
    return converted, alphas
