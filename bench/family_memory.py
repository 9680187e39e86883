"""Peak memory per model family: each family's shipped txt2img workflow on its tiny model, run in a fresh
subprocess (so one run's memory never counts toward another's), with wall time, the child's peak RSS
(`ru_maxrss` from `os.wait4`) and the model files' size; SD3 and FLUX once per text-encoder policy
(`--free-text-encoders never/auto/always`). The tiny models make the numbers mostly the interpreter, torch and
diffusers; what differs between rows is what the models and their text encoders add.
Run: `OMP_NUM_THREADS=1 .venv/bin/python -m bench.family_memory [--families sd1,sd3] [--models-dir DIR]`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
WORKFLOWS = PROJECT_DIR / "workflows"
MAX_STEPS = 4
POLICIES = ("never", "auto", "always")
BASELINE = "baseline"  # the child imports the nodes, torch, diffusers and transformers and runs nothing


def _without_t5(prompt: dict[str, Any]) -> dict[str, Any]:
    from diffusion.families.sd3.demo import DEMO_DIFFUSERS_NO_T5

    prompt["4"]["inputs"]["model_path"] = DEMO_DIFFUSERS_NO_T5
    return prompt


# family -> (workflow, image size, edit of the workflow, whether it has a T5 whose policy matters)
FAMILIES: dict[str, tuple[str, int, Any, bool]] = {
    "sd1": ("txt2img", 64, None, False),
    "sdxl": ("sdxl_txt2img", 64, None, False),
    "sd3": ("sd3_txt2img", 32, None, True),
    "sd3-no-t5": ("sd3_txt2img", 32, _without_t5, False),
    "flux": ("flux_txt2img", 32, None, True),
    "unclip": ("unclip_cascade", 32, None, False),
}


def make_models(models_dir: Path) -> None:
    from diffusion.families.flux import demo as tiny_flux
    from diffusion.families.sd import demo as tiny
    from diffusion.families.sd3 import demo as sd3_tiny
    from diffusion.families.sdxl import demo as sdxl_tiny
    from diffusion.families.unclip import demo as tiny_kandinsky

    tiny.make_demo_models(models_dir)
    sdxl_tiny.make_sdxl_demo_models(models_dir)
    sd3_tiny.make_sd3_demo_models(models_dir)
    tiny_flux.make_flux_demo_models(models_dir)
    tiny_kandinsky.make_kandinsky_demo_models(models_dir)


def shrunk(prompt: dict[str, Any], size: int) -> dict[str, Any]:
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] in ("EmptyLatentImage", "EmptySD3LatentImage"):
            inputs.update(width=size, height=size)
        if node["class_type"] == "ImageScale":
            inputs.update(width=2 * size, height=2 * size)
        if "steps" in inputs:
            inputs["steps"] = min(inputs["steps"], MAX_STEPS)
    return prompt


def model_files(prompt: dict[str, Any], models_dir: Path) -> list[Path]:
    """The files and folders the workflow's loaders read."""
    folders = {"ckpt_name": "checkpoints", "model_path": "diffusers", "unet_name": "diffusion_models",
               "clip_name1": "text_encoders", "clip_name2": "text_encoders", "vae_name": "vae",
               "prior_name": "diffusers", "decoder_name": "diffusers"}
    return [models_dir / folders[name] / value for node in prompt.values()
            for name, value in node["inputs"].items() if name in folders and isinstance(value, str)]


def size_on_disk(path: Path) -> int:
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return path.stat().st_size if path.exists() else 0


def family_prompt(family: str) -> tuple[dict[str, Any], int]:
    workflow, size, edit, _ = FAMILIES[family]
    prompt = json.loads((WORKFLOWS / f"{workflow}.json").read_text())
    return shrunk(edit(prompt) if edit else prompt, size), size


