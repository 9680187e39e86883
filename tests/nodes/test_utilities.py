"""The utility nodes (primitives, the lazy If/Else switch, the math expression, Preview Any) and the text nodes:
their contracts against ComfyUI's (`COMFYUI_CONTRACTS`, read off comfy_extras/nodes_primitive.py,
nodes_logic.py, nodes_math.py, nodes_preview_any.py and nodes_string.py), what each computes (expected values
worked out by hand from ComfyUI's code), the safe evaluator's limits, and API-format workflows of each group run
through validation and the executor."""
from __future__ import annotations

import string
import sys
from typing import Any

import pytest
import torch

import nodes
from app.runtime import build_executor
from engine import input_spec
from engine.cache import OutputCache
from engine.registry import NodeRegistry
from engine.validation import validate_prompt
from engine.workflow_format import editor_to_api
from nodes import expression, strings, utilities
from tests.nodes.conftest import validation_errors

MAXSIZE = sys.maxsize
TEXT = ("STRING", {"multiline": True})
FLAGS = [("case_insensitive", ("BOOLEAN", {"default": True})), ("multiline", ("BOOLEAN", {"default": False})),
         ("dotall", ("BOOLEAN", {"default": False}))]
LETTERS = string.ascii_lowercase

# node: (category, RETURN_TYPES, output names, inputs in order as (name, (type or choices, the options that
# matter: default/min/max/step/multiline/lazy/control_after_generate)), optional inputs marked with a leading "?")
COMFYUI_CONTRACTS: dict[str, tuple[str, tuple, tuple, list]] = {
    "PrimitiveInt": ("utils/primitive", ("INT",), ("INT",), [
        ("value", ("INT", {"min": -MAXSIZE, "max": MAXSIZE, "control_after_generate": True}))]),
    "PrimitiveFloat": ("utils/primitive", ("FLOAT",), ("FLOAT",), [
        ("value", ("FLOAT", {"min": -MAXSIZE, "max": MAXSIZE}))]),
    "PrimitiveString": ("utils/primitive", ("STRING",), ("STRING",), [("value", ("STRING", {}))]),
    "PrimitiveStringMultiline": ("utils/primitive", ("STRING",), ("STRING",), [("value", TEXT)]),
    "PrimitiveBoolean": ("utils/primitive", ("BOOLEAN",), ("BOOLEAN",), [("value", ("BOOLEAN", {}))]),
    "ComfySwitchNode": ("utilities/logic", ("*",), ("output",), [
        ("switch", ("BOOLEAN", {})), ("?on_false", ("*", {"lazy": True})), ("?on_true", ("*", {"lazy": True}))]),
    "ComfyMathExpression": ("utilities", ("FLOAT", "INT", "BOOLEAN"), ("FLOAT", "INT", "BOOL"), [
        ("expression", ("STRING", {"default": "a + b", "multiline": True})),
        *[(f"?values.{name}", ("FLOAT,INT,BOOLEAN", {})) for name in LETTERS]]),
    "PreviewAny": ("utils", (), (), [("source", ("*", {}))]),
    "ResolutionSelector": ("utilities", ("INT", "INT"), ("width", "height"), [
        ("aspect_ratio", (["1:1 (Square)", "3:2 (Photo)", "4:3 (Standard)", "16:9 (Widescreen)", "21:9 (Ultrawide)",
                           "2:3 (Portrait Photo)", "3:4 (Portrait Standard)", "9:16 (Portrait Widescreen)"],
                          {"default": "1:1 (Square)"})),
        ("megapixels", ("FLOAT", {"default": 1.0, "min": 0.1, "max": 16.0, "step": 0.1})),
        ("multiple", ("INT", {"default": 8, "min": 8, "max": 128, "step": 4})),
        ("minimum", ("INT", {"default": 256, "min": 32, "max": 4096, "step": 32}))]),
    "StringConcatenate": ("utils/string", ("STRING",), ("STRING",), [
        ("string_a", TEXT), ("string_b", TEXT), ("delimiter", ("STRING", {"default": ""}))]),
    "StringSubstring": ("utils/string", ("STRING",), ("STRING",), [
        ("string", TEXT), ("start", ("INT", {})), ("end", ("INT", {}))]),
    "StringLength": ("utils/string", ("INT",), ("length",), [("string", TEXT)]),
    "CaseConverter": ("utils/string", ("STRING",), ("STRING",), [
        ("string", TEXT), ("mode", (["UPPERCASE", "lowercase", "Capitalize", "Title Case"], {}))]),
    "StringTrim": ("utils/string", ("STRING",), ("STRING",), [
        ("string", TEXT), ("mode", (["Both", "Left", "Right"], {}))]),
    "StringReplace": ("utils/string", ("STRING",), ("STRING",), [
        ("string", TEXT), ("find", TEXT), ("replace", TEXT)]),
    "StringContains": ("utils/string", ("BOOLEAN",), ("contains",), [
        ("string", TEXT), ("substring", TEXT), ("case_sensitive", ("BOOLEAN", {"default": True}))]),
    "StringCompare": ("utils/string", ("BOOLEAN",), ("BOOLEAN",), [
        ("string_a", TEXT), ("string_b", TEXT), ("mode", (["Starts With", "Ends With", "Equal"], {})),
        ("case_sensitive", ("BOOLEAN", {"default": True}))]),
    "RegexMatch": ("utils/string", ("BOOLEAN",), ("matches",), [
        ("string", TEXT), ("regex_pattern", TEXT), *FLAGS]),
    "RegexExtract": ("utils/string", ("STRING",), ("STRING",), [
        ("string", TEXT), ("regex_pattern", TEXT),
        ("mode", (["First Match", "All Matches", "First Group", "All Groups"], {})), *FLAGS,
        ("group_index", ("INT", {"default": 1, "min": 0, "max": 100}))]),
    "RegexReplace": ("utils/string", ("STRING",), ("STRING",), [
        ("string", TEXT), ("regex_pattern", TEXT), ("replace", TEXT), *[(f"?{name}", spec) for name, spec in FLAGS],
        ("?count", ("INT", {"default": 0, "min": 0, "max": 100}))]),
    "StringFormat": ("text", ("STRING",), ("STRING",), [
        ("f_string", ("STRING", {"default": "{a}", "multiline": True})),
        *[(f"?values.{name}", ("*", {})) for name in LETTERS]]),
    "JsonExtractString": ("text", ("STRING",), ("STRING",), [("json_string", TEXT), ("key", ("STRING", {}))]),
}
DISPLAY_NAMES = {
    "PrimitiveInt": "Int", "PrimitiveFloat": "Float", "PrimitiveString": "String",
    "PrimitiveStringMultiline": "String (Multiline)", "PrimitiveBoolean": "Boolean",
    "ComfySwitchNode": "If/Else Switch", "ComfyMathExpression": "Math Expression", "PreviewAny": "Preview Any",
    "ResolutionSelector": "Resolution Selector",
    "StringConcatenate": "Concatenate", "StringSubstring": "Substring", "StringLength": "Length",
    "CaseConverter": "Case Converter", "StringTrim": "Trim", "StringReplace": "Replace", "StringContains": "Contains",
    "StringCompare": "Compare", "RegexMatch": "Regex Match", "RegexExtract": "Regex Extract",
    "RegexReplace": "Regex Replace", "StringFormat": "Format Text", "JsonExtractString": "Extract Text from JSON",
}
CONTRACT_OPTIONS = ("default", "min", "max", "step", "lazy", "control_after_generate")


