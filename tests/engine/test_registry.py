from engine.input_spec import input_specs, types_compatible
from engine.registry import NodeRegistry
from tests.engine.nodes_for_tests import Add, Const, Range, Switch, Text


def test_object_info_has_comfyui_shape(registry):
    info = registry.object_info()
    const = info["Const"]
    assert const["input"] == {"required": {"value": ("INT", {"default": 0, "min": -1000, "max": 1000,
                                                              "tooltip": "the number"})}}
    assert const["input_order"] == {"required": ["value"]}
    assert const["output"] == ["INT"] and const["output_name"] == ["INT"] and const["output_is_list"] == [False]
    assert const["display_name"] == "Integer constant"
    assert const["description"] == "An integer constant."
    assert const["category"] == "test" and const["output_node"] is False
    assert const["python_module"] == "tests" and const["name"] == "Const"
    assert info["Add"]["output_name"] == ["sum"]
    assert info["Range"]["output_is_list"] == [True]
    assert info["Output"]["output_node"] is True
    assert info["Text"]["input_order"] == {"required": ["text", "mode"], "optional": ["enabled", "scale"]}


def test_first_registration_wins_and_collisions_are_recorded():
    registry = NodeRegistry()
    assert registry.register_mappings({"Add": Add, "Const": Const}, source="builtin") == []
    refused = registry.register_mappings({"Add": Text, "Fresh": Range}, source="plugin_a")
    assert refused == ["Add"]
    assert registry.get("Add") is Add
    assert registry.get("Fresh") is Range
    [collision] = registry.collisions
    assert (collision.class_type, collision.kept_source, collision.rejected_source) == ("Add", "builtin", "plugin_a")


def test_a_node_whose_input_types_raise_is_left_out_of_the_catalogue():
    class Broken:
        RETURN_TYPES = ()

        @classmethod
        def INPUT_TYPES(cls):
            raise RuntimeError("boom")

    registry = NodeRegistry()
    registry.register_mappings({"Broken": Broken, "Const": Const})
    assert list(registry.object_info()) == ["Const"]


def test_input_specs_read_widgets_combos_lazy_and_hidden():
    specs = input_specs(Text)
    assert specs["mode"].type == "COMBO" and specs["mode"].choices == ("upper", "lower", "keep")
    assert specs["scale"].section == "optional" and specs["scale"].is_widget
    assert input_specs(Switch)["on_true"].is_lazy
    assert not input_specs(Switch)["on_true"].is_widget


def test_type_compatibility_rules():
    assert types_compatible("MODEL", "MODEL")
    assert not types_compatible("MODEL", "CLIP")
    assert types_compatible("*", "CLIP") and types_compatible("LATENT", "*")
    assert types_compatible("INT", "INT,FLOAT") and types_compatible("FLOAT,STRING", "FLOAT")
    assert not types_compatible("STRING", "INT,FLOAT")


def test_a_type_name_overriding_ne_decides_its_own_compatibility():
    # packs declare "any" sockets with a str subclass whose __ne__ is always False (ComfyUI compares with != first)
    class AlwaysEqual(str):
        def __ne__(self, other):
            return False

    assert types_compatible(AlwaysEqual("ANYTHING"), "MODEL")
    assert types_compatible("CLIP", AlwaysEqual("ANYTHING"))
    assert not types_compatible(str("ANYTHING"), "MODEL")


def test_a_node_returning_an_always_equal_type_feeds_any_input():
    from engine.input_spec import return_types

    class AlwaysEqual(str):
        def __ne__(self, other):
            return False

    class Source:
        RETURN_TYPES = (AlwaysEqual("WILDCARD"),)

    (declared,) = return_types(Source)
    assert types_compatible(declared, "LATENT") and declared == "WILDCARD"
