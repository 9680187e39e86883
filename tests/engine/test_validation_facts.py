"""Facts known at validation time: OUTPUT_FACTS, pass-through by type, and VALIDATE_INPUTS(input_facts)."""
import logging

import pytest

from engine.registry import NodeRegistry
from engine.validation import _custom_validation_signature, validate_prompt


class Source:
    """States the flavour and size of the THING it makes."""

    RETURN_TYPES = ("THING", "INT")
    FUNCTION = "run"
    CATEGORY = "test"
    asked: list[dict] = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"flavour": (["x", "y", "broken", "malformed"],),
                             "size": ("INT", {"default": 1, "min": 1, "max": 100})}}

    @classmethod
    def OUTPUT_FACTS(cls, input_facts, flavour, size):
        cls.asked.append({"input_facts": input_facts, "flavour": flavour, "size": size})
        if flavour == "broken":
            raise RuntimeError("cannot tell")
        if flavour == "malformed":
            return ({"flavour": flavour},)  # one entry for two outputs
        return {"flavour": flavour, "size": size}, None

    def run(self, flavour, size):
        return (flavour, size)


class Unknown:
    """A THING whose facts nobody states."""

    RETURN_TYPES = ("THING",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def run(self):
        return ("?",)


class Patch:
    """THING -> THING without OUTPUT_FACTS: the THING's facts pass through; the INT output gets none."""

    RETURN_TYPES = ("THING", "INT")
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"thing": ("THING",), "strength": ("INT", {"default": 1})}}

    def run(self, thing, strength):
        return (thing, strength)


class Merge:
    """Two THINGs in, one out: which facts the output has is ambiguous unless only one side has any."""

    RETURN_TYPES = ("THING",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"first": ("THING",), "second": ("THING",)}}

    def run(self, first, second):
        return (first,)


class Consumer:
    """Refuses mode "b" for a THING of flavour "x", at validation; records the facts it was given."""

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "test"
    seen: list[dict] = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"thing": ("THING",), "mode": (["a", "b"],),
                             "count": ("INT", {"default": 1, "min": 0, "max": 10})}}

    @classmethod
    def VALIDATE_INPUTS(cls, mode, input_facts):
        cls.seen.append(dict(input_facts))
        flavour = input_facts.get("thing", {}).get("flavour")
        if flavour == "x" and mode == "b":
            return f"mode {mode!r} cannot handle a thing of flavour {flavour!r}"
        return True

    def run(self, thing, mode, count):
        return {"ui": {"done": [True]}}


class PlainConsumer:
    """Takes a THING without asking for facts."""

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"thing": ("THING",)}}

    def run(self, thing):
        return {}


@pytest.fixture
def registry():
    Source.asked.clear()
    Consumer.seen.clear()
    registry = NodeRegistry()
    registry.register_mappings({cls.__name__: cls for cls in (Source, Unknown, Patch, Merge, Consumer, PlainConsumer)},
                               source="tests")
    return registry


def source(flavour="x", size=4):
    return {"class_type": "Source", "inputs": {"flavour": flavour, "size": size}}


def consumer(thing_link, mode="a", count=1):
    return {"class_type": "Consumer", "inputs": {"thing": thing_link, "mode": mode, "count": count}}


def test_facts_flow_from_a_source_through_a_pass_through_node_into_validation(registry):
    prompt = {"1": source("x", 4.0),
              "2": {"class_type": "Patch", "inputs": {"thing": ["1", 0], "strength": 2}},
              "3": consumer(["2", 0], mode="a")}
    result = validate_prompt(prompt, registry)
    assert result.ok, result.to_response()
    assert Consumer.seen == [{"thing": {"flavour": "x", "size": 4}}]
    [asked] = Source.asked
    assert asked == {"input_facts": {}, "flavour": "x", "size": 4} and isinstance(asked["size"], int)


def test_validate_inputs_refusing_on_facts_is_a_normal_error_naming_the_input(registry):
    prompt = {"1": source("x"),
              "2": {"class_type": "Patch", "inputs": {"thing": ["1", 0], "strength": 2}},
              "3": consumer(["2", 0], mode="b")}
    result = validate_prompt(prompt, registry)
    assert result.error["type"] == "prompt_outputs_failed_validation"
    [error] = result.node_errors["3"]["errors"]
    assert error["type"] == "custom_validation_failed"
    assert error["details"] == "mode 'b' cannot handle a thing of flavour 'x'"
    assert error["extra_info"]["input_name"] == "mode"
    prompt["1"]["inputs"]["flavour"] = "y"
    assert validate_prompt(prompt, registry).ok


def test_a_message_naming_a_linked_input_names_it(registry):
    class Picky(Consumer):
        @classmethod
        def VALIDATE_INPUTS(cls, input_facts):
            return "thing is of the wrong flavour"

    registry.register("Picky", Picky, source="tests")
    prompt = {"1": source(), "2": {"class_type": "Picky", "inputs": {"thing": ["1", 0], "mode": "a", "count": 1}}}
    [error] = validate_prompt(prompt, registry).node_errors["2"]["errors"]
    assert error["extra_info"]["input_name"] == "thing"


