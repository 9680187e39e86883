"""Engine behaviours ComfyUI's execution suite relies on: its classic cache, per-id outputs of nodes that get their
own id, progress_state, raw links and DYNPROMPT, VALIDATE_INPUTS and IS_CHANGED seeing linked inputs as None,
async VALIDATE_INPUTS, and ComfyUI's cache flags."""
import argparse

import pytest

from app.settings import add_common_arguments, settings_from_args
from engine.cache import LastPromptCache, OutputCache
from engine.control_flow import DynamicPrompt, NodeNotFoundError
from engine.events import EventBus
from engine.executor import Executor
from engine.validation import validate_prompt


def chain(value):
    return {"1": {"class_type": "Const", "inputs": {"value": value}},
            "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}


@pytest.mark.parametrize("cache, reruns", [(LastPromptCache(), ["Const:1"]), (OutputCache(10), [])])
def test_the_classic_cache_keeps_only_the_latest_prompt(registry, calls, cache, reruns):
    executor = Executor(registry, cache)
    executor.execute(chain(1), "a")
    executor.execute(chain(2), "b")
    calls.clear()
    executor.execute(chain(1), "c")
    assert [call for call in calls if call.startswith("Const")] == reruns
    calls.clear()
    executor.execute(chain(1), "d")
    assert calls == []  # the latest prompt itself is always kept


class WithOwnId:
    """Gets its own id, so its output may depend on it: ComfyUI never reuses it for another node id."""

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, value, unique_id):
        WithOwnId.seen.append(unique_id)
        return (value,)


def test_nodes_getting_their_id_are_cached_per_id(registry):
    registry.register("WithOwnId", WithOwnId, source="tests")
    WithOwnId.seen = []
    executor = Executor(registry, OutputCache(10))
    node = {"class_type": "WithOwnId", "inputs": {"value": 3}}
    executor.execute({"a": node, "out": {"class_type": "Output", "inputs": {"value": ["a", 0]}}}, "p1")
    executor.execute({"b": node, "out": {"class_type": "Output", "inputs": {"value": ["b", 0]}}}, "p2")
    executor.execute({"b": node, "out": {"class_type": "Output", "inputs": {"value": ["b", 0]}}}, "p3")
    assert WithOwnId.seen == ["a", "b"]


def test_progress_state_reports_running_then_finished_nodes_with_their_origin(registry):
    states = []
    bus = EventBus()
    bus.subscribe(lambda name, data: states.append(data) if name == "progress_state" else None)
    prompt = {"1": {"class_type": "CountDown", "inputs": {"n": 1, "total": 0}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    assert Executor(registry, OutputCache(10), bus).execute(prompt, "p").success
    assert all(state["prompt_id"] == "p" for state in states)
    assert states[0]["nodes"]["1"] == {"value": 0.0, "max": 1.0, "state": "running", "node_id": "1",
                                       "prompt_id": "p", "display_node_id": "1", "parent_node_id": None,
                                       "real_node_id": "1"}
    final = states[-1]["nodes"]
    assert {node: entry["state"] for node, entry in final.items()} == {
        "1": "finished", "2": "finished", "1.0": "finished", "1.1": "finished"}
    assert final["1.0"]["value"] == final["1.0"]["max"] == 1.0
    assert (final["1.0"]["parent_node_id"], final["1.0"]["real_node_id"], final["1.0"]["display_node_id"]) == (
        "1", "1", "1")


class LinkReader:
    """Receives its `source` input as the raw link, and the running prompt as DYNPROMPT."""

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"source": ("INT", {"rawLink": True})}, "hidden": {"dynprompt": "DYNPROMPT"}}

    def run(self, source, dynprompt):
        return (f"{source[0]}:{source[1]}:{dynprompt.get_node(source[0])['class_type']}",)


