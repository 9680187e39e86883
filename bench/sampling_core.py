"""The sigma sampling core (ComfyUI's samplers and schedules, KSampler's default) against the diffusers loop
(scheduler `diffusers`) in one process: seconds per step and per network call, for a few samplers both run.

Both paths call the same network the same way (cond and uncond rows batched into one call per evaluation); what
differs is the work around the calls: sigma tables, noise, the samplers' update rules, guidance. Per network call
time isolates that overhead (heun and dpm_2 call the network twice a step on both paths). Cases: the tiny demo
architecture and the real SD1.5 UNet (random weights), txt2img, cfg 7.5. Each configuration runs once to warm up,
then the configurations take turns for `--repeats` rounds; the table gives medians.
Run: `OMP_NUM_THREADS=1 .venv/bin/python -m bench.sampling_core [--case tiny|sd15|all] [--repeats 3]
[--steps 8] [--size 256] [--models-dir DIR]`.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.engine_vs_diffusers import CASES, NEGATIVE, PROMPT

CFG = 7.5
SAMPLERS = ("euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde", "ddim")
PATHS = {"sigma core": "normal", "diffusers loop": "diffusers"}


@dataclasses.dataclass
class Measured:
    seconds: list[float] = dataclasses.field(default_factory=list)
    calls: int = 0


def bench_case(case_name: str, models_dir: Path, base: Path, repeats: int, steps: int,
               size: int) -> dict[tuple[str, str], Measured]:
    from nodes.conditioning import CLIPTextEncode
    from nodes.environment import Folders, NodeEnvironment, set_default_environment
    from nodes.latent import EmptyLatentImage
    from nodes.loaders import CheckpointLoaderSimple
    from nodes.sampling import KSampler

    folders = dataclasses.replace(Folders.under(base), models_dir=models_dir)
    folders.create()
    set_default_environment(NodeEnvironment(folders, torch.device("cpu"), torch.float32))
    name = CASES[case_name].make_models(models_dir)
    model, clip, _ = CheckpointLoaderSimple().load_checkpoint(f"{name}.safetensors")
    positive = CLIPTextEncode().encode(clip, PROMPT)[0]
    negative = CLIPTextEncode().encode(clip, NEGATIVE)[0]
    (latent,) = EmptyLatentImage().generate(size, size, 1)
    calls = [0]
    hook = model.network.register_forward_pre_hook(lambda module, args: calls.__setitem__(0, calls[0] + 1))

    def run(sampler: str, scheduler: str) -> tuple[float, int]:
        calls[0] = 0
        start = time.perf_counter()
        KSampler().sample(model, 5, steps, CFG, sampler, scheduler, positive, negative, latent)
        return time.perf_counter() - start, calls[0]

    measured = {(sampler, path): Measured() for sampler in SAMPLERS for path in PATHS}
    try:
        for sampler, path in measured:
            run(sampler, PATHS[path])
        for _ in range(repeats):
            for (sampler, path), result in measured.items():
                elapsed, result.calls = run(sampler, PATHS[path])
                result.seconds.append(elapsed)
    finally:
        hook.remove()
    return measured


def print_table(case_name: str, measured: dict[tuple[str, str], Measured], steps: int, size: int,
                repeats: int) -> None:
    print(f"\n{CASES[case_name].name}: {size}x{size}, {steps} steps, cfg {CFG}, {repeats} rounds, "
          f"{torch.get_num_threads()} torch threads")
    print(f"  {'sampler':<18}{'path':<16}{'network calls':>14}{'s per step':>12}{'ms per call':>13}"
          f"{'core / diffusers':>18}")
    for sampler in SAMPLERS:
        baseline = statistics.median(measured[(sampler, "diffusers loop")].seconds)
        baseline_per_call = baseline / measured[(sampler, "diffusers loop")].calls
        for path in PATHS:
            result = measured[(sampler, path)]
            seconds = statistics.median(result.seconds)
            per_call = seconds / result.calls
            ratio = f"{per_call / baseline_per_call:.3f}" if path == "sigma core" else ""
            print(f"  {sampler:<18}{path:<16}{result.calls:>14}{seconds / steps:>12.3f}{per_call * 1000:>13.1f}"
                  f"{ratio:>18}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="tiny")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--models-dir", type=Path, default=None)
    args = parser.parse_args()
    names = list(CASES) if args.case == "all" else [args.case]
    with tempfile.TemporaryDirectory(prefix="sampling_core_") as base:
        models_dir = args.models_dir or Path(base) / "models"
        for name in names:
            measured = bench_case(name, models_dir, Path(base) / name, args.repeats, args.steps, args.size)
            print_table(name, measured, args.steps, args.size, args.repeats)


if __name__ == "__main__":
    main()
