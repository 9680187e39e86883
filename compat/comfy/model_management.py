"""`comfy.model_management` for plugins: the device, interrupts and cache emptying, from our engine."""
from __future__ import annotations

import gc

import torch

from engine.interrupt import ExecutionInterrupted
from engine.progress import current_node_context
from nodes.environment import current_environment

InterruptProcessingException = ExecutionInterrupted


def get_torch_device() -> torch.device:
    return current_environment().device


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def unet_dtype(*args, **kwargs) -> torch.dtype:
    return current_environment().dtype


def _interrupt_flag():
    context = current_node_context()
    if context is not None:
        return context.interrupt
    from server import PromptServer

    server = PromptServer.instance
    return server.interrupt_flag() if server is not None else None


def interrupt_processing(value: bool = True) -> None:
    flag = _interrupt_flag()
    if flag is None:
        return
    flag.request() if value else flag.clear()


def processing_interrupted() -> bool:
    flag = _interrupt_flag()
    return bool(flag and flag.is_set())


def throw_exception_if_processing_interrupted() -> None:
    if processing_interrupted():
        raise InterruptProcessingException("Execution was interrupted")


def soft_empty_cache(force: bool = False) -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
