"""Torch CPU threads against the speed of one denoising step: a real-size SD1.5 UNet (random weights; cfg's batch of
2) at 256x256 by default, per thread count from 1 to every core this process may use (powers of two between, and
the count itself), in one process after a warm-up step, as the median of `--repeats` steps. The ratio is against
the engine's default count (`app.settings.default_thread_count`, every core unless OMP_NUM_THREADS says). Measured
on a 2-core machine (2026-12-05): fp32 3.70 s a step on 1 thread, 1.98 s on 2 (1.87x); a rerun 3.73 s vs 2.02 s
(1.84x); bf16 1.23 s vs 0.72 s (1.72x).
Run: `.venv/bin/python -m bench.threads [--size 256] [--repeats 3] [--dtype fp32|bf16]` (without OMP_NUM_THREADS,
so that the default is every core).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from app.settings import default_thread_count


def thread_counts(cores: int) -> list[int]:
    counts = [count for count in (1, 2, 4, 8, 16, 32, 64) if count < cores]
    return counts + [cores]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()
    from diffusers import UNet2DConditionModel

    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=8,
        cross_attention_dim=768, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3).eval()
    if dtype != torch.float32:
        unet = unet.to(dtype)
    latents = torch.randn(2, 4, args.size // 8, args.size // 8, dtype=dtype)
    text = torch.randn(2, 77, 768, dtype=dtype)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    default = default_thread_count()
    rows = []
    with torch.inference_mode():
        # the default joins the rows when OMP_NUM_THREADS names a count between them, so every ratio has its base
        for count in sorted(set(thread_counts(cores)) | {default}):
            torch.set_num_threads(count)
            unet(latents, 999, encoder_hidden_states=text)  # warm-up
            seconds = []
            for _ in range(args.repeats):
                began = time.perf_counter()
                unet(latents, 999, encoder_hidden_states=text)
                seconds.append(time.perf_counter() - began)
            rows.append((count, statistics.median(seconds)))
    at_default = dict(rows)[default]
    print(f"\nSD1.5 UNet step, {args.size}x{args.size}, {args.dtype}, {cores} cores, default {default} threads")
    print(f"  {'threads':>8}{'ms / step':>11}{'vs default':>12}")
    for count, seconds in rows:
        print(f"  {count:>8}{seconds * 1000:>11.0f}{seconds / at_default:>11.2f}x")


if __name__ == "__main__":
    main()
