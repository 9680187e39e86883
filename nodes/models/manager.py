"""Loads model files once and hands out the same MODEL/CLIP/VAE objects however many nodes ask for them.

Entries are keyed by the file's resolved path, size and modification time, so a replaced file is read again.
Modules are placed on the manager's device and dtype when loaded. Knows nothing of nodes or folders: callers
pass resolved paths and the input name to use in error messages.

It is also the one place that knows every loaded model, its device and size, and keeps each device within a
`MemoryBudget`. Models stay loaded between prompts. Before a load (sized by the file) and after it (sized by its
tensors), the least recently used models are evicted until the device fits: offloaded to the CPU from a GPU
(moved in place, so handed-out objects follow and are moved back when asked for again), unloaded from the CPU
(the manager drops its reference). A model being loaded or pinned with `using()` is never evicted, and eviction
only happens under the manager's lock, between uses. Objects already handed out survive an unload (they keep
their own reference); memory is only returned once nothing holds them, which is why eviction listeners exist:
the runtime registers one that drops the engine's cached node outputs holding the evicted modules, so the next
prompt asks the manager again (a reload, or an onload back to the GPU) instead of reusing a stale copy.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from nodes.models import checkpoint as ckpt
from nodes.models import detection
from nodes.models.components import ClipTextEncoder, DiffusionModel, Vae
from nodes.models.memory import MemoryBudget, allocator_aligned, device_of, modules_of, move_modules, size_in_bytes
from nodes.models.tokenizer import clip_tokenizer

ModelTriple = tuple[DiffusionModel, ClipTextEncoder, Vae]
EvictionListener = Callable[[Any], None]

log = logging.getLogger(__name__)


def _file_key(kind: str, path: Path) -> tuple[Any, ...]:
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return kind, str(resolved), stat.st_size, stat.st_mtime_ns


@dataclass(eq=False)
class LoadedModel:
    """One entry of the manager: what a loader returned, where it lives and how big it is."""

    kind: str
    path: str
    value: Any
    size_bytes: int
    device: torch.device
    last_used: int
    pins: int = 0


class ModelManager:
    """The loaded models of one device/dtype within a `MemoryBudget` (unlimited without one). `loads` counts real
    loads per (kind, path); `offloads` and `unloads` count evictions per (kind, path)."""

    def __init__(self, device: torch.device, dtype: torch.dtype, budget: MemoryBudget | None = None) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.budget = budget or MemoryBudget()
        self._entries: dict[tuple[Any, ...], LoadedModel] = {}
        self._lock = threading.RLock()
        self._clock = itertools.count(1)
        self._listeners: list[EvictionListener] = []
        self.loads: dict[tuple[str, str], int] = {}
        self.offloads: dict[tuple[str, str], int] = {}
        self.unloads: dict[tuple[str, str], int] = {}

    def _cached(self, kind: str, path: Path, input_name: str, load: Callable[[], Any]) -> Any:
        if not Path(path).exists():
            raise ValueError(f"{input_name}: {path} not found")
        key = _file_key(kind, path)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._make_room(self.device, _file_bytes(Path(path)), keep=key)
                value = load()
                entry = LoadedModel(kind, key[1], value, size_in_bytes(value), self._home_device(value), 0)
                self._entries[key] = entry
                count_key = (kind, key[1])
                self.loads[count_key] = self.loads.get(count_key, 0) + 1
            elif entry.device != self.device and modules_of(entry.value):
                self._make_room(self.device, entry.size_bytes, keep=key)
                move_modules(entry.value, self.device)
                entry.device = self.device
            entry.last_used = next(self._clock)
            self._make_room(entry.device, 0, keep=key)
            return entry.value

    def _home_device(self, value: Any) -> torch.device:
        """The manager's device, unless the value's tensors live elsewhere (a LoRA state dict on the CPU); "cuda"
        and "cuda:0" count as one device."""
        found = device_of(value)
        return self.device if found is None or found.type == self.device.type else torch.device(found.type)

    def _make_room(self, device: torch.device, needed: int, keep: tuple[Any, ...] | None = None) -> None:
        """Evict least recently used, unpinned models from `device` until `needed` more bytes fit its budget."""
        limit = self.budget.limit(device)
        if limit is None:
            return
        self._refresh_sizes()
        while self._used_bytes(device) + needed > limit:
            candidates = [(entry.last_used, key) for key, entry in self._entries.items()
                          if entry.device == device and entry.pins == 0 and key != keep]
            if not candidates:
                log.warning("models on %s need %d bytes, over the %d-byte budget: nothing left to evict",
                            device, self._used_bytes(device) + needed, limit)
                return
            self._evict(min(candidates)[1])

    def _evict(self, key: tuple[Any, ...]) -> None:
        entry = self._entries[key]
        count_key = (entry.kind, entry.path)
        if entry.device.type == "cpu":
            del self._entries[key]
            self.unloads[count_key] = self.unloads.get(count_key, 0) + 1
        else:
            cpu = torch.device("cpu")
            self._make_room(cpu, entry.size_bytes, keep=key)
            move_modules(entry.value, cpu)
            entry.device = cpu
            self.offloads[count_key] = self.offloads.get(count_key, 0) + 1
        self._notify(entry.value)

    def _notify(self, value: Any) -> None:
        for listener in list(self._listeners):
            try:
                listener(value)
            except Exception:  # a listener's failure must not leave the manager half-evicted
                log.exception("model eviction listener failed")

    def _used_bytes(self, device: torch.device) -> int:
        return sum(entry.size_bytes for entry in self._entries.values() if entry.device == device)

    def _refresh_sizes(self) -> None:
        """Sizes as they are now: a value can grow after loading (a lazily built T5 inside a CLIP) or shrink (the
        T5 freed after encoding), and the budget must see it."""
        for entry in list(self._entries.values()):
            entry.size_bytes = size_in_bytes(entry.value)

    def add_eviction_listener(self, listener: EvictionListener) -> None:
        """Call `listener(value)` whenever a loaded value is offloaded or unloaded (`modules_of` tells its modules)."""
        self._listeners.append(listener)

    @contextlib.contextmanager
    def using(self, *values: Any) -> Iterator[None]:
        """Pin the loaded models that share modules with `values` for the block, moved back to the device first if
        they were offloaded: they are not evicted while a node runs with them (a load inside the node, such as a
        lazily loaded text encoder, evicts others instead)."""
        wanted = {id(module) for value in values for module in modules_of(value)}
        with self._lock:
            pinned = [(key, entry) for key, entry in self._entries.items()
                      if any(id(module) in wanted for module in modules_of(entry.value))]
            for key, entry in pinned:
                entry.pins += 1
                entry.last_used = next(self._clock)
                if entry.device != self.device and modules_of(entry.value):
                    self._make_room(self.device, entry.size_bytes, keep=key)
                    move_modules(entry.value, self.device)
                    entry.device = self.device
        try:
            yield
        finally:
            with self._lock:
                for _, entry in pinned:
                    entry.pins -= 1

    def clear(self) -> None:
        """Unload every model not pinned by a running node (`/free`)."""
        with self._lock:
            for key in [key for key, entry in self._entries.items() if entry.pins == 0]:
                entry = self._entries.pop(key)
                count_key = (entry.kind, entry.path)
                self.unloads[count_key] = self.unloads.get(count_key, 0) + 1
                self._notify(entry.value)

    def loaded(self) -> list[tuple[str, str]]:
        """(kind, resolved path) of every model held now, for status reports. Without the lock, which a load
        holds for as long as it reads the file: a status report must not wait for that (copying the keys
        is atomic under the GIL)."""
        return [(key[0], key[1]) for key in list(self._entries)]

    def report(self) -> dict[str, Any]:
        """Loaded models (most recently used first) with device and size, and bytes used and allowed per device,
        for /system_stats. Lock-free like `loaded()`."""
        self._refresh_sizes()
        entries = sorted(list(self._entries.values()), key=lambda entry: -entry.last_used)
        devices = sorted({str(entry.device) for entry in entries} | {str(self.device)})
        return {
            "models": [{"kind": entry.kind, "path": entry.path, "device": str(entry.device),
                        "size_bytes": entry.size_bytes} for entry in entries],
            "devices": {name: {"used_bytes": sum(entry.size_bytes for entry in entries if str(entry.device) == name),
                               "budget_bytes": self.budget.limit(torch.device(name))} for name in devices},
        }

    def cached(self, kind: str, path: Path, input_name: str, load: Callable[[], Any]) -> Any:
        """What `load()` returns for this file, loaded once per file version (for other families' loaders)."""
        return self._cached(kind, path, input_name, load)

    def place(self, module: Any) -> Any:
        """`module` on this manager's device and dtype, each tensor in its own storage (see `_place`)."""
        return self._place(module)

    def _place(self, module: Any) -> Any:
        """Move to the device/dtype, and give every tensor that shares its storage or sits at an odd address an
        allocation of its own (see `memory.is_allocator_aligned`): results then do not depend on how a file was
        read. Tensors already placed are left alone, so loading never holds a second copy of a whole model."""
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dtype = self.dtype if tensor.is_floating_point() else tensor.dtype
                tensor.data = allocator_aligned(tensor.data.to(device=self.device, dtype=dtype))
        return module

    def checkpoint(self, path: Path, input_name: str = "ckpt_name") -> ModelTriple:
        """MODEL, CLIP and VAE from a single-file LDM-layout .safetensors checkpoint."""
        return self._cached("checkpoint", path, input_name, lambda: self._load_checkpoint(Path(path), input_name))

    def _load_checkpoint(self, path: Path, input_name: str) -> ModelTriple:
        state = ckpt.read_safetensors(path, input_name, self.dtype)
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
        state = ckpt.read_safetensors(path, input_name, self.dtype)
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


def _file_bytes(path: Path) -> int:
    """The size of a model file, or of the folder a diffusers `model_index.json` sits in: the estimate used to
    make room before loading (the loaded size replaces it)."""
    if path.name == "model_index.json":
        return sum(file.stat().st_size for file in path.parent.rglob("*") if file.is_file())
    return path.stat().st_size


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
