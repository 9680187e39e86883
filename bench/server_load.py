"""Server load: 200 small prompts queued by 8 concurrent clients against a live server on 127.0.0.1.

Prints accept latency percentiles for POST /prompt, a GET /prompt baseline measured the same way in the
same process, end-to-end throughput, and checks that every accepted prompt reached history (nothing lost).
Run: `.venv/bin/python -m bench.server_load [--prompts 200] [--clients 8]`.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import socket
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from app.runtime import Runtime
from app.settings import Settings
from bench.engine_overhead import Increment, Sink
from engine.cache import OutputCache
from engine.executor import Executor
from engine.registry import NodeRegistry
from server.app import ServerConfig, create_app


def small_prompt(value: int) -> dict:
    return {"1": {"class_type": "Increment", "inputs": {"value": value}},
            "2": {"class_type": "Increment", "inputs": {"value": ["1", 0]}},
            "3": {"class_type": "Sink", "inputs": {"value": ["2", 0]}}}


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def run(prompts: int, clients: int, base: Path) -> None:
    settings = Settings(base / "models", base / "input", base / "output", base / "temp", base / "user",
                        cache_size=64, cpu=True, threads=1)
    registry = NodeRegistry()
    registry.register_mappings({"Increment": Increment, "Sink": Sink}, source="bench")
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(Runtime(settings, registry, Executor(registry, OutputCache(64))))
    runner = web.AppRunner(create_app(settings, ServerConfig(), future))
    await runner.setup()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    accept: list[float] = []
    baseline: list[float] = []
    accepted: list[str] = []
    counter = iter(range(prompts))

    async def client(session: aiohttp.ClientSession) -> None:
        for value in counter:
            began = time.perf_counter()
            async with session.get(f"{url}/prompt") as response:
                await response.json()
            baseline.append(time.perf_counter() - began)
            began = time.perf_counter()
            async with session.post(f"{url}/prompt", json={"prompt": small_prompt(value)}) as response:
                body = await response.json()
                assert response.status == 200, body
            accept.append(time.perf_counter() - began)
            accepted.append(body["prompt_id"])

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
        while True:
            async with session.get(f"{url}/prompt") as response:
                if (await response.json())["exec_info"]["queue_remaining"] == 0:
                    break
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        async with session.get(f"{url}/history") as response:
            history = await response.json()
    await runner.cleanup()
    lost = [prompt_id for prompt_id in accepted if history.get(prompt_id, {}).get("status", {}).get(
        "status_str") != "success"]
    base_median = statistics.median(baseline)
    print(f"{prompts} prompts from {clients} concurrent clients")
    print(f"{'request':<24}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'x baseline p50':>16}")
    for name, samples in (("GET /prompt (baseline)", baseline), ("POST /prompt (accept)", accept)):
        p50 = percentile(samples, 0.5)
        print(f"{name:<24}{p50 * 1e3:>9.2f}{percentile(samples, 0.9) * 1e3:>9.2f}"
              f"{percentile(samples, 0.99) * 1e3:>9.2f}{p50 / base_median:>16.1f}")
    print(f"throughput: {prompts / elapsed:.1f} prompts/s end to end ({elapsed:.2f} s)")
    print(f"lost or failed: {len(lost)} of {len(accepted)}")
    if lost:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as base:
        asyncio.run(run(args.prompts, args.clients, Path(base)))


if __name__ == "__main__":
    main()
