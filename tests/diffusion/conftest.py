"""Fixtures of the model layer's tests: the node tests' tiny models and environments (`tests/nodes/conftest.py`)."""
from tests.nodes.conftest import sd1  # noqa: F401