def _contract(node_class: type) -> tuple[str, tuple, tuple, list]:
    inputs = []
    for spec in input_spec.input_specs(node_class).values():
        if spec.section == "hidden":
            continue
        options = {key: spec.options[key] for key in CONTRACT_OPTIONS if key in spec.options}
        if spec.options.get("multiline"):
            options["multiline"] = True
        kind = list(spec.choices) if spec.choices is not None else spec.type
        inputs.append(("?" * (spec.section == "optional") + spec.name, (kind, options)))
    return (node_class.CATEGORY, input_spec.return_types(node_class), input_spec.return_names(node_class), inputs)


@pytest.mark.parametrize("name", sorted(COMFYUI_CONTRACTS))
def test_node_contract_is_comfyuis(name):
    node_class = nodes.NODE_CLASS_MAPPINGS[name]
    assert _contract(node_class) == COMFYUI_CONTRACTS[name]
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name] == DISPLAY_NAMES[name]
    assert node_class.DESCRIPTION and callable(getattr(node_class(), node_class.FUNCTION))


def test_every_node_is_in_the_table():
    assert set(utilities.NODE_CLASS_MAPPINGS) | set(strings.NODE_CLASS_MAPPINGS) == set(COMFYUI_CONTRACTS)
    assert utilities.PreviewAny.OUTPUT_NODE and utilities.ComfySwitchNode.EXPERIMENTAL


