import textwrap

import pytest

from engine.plugin_loader import discover, load_plugins
from engine.registry import NodeRegistry
from tests.engine.nodes_for_tests import Const

NODE_SOURCE = '''
class {name}:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "plugin"

    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"value": ("INT", {{"default": {default}}})}}}}

    def run(self, value):
        return (value + {default},)
'''


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def plugin_dir(tmp_path):
    root = tmp_path / "custom_nodes"
    write(root / "good_pack" / "__init__.py", "from .impl import NODE_CLASS_MAPPINGS\nWEB_DIRECTORY = 'js'\n"
                                                "NODE_DISPLAY_NAME_MAPPINGS = {'GoodNode': 'Good node'}\n")
    write(root / "good_pack" / "impl.py", NODE_SOURCE.format(name="GoodNode", default=1)
          + "NODE_CLASS_MAPPINGS = {'GoodNode': GoodNode}\n")
    write(root / "good_pack" / "js" / "widget.js", "export default () => {};\n")
    write(root / "single_file.py", NODE_SOURCE.format(name="SingleNode", default=2)
          + "NODE_CLASS_MAPPINGS = {'SingleNode': SingleNode, 'Const': SingleNode}\n")
    write(root / "syntax_error" / "__init__.py", "def broken(:\n")
    write(root / "raises.py", "raise RuntimeError('plugin refuses to load')\n")
    write(root / "missing_dep.py", "import module_that_is_not_installed_anywhere\n")
    write(root / "exits.py", "import sys\nsys.exit(3)\n")
    write(root / "bad_mappings.py", "NODE_CLASS_MAPPINGS = ['not', 'a', 'dict']\n")
    write(root / "later_duplicate.py", NODE_SOURCE.format(name="GoodNode", default=9)
          + "NODE_CLASS_MAPPINGS = {'GoodNode': GoodNode}\n")
    write(root / "off.py.disabled", "raise RuntimeError('must not be imported')\n")
    write(root / ".hidden_pack" / "__init__.py", "raise RuntimeError('must not be imported')\n")
    write(root / "not_a_package" / "readme.txt", "no __init__ here\n")
    return root


def test_discovery_skips_hidden_disabled_and_non_packages(plugin_dir):
    names = [path.name for path in discover(plugin_dir)]
    assert names == ["bad_mappings.py", "exits.py", "good_pack", "later_duplicate.py", "missing_dep.py",
                     "raises.py", "single_file.py", "syntax_error"]


def test_good_broken_and_colliding_plugins(plugin_dir):
    registry = NodeRegistry()
    registry.register("Const", Const, source="builtin")
    records = {record.name: record for record in load_plugins([plugin_dir], registry)}

    good = records["good_pack"]
    assert good.status == "loaded" and good.nodes == ["GoodNode"] and good.error is None
    assert good.web_directory == (plugin_dir / "good_pack" / "js").resolve()
    assert registry.entry("GoodNode").display_name == "Good node"
    assert registry.entry("GoodNode").source == "good_pack"
    assert registry.get("GoodNode")().run(1) == (2,)  # the first GoodNode won over later_duplicate's

    single = records["single_file"]
    assert single.status == "loaded" and single.nodes == ["SingleNode"] and single.collisions == ["Const"]
    assert registry.get("Const") is Const
    assert records["later_duplicate"].collisions == ["GoodNode"]

    for name, fragment in (("syntax_error", "SyntaxError"), ("raises", "plugin refuses to load"),
                           ("missing_dep", "No module named 'module_that_is_not_installed_anywhere'"),
                           ("exits", "SystemExit"), ("bad_mappings", "must be a dict")):
        assert records[name].status == "failed", name
        assert fragment in records[name].error, name
        assert "Traceback" in records[name].error
    assert all(record.load_seconds >= 0 for record in records.values())
    info = single.as_dict()
    assert set(info) >= {"name", "path", "status", "load_time", "error"}


def test_missing_comfy_internals_name_the_module(tmp_path):
    write(tmp_path / "needs_internals.py", "import comfy.context_windows\n")  # a ComfyUI module not provided
    [record] = load_plugins([tmp_path], NodeRegistry())
    assert record.status == "failed" and "comfy.context_windows" in record.error
    assert record.missing == "comfy.context_windows"
