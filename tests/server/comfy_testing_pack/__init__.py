"""A node pack for tests/server/test_comfy_execution.py, our own port of ComfyUI's execution test suite: nodes
that exercise lazy inputs, caching and IS_CHANGED, VALIDATE_INPUTS, expansion and loops, blockers, lists,
async nodes and progress through `comfy_api.v0_0_2`, loaded through the real plugin loader by a real `main.py`."""
from .checks import NODES as CHECK_NODES
from .flow import NODES as FLOW_NODES
from .images import NODES as IMAGE_NODES
from .progress import NODES as PROGRESS_NODES

NODE_CLASS_MAPPINGS = {**IMAGE_NODES, **CHECK_NODES, **FLOW_NODES, **PROGRESS_NODES}
NODE_DISPLAY_NAME_MAPPINGS = {name: f"Exec test: {name}" for name in NODE_CLASS_MAPPINGS}