# -- primitives ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, value", [("PrimitiveInt", -7), ("PrimitiveFloat", 2.5), ("PrimitiveString", "a b"),
                                         ("PrimitiveStringMultiline", "a\nb"), ("PrimitiveBoolean", True)])
def test_primitives_pass_their_value_on(name, value):
    node = nodes.NODE_CLASS_MAPPINGS[name]()
    assert getattr(node, node.FUNCTION)(value=value) == (value,)


# -- text nodes ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, inputs, expected", [
    ("StringConcatenate", {"string_a": "cat", "string_b": "dog", "delimiter": ", "}, "cat, dog"),
    ("StringConcatenate", {"string_a": "cat", "string_b": "", "delimiter": "-"}, "cat-"),
    ("StringSubstring", {"string": "portrait", "start": 1, "end": 4}, "ort"),
    ("StringSubstring", {"string": "portrait", "start": -5, "end": 100}, "trait"),
    ("StringSubstring", {"string": "portrait", "start": 5, "end": 2}, ""),
    ("StringLength", {"string": "héllo\n"}, 6),
    ("CaseConverter", {"string": "a fOX jumps", "mode": "UPPERCASE"}, "A FOX JUMPS"),
    ("CaseConverter", {"string": "a fOX jumps", "mode": "lowercase"}, "a fox jumps"),
    ("CaseConverter", {"string": "a fOX jumps", "mode": "Capitalize"}, "A fox jumps"),
    ("CaseConverter", {"string": "a fOX jumps", "mode": "Title Case"}, "A Fox Jumps"),
    ("StringTrim", {"string": " \t x y \n", "mode": "Both"}, "x y"),
    ("StringTrim", {"string": " \t x y \n", "mode": "Left"}, "x y \n"),
    ("StringTrim", {"string": " \t x y \n", "mode": "Right"}, " \t x y"),
    ("StringReplace", {"string": "a cat, a Cat", "find": "cat", "replace": "dog"}, "a dog, a Cat"),
    ("StringContains", {"string": "Red Fox", "substring": "fox", "case_sensitive": True}, False),
    ("StringContains", {"string": "Red Fox", "substring": "fox", "case_sensitive": False}, True),
    ("StringCompare", {"string_a": "Photo.PNG", "string_b": ".png", "mode": "Ends With", "case_sensitive": False},
     True),
    ("StringCompare", {"string_a": "Photo.PNG", "string_b": ".png", "mode": "Ends With", "case_sensitive": True},
     False),
    ("StringCompare", {"string_a": "Photo", "string_b": "Ph", "mode": "Starts With", "case_sensitive": True}, True),
    ("StringCompare", {"string_a": "abc", "string_b": "ABC", "mode": "Equal", "case_sensitive": False}, True),
    ("StringCompare", {"string_a": "abc", "string_b": "ab", "mode": "Equal", "case_sensitive": True}, False),
])
def test_text_nodes(name, inputs, expected):
    node = nodes.NODE_CLASS_MAPPINGS[name]()
    assert getattr(node, node.FUNCTION)(**inputs) == (expected,)


REGEX_DEFAULTS = {"case_insensitive": True, "multiline": False, "dotall": False}


@pytest.mark.parametrize("pattern, text, flags, expected", [
    (r"fox", "Red FOX", {}, True),
    (r"fox", "Red FOX", {"case_insensitive": False}, False),
    (r"^b", "a\nb", {}, False),
    (r"^b", "a\nb", {"multiline": True}, True),
    (r"a.b", "a\nb", {}, False),
    (r"a.b", "a\nb", {"dotall": True}, True),
    (r"(unclosed", "(unclosed", {}, False),  # an invalid pattern answers false, as in ComfyUI
])
def test_regex_match(pattern, text, flags, expected):
    assert strings.RegexMatch().execute(text, pattern, **{**REGEX_DEFAULTS, **flags}) == (expected,)


SIZES = "w=512, h=768; w=1024, h=576"


