"""Wiring: the registry with the built-in nodes, the node environment and an executor, from settings.

The built-in nodes register through `NodeRegistry.register_mappings`, the same call plugins go through.
This is also where the server's questions about models and devices are answered, so the server itself
stays free of torch and of the nodes package.
"""
from __future__ import annotations

import gc
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import versions
from app.settings import PROJECT_DIR, TEXT_ENCODER_OFFLOAD, Settings, default_thread_count
from engine.cache import LastPromptCache, OutputCache, RamPressureCache
from engine.executor import Executor
from engine.plugin_loader import PluginRecord, load_plugins
from engine.registry import NodeRegistry

if TYPE_CHECKING:
    from nodes.environment import Folders, NodeEnvironment

log = logging.getLogger(__name__)

EXTRA_MODEL_FOLDERS = ("embeddings",)
COMPAT_DIR = PROJECT_DIR / "compat"


@dataclass
class Runtime:
    settings: Settings
    registry: NodeRegistry
    executor: Executor
    environment: "NodeEnvironment | None" = None
    plugins: list[PluginRecord] = field(default_factory=list)

    def warm_up(self) -> None:
        """Import the model libraries now, in the queue worker's thread, before any prompt needs them
        (nothing to do for a runtime without the built-in nodes' environment)."""
        if self.environment is None:
            return
        from diffusion.preload import import_model_libraries

        began = time.perf_counter()
        import_model_libraries()
        log.info("model libraries imported in %.1f s", time.perf_counter() - began)

    def read_ahead(self, prompt: dict[str, Any]) -> None:
        """Start reading the model files `prompt`'s loaders will load, in the background (`diffusion.read_ahead`):
        the prompt worker calls this for the first prompt queued while `warm_up` imports the model libraries, so
        that the reads overlap the import. Each node class that can (`READ_AHEAD`, a classmethod taking the node's
        inputs) is given its node's literal inputs; best effort: a node whose inputs do not fit is skipped, and a
        loader that finds nothing read reads the file itself and reports any problem on its input."""
        if self.environment is None:
            return
        from nodes.environment import use_environment

        with use_environment(self.environment):
            for node in prompt.values():
                if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) or \
                        not isinstance(node.get("inputs"), dict):
                    continue
                start_reading = getattr(self.registry.get(node["class_type"]), "READ_AHEAD", None)
                if start_reading is None:
                    continue
                inputs = node["inputs"]
                try:  # links (lists) are not known before the prompt runs
                    start_reading(**{name: value for name, value in inputs.items() if not isinstance(value, list)})
                except (TypeError, ValueError, OSError) as error:
                    log.debug("no read-ahead for node %s: %s", node.get("class_type"), error)

    def model_folders(self) -> list[str]:
        from nodes.environment import MODEL_KINDS

        return [*MODEL_KINDS, *EXTRA_MODEL_FOLDERS]

    def list_models(self, folder: str) -> list[str]:
        if self.environment is None:
            return []
        if folder == "diffusers":
            return self.environment.folders.list_diffusers_models()
        if folder in EXTRA_MODEL_FOLDERS:
            from nodes.environment import CHECKPOINT_EXTENSIONS
            from nodes.folder_listings import list_files

            return list_files(self.settings.models_dir / folder, CHECKPOINT_EXTENSIONS)
        return self.environment.folders.list_models(folder)

    def free_memory(self, unload_models: bool, free_memory: bool) -> None:
        """`/free`: drop cached node outputs (which hold models) and unload what the model manager keeps."""
        if unload_models or free_memory:
            self.executor.cache.clear()
        if unload_models and self.environment is not None:
            self.environment.models.clear()
        gc.collect()
        self.release_freed_memory()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def release_freed_memory(self) -> None:
        """Drop the reads ahead nobody took (`read_ahead`) and give the freed blocks the heap kept for reuse back to
        the OS (`diffusion.heap`): after each prompt and on `/free`, so an idle server holds only what it uses
        (nothing to do without the built-in nodes)."""
        if self.environment is None:
            return
        self.environment.read_ahead.clear()
        from diffusion.heap import return_freed_blocks

        return_freed_blocks()

    def system_stats(self) -> dict[str, Any]:
        import torch

        total, available = _memory_info()
        devices = []
        if self.environment is not None:
            device = self.environment.device
            entry: dict[str, Any] = {"name": str(device), "type": device.type, "index": device.index}
            if device.type == "cuda":
                free, total_vram = torch.cuda.mem_get_info(device)
                entry.update(name=torch.cuda.get_device_name(device), vram_total=total_vram, vram_free=free,
                             torch_vram_total=torch.cuda.memory_reserved(device),
                             torch_vram_free=torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
            else:
                entry.update(vram_total=total, vram_free=available, torch_vram_total=0, torch_vram_free=0)
            devices.append(entry)
        return {"system": {"os": os.name, "ram_total": total, "ram_free": available,
                           "comfyui_version": versions.COMFYUI_VERSION,
                           "required_frontend_version": versions.COMFYUI_FRONTEND_VERSION,
                           "installed_templates_version": versions.installed_templates_version(),
                           "required_templates_version": None,  # nodeflow ships its own workflows, no package
                           "python_version": sys.version, "pytorch_version": torch.__version__,
                           "embedded_python": False, "argv": sys.argv, "cpu_threads": torch.get_num_threads()},
                "devices": devices,
                "models": self.environment.models.report() if self.environment is not None else {}}


def _memory_info() -> tuple[int, int]:
    """Total and available RAM in bytes, from /proc/meminfo where there is one."""
    try:
        with open("/proc/meminfo") as meminfo:
            values = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in meminfo}
        return values["MemTotal"], values.get("MemAvailable", values.get("MemFree", 0))
    except (OSError, KeyError, ValueError):
        pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
        return pages * os.sysconf("SC_PAGE_SIZE"), 0


