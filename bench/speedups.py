"""The optional speed-ups of `Model Speed-ups` against the plain model, in one process: time per sampling step,
peak resident memory added while sampling, and the largest latent difference from the plain model.

Cases: the tiny demo architecture and the real SD1.5 UNet (random weights), txt2img latents, euler, cfg 7.5
(classifier-free guidance batched). Each configuration gets a warm-up call first (where torch.compile compiles;
its time is shown apart), then the configurations take turns for `--repeats` rounds; the table gives medians.
Peak memory is the kernel's high-water mark, reset (Linux `clear_refs`) before each call.
Run: `OMP_NUM_THREADS=1 .venv/bin/python -m bench.speedups [--case tiny|sd15|all] [--repeats 3] [--steps 4]
[--size 256] [--models-dir DIR] [--no-compile]`.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.engine_vs_diffusers import CASES, NEGATIVE, PROMPT

CFG = 7.5
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "channels_last": {"channels_last": True},
    "attention slicing auto": {"attention_slicing": "auto"},
    "attention slicing max": {"attention_slicing": "max"},
    "torch.compile inductor": {"compile": "inductor"},
}


def _status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclasses.dataclass
class Measured:
    first_call_s: float
    step_s: list[float]
    peak_added: list[int]
    difference: float = 0.0


def bench_case(case_name: str, models_dir: Path, base: Path, repeats: int, steps: int, size: int,
               configurations: dict[str, dict[str, Any]]) -> dict[str, Measured]:
    from nodes.conditioning import CLIPTextEncode
    from nodes.environment import Folders, NodeEnvironment, set_default_environment
    from nodes.latent import EmptyLatentImage
    from nodes.loaders import CheckpointLoaderSimple
    from nodes.sampling import KSampler
    from nodes.speedups import ModelSpeedups

    folders = dataclasses.replace(Folders.under(base), models_dir=models_dir)
    folders.create()
    set_default_environment(NodeEnvironment(folders, torch.device("cpu"), torch.float32))
    name = CASES[case_name].make_models(models_dir)
    model, clip, _ = CheckpointLoaderSimple().load_checkpoint(f"{name}.safetensors")
    positive = CLIPTextEncode().encode(clip, PROMPT)[0]
    negative = CLIPTextEncode().encode(clip, NEGATIVE)[0]
    (latent,) = EmptyLatentImage().generate(size, size, 1)
    models = {label: ModelSpeedups().apply(model, **options)[0] for label, options in configurations.items()}

    def run(label: str) -> tuple[float, int, torch.Tensor]:
        can_reset = _reset_peak()
        before = _status_bytes("VmRSS") or 0
        start = time.perf_counter()
        samples = KSampler().sample(models[label], 5, steps, CFG, "euler", "normal", positive, negative,
                                    latent)[0]["samples"]
        elapsed = time.perf_counter() - start
        peak = (_status_bytes("VmHWM") or 0) if can_reset else 0
        return elapsed, max(0, peak - before), samples

    measured, results = {}, {}
    for label in configurations:
        elapsed, _, results[label] = run(label)
        measured[label] = Measured(elapsed, [], [])
    for _ in range(repeats):
        for label in configurations:
            elapsed, peak_added, _ = run(label)
            measured[label].step_s.append(elapsed / steps)
            measured[label].peak_added.append(peak_added)
    for label in configurations:
        measured[label].difference = (results[label] - results["plain"]).abs().max().item()
    return measured


def print_table(case_name: str, measured: dict[str, Measured], steps: int, size: int, repeats: int) -> None:
    plain = statistics.median(measured["plain"].step_s)
    print(f"\n{CASES[case_name].name}: {size}x{size}, {steps} euler steps, cfg {CFG}, {repeats} rounds, "
          f"{torch.get_num_threads()} torch threads")
    print(f"  {'configuration':<24}{'first call s':>14}{'per step ms':>13}{'vs plain':>10}"
          f"{'peak RSS added MB':>19}{'max latent diff':>17}")
    for label, result in measured.items():
        step = statistics.median(result.step_s)
        print(f"  {label:<24}{result.first_call_s:>14.2f}{step * 1000:>13.1f}{step / plain:>10.3f}"
              f"{statistics.median(result.peak_added) / 1e6:>19.1f}{result.difference:>17.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out (it needs a compiler)")
    args = parser.parse_args()
    configurations = {label: options for label, options in CONFIGURATIONS.items()
                      if not (args.no_compile and "compile" in options)}
    names = list(CASES) if args.case == "all" else [args.case]
    with tempfile.TemporaryDirectory(prefix="speedups_") as base:
        models_dir = args.models_dir or Path(base) / "models"
        for name in names:
            measured = bench_case(name, models_dir, Path(base) / name, args.repeats, args.steps, args.size,
                                  configurations)
            print_table(name, measured, args.steps, args.size, args.repeats)


if __name__ == "__main__":
    main()
