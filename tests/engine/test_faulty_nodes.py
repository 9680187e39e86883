"""Issue #16 in the engine: whatever a node raises (sys.exit, KeyboardInterrupt, MemoryError) is that node's
error, and a run whose node ignores an interrupt can be abandoned: it is reported as interrupted at once, and
nothing it does later reaches the event bus or the output cache."""
import threading

import pytest

from engine.cache import OutputCache
from engine.events import EventBus
from engine.executor import Executor
from engine.interrupt import Abandonment, ExecutionInterrupted, InterruptFlag, RunInterrupt
from tests.engine.faulty_nodes import make_faulty_registry, stubborn_node, through


@pytest.fixture
def recorded():
    return []


def faulty_executor(recorded, stubborn=None):
    bus = EventBus()
    bus.subscribe(lambda name, data: recorded.append((name, data)))
    return Executor(make_faulty_registry(stubborn), OutputCache(16), bus)


def in_thread(function):
    """Run `function` in a thread that is not the main one and return what it returned."""
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("value", function()))
    thread.start()
    thread.join(10)
    return outcome["value"]


@pytest.mark.parametrize("class_type", ["Exit", "AsyncExit"])
def test_sys_exit_in_a_node_is_that_nodes_error(recorded, calls, class_type):
    executor = faulty_executor(recorded)
    result = executor.execute(through(class_type, code=3), "p1")
    assert result.status == "error"
    error = dict(recorded)["execution_error"]
    assert (error["node_id"], error["node_type"]) == ("2", class_type)
    assert error["exception_type"] == "SystemExit"
    assert error["exception_message"] == "the node called sys.exit(3)"
    assert executor.execute(through("Slow", steps=1, delay=0.0), "p2").success  # the executor goes on


def test_keyboard_interrupt_raised_by_a_node_outside_the_main_thread_is_that_nodes_error(recorded):
    executor = faulty_executor(recorded)
    result = in_thread(lambda: executor.execute(through("RaiseKeyboardInterrupt"), "p1"))
    assert result.status == "error"
    assert (result.error["node_id"], result.error["exception_type"]) == ("2", "KeyboardInterrupt")
    assert [name for name, _ in recorded][-2:] == ["execution_error", "executing"]


def test_keyboard_interrupt_in_the_main_thread_is_the_users_ctrl_c_and_goes_up(recorded):
    executor = faulty_executor(recorded)
    with pytest.raises(KeyboardInterrupt):
        executor.execute(through("RaiseKeyboardInterrupt"), "p1")


def test_memory_error_fails_the_prompt_and_the_next_one_runs(recorded, calls):
    executor = faulty_executor(recorded)
    result = executor.execute(through("OutOfMemory", way="MemoryError"), "p1")
    assert result.status == "error"
    assert (result.error["node_id"], result.error["exception_type"]) == ("2", "MemoryError")
    assert executor.execute(through("Slow", 5, steps=1, delay=0.0), "p2").outputs == {"3": {"values": [5]}}


def test_a_node_failing_to_construct_is_named(recorded):
    class Unbuildable:
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT",)}}

        def __init__(self):
            raise SystemExit("no")

        def run(self, value):
            return (value,)

    executor = faulty_executor(recorded)
    executor.registry.register("Unbuildable", Unbuildable)
    result = executor.execute(through("Unbuildable"), "p1")
    assert (result.error["node_id"], result.error["exception_type"]) == ("2", "SystemExit")


def test_an_abandoned_run_is_reported_interrupted_and_its_late_result_reaches_no_one(recorded, calls):
    stubborn = stubborn_node()
    executor = faulty_executor(recorded, stubborn)
    abandonment = Abandonment()
    abandoned_run = threading.Thread(target=lambda: executor.execute(through("Stubborn", 4), "stuck",
                                                                     abandonment=abandonment), daemon=True)
    abandoned_run.start()
    assert stubborn.started.wait(10)
    executor.interrupt.request()  # ignored: the node reports no progress
    result = abandonment.abandon()
    assert result.status == "interrupted"
    assert (result.error["node_id"], result.error["node_type"]) == ("2", "Stubborn")
    assert result.executed == ["1"]
    assert [name for name, _ in result.messages][-2:] == ["execution_interrupted", "executing"]
    assert recorded[-2:] == result.messages[-2:]
    assert abandonment.abandon() is None  # once is enough

    recorded.clear()
    assert executor.execute(through("Slow", steps=1, delay=0.0), "next").success  # while Stubborn still blocks
    stubborn.release.set()
    abandoned_run.join(10)
    assert stubborn.stopped_at_report.is_set()  # its run's interrupt stays set though the next run cleared
    assert {data["prompt_id"] for _, data in recorded} == {"next"}

    calls.clear()
    stubborn.started.clear()
    stubborn.release.set()
    assert executor.execute(through("Stubborn", 4), "again").success
    assert calls == ["Output:4"]  # Const came from the cache, the abandoned Stubborn's output never entered it


def test_an_abandoned_nodes_late_return_stores_nothing(recorded, calls):
    """A node that returns after its run was abandoned, without another progress report: its outputs are
    dropped, and the run ends at the next node without a word."""
    stubborn = stubborn_node(reports_when_released=False)
    executor = faulty_executor(recorded, stubborn)
    abandonment = Abandonment()
    abandoned_run = threading.Thread(target=lambda: executor.execute(through("Stubborn", 4), "stuck",
                                                                     abandonment=abandonment), daemon=True)
    abandoned_run.start()
    assert stubborn.started.wait(10)
    abandonment.abandon()
    recorded.clear()
    entries_before = len(executor.cache)
    stubborn.release.set()
    abandoned_run.join(10)
    assert stubborn.returned.is_set()
    assert recorded == [] and len(executor.cache) == entries_before
    assert calls == ["Const:4"]  # Output never ran


def test_abandoning_a_run_that_ended_changes_nothing(recorded):
    executor = faulty_executor(recorded)
    abandonment = Abandonment()
    result = executor.execute(through("Slow", steps=1, delay=0.0), "p1", abandonment=abandonment)
    assert result.success
    assert abandonment.abandon() is None
    assert Abandonment().abandon() is None  # nor one that never started


def test_an_abandoned_nodes_interrupt_cannot_touch_the_shared_flag():
    shared, abandonment = InterruptFlag(), Abandonment()
    view = RunInterrupt(shared, abandonment)
    abandonment.started(lambda: "given up")
    assert abandonment.abandon() == "given up"
    view.request()
    assert not shared.is_set()
    shared.request()
    view.clear()
    assert shared.is_set()
    with pytest.raises(ExecutionInterrupted):
        RunInterrupt(InterruptFlag(), abandonment).raise_if_set()
