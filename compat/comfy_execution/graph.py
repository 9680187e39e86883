"""`comfy_execution.graph.ExecutionBlocker` for plugins: the engine's own class."""
from engine.control_flow import ExecutionBlocker

__all__ = ["ExecutionBlocker"]