@pytest.mark.parametrize("pattern, mode, group_index, expected", [
    (r"w=\d+", "First Match", 1, "w=512"),
    (r"w=\d+", "All Matches", 1, "w=512\nw=1024"),
    (r"w=(\d+), h=(\d+)", "All Matches", 1, "512\n1024"),  # findall with groups: each match's first group
    (r"w=(\d+), h=(\d+)", "First Group", 2, "768"),
    (r"w=(\d+), h=(\d+)", "First Group", 0, "w=512, h=768"),
    (r"w=(\d+), h=(\d+)", "First Group", 3, ""),  # no such group
    (r"w=(\d+), h=(\d+)", "All Groups", 2, "768\n576"),
    (r"w=\d+", "All Groups", 0, ""),  # All Groups counts only matches of a pattern with groups
    (r"w=(\d+)|h=(\d+)", "All Groups", 2, "768\n576"),  # groups that took no part are left out
    (r"x=(\d+)", "First Match", 1, ""),
    (r"w=(\d+", "First Match", 1, ""),  # invalid pattern
])
def test_regex_extract(pattern, mode, group_index, expected):
    assert strings.RegexExtract().execute(SIZES, pattern, mode, group_index=group_index, **REGEX_DEFAULTS) == (
        expected,)


def test_regex_replace():
    replace = strings.RegexReplace().execute
    assert replace("A cat and a CAT", r"cat", "dog") == ("A dog and a dog",)
    assert replace("A cat and a CAT", r"cat", "dog", case_insensitive=False) == ("A dog and a CAT",)
    assert replace("a1 b2 c3", r"([a-z])(\d)", r"\2\1", count=2) == ("1a 2b c3",)
    assert replace("x\ny", r"x.y", "-", dotall=True) == ("-",)
    with pytest.raises(ValueError, match="^regex_pattern: .* not a valid regular expression"):
        replace("abc", "(", "x")
    with pytest.raises(ValueError, match="^replace: "):
        replace("abc", "b", r"\3")


def test_string_format():
    format_text = strings.StringFormat().execute
    assert format_text("{a} x {b:.2f} {c!r} {d[1]} {e[k]}", **{
        "values.a": "cat", "values.b": 2.0 / 3, "values.c": "q", "values.d": [1, 2], "values.e": {"k": 5}}) == (
        "cat x 0.67 'q' 2 5",)
    assert format_text("{a:>{b}}", **{"values.a": 7, "values.b": 3}) == ("  7",)
    for template, message in [("{a.__class__}", "reads an attribute"), ("{z}", "no connected value"),
                              ("{}", "positional fields"), ("{a", "f_string: ")]:
        with pytest.raises(ValueError, match=message):
            format_text(template, **{"values.a": 1})


def test_json_extract_string():
    extract = strings.JsonExtractString().execute
    answer = 'Sure!\n```json\n{"prompt": "a red fox", "steps": 20, "tags": ["a"]}\n```'
    assert extract(answer, "prompt") == ("a red fox",)
    assert extract(answer, "steps") == ("20",)
    assert extract(answer, "tags") == ("['a']",)  # str() of the value, as ComfyUI gives
    assert extract(answer, "missing") == ("",)
    assert extract("{broken {\"k\": 1}", "k") == ("1",)  # the first *valid* object
    assert extract("no json here", "k") == ("",)


# -- math expression -------------------------------------------------------------------------------------------------


def _math(text: str, **values: Any) -> tuple[float, int, bool]:
    return utilities.ComfyMathExpression().execute(text, **{f"values.{name}": v for name, v in values.items()})