def test_a_raw_link_input_gets_the_link_and_dynprompt_the_graph(registry):
    registry.register("LinkReader", LinkReader, source="tests")
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 4}},
              "2": {"class_type": "LinkReader", "inputs": {"source": ["1", 0]}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    assert Executor(registry, OutputCache(10)).execute(prompt, "p").outputs == {"3": {"values": ["1:0:Const"]}}


def test_dynamic_prompt_answers_comfyuis_questions():
    original = {"1": {"class_type": "A", "inputs": {}}}
    current = {**original, "1.0": {"class_type": "B", "inputs": {}}, "1.0.0": {"class_type": "C", "inputs": {}}}
    dynamic = DynamicPrompt(original, current, {"1.0": "1", "1.0.0": "1.0"}, {"1.0": "1", "1.0.0": "1"})
    assert dynamic.get_node("1.0")["class_type"] == "B" and dynamic.has_node("1.0.0") and not dynamic.has_node("2")
    assert dynamic.get_real_node_id("1.0.0") == "1" and dynamic.get_parent_node_id("1.0.0") == "1.0"
    assert dynamic.get_parent_node_id("1") is None and dynamic.get_display_node_id("1.0.0") == "1"
    assert dynamic.all_node_ids() == {"1", "1.0", "1.0.0"} and dynamic.get_original_prompt() is original
    with pytest.raises(NodeNotFoundError):
        dynamic.get_node("2")


class Checked:
    """VALIDATE_INPUTS naming a linked input (it sees None) and an async one taking **kwargs."""

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"
    seen: list = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "limit": ("INT", {"min": 0, "max": 10})}}

    @classmethod
    def VALIDATE_INPUTS(cls, value, limit):
        cls.seen.append((value, limit))
        return True

    def run(self, value, limit):
        return (value,)


class CheckedAsync(Checked):
    @classmethod
    async def VALIDATE_INPUTS(cls, **values):
        return "no sevens" if values["limit"] == 7 else True


@pytest.mark.parametrize("kind, limit, errors", [
    ("Checked", 50, []),  # named: the node's own check replaces the range check
    ("CheckedAsync", 50, []),  # **kwargs: every input is the node's to check
    ("CheckedAsync", 7, ["custom_validation_failed"]),  # and its coroutine is awaited
])
def test_validate_inputs_sees_links_as_none_and_may_be_async(registry, kind, limit, errors):
    registry.register("Checked", Checked, source="tests")
    registry.register("CheckedAsync", CheckedAsync, source="tests")
    Checked.seen = []
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 2}},
              "2": {"class_type": kind, "inputs": {"value": ["1", 0], "limit": limit}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = validate_prompt(prompt, registry)
    assert [e["type"] for e in result.node_errors.get("2", {}).get("errors", [])] == errors
    assert Checked.seen == ([(None, 50)] if kind == "Checked" else [])


class ChangedByConstant:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "factor": ("INT", {"default": 1})}}

    @classmethod
    def IS_CHANGED(cls, value, factor):
        return factor if value is None else float("nan")

    def run(self, value, factor):
        ChangedByConstant.runs += 1
        return (value * factor,)


def test_is_changed_gets_linked_inputs_as_none(registry):
    registry.register("ChangedByConstant", ChangedByConstant, source="tests")
    ChangedByConstant.runs = 0
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 2}},
              "2": {"class_type": "ChangedByConstant", "inputs": {"value": ["1", 0], "factor": 3}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    executor = Executor(registry, OutputCache(10))
    executor.execute(prompt, "p1")
    executor.execute(prompt, "p2")
    assert ChangedByConstant.runs == 1


@pytest.mark.parametrize("flags, size, classic", [
    ([], 64, False), (["--cache-lru", "5"], 5, False), (["--cache-lru", "0"], 64, True),
    (["--cache-classic"], 64, True), (["--cache-none"], 0, False), (["--cache-size", "7"], 7, False)])
def test_comfyuis_cache_flags(flags, size, classic):
    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    settings = settings_from_args(parser.parse_args(flags))
    assert (settings.cache_size, settings.cache_classic) == (size, classic)


def test_cache_flags_are_one_choice():
    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--cache-none", "--cache-lru", "3"])
