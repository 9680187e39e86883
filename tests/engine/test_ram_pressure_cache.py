"""ComfyUI's RAM-pressure cache (`--cache-ram`): outputs kept across prompts while RAM allows; under pressure the
outputs of earlier prompts go, ranked by size times 1.3 per prompt since their last use, never the running
prompt's. RAM is simulated: what is "available" is a base less the sizes of the entries the cache holds."""
import argparse

import pytest

from app.runtime import build_output_cache
from app.settings import Settings, add_common_arguments, settings_from_args
from engine.cache import CacheEntry, RamPressureCache
from engine.executor import Executor


class FakeRam:
    """Available RAM = `base` less the sizes of the entries held; an entry's size is its value."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.cache: RamPressureCache | None = None

    def available(self) -> int:
        return self.base - sum(entry.outputs[0][0] for entry in self.cache._entries.values())

    def put(self, signature: str, size: int) -> None:
        self.cache.put(signature, CacheEntry(([size],)))


def make_cache(base: int, headroom: int, idle_headroom: int | None = None) -> tuple[RamPressureCache, FakeRam]:
    ram = FakeRam(base)
    ram.cache = RamPressureCache(headroom, ram.available, lambda outputs: outputs[0][0], idle_headroom=idle_headroom)
    return ram.cache, ram


def test_everything_is_kept_while_ram_is_plentiful():
    cache, ram = make_cache(base=10_000, headroom=100)
    for prompt in range(3):
        ram.put(f"p{prompt}", 500)
        cache.prompt_finished({f"p{prompt}"})
    assert {"p0", "p1", "p2"} <= set(cache._entries)


def test_the_largest_output_of_an_earlier_prompt_goes_first_and_the_running_prompts_stay():
    cache, ram = make_cache(base=10_000, headroom=1_000)
    ram.put("small", 100)
    ram.put("large", 1_000)
    cache.prompt_finished({"small", "large"})
    ram.base = 1_200  # the machine is now short of RAM
    ram.put("running", 50)  # 50 available, 1,000 needed: dropping "large" gives 1,050 (1001 * 1.3 > 101 * 1.3)
    assert set(cache._entries) == {"small", "running"}
    ram.put("running2", 5_000)  # no earlier output is left worth keeping: "small" goes; the running prompt's stay
    assert set(cache._entries) == {"running", "running2"}


def test_older_outputs_score_higher_than_slightly_larger_recent_ones():
    # ComfyUI's score: size * 1.3 ** prompts-since-use. "old" (100 B, 3 prompts ago): 101 * 1.3**3 = 221.9;
    # "recent" (120 B, 1 prompt ago): 121 * 1.3 = 157.3, so "old" goes first although it is smaller.
    cache, ram = make_cache(base=10_000, headroom=90)
    ram.put("old", 100)
    cache.prompt_finished({"old"})
    cache.prompt_finished(set())
    ram.put("recent", 120)
    cache.prompt_finished({"recent"})
    ram.base = 270  # 50 available; a new output of 0 B asks for 90: freeing "old" alone gives 150
    ram.put("new", 0)
    assert set(cache._entries) == {"recent", "new"}


def test_a_lookup_counts_as_use_in_the_running_prompt():
    cache, ram = make_cache(base=10_000, headroom=1_000)
    ram.put("reused", 2_000)
    ram.put("stale", 10)
    cache.prompt_finished({"reused", "stale"})
    ram.base = 2_010  # 0 available
    assert cache.get("reused") is not None  # the second prompt uses it: now it may not go
    ram.put("new", 0)  # 1,000 wanted: only "stale" may go, although it frees too little
    assert set(cache._entries) == {"reused", "new"}


def test_outputs_the_running_prompt_finds_cached_are_kept_until_read():
    cache, ram = make_cache(base=10_000, headroom=1_000)
    ram.put("needed", 3_000)
    ram.put("stale", 2_000)
    cache.prompt_finished({"needed", "stale"})
    ram.base = 5_000  # 0 available
    assert "needed" in cache  # the next prompt lists it as cached before its node reads it
    ram.put("new", 10)  # 1,000 needed: "stale" goes although smaller; "needed" stays for the node that reads it
    assert set(cache._entries) == {"needed", "new"}


def test_the_idle_headroom_applies_when_a_prompt_ends():
    cache, ram = make_cache(base=450, headroom=0, idle_headroom=200)
    ram.put("a", 200)
    ram.put("b", 250)
    assert set(cache._entries) == {"a", "b"}  # while it runs, a 0 headroom drops nothing
    cache.prompt_finished({"a", "b"})  # then 200 must be free: "b" (251 * 1.3 > 201 * 1.3) goes, freeing 250
    assert ram.available() == 250 and set(cache._entries) == {"a"}


def test_an_executor_reruns_a_node_whose_output_was_dropped(registry, calls):
    available = [10**12]
    cache = RamPressureCache(1_000, lambda: available[0], lambda outputs: 0)
    executor = Executor(registry, cache)
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 3}},
              "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}}}
    executor.execute(prompt, "a")
    calls.clear()
    executor.execute(prompt, "b")
    assert calls == []  # plenty of RAM: all cached
    available[0] = 0  # pressure that never eases: every earlier output goes when the prompt ends
    executor.execute({"9": {"class_type": "Const", "inputs": {"value": 4}}}, "c")
    calls.clear()
    executor.execute(prompt, "d")
    assert [call for call in calls if call.startswith("Const")] == ["Const:3"]


def parse(flags: list[str]) -> Settings:
    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    return settings_from_args(parser.parse_args(flags))


@pytest.mark.parametrize("flags, headroom, idle", [
    (["--cache-ram", "4"], 4 * 1024**3, 4 * 1024**3), (["--cache-ram", "0.5", "8"], 512 * 1024**2, 8 * 1024**3)])
def test_cache_ram_flag_builds_the_ram_pressure_cache(tmp_path, flags, headroom, idle):
    cache = build_output_cache(parse(["--models-dir", str(tmp_path), *flags]))
    assert isinstance(cache, RamPressureCache)
    assert (cache.headroom, cache.idle_headroom) == (headroom, idle)


def test_cache_ram_without_sizes_uses_comfyuis_default(tmp_path, monkeypatch):
    monkeypatch.setattr("diffusion.memory.physical_ram_bytes", lambda: 64 * 1024**3)
    cache = build_output_cache(parse(["--cache-ram"]))
    assert cache.headroom == cache.idle_headroom == int(6.4 * 1024**3)  # a tenth of 64 GiB, within [2, 10]
    monkeypatch.setattr("diffusion.memory.physical_ram_bytes", lambda: 8 * 1024**3)
    assert build_output_cache(parse(["--cache-ram"])).headroom == 2 * 1024**3  # at least 2 GiB


@pytest.mark.parametrize("flags", [["--cache-ram", "1", "2", "3"], ["--cache-ram", "0"], ["--cache-ram", "-1"],
                                   ["--cache-ram", "--cache-lru", "5"]])
def test_bad_cache_ram_flags_are_refused(flags):
    with pytest.raises(SystemExit):
        parse(flags)