@pytest.mark.parametrize("text, values, expected", [
    ("a + b", {"a": 1, "b": 2.5}, (3.5, 3, True)),
    ("a / b", {"a": 7, "b": 2}, (3.5, 3, True)),
    ("a // b", {"a": -7, "b": 2}, (-4.0, -4, True)),
    ("a % b", {"a": -7, "b": 3}, (2.0, 2, True)),
    ("-a * 1.5", {"a": 5}, (-7.5, -7, True)),  # INT truncates toward zero
    ("a ** 2 + b ** 0.5", {"a": 3, "b": 16}, (13.0, 13, True)),
    ("a - a", {"a": 4}, (0.0, 0, False)),
    ("sum(values)", {"a": 1, "b": 2, "c": 6}, (9.0, 9, True)),
    ("sum(a, b, c)", {"a": 1, "b": 2, "c": 6}, (9.0, 9, True)),
    ("max(values) - min(values)", {"a": 4, "b": -2, "c": 1}, (6.0, 6, True)),
    ("values[-1]", {"a": 4, "c": 9}, (9.0, 9, True)),
    ("round(a, 2)", {"a": 2.567}, (2.57, 2, True)),
    ("round(a)", {"a": 2.5}, (2.0, 2, True)),  # Python's round: halves to even
    ("sqrt(a) + floor(2.7) + ceil(2.1) + abs(-1)", {"a": 16}, (10.0, 10, True)),
    ("log(a) + log2(8) + log10(1000)", {"a": 1}, (6.0, 6, True)),
    ("pow(2, 10)", {}, (1024.0, 1024, True)),
    ("int(a) + float(1)", {"a": 2.9}, (3.0, 3, True)),
    ("a if a > b else b", {"a": 2, "b": 5}, (5.0, 5, True)),
    ("a > 1 and b < 1", {"a": 2, "b": 5}, (0.0, 0, False)),
    ("a or b", {"a": 0, "b": 5}, (5.0, 5, True)),
    ("not a", {"a": 0}, (1.0, 1, True)),
    ("a + b", {"a": True, "b": True}, (2.0, 2, True)),  # BOOLEAN inputs count as 0/1
    ("1 < a < 3", {"a": 2}, (1.0, 1, True)),
    ("a in values", {"a": 2}, (1.0, 1, True)),
    ("(a * 24) % 17", {"a": 5}, (1.0, 1, True)),
    ("a << 2 | 1", {"a": 1}, (5.0, 5, True)),
    ("\n a*2 \n", {"a": 1.25}, (2.5, 2, True)),  # surrounding whitespace (a multiline widget) is fine
])
def test_math_expression(text, values, expected):
    result = _math(text, **values)
    assert result == expected and [type(v) for v in result] == [float, int, bool]


@pytest.mark.parametrize("text, message", [
    ("", "cannot be empty"),
    ("a + c", "'c' is not defined"),
    ("1 / 0", "ZeroDivisionError"),
    ("sqrt(-1)", "math domain error"),
    ("'text'", "must give a number, got str"),
    ("a +", "invalid syntax"),
    ("a = 1", "invalid syntax"),
    ("1e308 * 10", "non-finite"),
    ("2 ** 1100", "too large for a FLOAT"),
    ("a.real", "attribute access is not allowed"),
    ("__import__('os').system('true')", "calling attribute access is not allowed"),
    ("__import__('os')", "function '__import__' is not available"),
    ("open('/etc/passwd')", "function 'open' is not available"),
    ("(lambda: 1)()", "calling lambda is not allowed"),
    ("[x for x in values]", "ListComp is not allowed"),
    ("[1, 2]", "a list literal is not allowed"),
    ("min(*values)", r"\* and \*\* arguments are not allowed"),
    ("2 ** 5000000", "operands up to 4000000"),  # simpleeval's ** bound, as ComfyUI has it
    ("pow(2, 4001)", r"exponent 4001 exceeds the maximum allowed \(4000\)"),  # ComfyUI's pow() bound
    ("10 ** 4000000", "operands up to|grows beyond"),
    ("3 ** 3000000", "grows beyond 100000 bits"),
    ("1 << 10 ** 6", "grows beyond 100000 bits"),
    ("'ab' * 10 ** 6", "grows beyond 100000 characters"),
    ("+".join(["a"] * 300), "nested more than 200 levels"),
    ("(" * 300 + "a" + ")" * 300, "invalid syntax|nested too deeply"),
    ("a" * 10_001, "longer than 10000 characters"),
])
def test_math_expression_errors_name_the_input(text, message):
    with pytest.raises(ValueError, match=message) as caught:
        _math(text, a=1, b=2)
    assert str(caught.value).startswith("expression: ")


def test_expression_errors_are_value_errors_and_the_evaluator_has_no_builtins():
    assert issubclass(expression.ExpressionError, ValueError)
    assert expression.evaluate("a * 2", {"a": 21}) == 42
    with pytest.raises(expression.ExpressionError, match="'print' is not available"):
        expression.evaluate("print(1)", {})
    with pytest.raises(expression.ExpressionError, match="not defined"):
        expression.evaluate("__builtins__", {})


# -- switch and preview ----------------------------------------------------------------------------------------------


