"""The dispatch policy: model affinity first, queue order otherwise, no idle worker left idle."""
import pytest

from distributed.dispatch import (Candidate, PlacementError, WorkerView, allowed_workers, assign,
                                  model_keys)
from engine.registry import NodeRegistry


class Loader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": ("STRING", {}), "strength": ("FLOAT", {})}}


class AdvancedLoader(Loader):
    CATEGORY = "advanced/loaders"


class Sampler:
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "sampler_name": ("STRING", {})}}


def registry() -> NodeRegistry:
    nodes = NodeRegistry()
    nodes.register_mappings({"Loader": Loader, "AdvancedLoader": AdvancedLoader, "Sampler": Sampler}, source="test")
    return nodes


def idle(name, *warm):
    return WorkerView(name, True, frozenset(warm))


def busy(name, *warm):
    return WorkerView(name, False, frozenset(warm))


def prompt(prompt_id, *keys, allowed=None):
    return Candidate(prompt_id, frozenset(keys), allowed)


def test_model_keys_are_loader_nodes_with_their_file_names():
    graph = {"1": {"class_type": "Loader", "inputs": {"ckpt_name": "a.safetensors", "strength": 1.0}},
             "2": {"class_type": "AdvancedLoader", "inputs": {"ckpt_name": "b.safetensors", "strength": ["9", 0]}},
             "3": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "sampler_name": "euler"}},
             "4": {"class_type": "Unknown", "inputs": {"ckpt_name": "c.safetensors"}}}
    assert model_keys(graph, registry()) == {"Loader:ckpt_name=a.safetensors",
                                             "AdvancedLoader:ckpt_name=b.safetensors"}


def test_a_prompt_goes_to_the_idle_worker_that_has_its_model_even_when_another_comes_first():
    workers = [idle("w0", "A"), idle("w1", "B")]
    assert assign([prompt("p1", "B"), prompt("p2", "A")], workers) == [("p1", "w1"), ("p2", "w0")]


def test_a_prompt_warm_on_a_busy_worker_waits_while_a_later_prompt_takes_the_idle_one():
    workers = [busy("w0", "A"), idle("w1", "B")]
    assert assign([prompt("p1", "A"), prompt("p2", "B")], workers) == [("p2", "w1")]


def test_an_idle_worker_is_never_left_idle_while_prompts_wait():
    workers = [busy("w0", "A"), idle("w1", "B")]
    assert assign([prompt("p1", "A"), prompt("p2", "A")], workers) == [("p1", "w1")]


def test_one_model_queued_many_times_fills_every_worker():
    workers = [idle("w0"), idle("w1"), idle("w2")]
    chosen = assign([prompt(f"p{i}", "A") for i in range(5)], workers)
    assert chosen == [("p0", "w0"), ("p1", "w1"), ("p2", "w2")]


def test_new_models_go_to_the_worker_holding_the_fewest():
    workers = [idle("w0", "A", "B"), idle("w1", "C")]
    assert assign([prompt("p1", "D")], workers) == [("p1", "w1")]


def test_prompts_without_models_run_in_queue_order():
    workers = [idle("w0"), busy("w1")]
    assert assign([prompt("p1"), prompt("p2")], workers) == [("p1", "w0")]


def test_placement_limits_the_workers_and_a_placed_prompt_waits_for_them():
    workers = [idle("w0"), busy("w1")]
    assert assign([prompt("p1", allowed=frozenset({"w1"})), prompt("p2")], workers) == [("p2", "w0")]


def test_placement_hints_are_read_from_extra_data():
    known = ["worker-0", "worker-1"]
    assert allowed_workers({}, known) is None
    assert allowed_workers({"placement": {"workers": "worker-1"}}, known) == {"worker-1"}
    assert allowed_workers({"placement": {"workers": ["worker-0", "worker-1"]}}, known) == set(known)
    with pytest.raises(PlacementError, match="unknown workers"):
        allowed_workers({"placement": {"workers": ["worker-7"]}}, known)
    with pytest.raises(PlacementError, match="must look like"):
        allowed_workers({"placement": "worker-0"}, known)
