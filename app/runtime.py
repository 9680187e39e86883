"""Wiring: the registry with the built-in nodes, the node environment and an executor, from settings.

The built-in nodes register through `NodeRegistry.register_mappings`, the same call plugins go through.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from app.settings import Settings, default_thread_count
from engine.cache import OutputCache
from engine.executor import Executor
from engine.registry import NodeRegistry

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    registry: NodeRegistry
    executor: Executor


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


def build_runtime(settings: Settings) -> Runtime:
    from nodes.environment import Folders, NodeEnvironment, set_default_environment

    folders = Folders(settings.models_dir, settings.input_dir, settings.output_dir, settings.temp_dir,
                      settings.user_dir)
    folders.create()
    threads = configure_torch_threads(settings.threads)
    environment = NodeEnvironment.create(folders, force_cpu=settings.cpu)
    set_default_environment(environment)
    log.info("device %s (%s), %d CPU threads", environment.device, environment.dtype, threads)
    registry = build_registry()
    return Runtime(settings, registry, Executor(registry, OutputCache(settings.cache_size)))
