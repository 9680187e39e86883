"""`comfy_execution.graph_utils` for plugins: the engine's expansion-graph builder and link test."""
from engine.control_flow import GraphBuilder
from engine.control_flow import GraphNode as Node
from engine.input_spec import is_link

__all__ = ["GraphBuilder", "Node", "is_link"]
