"""`execution` for plugins: ComfyUI's prompt validation, answered by the running server's validator (the same one
POST /prompt uses, with every plugin's nodes).

Packs that wrap or replace functions of ComfyUI's `execution` module (rgthree's recursion patches, for example)
change nothing here: our executor is `engine.executor`, which does not call this module.
"""
from __future__ import annotations

from typing import Any

from server import PromptServer


async def validate_prompt(prompt_id: str, prompt: dict[str, Any],
                          partial_execution_list: list[str] | None = None) -> tuple[bool, Any, list[str], dict]:
    """ComfyUI's `(valid, error, outputs_to_execute, node_errors)` for an API-format prompt; `error` is None when
    valid, else `{"type", "message", "details", "extra_info"}` as POST /prompt answers."""
    server = PromptServer.instance
    if server is None:
        raise RuntimeError(f"execution.validate_prompt({prompt_id!r}): no server is running, so there is no node "
                           "registry to validate against")
    result = server.validate(prompt, partial_execution_list)
    return result.ok, result.error, list(result.outputs), result.node_errors


__all__ = ["validate_prompt"]
