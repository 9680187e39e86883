import threading

import pytest

from engine.cache import OutputCache
from engine.executor import Executor
from engine.validation import validate_prompt


def chain_prompt(value=1, increment=2):
    return {"1": {"class_type": "Const", "inputs": {"value": value}},
            "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": increment}},
            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}


def names(recorded):
    return [name for name, _ in recorded]


def test_runs_in_topological_order_and_reports_ui(executor, calls):
    prompt = {"3": {"class_type": "Output", "inputs": {"value": ["2", 0]}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["10", 0]}},
              "10": {"class_type": "Const", "inputs": {"value": 4}},
              "1": {"class_type": "Const", "inputs": {"value": 3}}}
    result = executor.execute(prompt, "p1")
    assert result.success
    assert calls == ["Const:3", "Const:4", "Add:3+4", "Output:7"]
    assert result.outputs == {"3": {"values": [7]}}


def test_events_have_comfyui_names_and_fields(executor, recorded_events, calls):
    executor.execute(chain_prompt(), "p1")
    assert [name for name in names(recorded_events) if name != "progress_state"] == [
        "execution_start", "execution_cached", "executing", "executing", "executing", "executed", "execution_success",
        "executing"]
    executing = [data for name, data in recorded_events if name == "executing"]
    assert [d["node"] for d in executing] == ["1", "2", "3", None]
    assert all(d["prompt_id"] == "p1" for d in executing)
    executed = dict(recorded_events)["executed"]
    assert executed == {"node": "3", "display_node": "3", "output": {"values": [3]}, "prompt_id": "p1"}


def test_unchanged_rerun_executes_nothing(executor, recorded_events, calls):
    executor.execute(chain_prompt(), "p1")
    calls.clear()
    recorded_events.clear()
    result = executor.execute(chain_prompt(), "p2")
    assert calls == []
    assert result.executed == []
    cached = dict(recorded_events)["execution_cached"]
    assert sorted(cached["nodes"]) == ["1", "2", "3"]
    assert result.outputs == {"3": {"values": [3]}}
    assert "executed" in names(recorded_events)  # cached outputs are re-sent so clients show them


def test_changing_one_widget_reexecutes_only_it_and_dependents(executor, calls):
    executor.execute(chain_prompt(), "p1")
    calls.clear()
    result = executor.execute(chain_prompt(increment=5), "p2")
    assert calls == ["Add:1+5", "Output:6"]
    assert result.cached == ["1"]


def test_other_workflow_sharing_a_subgraph_reuses_it(executor, calls):
    executor.execute(chain_prompt(), "p1")
    calls.clear()
    other = {"a": {"class_type": "Const", "inputs": {"value": 1}},
             "b": {"class_type": "Add", "inputs": {"a": ["a", 0], "b": 2}},
             "c": {"class_type": "Add", "inputs": {"a": ["b", 0], "b": 10}},
             "d": {"class_type": "Output", "inputs": {"value": ["c", 0]}}}
    result = executor.execute(other, "p2")
    assert calls == ["Add:3+10", "Output:13"]
    assert sorted(result.cached) == ["a", "b"]


def test_cache_is_bounded_lru(registry, calls):
    executor = Executor(registry, OutputCache(max_entries=2))
    executor.execute(chain_prompt(), "p1")
    assert len(executor.cache) == 2
    calls.clear()
    executor.execute(chain_prompt(increment=5), "p2")
    assert calls == ["Const:1", "Add:1+5", "Output:6"]  # the oldest entry (Const) had been evicted


def test_only_nodes_feeding_outputs_run(executor, calls):
    prompt = chain_prompt()
    prompt["9"] = {"class_type": "Const", "inputs": {"value": 99}}
    executor.execute(prompt, "p1")
    assert "Const:99" not in calls


def test_partial_execution_runs_chosen_outputs_only(executor, calls):
    prompt = chain_prompt()
    prompt["8"] = {"class_type": "Const", "inputs": {"value": 8}}
    prompt["9"] = {"class_type": "Output", "inputs": {"value": ["8", 0]}}
    result = executor.execute(prompt, "p1", execute_outputs=["9"])
    assert calls == ["Const:8", "Output:8"]
    assert list(result.outputs) == ["9"]


