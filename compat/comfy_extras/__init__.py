"""`comfy_extras` for plugins: the modules of ComfyUI's extra nodes that packs import classes from
(`from comfy_extras.nodes_latent import LatentBatch`), giving our nodes of the same names.

Modules with more than node classes (helper functions packs call) are files here (`nodes_mask.py`, ...). Every
other module of ComfyUI's comfy_extras is made when this package is imported, from `node_modules.json`: for each
module, the Python class names ComfyUI defines there and the node each one is, listed only for the nodes this
project registers. So `comfy_extras.nodes_latent.LatentBatch is nodes.NODE_CLASS_MAPPINGS["LatentBatch"]`; a class
we do not have is missing from its module and its import fails with the name.
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import nodes

_HERE = Path(__file__).parent


def node_classes(module_name: str) -> dict[str, type]:
    """ComfyUI's Python class name -> our node class, for the classes of `module_name` that we have."""
    table = json.loads((_HERE / "node_modules.json").read_text())
    return {class_name: nodes.NODE_CLASS_MAPPINGS[node_name]
            for class_name, node_name in table.get(module_name, {}).items()}


def _made_modules() -> dict[str, types.ModuleType]:
    table = json.loads((_HERE / "node_modules.json").read_text())
    made = {}
    for module_name, classes in table.items():
        if (_HERE / f"{module_name}.py").is_file():  # a written module has its own helpers: it is imported as is
            continue
        module = types.ModuleType(f"{__name__}.{module_name}",
                                  f"ComfyUI's comfy_extras.{module_name}: its node classes that nodeflow has.")
        module.NODE_CLASS_MAPPINGS = {}
        for class_name, node_class in node_classes(module_name).items():
            setattr(module, class_name, node_class)
            module.NODE_CLASS_MAPPINGS[classes[class_name]] = node_class
        made[module_name] = module
    return made


for _name, _module in _made_modules().items():
    sys.modules[_module.__name__] = _module
    globals()[_name] = _module
