"""`comfy_execution.graph` for plugins: the engine's `ExecutionBlocker`, and `DynamicPrompt` (what a `DYNPROMPT`
hidden input receives) with its `NodeNotFoundError`."""
from engine.control_flow import DynamicPrompt, ExecutionBlocker, NodeNotFoundError

__all__ = ["DynamicPrompt", "ExecutionBlocker", "NodeNotFoundError"]