def test_list_outputs_map_over_consumers_and_input_is_list_gets_the_whole_list(executor, calls):
    prompt = {"1": {"class_type": "Range", "inputs": {"count": 3}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 10}},
              "3": {"class_type": "Sum", "inputs": {"values": ["2", 0]}},
              "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}},
              "5": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = executor.execute(prompt, "p1")
    assert result.success
    assert [c for c in calls if c.startswith("Add")] == ["Add:0+10", "Add:1+10", "Add:2+10"]
    assert "Sum:[10, 11, 12]" in calls
    assert result.outputs["4"] == {"values": [33]}
    assert result.outputs["5"] == {"values": [10, 11, 12]}


def test_lazy_inputs_evaluate_only_the_needed_branch(executor, calls):
    def prompt(condition):
        return {"1": {"class_type": "Const", "inputs": {"value": 1}},
                "2": {"class_type": "Const", "inputs": {"value": 2}},
                "3": {"class_type": "Switch", "inputs": {"condition": condition, "on_true": ["1", 0],
                                                          "on_false": ["2", 0]}},
                "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}}}
    result = executor.execute(prompt(True), "p1")
    assert result.outputs["4"] == {"values": [1]}
    assert "Const:2" not in calls
    calls.clear()
    result = executor.execute(prompt(False), "p2")
    assert result.outputs["4"] == {"values": [2]}
    assert "Const:1" not in calls and "Const:2" in calls


def test_expansion_builds_a_loop(executor, calls):
    prompt = {"1": {"class_type": "CountDown", "inputs": {"n": 4, "total": 0}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    result = executor.execute(prompt, "p1")
    assert result.success, result.error
    assert result.outputs["2"] == {"values": [10]}
    assert [c for c in calls if c.startswith("CountDown")] == [f"CountDown:{n}" for n in (4, 3, 2, 1, 0)]
    calls.clear()
    executor.execute(prompt, "p2")
    assert calls == []  # the expanded node's resolved output is cached


def test_execution_blocker_stops_downstream_silently(executor, recorded_events, calls):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Gate", "inputs": {"value": ["1", 0], "open": False, "message": ""}},
              "3": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": 1}},
              "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}},
              "5": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    result = executor.execute(prompt, "p1")
    assert result.success
    assert not any(c.startswith("Add") for c in calls)
    assert "4" not in result.outputs and result.outputs["5"] == {"values": [1]}
    assert "execution_error" not in names(recorded_events)


def test_execution_blocker_with_message_reports_it_and_the_rest_goes_on(executor, recorded_events):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Gate", "inputs": {"value": ["1", 0], "open": False, "message": "no way"}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}},
              "4": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    result = executor.execute(prompt, "p1")
    errors = [data for name, data in recorded_events if name == "execution_error"]
    assert [e["exception_message"] for e in errors] == ["Execution Blocked: no way"]
    assert errors[0]["node_id"] == "3"
    assert result.outputs["4"] == {"values": [1]}


def test_async_node_functions(executor, calls):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 21}},
              "2": {"class_type": "AsyncDouble", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    assert executor.execute(prompt, "p1").outputs["3"] == {"values": [42]}


def test_progress_events_from_long_nodes(executor, recorded_events):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Slow", "inputs": {"value": ["1", 0], "steps": 3, "delay": 0.0}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    executor.execute(prompt, "p1")
    progress = [data for name, data in recorded_events if name == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 3, "2"), (2, 3, "2"), (3, 3, "2")]


def test_interrupt_from_another_thread_stops_a_long_node_and_keeps_the_cache_consistent(
        executor, recorded_events, calls):
    from tests.engine.nodes_for_tests import Slow
    Slow.started.clear()
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Slow", "inputs": {"value": ["1", 0], "steps": 2000, "delay": 0.005}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("result", executor.execute(prompt, "p1")))
    worker.start()
    assert Slow.started.wait(10)
    executor.interrupt.request()
    worker.join(10)
    result = outcome["result"]
    assert result.status == "interrupted"
    assert result.error["node_id"] == "2" and result.error["node_type"] == "Slow"
    assert "execution_interrupted" in names(recorded_events)
    assert "execution_success" not in names(recorded_events)
    calls.clear()
    prompt["2"]["inputs"]["steps"] = 2000
    prompt["2"]["inputs"]["delay"] = 0.0
    rerun = executor.execute(prompt, "p2")
    assert rerun.success
    assert calls == ["Slow:1", "Output:1"]  # Const came from the cache; nothing half-written was reused


def test_interrupt_between_nodes(registry, calls):
    executor = Executor(registry)
    executor.events.subscribe(lambda name, data: executor.interrupt.request()
                              if name == "executing" and data["node"] == "2" else None)
    result = executor.execute(chain_prompt(), "p1")
    assert result.status == "interrupted"
    assert "Output:3" not in calls


def test_node_exception_names_the_node_and_keeps_earlier_outputs_cached(executor, recorded_events, calls):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 7}},
              "2": {"class_type": "Fail", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = executor.execute(prompt, "p1")
    assert result.status == "error"
    error = dict(recorded_events)["execution_error"]
    assert error["node_id"] == "2" and error["node_type"] == "Fail"
    assert error["exception_type"] == "ValueError"
    assert error["exception_message"] == "cannot handle 7"
    assert any("cannot handle 7" in line for line in error["traceback"])
    assert error["current_inputs"] == {"value": [7]}
    calls.clear()
    executor.execute(chain_prompt(value=7), "p2")
    assert "Const:7" not in calls


def test_hidden_inputs_and_union_types(executor):
    prompt = {"1": {"class_type": "FloatConst", "inputs": {"value": 0.25}},
              "2": {"class_type": "Hidden", "inputs": {"value": ["1", 0]}}}
    result = executor.execute(prompt, "p1", extra_data={"extra_pnginfo": {"workflow": {"nodes": []}}})
    [seen] = result.outputs["2"]["seen"]
    assert seen == {"value": 0.25, "unique_id": "2", "nodes": ["1", "2"], "extra": {"workflow": {"nodes": []}}}


def test_is_changed_nan_always_reruns(executor, calls):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Volatile", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    executor.execute(prompt, "p1")
    calls.clear()
    executor.execute(prompt, "p2")
    assert calls == ["Volatile", "Output:1"]


def test_not_idempotent_nodes_are_not_shared_between_node_ids(executor, calls):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Unique", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "Unique", "inputs": {"value": ["1", 0]}},
              "4": {"class_type": "Output", "inputs": {"value": ["2", 0]}},
              "5": {"class_type": "Output", "inputs": {"value": ["3", 0]}}}
    executor.execute(prompt, "p1")
    assert calls.count("Unique") == 2


