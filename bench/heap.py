"""Denoising steps on the CPU with glibc's default heap against the heap the server sets up (`diffusion.heap`: one
arena for every thread, freed blocks kept for reuse instead of unmapped): a real-size SD1.5
UNet step (random weights; cfg's batch of 2) at 256x256 by default, each heap in a fresh process (the setting is
process-wide), taking turns for `--rounds` rounds; per process the median of `--steps` steps after 2 warm-up
steps, with the minor page faults per step and the process's peak resident memory. With `--thread`, the steps run
in a thread of their own, as the server runs each prompt. Measured on a 2-core machine (2026-12-06): see the
README.
Run: `.venv/bin/python -m bench.heap [--size 256] [--steps 5] [--rounds 2] [--dtype fp32|bf16] [--thread]`.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

PROJECT_DIR = Path(__file__).resolve().parent.parent
HEAPS = ("default", "reuse")


def steps(args: argparse.Namespace) -> dict[str, float]:
    """`--worker`: time the UNet steps in this process and return the measurements."""
    from diffusion.heap import keep_freed_blocks_for_reuse, share_one_arena

    if args.worker == "reuse" and not (share_one_arena() and keep_freed_blocks_for_reuse()):
        raise SystemExit("this C library does not take glibc's malloc settings")
    from bench.engine_vs_diffusers import sd15_unet  # (after the heap's settings: importing may start threads)
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    torch.manual_seed(0)
    unet = sd15_unet().to(dtype)
    latents = torch.randn(2, 4, args.size // 8, args.size // 8, dtype=dtype)
    text = torch.randn(2, 77, 768, dtype=dtype)
    seconds: list[float] = []
    faults: list[int] = []

    def run() -> None:
        with torch.inference_mode():
            for index in range(2 + args.steps):
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                began = time.perf_counter()
                unet(latents, 999, encoder_hidden_states=text)
                if index >= 2:
                    seconds.append(time.perf_counter() - began)
                    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

    if args.thread:
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
    else:
        run()
    return {"step_s": statistics.median(seconds), "faults": statistics.median(faults),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--thread", action="store_true", help="step in a thread of its own, as the server does")
    parser.add_argument("--worker", choices=HEAPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(steps(args)))
        return
    results: dict[str, list[dict[str, float]]] = {heap: [] for heap in HEAPS}
    for _ in range(args.rounds):
        for heap in HEAPS:
            command = [sys.executable, "-m", "bench.heap", "--worker", heap, "--size", str(args.size),
                       "--steps", str(args.steps), "--dtype", args.dtype, *(["--thread"] if args.thread else [])]
            output = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, check=True).stdout
            results[heap].append(json.loads(output.strip().splitlines()[-1]))
            print(f"  {heap}: {results[heap][-1]}", flush=True)
    base = statistics.median(result["step_s"] for result in results["default"])
    where = "a thread of its own" if args.thread else "the main thread"
    print(f"\nSD1.5 UNet step, {args.size}x{args.size}, {args.dtype}, {torch.get_num_threads()} threads, in {where}")
    print(f"  {'heap':<9}{'s / step':>10}{'vs default':>12}{'faults / step':>15}{'peak RSS GB':>13}")
    for heap, rows in results.items():
        step = statistics.median(row["step_s"] for row in rows)
        faults = statistics.median(row["faults"] for row in rows)
        peak = max(row["peak_rss_gb"] for row in rows)
        print(f"  {heap:<9}{step:>10.3f}{step / base:>11.2f}x{faults:>15.0f}{peak:>13.2f}")


if __name__ == "__main__":
    main()