def test_switch_asks_only_for_the_chosen_connected_branch():
    switch = utilities.ComfySwitchNode()
    assert switch.check_lazy_status(switch=True, on_false=None, on_true=None) == ["on_true"]
    assert switch.check_lazy_status(switch=False, on_false=None, on_true=None) == ["on_false"]
    assert switch.check_lazy_status(switch=True, on_false=None, on_true=3) == []
    assert switch.check_lazy_status(switch=True, on_false=None) == []  # on_true unconnected
    assert switch.execute(switch=True, on_false="f", on_true="t") == ("t",)
    assert switch.execute(switch=False, on_false="f", on_true="t") == ("f",)
    assert switch.execute(switch=True, on_false="f") == (None,)


def test_switch_passes_the_chosen_inputs_facts():
    facts = utilities.ComfySwitchNode.OUTPUT_FACTS
    flux, sd1 = {"family": "flux"}, {"family": "sd1"}
    assert facts({"on_true": flux, "on_false": sd1}, switch=True) == (flux,)
    assert facts({"on_true": flux}, switch=False) == (None,)
    assert facts({"on_true": flux, "on_false": sd1}) == (None,)  # a linked switch: unknown unless both agree
    assert facts({"on_true": flux, "on_false": flux}) == (flux,)


@pytest.mark.parametrize("value, text", [
    ("plain text", "plain text"), (3, "3"), (2.5, "2.5"), (True, "True"), (None, "None"),
    ({"a": [1, 2]}, '{"a": [1, 2]}'), ([1, "x"], '[1, "x"]'),
    (torch.tensor([1.0, 2.0]), "tensor([1., 2.])"),  # not JSON: str()
])
def test_preview_any_shows_values_as_comfyui_does(value, text):
    assert utilities.PreviewAny().main(value) == {"ui": {"text": [text]}}


# -- through the engine ----------------------------------------------------------------------------------------------


def _run(prompt: dict[str, Any]):
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    validation = validate_prompt(prompt, registry)
    assert validation.ok and not validation.node_errors, validation.to_response()
    return build_executor(registry, OutputCache()).execute(validation.prompt, "p1", {}, validation.outputs)


def _texts(result) -> dict[str, list[str]]:
    return {node_id: output["text"] for node_id, output in result.outputs.items()}


def test_utilities_workflow_runs_only_the_chosen_branch(node_env):
    prompt = {
        "1": {"class_type": "PrimitiveFloat", "inputs": {"value": 5.0}},
        "2": {"class_type": "PrimitiveInt", "inputs": {"value": 3}},
        "3": {"class_type": "PrimitiveBoolean", "inputs": {"value": True}},
        "4": {"class_type": "ComfyMathExpression", "inputs": {
            "expression": "a * 24 + b", "values.a": ["1", 0], "values.b": ["2", 0]}},
        # the branch not taken would fail (division by zero) if it ran
        "5": {"class_type": "ComfyMathExpression", "inputs": {"expression": "a / 0", "values.a": ["1", 0]}},
        "6": {"class_type": "ComfySwitchNode", "inputs": {"switch": ["3", 0], "on_true": ["4", 1],
                                                          "on_false": ["5", 1]}},
        "7": {"class_type": "PreviewAny", "inputs": {"source": ["6", 0]}},
        "8": {"class_type": "ComfySwitchNode", "inputs": {"switch": False, "on_true": ["5", 0],
                                                          "on_false": ["4", 2]}},
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["8", 0]}},
    }
    result = _run(prompt)
    assert result.success, result.error
    assert _texts(result) == {"7": ["123"], "9": ["True"]}
    assert "5" not in result.executed


def test_text_workflow(node_env):
    prompt = {
        "1": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "  a photo of a CAT  "}},
        "2": {"class_type": "StringTrim", "inputs": {"string": ["1", 0], "mode": "Both"}},
        "3": {"class_type": "CaseConverter", "inputs": {"string": ["2", 0], "mode": "lowercase"}},
        "4": {"class_type": "RegexReplace", "inputs": {"string": ["3", 0], "regex_pattern": r"\bcat\b",
                                                       "replace": "fox"}},
        "5": {"class_type": "StringConcatenate", "inputs": {"string_a": ["4", 0], "string_b": "4k",
                                                            "delimiter": ", "}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
        "7": {"class_type": "StringLength", "inputs": {"string": ["5", 0]}},
        "8": {"class_type": "ComfyMathExpression", "inputs": {"expression": "a // 2", "values.a": ["7", 0]}},
        "9": {"class_type": "StringFormat", "inputs": {"f_string": "{a} has {b} chars", "values.a": ["5", 0],
                                                       "values.b": ["8", 1]}},
        "10": {"class_type": "PreviewAny", "inputs": {"source": ["9", 0]}},
        "11": {"class_type": "RegexMatch", "inputs": {"string": ["5", 0], "regex_pattern": "FOX",
                                                      "case_insensitive": True, "multiline": False,
                                                      "dotall": False}},
        "12": {"class_type": "PreviewAny", "inputs": {"source": ["11", 0]}},
    }
    result = _run(prompt)
    assert result.success, result.error
    assert _texts(result) == {"6": ["a photo of a fox, 4k"], "10": ["a photo of a fox, 4k has 10 chars"],
                              "12": ["True"]}


