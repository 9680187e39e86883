"""The executor's node-call guard: a context manager around every call of a node's FUNCTION."""
import asyncio
import contextlib

from engine.cache import OutputCache
from engine.executor import Executor
from tests.engine.nodes_for_tests import make_registry


class SlowAsyncDouble:
    """Notes when its awaited body starts and ends, so a test can see the guard span the await."""

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"
    log: list[str] = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    async def run(self, value):
        SlowAsyncDouble.log.append("started")
        await asyncio.sleep(0.001)
        SlowAsyncDouble.log.append("finished")
        return (value * 2,)


def guarded_executor(guard):
    registry = make_registry()
    registry.register_mappings({"SlowAsyncDouble": SlowAsyncDouble}, {}, source="tests")
    return Executor(registry, OutputCache(16), node_call_guard=guard)


def recording_guard(log):
    @contextlib.contextmanager
    def guard(inputs):
        log.append(("enter", dict(inputs)))
        try:
            yield
        except Exception as exc:
            log.append(("exit after", type(exc).__name__))
            raise
        log.append(("exit", None))
    return guard


def test_the_guard_sees_each_calls_inputs_and_wraps_the_call(calls):
    log = []
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 3}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 4}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    executor = guarded_executor(recording_guard(log))
    executor.events.subscribe(lambda name, data: log.append(("event", name)) if name == "executed" else None)
    assert executor.execute(prompt, "p1").success
    assert log == [("enter", {"value": 3}), ("exit", None),
                   ("enter", {"a": 3, "b": 4}), ("exit", None),
                   ("enter", {"value": 7}), ("exit", None), ("event", "executed")]
    assert calls == ["Const:3", "Add:3+4", "Output:7"]


def test_the_guard_spans_the_await_of_an_async_function():
    log = SlowAsyncDouble.log
    log.clear()
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 21}},
              "2": {"class_type": "SlowAsyncDouble", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    executor = guarded_executor(recording_guard(log))
    assert executor.execute(prompt, "p1").outputs["3"] == {"values": [42]}
    assert log[2:6] == [("enter", {"value": 21}), "started", "finished", ("exit", None)]


def test_the_guard_is_exited_when_the_node_raises_and_the_error_is_the_nodes():
    log = []
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 7}},
              "2": {"class_type": "Fail", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = guarded_executor(recording_guard(log)).execute(prompt, "p1")
    assert result.status == "error"
    assert result.error["node_id"] == "2" and result.error["exception_message"] == "cannot handle 7"
    assert log[-2:] == [("enter", {"value": 7}), ("exit after", "ValueError")]


def test_the_guard_is_entered_once_per_list_slice(calls):
    log = []
    prompt = {"1": {"class_type": "Range", "inputs": {"count": 3}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 10}},
              "3": {"class_type": "Sum", "inputs": {"values": ["2", 0]}},
              "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}}}
    assert guarded_executor(recording_guard(log)).execute(prompt, "p1").outputs["4"] == {"values": [33]}
    entered = [inputs for kind, inputs in log if kind == "enter"]
    assert entered == [{"count": 3}, {"a": 0, "b": 10}, {"a": 1, "b": 10}, {"a": 2, "b": 10},
                       {"values": [10, 11, 12]}, {"value": 33}]


def test_a_guard_that_raises_fails_the_node_it_guards(calls):
    def refusing_guard(inputs):
        if inputs.get("b") == 4:
            raise RuntimeError("cannot pin")
        return contextlib.nullcontext()

    prompt = {"1": {"class_type": "Const", "inputs": {"value": 3}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 4}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = guarded_executor(refusing_guard).execute(prompt, "p1")
    assert result.status == "error"
    assert (result.error["node_id"], result.error["exception_message"]) == ("2", "cannot pin")
    assert calls == ["Const:3"]


def test_the_guard_gets_a_read_only_view_of_the_inputs():
    refused = []

    @contextlib.contextmanager
    def meddling_guard(inputs):
        try:
            inputs["value"] = 0
        except TypeError:
            refused.append(True)
        yield

    prompt = {"1": {"class_type": "Const", "inputs": {"value": 5}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    assert guarded_executor(meddling_guard).execute(prompt, "p1").outputs["2"] == {"values": [5]}
    assert refused == [True, True]

