"""Executor overhead: a 1,000-node chain of trivial nodes, run cold and fully cached; prints a table.

The baseline is calling the same node functions directly in a loop, in the same process, so the table
shows what the engine adds per node (validation, scheduling, signatures, caching, events).
Run: `.venv/bin/python -m bench.engine_overhead [--nodes 1000] [--repeats 5]`.
"""
from __future__ import annotations

import argparse
import statistics
import time

from engine.cache import OutputCache
from engine.executor import Executor
from engine.registry import NodeRegistry
from engine.validation import validate_prompt


class Increment:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 1 << 40})}}

    def run(self, value):
        return (value + 1,)


class Sink:
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",)}}

    def run(self, value):
        return {"ui": {"value": [value]}}


def chain(length: int, start: int) -> dict:
    prompt = {"0": {"class_type": "Increment", "inputs": {"value": start}}}
    for index in range(1, length):
        prompt[str(index)] = {"class_type": "Increment", "inputs": {"value": [str(index - 1), 0]}}
    prompt["sink"] = {"class_type": "Sink", "inputs": {"value": [str(length - 1), 0]}}
    return prompt


def direct_calls(length: int, start: int) -> int:
    value = start
    node = Increment()
    for _ in range(length):
        (value,) = node.run(value)
    return Sink().run(value)["ui"]["value"][0]


def timed(function) -> float:
    began = time.perf_counter()
    function()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    registry = NodeRegistry()
    registry.register_mappings({"Increment": Increment, "Sink": Sink}, source="bench")
    rows: dict[str, list[float]] = {"direct calls (baseline)": [], "validate": [], "execute, cold": [],
                                    "execute, fully cached": []}
    for repeat in range(args.repeats):
        prompt = chain(args.nodes, start=repeat * 10)
        executor = Executor(registry, OutputCache(max_entries=args.nodes + 10))
        rows["direct calls (baseline)"].append(timed(lambda: direct_calls(args.nodes, repeat * 10)))
        rows["validate"].append(timed(lambda: validate_prompt(prompt, registry)))
        cold = {}
        rows["execute, cold"].append(timed(lambda: cold.setdefault("r", executor.execute(prompt, "cold"))))
        warm = {}
        rows["execute, fully cached"].append(timed(lambda: warm.setdefault("r", executor.execute(prompt, "warm"))))
        assert cold["r"].outputs["sink"]["value"] == [repeat * 10 + args.nodes]
        assert warm["r"].executed == [], "a fully cached re-run must execute nothing"
    baseline = statistics.median(rows["direct calls (baseline)"])
    print(f"{args.nodes}-node chain, median of {args.repeats} runs")
    print(f"{'what':<26}{'total ms':>10}{'us/node':>10}{'x baseline':>12}")
    for name, samples in rows.items():
        median = statistics.median(samples)
        print(f"{name:<26}{median * 1e3:>10.2f}{median / args.nodes * 1e6:>10.1f}{median / baseline:>12.1f}")


if __name__ == "__main__":
    main()
