"""An example plugin: image adjustments on ComfyUI IMAGE tensors, and a node with a custom editor widget.

Copy this folder to start a pack of your own; see docs/writing-nodes.md for the contract.
"""
from .adjust import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