def test_a_bad_expression_is_the_nodes_error_not_a_crash(node_env):
    result = _run({
        "1": {"class_type": "ComfyMathExpression", "inputs": {"expression": "a +"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    })
    assert not result.success
    assert result.error["node_id"] == "1" and "expression: 'a +': invalid syntax" in result.error["exception_message"]


def test_validation_checks_choices_ranges_and_link_types(node_env):
    errors = validation_errors({
        "1": {"class_type": "CaseConverter", "inputs": {"string": "x", "mode": "Shout"}},
        "2": {"class_type": "RegexExtract", "inputs": {
            "string": "x", "regex_pattern": "x", "mode": "First Group", "case_insensitive": True,
            "multiline": False, "dotall": False, "group_index": 101}},
        "3": {"class_type": "PrimitiveString", "inputs": {"value": "7"}},
        "4": {"class_type": "ComfyMathExpression", "inputs": {"expression": "a", "values.a": ["3", 0]}},
        "5": {"class_type": "StringSubstring", "inputs": {"string": "x", "start": 0}},
    })
    assert [e["type"] for e in errors["1"]] == ["value_not_in_list"]
    assert [e["type"] for e in errors["2"]] == ["value_bigger_than_max"]
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors["4"]] == [
        ("return_type_mismatch", "values.a")]
    assert [e["type"] for e in errors["5"]] == ["required_input_missing"]


def test_editor_files_with_grown_value_inputs_convert(node_env):
    """A ComfyUI editor file stores the math node's grown inputs by name (`values.a`) and its widget values."""
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    workflow = {
        "nodes": [
            {"id": 1, "type": "PrimitiveInt", "mode": 0, "inputs": [],
             "outputs": [{"name": "INT", "type": "INT", "links": [1]}], "widgets_values": [6, "fixed"]},
            {"id": 2, "type": "ComfyMathExpression", "mode": 0,
             "inputs": [{"name": "values.a", "type": "FLOAT,INT,BOOLEAN", "link": 1},
                        {"name": "values.b", "type": "FLOAT,INT,BOOLEAN", "link": None}],
             "outputs": [{"name": "FLOAT", "type": "FLOAT", "links": [2]}], "widgets_values": ["a / 4"]},
            {"id": 3, "type": "PreviewAny", "mode": 0, "inputs": [{"name": "source", "type": "*", "link": 2}],
             "outputs": [], "widgets_values": []},
        ],
        "links": [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "FLOAT"]],
    }
    prompt = editor_to_api(workflow, registry)
    assert prompt["2"]["inputs"] == {"expression": "a / 4", "values.a": ["1", 0]}
    assert prompt["1"]["inputs"] == {"value": 6}
    result = _run(prompt)
    assert result.success and _texts(result) == {"3": ["1.5"]}


@pytest.mark.parametrize("aspect_ratio, megapixels, multiple, minimum, expected", [
    ("1:1 (Square)", 1.0, 8, 256, (1024, 1024)),
    ("16:9 (Widescreen)", 1.0, 8, 256, (1368, 768)),  # 170.7 and 96 blocks of 8
    ("3:2 (Photo)", 1.0, 32, 256, (1248, 832)),  # 39.2 and 26.1 blocks of 32
    ("9:16 (Portrait Widescreen)", 2.0, 16, 256, (1088, 1936)),
    # 496x208 would have a side under 256: the smallest 21:9 size with both sides multiples of 8 and >= 256
    ("21:9 (Ultrawide)", 0.1, 8, 256, (672, 288)),
])
def test_resolution_selector_gives_comfyuis_sizes(aspect_ratio, megapixels, multiple, minimum, expected):
    (width, height) = utilities.ResolutionSelector().execute(aspect_ratio, megapixels, multiple, minimum)
    assert (width, height) == expected
    assert width % multiple == 0 and height % multiple == 0 and min(width, height) >= minimum
