"""Which idle worker runs which queued prompt: model affinity first, then the least loaded worker.

Pure functions over plain data, so the policy is tested without Ray. A prompt's model keys are its loader
nodes (a node whose CATEGORY has a `loaders` part, like ComfyUI's loaders and most plugin loaders) with the
file names they are given; the head counts a worker warm for a key from the time it runs a prompt with it
until /free unloads models or the worker restarts. Workers run one prompt at a time.

Queue order is kept except where affinity pays: a prompt whose models are warm on a busy worker waits for
that worker while later prompts take the idle ones, unless an idle worker would otherwise stay idle. So one
model queued many times still keeps every worker busy, and two models queued in turn each stay on their own
worker. A waiting prompt never starves: it waits at most for its warm worker's current prompt.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Sequence

from engine.registry import NodeRegistry

PLACEMENT = "placement"


class PlacementError(ValueError):
    """A placement hint that is malformed or names no worker: the prompt could never run."""


@dataclass(frozen=True)
class Candidate:
    """A pending prompt as dispatch sees it; `allowed` None means any worker."""

    prompt_id: str
    model_keys: frozenset[str]
    allowed: frozenset[str] | None = None


@dataclass(frozen=True)
class WorkerView:
    name: str
    idle: bool
    warm: frozenset[str]


def model_keys(prompt: dict[str, dict[str, Any]], registry: NodeRegistry) -> frozenset[str]:
    """`Class:input=file,...` for every loader node of the prompt (string constants only: the file names)."""
    keys = set()
    for node in prompt.values():
        cls = registry.get(node.get("class_type", ""))
        if cls is None or "loaders" not in str(getattr(cls, "CATEGORY", "")).split("/"):
            continue
        names = sorted((name, value) for name, value in node.get("inputs", {}).items() if isinstance(value, str))
        keys.add(f"{node['class_type']}:" + ",".join(f"{name}={value}" for name, value in names))
    return frozenset(keys)


def allowed_workers(extra_data: dict[str, Any], known: Collection[str]) -> frozenset[str] | None:
    """The workers a prompt may run on, from `extra_data["placement"]["workers"]` (a name or a list of
    names), or None when there is no hint."""
    hint = extra_data.get(PLACEMENT)
    if hint is None:
        return None
    workers = hint.get("workers") if isinstance(hint, dict) else None
    if isinstance(workers, str):
        workers = [workers]
    if not isinstance(workers, list) or not workers or not all(isinstance(name, str) for name in workers):
        raise PlacementError('placement must look like {"workers": ["worker-0", ...]}')
    unknown = sorted(set(workers) - set(known))
    if unknown:
        raise PlacementError(f"placement names unknown workers {unknown}; the workers are {sorted(known)}")
    return frozenset(workers)


def assign(candidates: Sequence[Candidate], workers: Sequence[WorkerView]) -> list[tuple[str, str]]:
    """(prompt_id, worker name) pairs to start now; `candidates` in queue order."""
    idle = {worker.name for worker in workers if worker.idle}
    busy = {worker.name for worker in workers if not worker.idle}
    warm = {worker.name: set(worker.warm) for worker in workers}
    chosen: list[tuple[str, str]] = []
    waiting: list[Candidate] = []

    def start(candidate: Candidate, name: str) -> None:
        chosen.append((candidate.prompt_id, name))
        idle.discard(name)
        busy.add(name)
        warm[name] |= candidate.model_keys

    for candidate in candidates:
        options = _allowed(candidate, idle)
        if not options:
            continue
        warm_idle = [name for name in options if candidate.model_keys & warm[name]]
        if warm_idle:
            start(candidate, min(warm_idle, key=lambda name: (-len(candidate.model_keys & warm[name]),
                                                              len(warm[name]), name)))
        elif any(candidate.model_keys & warm[name] for name in _allowed(candidate, busy)):
            waiting.append(candidate)
        else:
            start(candidate, _least_loaded(options, warm))
    for candidate in waiting:
        options = _allowed(candidate, idle)
        if options:
            start(candidate, _least_loaded(options, warm))
    return chosen


def _allowed(candidate: Candidate, names: set[str]) -> list[str]:
    return sorted(name for name in names if candidate.allowed is None or name in candidate.allowed)


def _least_loaded(names: list[str], warm: dict[str, set[str]]) -> str:
    """The worker holding the fewest models, so a new model does not crowd out warm ones."""
    return min(names, key=lambda name: (len(warm[name]), name))
