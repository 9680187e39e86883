"""Scale-out: 40 tiny-model txt2img prompts through a live server with the in-process worker, then with 1 and
2 Ray workers, in one run; prints a table.

Every configuration gets the same prompts (64x64, one seed each) over HTTP on 127.0.0.1. Start-up (Ray and
the workers' engines) is timed apart from throughput; throughput is measured after one warm-up prompt per
worker (so each has its model loaded), from the first POST until history holds every prompt. Each worker
and the in-process engine use `--threads` torch threads (default 1), so the comparison is about workers.

What one 2-core machine can show: that prompts flow through Ray and back (events, files, history) with no
loss, what that costs per prompt compared with the in-process worker, and that two workers overlap. What it
cannot show: the >= 1.8x of two workers over one that a machine with a core (or a GPU) per worker gives.
Here the two workers, the head (aiohttp, SQLite, PNG writes) and Ray's own processes share two cores, and
anything else running on the machine takes from them too.
Run: `.venv/bin/python -m bench.scale_out [--prompts 40] [--steps 20] [--threads 1]`.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import logging
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from app.runtime import build_runtime
from app.settings import PROJECT_DIR, Settings
from server.app import ServerConfig, create_app, in_process_worker


@dataclass
class Measurement:
    mode: str
    workers: int
    startup_s: float
    elapsed_s: float
    prompts: int


def txt2img(seed: int, steps: int) -> dict:
    prompt = json.loads((PROJECT_DIR / "workflows" / "txt2img.json").read_text())
    prompt["5"]["inputs"].update(width=64, height=64)
    prompt["3"]["inputs"].update(seed=seed, steps=steps)
    return prompt


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def run_prompts(url: str, prompts: list[dict]) -> None:
    """Queue every prompt, wait for the queue to drain, and check each one succeeded."""
    async with aiohttp.ClientSession() as session:
        ids = []
        for prompt in prompts:
            async with session.post(f"{url}/prompt", json={"prompt": prompt}) as response:
                body = await response.json()
                assert response.status == 200, body
                ids.append(body["prompt_id"])
        while True:
            async with session.get(f"{url}/prompt") as response:
                if (await response.json())["exec_info"]["queue_remaining"] == 0:
                    break
            await asyncio.sleep(0.05)
        async with session.get(f"{url}/history") as response:
            history = await response.json()
    failed = [prompt_id for prompt_id in ids if history.get(prompt_id, {}).get("status", {}).get("status_str")
              != "success"]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(ids)} prompts failed or were lost")


async def measure(mode: str, workers: int, settings: Settings, prompts: int, steps: int) -> Measurement:
    began = time.perf_counter()
    runtime_future: concurrent.futures.Future = concurrent.futures.Future()
    if workers:
        from distributed.cluster import Cluster
        from distributed.pool import ClusterOptions

        cluster = Cluster(settings, ClusterOptions(workers=workers))
        app = create_app(settings, ServerConfig(previews=False), runtime_future, cluster.queue_worker)
        runtime_future.set_result(await asyncio.to_thread(lambda: cluster.start(build_runtime(settings))))
        while len(cluster.pool.ready_slots()) < workers:
            await asyncio.sleep(0.1)
    else:
        app = create_app(settings, ServerConfig(previews=False), runtime_future, in_process_worker)
        runtime_future.set_result(await asyncio.to_thread(build_runtime, settings))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    await run_prompts(url, [txt2img(seed, steps) for seed in range(max(workers, 1))])  # load the model everywhere
    startup = time.perf_counter() - began
    began = time.perf_counter()
    await run_prompts(url, [txt2img(1000 + seed, steps) for seed in range(prompts)])
    elapsed = time.perf_counter() - began
    await runner.cleanup()
    return Measurement(mode, workers, startup, elapsed, prompts)


def print_table(results: list[Measurement], steps: int, threads: int) -> None:
    one_worker = next(result for result in results if result.workers == 1)
    print(f"{results[0].prompts} prompts, tiny SD1 model, 64x64, {steps} steps, {threads} torch thread(s) per "
          f"engine, {os.cpu_count()} CPU cores")
    print(f"{'mode':<22}{'start-up s':>12}{'run s':>9}{'prompts/s':>11}{'vs 1 worker':>13}")
    for result in results:
        rate = result.prompts / result.elapsed_s
        print(f"{result.mode:<22}{result.startup_s:>12.1f}{result.elapsed_s:>9.1f}{rate:>11.2f}"
              f"{one_worker.elapsed_s / result.elapsed_s:>12.2f}x")


async def run(prompts: int, steps: int, threads: int, base: Path) -> None:
    from diffusion.families.sd.demo import make_demo_models

    make_demo_models(base / "models")
    results = []
    for mode, workers in (("in-process (default)", 0), ("Ray, 1 worker", 1), ("Ray, 2 workers", 2)):
        folder = base / f"run-{workers}-workers"
        settings = Settings(base / "models", folder / "input", folder / "output", folder / "temp", folder / "user",
                            cache_size=16, cpu=True, threads=threads, disable_custom_nodes=True, demo_models=False)
        results.append(await measure(mode, workers, settings, prompts, steps))
    print_table(results, steps, threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per engine")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as base:
        asyncio.run(run(args.prompts, args.steps, args.threads, Path(base)))


if __name__ == "__main__":
    main()
