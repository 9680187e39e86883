import pytest

from engine.cache import OutputCache
from engine.events import EventBus
from engine.executor import Executor
from tests.engine import nodes_for_tests


@pytest.fixture
def calls():
    nodes_for_tests.CALLS.clear()
    yield nodes_for_tests.CALLS
    nodes_for_tests.CALLS.clear()


@pytest.fixture
def registry():
    return nodes_for_tests.make_registry()


@pytest.fixture
def recorded_events():
    return []


@pytest.fixture
def executor(registry, recorded_events):
    bus = EventBus()
    bus.subscribe(lambda name, data: recorded_events.append((name, data)))
    return Executor(registry, OutputCache(max_entries=100), bus)