def test_identical_nodes_in_one_graph_run_once_per_signature(executor, calls):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "Const", "inputs": {"value": 1}},
              "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
              "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}}}
    result = executor.execute(prompt, "p1")
    assert result.outputs["4"] == {"values": [2]}
    assert calls.count("Const:1") == 1


@pytest.mark.parametrize("count", [0])
def test_empty_lists_skip_the_consumer(executor, calls, count):
    prompt = {"1": {"class_type": "Range", "inputs": {"count": count}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
              "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}}
    result = executor.execute(prompt, "p1")
    assert result.success
    assert not any(c.startswith("Add") for c in calls)


def test_validated_prompt_runs_end_to_end(registry, executor):
    validation = validate_prompt({"1": {"class_type": "Const", "inputs": {"value": "12"}},
                                  "2": {"class_type": "IntOutput", "inputs": {"value": ["1", 0]}}}, registry)
    assert validation.ok
    result = executor.execute(validation.prompt, "p1", execute_outputs=validation.outputs)
    assert result.outputs["2"] == {"values": [12]}


def test_wrapped_list_constants_are_unwrapped(registry, executor):
    prompt = {"1": {"class_type": "Output", "inputs": {"value": {"__value__": ["a", 0]}}}}
    validation = validate_prompt(prompt, registry)
    assert validation.ok
    assert executor.execute(validation.prompt, "p").outputs["1"] == {"values": [["a", 0]]}
    assert executor.execute(prompt, "q").outputs["1"] == {"values": [["a", 0]]}