def build_registry() -> NodeRegistry:
    import nodes

    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS, source="nodes")
    return registry


def configure_torch_threads(threads: int | None) -> int:
    import torch

    count = threads or default_thread_count()
    torch.set_num_threads(count)
    return count


def write_demo_models(settings: Settings, every_family: bool = False) -> list[Path]:
    """The tiny demo txt2img model; with `every_family`, also the inpainting, InstructPix2Pix, SDXL, SD3, FLUX
    (with Fill and Depth), FLUX.2 [klein], Chroma, Z-Image, Lumina 2, Qwen-Image and unCLIP ones, so every shipped
    workflow runs. Returns what the models folder now holds."""
    from diffusion import registry
    from diffusion.families.sd.demo import make_demo_models

    demo = make_demo_models(settings.models_dir)
    if not every_family:
        return [demo.checkpoint, demo.diffusers_folder, demo.lora]
    for family in registry.families():
        family.make_demo_models(settings.models_dir)
    return sorted(path for path in settings.models_dir.glob("*/*") if not path.name.startswith("."))


def ensure_demo_models(settings: Settings, folders: "Folders") -> None:
    """With no checkpoint and no diffusers model at all, write the demo so the default workflow runs."""
    if folders.list_models("checkpoints") or folders.list_diffusers_models():
        return
    paths = write_demo_models(settings)
    log.warning("no models found in %s: created the tiny demo model %s. It has random weights, so its images "
                "are noise; put real checkpoints into %s", settings.models_dir, paths[0].name,
                settings.models_dir / "checkpoints")