def test_outputs_without_a_matching_input_type_and_unstated_facts_are_unknown(registry):
    prompt = {"1": source("x"),
              "2": {"class_type": "Patch", "inputs": {"thing": ["1", 0], "strength": 2}},
              "3": {"class_type": "Unknown", "inputs": {}},
              "4": consumer(["3", 0])}
    assert validate_prompt(prompt, registry).ok
    assert Consumer.seen == [{}]


def test_pass_through_is_unknown_when_ambiguous_and_takes_the_only_known_side(registry):
    prompt = {"1": source("x"), "2": source("y"), "3": {"class_type": "Unknown", "inputs": {}},
              "4": {"class_type": "Merge", "inputs": {"first": ["1", 0], "second": ["2", 0]}},
              "5": {"class_type": "Merge", "inputs": {"first": ["3", 0], "second": ["2", 0]}},
              "6": consumer(["4", 0], mode="b"),
              "7": consumer(["5", 0], mode="b")}
    result = validate_prompt(prompt, registry)
    assert result.ok, result.to_response()
    assert Consumer.seen == [{}, {"thing": {"flavour": "y", "size": 4}}]


def test_output_facts_that_raise_or_break_the_contract_are_unknown_not_an_error(registry, caplog):
    prompt = {"1": source("broken"), "2": consumer(["1", 0], mode="b"),
              "3": source("malformed"), "4": consumer(["3", 0], mode="b")}
    with caplog.at_level(logging.DEBUG, logger="engine.validation"):
        result = validate_prompt(prompt, registry)
    assert result.ok, result.to_response()
    assert Consumer.seen == [{}, {}]
    assert any("cannot tell" in record.exc_text for record in caplog.records if record.exc_text)


def test_facts_are_lazy_memoised_and_only_of_nodes_that_passed(registry):
    unasked = {"1": source("x"), "2": {"class_type": "PlainConsumer", "inputs": {"thing": ["1", 0]}}}
    assert validate_prompt(unasked, registry).ok
    assert Source.asked == []
    shared = {"1": source("x"), "2": consumer(["1", 0]), "3": consumer(["1", 0], count=2)}
    assert validate_prompt(shared, registry).ok
    assert len(Source.asked) == 1 and len(Consumer.seen) == 2
    Source.asked.clear()
    failing = {"1": source("x", size=500), "2": consumer(["1", 0])}
    assert error_types(validate_prompt(failing, registry), "1") == ["value_bigger_than_max"]
    assert Source.asked == []


def test_widgets_taken_as_keywords_keep_the_engines_checks(registry):
    class KeywordConsumer(Consumer):
        @classmethod
        def VALIDATE_INPUTS(cls, input_facts, **widgets):
            if input_facts["thing"]["flavour"] == "x" and widgets["mode"] == "b":
                return f"mode {widgets['mode']!r} cannot handle a thing of flavour 'x'"
            return True

    registry.register("KeywordConsumer", KeywordConsumer, source="tests")
    prompt = {"1": source("x"),
              "2": {"class_type": "KeywordConsumer", "inputs": {"thing": ["1", 0], "mode": "c", "count": 1}}}
    assert error_types(validate_prompt(prompt, registry), "2") == ["value_not_in_list"]
    prompt["2"]["inputs"]["mode"] = "b"
    [error] = validate_prompt(prompt, registry).node_errors["2"]["errors"]
    assert (error["type"], error["extra_info"]["input_name"]) == ("custom_validation_failed", "mode")


def test_input_facts_is_not_an_input_the_engine_leaves_unchecked(registry):
    assert _custom_validation_signature(Consumer) == (frozenset({"mode"}), False, True)
    prompt = {"1": source("x"), "2": consumer(["1", 0], count=50)}
    assert error_types(validate_prompt(prompt, registry), "2") == ["value_bigger_than_max"]


def test_facts_are_read_only_for_their_readers(registry):
    class Meddler(Consumer):
        @classmethod
        def VALIDATE_INPUTS(cls, input_facts):
            input_facts["thing"]["flavour"] = "y"
            return True

    registry.register("Meddler", Meddler, source="tests")
    prompt = {"1": source("x"), "2": {"class_type": "Meddler", "inputs": {"thing": ["1", 0], "mode": "a",
                                                                          "count": 1}}}
    [error] = validate_prompt(prompt, registry).node_errors["2"]["errors"]
    assert error["details"].startswith("TypeError")


def test_facts_pass_through_chains_deeper_than_the_recursion_limit(registry):
    prompt = {"0": source("x")}
    for index in range(1, 1500):
        prompt[str(index)] = {"class_type": "Patch", "inputs": {"thing": [str(index - 1), 0], "strength": 1}}
    prompt["end"] = consumer(["1499", 0], mode="b")
    [error] = validate_prompt(prompt, registry).node_errors["end"]["errors"]
    assert error["type"] == "custom_validation_failed"


def error_types(result, node_id):
    return [error["type"] for error in result.node_errors[node_id]["errors"]]
