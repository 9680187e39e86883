import io
import json
import os
import signal
import threading
import time
from dataclasses import replace

import pytest

from app.headless import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, run_workflow_file
from app.runtime import Runtime
from app.settings import Settings
from engine.cache import OutputCache
from engine.executor import Executor
from tests.engine.nodes_for_tests import make_registry


@pytest.fixture
def runtime(tmp_path):
    settings = Settings(tmp_path / "models", tmp_path / "input", tmp_path / "output", tmp_path / "temp",
                        tmp_path / "user", cache_size=8, cpu=True, threads=1)
    registry = make_registry()
    return Runtime(settings, registry, Executor(registry, OutputCache(8)))


def write(tmp_path, data, name="workflow.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def run(runtime, path, **kwargs):
    stream = io.StringIO()
    code = run_workflow_file(runtime, path, stream=stream, **kwargs)
    return code, stream.getvalue()


def test_runs_an_api_workflow_and_prints_outputs_with_progress(runtime, tmp_path, calls):
    path = write(tmp_path, {"1": {"class_type": "Const", "inputs": {"value": 2}},
                            "2": {"class_type": "Slow", "inputs": {"value": ["1", 0], "steps": 3, "delay": 0}},
                            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}})
    code, text = run(runtime, path)
    assert code == EXIT_OK, text
    assert "node 3: values = 2" in text
    assert "nodes" in text and "3/3" in text  # the tqdm node bar reached the end
    assert calls == ["Const:2", "Slow:2", "Output:2"]


def test_image_outputs_are_printed_as_paths(runtime, tmp_path):
    class SaveLike:
        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        def run(self):
            return {"ui": {"images": [{"filename": "a_00001_.png", "subfolder": "sub", "type": "output"}]}}

    runtime.registry.register("SaveLike", SaveLike)
    code, text = run(runtime, write(tmp_path, {"1": {"class_type": "SaveLike", "inputs": {}}}))
    assert code == EXIT_OK
    assert f"node 1: {tmp_path / 'output' / 'sub' / 'a_00001_.png'}" in text


def test_editor_format_file_runs(runtime, tmp_path):
    editor = {"version": 0.4, "last_node_id": 2, "last_link_id": 1,
              "nodes": [{"id": 1, "type": "Const", "mode": 0, "inputs": [],
                         "outputs": [{"name": "INT", "type": "INT", "links": [1]}], "widgets_values": [9]},
                        {"id": 2, "type": "Output", "mode": 0,
                         "inputs": [{"name": "value", "type": "*", "link": 1}], "outputs": []}],
              "links": [[1, 1, 0, 2, 0, "INT"]], "groups": []}
    code, text = run(runtime, write(tmp_path, editor))
    assert code == EXIT_OK, text
    assert "node 2: values = 9" in text


def test_invalid_workflow_prints_every_error_readably(runtime, tmp_path):
    path = write(tmp_path, {"1": {"class_type": "Const", "inputs": {"value": 5000}},
                            "2": {"class_type": "Add", "inputs": {"a": ["1", 0]}},
                            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}})
    code, text = run(runtime, path)
    assert code == EXIT_INVALID
    assert "node 1 (Const) input 'value': Value 5000 bigger than max of 1000" in text
    assert "node 2 (Add) input 'b': Required input is missing" in text


@pytest.mark.parametrize("content, message", [
    (None, "workflow file not found"),
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "does not hold a workflow"),
])
def test_unreadable_files_exit_with_a_clear_message(runtime, tmp_path, content, message):
    path = tmp_path / "missing.json" if content is None else write(tmp_path, content)
    code, text = run(runtime, path)
    assert code == EXIT_INVALID
    assert message in text


def test_failing_node_exits_non_zero_naming_the_node(runtime, tmp_path):
    path = write(tmp_path, {"1": {"class_type": "Const", "inputs": {"value": 4}},
                            "2": {"class_type": "Fail", "inputs": {"value": ["1", 0]}},
                            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}})
    code, text = run(runtime, path)
    assert code == EXIT_FAILED
    assert "error in node 2 (Fail): ValueError: cannot handle 4" in text


