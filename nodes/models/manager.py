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
from nodes.models import detection
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

    def loaded(self) -> list[tuple[str, str]]:
        """(kind, resolved path) of every model held now, for status reports. Without the lock, which a load
        holds for as long as it reads the file: a status report must not wait for that (copying the keys
        is atomic under the GIL)."""
        return [(key[0], key[1]) for key in list(self._entries)]

    def cached(self, kind: str, path: Path, input_name: str, load: Callable[[], Any]) -> Any:
        """What `load()` returns for this file, loaded once per file version (for other families' loaders)."""
        return self._cached(kind, path, input_name, load)

    def place(self, module: Any) -> Any:
        """`module` on this manager's device and dtype, each tensor in its own storage (see `_place`)."""
        return self._place(module)

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
            reader = detection.checkpoint_reader(state)  # SDXL, SD3, ...; None for SD1.x/SD2.x
            if reader is not None:
                return reader(state, path.name, self._place)
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

        pipeline_class = _pipeline_class(folder)
        reader = detection.folder_reader(pipeline_class)  # SDXL, SD3, FLUX, ...
        if reader is not None:
            try:
                return reader(folder, folder.name, self._place)
            except (OSError, ValueError, KeyError) as error:
                raise ValueError(f"{input_name}: {folder.name} could not be loaded as a {pipeline_class}: "
                                 f"{error}") from error
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
            from nodes.models.flux_files import standalone_vae_overrides

            config = {**ckpt.vae_config_for_file(state), **standalone_vae_overrides(state, prefix)}
            autoencoder = ckpt.build_vae(state, config)
        except (KeyError, IndexError) as error:
            raise ValueError(f"{input_name}: {path.name}: VAE tensors incomplete ({error})") from error
        except ValueError as error:
            raise ValueError(f"{input_name}: {path.name}: {error}") from error
        return Vae(self._place(autoencoder), path.name)

    def lora(self, path: Path, input_name: str = "lora_name",
             lora_format: str = "sd") -> tuple[Mapping[str, torch.Tensor], Any]:
        """A LoRA file's state dict in diffusers/peft keys and its network alphas (kohya files converted);
        `lora_format` names the family whose key conventions the file follows ("sd", "flux")."""
        kind = "lora" if lora_format == "sd" else f"lora-{lora_format}"
        return self._cached(kind, path, input_name, lambda: _load_lora(Path(path), input_name, lora_format))


def _pipeline_class(folder: Path) -> str:
    """The pipeline class a diffusers folder was saved from (its model_index.json `_class_name`)."""
    import json

    try:
        return str(json.loads((folder / "model_index.json").read_text()).get("_class_name", ""))
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder.name}: unreadable model_index.json ({error})") from error


def _read_scheduler_config(folder: Path) -> dict[str, Any]:
    import json

    path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    return {key: value for key, value in config.items() if not key.startswith("_")}


def _lora_state_dict(state: dict[str, torch.Tensor], lora_format: str) -> tuple[dict[str, torch.Tensor], Any]:
    """diffusers' reading of a LoRA file for a family (kohya and other layouts converted to peft keys)."""
    from diffusers.loaders import FluxLoraLoaderMixin, StableDiffusionLoraLoaderMixin

    if lora_format == "flux":
        return FluxLoraLoaderMixin.lora_state_dict(state, return_alphas=True)
    if lora_format == "sd3":
        from diffusers.loaders import SD3LoraLoaderMixin

        return SD3LoraLoaderMixin.lora_state_dict(state), None
    return StableDiffusionLoraLoaderMixin.lora_state_dict(state)


def _load_lora(path: Path, input_name: str, lora_format: str = "sd") -> tuple[Mapping[str, torch.Tensor], Any]:
    state = ckpt.read_safetensors(path, input_name)
    if not state or not all("lora" in key or key.endswith(".alpha") for key in state):
        raise ValueError(f"{input_name}: {path.name} is not a LoRA file (no lora_* tensors)")
    try:
        converted, alphas = _lora_state_dict(state, lora_format)
    except (ValueError, KeyError) as error:
        raise ValueError(f"{input_name}: {path.name}: unsupported LoRA layout ({error})") from error
    return converted, alphas
