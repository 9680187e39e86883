"""Discovering and importing node plugins (ComfyUI's custom-node convention), never letting one stop us.

Every package folder (with `__init__.py`) and every `.py` file in the plugin folders is imported; names
starting with "." or ending in ".disabled" are skipped. `NODE_CLASS_MAPPINGS`, `NODE_DISPLAY_NAME_MAPPINGS`,
`WEB_DIRECTORY` and a V3 extension's nodes (`comfy_entrypoint`) are read and the classes registered through
`NodeRegistry.register_mappings`, the same call the built-in nodes use. A plugin that fails to import is recorded
with its traceback and skipped.
Knows nothing of diffusion or HTTP.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import logging
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.registry import NodeRegistry

log = logging.getLogger(__name__)

MODULE_PREFIX = "custom_nodes_plugins"


@dataclass
class PluginRecord:
    name: str
    path: Path
    status: str  # "loaded", "failed" or "skipped"
    load_seconds: float = 0.0
    error: str | None = None
    missing: str | None = None  # the module or name a failed plugin imports that does not exist here
    nodes: list[str] = field(default_factory=list)
    collisions: list[str] = field(default_factory=list)
    web_directory: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "status": self.status,
                "load_time": round(self.load_seconds, 4), "error": self.error, "missing": self.missing,
                "nodes": self.nodes,
                "collisions": self.collisions,
                "web_directory": str(self.web_directory) if self.web_directory else None}


def discover(folder: Path) -> list[Path]:
    """Plugin candidates in `folder`, sorted by name: package folders and single `.py` files."""
    if not folder.is_dir():
        return []
    found = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name.endswith(".disabled") or entry.name == "__pycache__":
            continue
        if entry.is_dir() and (entry / "__init__.py").is_file():
            found.append(entry)
        elif entry.is_file() and entry.suffix == ".py" and entry.name != "__init__.py":
            found.append(entry)
    return found


def _plugin_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def _import_plugin(path: Path) -> Any:
    """Import a plugin as its own top-level-like module, so its relative imports work."""
    module_name = f"{MODULE_PREFIX}.{_module_safe(_plugin_name(path))}"
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(module_name, path / "__init__.py",
                                                      submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _module_safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)


def _ensure_namespace() -> None:
    if MODULE_PREFIX not in sys.modules:
        namespace = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(MODULE_PREFIX, None,
                                                                                   is_package=True))
        namespace.__path__ = []
        sys.modules[MODULE_PREFIX] = namespace


def load_plugin(path: Path, registry: NodeRegistry) -> PluginRecord:
    name = _plugin_name(path)
    record = PluginRecord(name, path, "failed")
    began = time.perf_counter()
    try:
        _ensure_namespace()
        module = _import_plugin(path)
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
        if mappings is not None and not isinstance(mappings, dict):
            raise TypeError("NODE_CLASS_MAPPINGS must be a dict of node name -> class")
        display_names = dict(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})
        mappings = dict(mappings or {})
        entrypoint = getattr(module, "comfy_entrypoint", None)
        if entrypoint is not None:
            for node_class in extension_nodes(entrypoint):
                schema = node_class.GET_SCHEMA()
                mappings[schema.node_id] = node_class
                if schema.display_name:
                    display_names[schema.node_id] = schema.display_name
        record.collisions = registry.register_mappings(mappings, display_names, source=name)
        record.nodes = [node for node in mappings if node not in record.collisions]
        web_directory = getattr(module, "WEB_DIRECTORY", None)
        if web_directory:
            candidate = (path if path.is_dir() else path.parent) / web_directory
            if candidate.is_dir():
                record.web_directory = candidate.resolve()
        record.status = "loaded"
    except BaseException as exc:  # a plugin may even call sys.exit(); it must not take us down
        if isinstance(exc, KeyboardInterrupt):
            raise
        record.error = "".join(traceback.format_exception(exc))
        record.missing = missing_name(exc)
        log.error("plugin %s failed to import and was skipped:\n%s", name, record.error)
    record.load_seconds = time.perf_counter() - began
    for collision in record.collisions:
        log.warning("plugin %s: node %r is already registered; the first one is kept", name, collision)
    return record


def extension_nodes(entrypoint: Any) -> list[type]:
    """The node classes of a plugin's V3 extension (ComfyUI's `async def comfy_entrypoint() -> ComfyExtension`,
    whose `on_load()` runs first and `get_node_list()` gives classes with `GET_SCHEMA()`)."""
    async def collect() -> list[type]:
        extension = await entrypoint()
        await extension.on_load()
        return list(await extension.get_node_list())

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop in this thread: run the coroutines here
        return asyncio.run(collect())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from a loop: run them in a thread of their own
        return pool.submit(asyncio.run, collect()).result()


def missing_name(exc: BaseException) -> str | None:
    """What an import failure says is missing: "comfy.foo" for `No module named 'comfy.foo'`, "comfy.utils.bar" for
    `cannot import name 'bar' from 'comfy.utils'`, "module.attr" for a module without an attribute; else None."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return exc.name
    message = str(exc)
    found = re.search(r"cannot import name '([^']+)' from '([^']+)'", message)
    if found:
        return f"{found.group(2)}.{found.group(1)}"
    found = re.search(r"module '([^']+)' has no attribute '([^']+)'", message)
    if found:
        return f"{found.group(1)}.{found.group(2)}"
    return None


def load_plugins(folders: list[Path], registry: NodeRegistry) -> list[PluginRecord]:
    """Import every plugin in `folders` (in order) and log import times, slowest first."""
    records = [load_plugin(path, registry) for folder in folders for path in discover(folder)]
    if records:
        lines = [f"{record.load_seconds:8.3f} s  {record.status:<7} {record.name}"
                 for record in sorted(records, key=lambda r: r.load_seconds, reverse=True)]
        log.info("plugin import times:\n%s", "\n".join(lines))
    return records