def test_output_node_selection(runtime, tmp_path, calls):
    path = write(tmp_path, {"1": {"class_type": "Const", "inputs": {"value": 1}},
                            "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}},
                            "3": {"class_type": "Const", "inputs": {"value": 3}},
                            "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}}})
    code, _ = run(runtime, path, output_nodes=["4"])
    assert code == EXIT_OK
    assert calls == ["Const:3", "Output:3"]


def test_a_node_calling_sys_exit_or_raising_keyboard_interrupt_is_a_node_error(runtime, tmp_path):
    from tests.engine.faulty_nodes import make_faulty_registry, through

    runtime.registry = runtime.executor.registry = make_faulty_registry()
    code, text = run(runtime, write(tmp_path, through("Exit", code=3)))
    assert code == EXIT_FAILED
    assert "error in node 2 (Exit): SystemExit: the node called sys.exit(3)" in text
    code, text = run(runtime, write(tmp_path, through("RaiseKeyboardInterrupt")))
    assert code == EXIT_FAILED  # raised by the node in the executor's thread: not the user's Ctrl+C
    assert "error in node 2 (RaiseKeyboardInterrupt): KeyboardInterrupt" in text


def press_ctrl_c_when(started, times=1):
    """Deliver Ctrl+C (SIGINT) to the main thread, `times` times, once `started` is set (and the main thread
    waits for the run)."""
    def press():
        assert started.wait(10)
        for _ in range(times):
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=press, daemon=True).start()


def test_ctrl_c_interrupts_the_run_and_exits_130(runtime, tmp_path):
    from tests.engine.nodes_for_tests import Slow

    Slow.started.clear()
    path = write(tmp_path, {"1": {"class_type": "Const", "inputs": {"value": 2}},
                            "2": {"class_type": "Slow", "inputs": {"value": ["1", 0], "steps": 2000, "delay": 0.005}},
                            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}}})
    press_ctrl_c_when(Slow.started)
    code, text = run(runtime, path)
    assert code == EXIT_INTERRUPTED
    assert "interrupted" in text


@pytest.mark.parametrize("grace, presses", [(0.3, 1), (60.0, 2)])
def test_ctrl_c_on_a_node_that_ignores_it_exits_130_after_the_grace_period_or_a_second_ctrl_c(
        runtime, tmp_path, grace, presses):
    from tests.engine.faulty_nodes import make_faulty_registry, stubborn_node, through

    stubborn = stubborn_node()
    runtime.registry = runtime.executor.registry = make_faulty_registry(stubborn)
    runtime.settings = replace(runtime.settings, interrupt_grace=grace)
    press_ctrl_c_when(stubborn.started, presses)
    try:
        code, text = run(runtime, write(tmp_path, through("Stubborn")))
        # the run ended while the node was still stuck (it waits up to 30 s for a release that comes only below)
        abandoned_while_running = not stubborn.returned.is_set()
    finally:
        stubborn.release.set()
    assert code == EXIT_INTERRUPTED and "interrupted" in text
    assert abandoned_while_running


def test_the_interrupt_grace_is_a_setting_given_before_or_after_the_sub_command():
    from app.settings import DEFAULT_INTERRUPT_GRACE_S, settings_from_args
    from main import build_parser

    parser = build_parser()
    assert settings_from_args(parser.parse_args(["run", "w.json"])).interrupt_grace == DEFAULT_INTERRUPT_GRACE_S
    assert settings_from_args(parser.parse_args(["--interrupt-grace", "2", "run", "w.json"])).interrupt_grace == 2
    assert settings_from_args(parser.parse_args(["run", "w.json", "--interrupt-grace", "0.5"])).interrupt_grace == 0.5
    with pytest.raises(SystemExit, match="--interrupt-grace"):
        settings_from_args(parser.parse_args(["--interrupt-grace", "0"]))
