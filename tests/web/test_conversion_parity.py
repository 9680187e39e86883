"""The editor's editor->API converter (web/js/workflow_api.js) gives what the server's gives, case by case.

Both convert the same workflows (tests/web/unit/conversion_cases.mjs) over the same catalogue: the stub nodes'
`object_info`, which is also checked against the fixture the JS unit tests read, so neither can drift.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.workflow_format import WorkflowFormatError, editor_to_api
from tests.web.stub_nodes import FIXTURE, make_stub_registry

HERE = Path(__file__).parent
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed (needed to run the editor's modules)")


@pytest.fixture(scope="module")
def registry():
    return make_stub_registry()


@pytest.fixture(scope="module")
def editor_results(registry, tmp_path_factory) -> dict:
    info = tmp_path_factory.mktemp("catalogue") / "object_info.json"
    info.write_text(json.dumps(registry.object_info()))
    completed = subprocess.run([NODE, str(HERE / "conversion_parity.mjs"), str(info)], capture_output=True,
                               text=True, timeout=60, check=True)
    return json.loads(completed.stdout)


def test_the_js_unit_tests_read_the_current_stub_catalogue(registry):
    fixture = json.loads(FIXTURE.read_text())
    assert fixture == json.loads(json.dumps(registry.object_info())), "run: python -m tests.web.stub_nodes"


def test_every_case_converts_as_the_server_converts(editor_results, registry):
    assert len(editor_results) >= 10
    for name, result in editor_results.items():
        try:
            expected = editor_to_api(result["workflow"], registry)
        except WorkflowFormatError as error:
            assert "error" in result, f"{name}: the server refuses it ({error}), the editor gave {result.get('api')}"
            continue
        assert "api" in result, f"{name}: the editor refused it: {result.get('error')}"
        assert result["api"] == expected, name
