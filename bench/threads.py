"""Torch CPU threads against the speed of one denoising step: a real-size SD1.5 UNet (random weights; cfg's batch of
2) at 256x256 by default, per thread count from 1 to every CPU this process may use (powers of two between, and
the count itself; `--counts` names others), in one process after a warm-up step, as the median of `--repeats`
steps. The ratio is against the engine's default count (`app.settings.default_thread_count`: the physical cores
within the process's CPU affinity and cgroup quota, unless OMP_NUM_THREADS says). The table of 2026-12-06, with
and without limits, is in docs/performance.md. To run under a CPU quota as Docker's `--cpus=1.5` sets one (cgroup
v1, as root): `mkdir /sys/fs/cgroup/cpu/q && echo 150000 > /sys/fs/cgroup/cpu/q/cpu.cfs_quota_us && echo $$ >
/sys/fs/cgroup/cpu/q/cgroup.procs`, then the command below from that shell; under an affinity mask: `taskset -c 0`.
Run: `.venv/bin/python -m bench.threads [--size 256] [--repeats 3] [--dtype fp32|bf16] [--counts 1,2,4]`
(without OMP_NUM_THREADS, so that the default is the engine's own).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from app.cpus import allowed_cpus, cgroup_cpu_quota
from app.settings import default_thread_count
from bench.engine_vs_diffusers import sd15_unet


def thread_counts(cores: int) -> list[int]:
    counts = [count for count in (1, 2, 4, 8, 16, 32, 64) if count < cores]
    return counts + [cores]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--counts", type=lambda text: [int(count) for count in text.split(",")], default=None,
                        help="thread counts to time, e.g. 1,2,4 (default: 1 to every allowed CPU, as above)")
    args = parser.parse_args()
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    torch.manual_seed(0)
    unet = sd15_unet().to(dtype)
    latents = torch.randn(2, 4, args.size // 8, args.size // 8, dtype=dtype)
    text = torch.randn(2, 77, 768, dtype=dtype)
    cores = len(allowed_cpus())
    quota = cgroup_cpu_quota()
    default = default_thread_count()
    rows = []
    with torch.inference_mode():
        # the default joins the rows when OMP_NUM_THREADS names a count between them, so every ratio has its base
        for count in sorted(set(args.counts or thread_counts(cores)) | {default}):
            torch.set_num_threads(count)
            unet(latents, 999, encoder_hidden_states=text)  # warm-up
            seconds = []
            for _ in range(args.repeats):
                began = time.perf_counter()
                unet(latents, 999, encoder_hidden_states=text)
                seconds.append(time.perf_counter() - began)
            rows.append((count, statistics.median(seconds)))
    at_default = dict(rows)[default]
    limits = f"{cores} CPUs allowed" + (f", cgroup quota {quota:g} CPUs" if quota is not None else "")
    print(f"\nSD1.5 UNet step, {args.size}x{args.size}, {args.dtype}, {limits}, default {default} threads")
    print(f"  {'threads':>8}{'ms / step':>11}{'vs default':>12}")
    for count, seconds in rows:
        print(f"  {count:>8}{seconds * 1000:>11.0f}{seconds / at_default:>11.2f}x")


if __name__ == "__main__":
    main()