def build_runtime(settings: Settings) -> Runtime:
    from diffusion.heap import keep_freed_blocks_for_reuse
    from nodes.environment import Folders, NodeEnvironment, set_default_environment

    folders = Folders(settings.models_dir, settings.input_dir, settings.output_dir, settings.temp_dir,
                      settings.user_dir, follow_model_links=settings.allow_model_links)
    folders.create()
    if settings.demo_models:
        ensure_demo_models(settings, folders)
    threads = configure_torch_threads(settings.threads)
    environment = NodeEnvironment.create(folders, force_cpu=settings.cpu,
                                         text_encoder_offload=TEXT_ENCODER_OFFLOAD[settings.free_text_encoders],
                                         dtype_name=settings.dtype, max_ram=settings.max_ram,
                                         text_encoder_dtype_name=settings.text_encoder_dtype,
                                         reserve_vram_gb=settings.reserve_vram)
    set_default_environment(environment)
    log.info("device %s (%s), %d CPU threads", environment.device, environment.dtype, threads)
    if environment.device.type == "cpu" and keep_freed_blocks_for_reuse():
        log.info("freed CPU memory is kept for reuse while a prompt runs (no fresh pages every step)")
    if environment.device.type == "cpu" and str(environment.dtype) == "torch.bfloat16" and settings.dtype is None:
        log.info("this CPU computes bf16 natively, so models run in bf16 (faster); --fp32 for full precision")
    registry = build_registry()
    plugins = [] if settings.disable_custom_nodes else load_custom_nodes(settings, registry)
    cache = build_output_cache(settings)
    environment.models.add_eviction_listener(lambda value: drop_cached_outputs_holding(cache, value))
    return Runtime(settings, registry, build_executor(registry, cache), environment, plugins)


def build_output_cache(settings: Settings) -> OutputCache:
    """The output cache the flags choose: ComfyUI's classic or RAM-pressure cache, or an LRU of
    `settings.cache_size` entries."""
    if settings.cache_classic:
        return LastPromptCache()
    if settings.cache_ram is not None:
        import torch

        from diffusion.memory import free_memory_bytes, physical_ram_bytes, size_in_bytes

        gib = 1024**3
        # ComfyUI's default headroom: a tenth of the RAM, at least 2 GiB and at most 10 GiB
        default = min(max(physical_ram_bytes() // 10, 2 * gib), 10 * gib)
        headrooms = [int(gb * gib) for gb in settings.cache_ram] or [default]
        cpu = torch.device("cpu")
        return RamPressureCache(headrooms[0], lambda: free_memory_bytes(cpu), size_in_bytes,
                                idle_headroom=headrooms[-1])
    return OutputCache(settings.cache_size)


def build_executor(registry: NodeRegistry, cache: OutputCache) -> Executor:
    """The executor of the built-in nodes: every node call pins the loaded models it receives
    (`nodes.environment.pin_loaded_models`)."""
    from nodes.environment import pin_loaded_models

    return Executor(registry, cache, node_call_guard=pin_loaded_models)


def drop_cached_outputs_holding(cache: OutputCache, evicted: Any) -> None:
    """Forget cached node outputs that hold modules of a model the manager evicted: the cache must not keep an
    unloaded model alive (its memory would never come back) nor hand out one offloaded to the CPU, so the loader
    node runs again on the next prompt and asks the manager (a reload, or a move back to the GPU)."""
    from diffusion.memory import modules_of

    evicted_ids = {id(module) for module in modules_of(evicted)}
    if evicted_ids:
        cache.discard_where(lambda output: any(id(module) in evicted_ids for module in modules_of(output)))


def load_custom_nodes(settings: Settings, registry: NodeRegistry) -> list[PluginRecord]:
    """Import the plugins, with the ComfyUI compatibility modules importable (`folder_paths`, `comfy.utils`)."""
    if str(COMPAT_DIR) not in sys.path:
        sys.path.append(str(COMPAT_DIR))
    records = load_plugins(list(settings.custom_nodes_dirs), registry)
    share_web_directories(records)
    return records


def share_web_directories(records: list[PluginRecord]) -> None:
    """ComfyUI's `nodes.EXTENSION_WEB_DIRS` both ways: a loaded plugin's WEB_DIRECTORY is listed there, and a
    plugin that put its own folder there (by its name) instead of exporting WEB_DIRECTORY gets it served."""
    from nodes import EXTENSION_WEB_DIRS

    for record in records:
        if record.status != "loaded":
            continue
        if record.web_directory is not None:
            EXTENSION_WEB_DIRS.setdefault(record.name, str(record.web_directory))
        elif record.name in EXTENSION_WEB_DIRS and Path(EXTENSION_WEB_DIRS[record.name]).is_dir():
            record.web_directory = Path(EXTENSION_WEB_DIRS[record.name]).resolve()
