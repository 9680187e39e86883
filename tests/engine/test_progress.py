import pytest

from engine.interrupt import ExecutionInterrupted, InterruptFlag
from engine.progress import NodeRunContext, ProgressBar, bind_node_context, check_interrupted, report_progress


def test_progress_outside_the_executor_is_a_no_op():
    report_progress(1, 2)
    ProgressBar(3).update(1)
    check_interrupted()


def test_progress_bar_reports_to_the_bound_node_and_clamps():
    reports = []
    context = NodeRunContext("7", "p", InterruptFlag(), lambda node, value, total, preview: reports.append(
        (node, value, total, preview)))
    with bind_node_context(context):
        bar = ProgressBar(2)
        bar.update(1)
        bar.update(5)
        bar.update_absolute(1, 4, preview="img")
    assert reports == [("7", 1, 2, None), ("7", 2, 2, None), ("7", 1, 4, "img")]


def test_progress_report_raises_when_interrupted():
    flag = InterruptFlag()
    context = NodeRunContext("1", "p", flag, lambda *args: None)
    flag.request()
    with bind_node_context(context), pytest.raises(ExecutionInterrupted):
        report_progress(1, 10)
