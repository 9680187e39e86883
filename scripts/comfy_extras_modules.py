"""Write compat/comfy_extras/node_modules.json: for each of ComfyUI's `comfy_extras/nodes_*.py` modules, the Python
class names it defines for nodes that this project registers, and the node each one is.

Run it again when nodes are added: `python scripts/comfy_extras_modules.py PATH_TO_COMFYUI_CHECKOUT`. Only names are
read from ComfyUI's files (V1 `NODE_CLASS_MAPPINGS` entries and V3 `node_id=` of classes), nothing else.
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))


def classes_of(source: str) -> dict[str, str]:
    """Python class name -> node name, from a module's NODE_CLASS_MAPPINGS dict and its V3 schemas' node_id."""
    pairs: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == "NODE_CLASS_MAPPINGS" for t in node.targets)):
            for key, value in zip(node.value.keys, node.value.values):
                if isinstance(key, ast.Constant) and isinstance(value, ast.Name):
                    pairs[value.id] = key.value
        if isinstance(node, ast.ClassDef):
            node_id = next((keyword.value.value for keyword in ast.walk(node) if isinstance(keyword, ast.keyword)
                            and keyword.arg == "node_id" and isinstance(keyword.value, ast.Constant)), None)
            if node_id is not None:
                pairs.setdefault(node.name, node_id)
    return pairs


def main(comfyui: Path) -> None:
    import nodes

    ours = set(nodes.NODE_CLASS_MAPPINGS)
    table = {}
    for path in sorted((comfyui / "comfy_extras").glob("nodes_*.py")):
        have = {name: node for name, node in classes_of(path.read_text()).items() if node in ours}
        if have:
            table[path.stem] = dict(sorted(have.items()))
    target = PROJECT / "compat" / "comfy_extras" / "node_modules.json"
    target.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"{target}: {len(table)} modules, {sum(map(len, table.values()))} classes")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
