"""Runs the editor's JavaScript unit tests (tests/web/unit/, Node's built-in test runner) as part of pytest,
so the one test command covers them."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (needed for the editor's JS unit tests)")
def test_the_javascript_unit_tests_pass():
    completed = subprocess.run([NODE, "--test", "tests/web/unit/"], cwd=PROJECT_DIR, capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stdout[-6000:] + completed.stderr[-2000:]
