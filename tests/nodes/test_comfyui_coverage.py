"""docs/comfyui-nodes.md tells the truth: each of ComfyUI's core image node classes (tests/data/
comfyui_core_image_nodes.json, names only) is registered here or listed there as left out with its reason, nothing
listed as left out is registered, and the count the page states is the count."""
import json
import re
from pathlib import Path

import nodes

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "comfyui-nodes.md").read_text()
CLASSES = json.loads((ROOT / "tests" / "data" / "comfyui_core_image_nodes.json").read_text())
COMFY = {name for group in ("classes", "newer_classes") for names in CLASSES[group].values() for name in names}
LEFT_OUT = dict(re.findall(r"^\| `([^`]+)` \| [^|]+ \| ([^|]+) \|$", PAGE, flags=re.MULTILINE))


def test_every_comfyui_class_is_here_or_left_out_with_a_reason():
    missing = COMFY - set(nodes.NODE_CLASS_MAPPINGS)
    assert sorted(missing - set(LEFT_OUT)) == []
    assert all(reason.strip() for reason in LEFT_OUT.values())


def test_nothing_listed_as_left_out_is_registered():
    assert sorted(set(LEFT_OUT) & set(nodes.NODE_CLASS_MAPPINGS)) == []
    assert sorted(set(LEFT_OUT) - COMFY) == []


def test_the_stated_count_is_the_count():
    present, total = map(int, re.search(r"\*\*(\d+) of (\d+)\*\*", PAGE).groups())
    assert (present, total) == (len(COMFY & set(nodes.NODE_CLASS_MAPPINGS)), len(COMFY))