def run_child(family: str, policy: str, models_dir: Path) -> None:
    """In the subprocess: run the family's workflow once; print how many T5 loads happened and how many are held."""
    import gc

    import torch

    torch.set_num_threads(1)
    import nodes
    from app.settings import TEXT_ENCODER_OFFLOAD
    from diffusion.lazy_module import LazyModule
    from engine.cache import OutputCache
    from engine.executor import Executor
    from engine.registry import NodeRegistry
    from engine.validation import validate_prompt
    from nodes.environment import Folders, NodeEnvironment, set_default_environment

    if family == BASELINE:
        import importlib

        for module in ("diffusers", "transformers"):  # what every family run imports anyway
            importlib.import_module(module)

        print(json.dumps({"t5_loads": 0, "t5_held": 0}))
        return
    work = Path(tempfile.mkdtemp(prefix="family-memory-"))
    folders = Folders(models_dir, work / "input", work / "output", work / "temp", work / "user")
    folders.create()
    set_default_environment(NodeEnvironment(folders, torch.device("cpu"), torch.float32,
                                            text_encoder_offload=TEXT_ENCODER_OFFLOAD[policy]))
    registry = NodeRegistry()
    registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    prompt, _ = family_prompt(family)
    validation = validate_prompt(prompt, registry)
    if not validation.ok:
        raise SystemExit(json.dumps(validation.to_response()))
    result = Executor(registry, OutputCache()).execute(validation.prompt, "bench", {}, validation.outputs)
    if not result.success:
        raise SystemExit(f"{family}: {result.error}")
    lazy = [item for item in gc.get_objects() if type(item) is LazyModule]
    print(json.dumps({"t5_loads": sum(item.loads for item in lazy), "t5_held": sum(item.loaded for item in lazy)}))


def measure(family: str, policy: str, models_dir: Path) -> dict[str, Any]:
    """Wall time, peak RSS (MiB) and T5 counts of one run in a fresh interpreter."""
    command = [sys.executable, "-m", "bench.family_memory", "--child", family, policy, str(models_dir)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(command, cwd=PROJECT_DIR, env=environment, stdout=subprocess.PIPE,
                                 stderr=errors, text=True)
        output = child.stdout.read() if child.stdout else ""
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not all children's
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        if child.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"{family} ({policy}) failed with exit code {child.returncode}:\n{errors.read()[-4000:]}")
    counts = json.loads(output.strip().splitlines()[-1])
    return {"seconds": seconds, "peak_mib": usage.ru_maxrss / 1024, **counts}  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated: " + ", ".join(FAMILIES))
    parser.add_argument("--models-dir", type=Path, help="a folder with the tiny models (written when not given)")
    parser.add_argument("--child", nargs=3, metavar=("FAMILY", "POLICY", "MODELS_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        family, policy, models_dir = args.child
        run_child(family, policy, Path(models_dir))
        return
    models_dir = args.models_dir or Path(tempfile.mkdtemp(prefix="family-memory-models-"))
    if args.models_dir is None:
        make_models(models_dir)
    baseline = measure(BASELINE, "auto", models_dir)
    print(f"{'family':<10} {'T5 policy':<10} {'files MiB':>9} {'wall s':>7} {'peak RSS MiB':>12} "
          f"{'over baseline':>13} {'T5 loads':>8} {'T5 held':>7}")
    print(f"{BASELINE:<10} {'-':<10} {0:>9.1f} {baseline['seconds']:>7.1f} {baseline['peak_mib']:>12.0f} "
          f"{0:>13.0f} {0:>8} {0:>7}", flush=True)
    for family in args.families.split(","):
        prompt, _ = family_prompt(family)
        files_mib = sum(size_on_disk(path) for path in model_files(prompt, models_dir)) / 2**20
        for policy in POLICIES if FAMILIES[family][3] else ("auto",):
            row = measure(family, policy, models_dir)
            extra = row["peak_mib"] - baseline["peak_mib"]
            print(f"{family:<10} {policy:<10} {files_mib:>9.1f} {row['seconds']:>7.1f} {row['peak_mib']:>12.0f} "
                  f"{extra:>13.0f} {row['t5_loads']:>8} {row['t5_held']:>7}", flush=True)


if __name__ == "__main__":
    main()
