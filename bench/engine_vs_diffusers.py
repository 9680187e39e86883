"""txt2img through the engine vs diffusers' StableDiffusionPipeline: speed, per-step time, loading memory and
pixel parity, for the tiny demo architecture and the real SD1.5 one (random weights), 256x256, 10 euler steps.

For each case the engine runs the API-format workflow CheckpointLoaderSimple -> CLIPTextEncode x2 ->
EmptyLatentImage -> KSampler -> VAEDecode -> SaveImage on the single-file checkpoint, and the pipeline runs the
same settings on the diffusers folder of the same weights and saves a PNG too. Runs alternate in one process
after a warm-up; the table gives medians. Full engine runs clear the output cache (models stay loaded, as the
pipeline's do); the seed-only re-run keeps it, so only sampler, decoder and saver run, and its ratio is against a
full diffusers call. Per-step time is the median gap between consecutive step callbacks (engine progress
events, the pipeline's `callback_on_step_end`). Loading memory is measured in fresh processes: the peak resident
memory while loading the single-file checkpoint (engine: the model manager; diffusers: `from_single_file` with
the local config folder), as added over the process before loading and as the whole process, over the file's
size. Parity is the largest difference between the two 8-bit PNGs.
Run: `OMP_NUM_THREADS=1 .venv/bin/python -m bench.engine_vs_diffusers [--case tiny|sd15|all] [--repeats 3]
[--dtype fp32|bf16] [--models-dir DIR]` (the SD1.5 files take ~40 s and 8.5 GB of disk to write once).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROMPT = "a photo of an astronaut riding a horse on mars"
NEGATIVE = "blurry"
CFG = 7.5
STEPS = 10
SIZE = 256
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    name: str
    make_models: Callable[[Path], str]  # writes <name>.safetensors and the diffusers folder <name>; returns name


def _tiny_models(models_dir: Path) -> str:
    from diffusion.families.sd import demo as tiny

    tiny.make_demo_models(models_dir)
    return tiny.DEMO_DIFFUSERS


def sd15_unet() -> Any:
    """SD1.5's UNet architecture with random weights (seeded by the caller), in eval mode."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=8,
        cross_attention_dim=768, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3).eval()


def _sd15_models(models_dir: Path) -> str:
    """SD1.5's real UNet, VAE and CLIP ViT-L/14 architectures with seeded random weights."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from diffusion.encoders.clip_tokenizer import clip_tokenizer
    from diffusion.families.sd import demo as tiny
    from diffusion.families.sd.loading import scheduler_config, version_config

    name = "random-sd15"
    if (models_dir / "checkpoints" / f"{name}.safetensors").exists():
        return name
    torch.manual_seed(0)
    family = version_config("sd1")
    text_encoder = CLIPTextModel(CLIPTextConfig(**family["text_encoder"], bos_token_id=49406, eos_token_id=49407))
    unet = sd15_unet()
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=512, scaling_factor=0.18215)
    components = tiny.TinyComponents("sd1", unet, vae.eval(), text_encoder.eval(), clip_tokenizer(),
                                     scheduler_config("sd1", "epsilon"))
    tiny.write_checkpoint(components, models_dir / "checkpoints" / f"{name}.safetensors")
    tiny.write_diffusers_folder(components, models_dir / "diffusers" / name)
    return name


CASES = {
    "tiny": Case("tiny SD1 architecture", _tiny_models),
    "sd15": Case("SD1.5 architecture, random weights", _sd15_models),
}


def workflow(checkpoint: str, seed: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": seed, "steps": STEPS, "cfg": CFG, "sampler_name": "euler",
            "scheduler": "diffusers", "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "bench"}},
    }


def median_gap(stamps: list[float]) -> float:
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


@dataclass
class Run:
    seconds: float
    step_seconds: float
    png: Path
    executed: list[str]


class EngineRunner:
    def __init__(self, folders: Any, dtype: torch.dtype) -> None:
        import nodes
        from engine import events
        from engine.cache import OutputCache
        from engine.executor import Executor
        from engine.registry import NodeRegistry
        from nodes.environment import NodeEnvironment, set_default_environment

        self.folders = folders
        set_default_environment(NodeEnvironment(self.folders, torch.device("cpu"), dtype))
        self.registry = NodeRegistry()
        self.registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
        self.executor = Executor(self.registry, OutputCache())
        self.steps: list[float] = []
        self.executor.events.subscribe(
            lambda name, data: self.steps.append(time.perf_counter()) if name == events.PROGRESS
            and data.get("node") == "5" else None)

    def run(self, prompt: dict[str, Any], clear_cache: bool) -> Run:
        from engine.validation import validate_prompt

        if clear_cache:
            self.executor.cache.clear()
        self.steps = []
        start = time.perf_counter()
        validation = validate_prompt(prompt, self.registry)
        if not validation.ok:
            raise RuntimeError(f"invalid workflow: {validation.to_response()}")
        result = self.executor.execute(validation.prompt, str(uuid.uuid4()), {}, validation.outputs)
        elapsed = time.perf_counter() - start
        if not result.success:
            raise RuntimeError(f"engine run failed: {result.error}")
        saved = result.outputs["7"]["images"][0]
        return Run(elapsed, median_gap(self.steps), self.folders.output_dir / saved["subfolder"] / saved["filename"],
                   sorted(result.executed))


class PipelineRunner:
    def __init__(self, folder: Path, output_dir: Path, dtype: torch.dtype) -> None:
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

        self.pipeline = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None,
                                                                torch_dtype=dtype)
        for module in (self.pipeline.unet, self.pipeline.vae, self.pipeline.text_encoder):
            for tensor in [*module.parameters(), *module.buffers()]:  # own storage, as the model manager's
                tensor.data = tensor.data.clone()
        self.pipeline.scheduler = EulerDiscreteScheduler.from_config(self.pipeline.scheduler.config)
        self.pipeline.set_progress_bar_config(disable=True)
        self.output_dir = output_dir
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def run(self, seed: int) -> Run:
        steps: list[float] = []

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            steps.append(time.perf_counter())
            return tensors

        start = time.perf_counter()
        image = self.pipeline(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG,
                              height=SIZE, width=SIZE, generator=torch.Generator("cpu").manual_seed(seed),
                              callback_on_step_end=on_step_end).images[0]
        path = self.output_dir / f"pipeline_{uuid.uuid4().hex[:8]}.png"
        image.save(path, compress_level=4)
        return Run(time.perf_counter() - start, median_gap(steps), path, [])


def png_difference(first: Path, second: Path) -> int:
    a = np.asarray(Image.open(first).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(second).convert("RGB"), dtype=np.int16)
    return int(np.abs(a - b).max())


# Run in a fresh process: load one checkpoint and print the resident-memory peak while loading. Linux's
# clear_refs resets the high-water mark after the imports; elsewhere the process's lifetime peak is used.
MEASURE_LOAD = """
import json, resource, sys
from pathlib import Path
import torch, diffusers, transformers
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel
from diffusion.lazy_module import resolve
from diffusion.loading import load_checkpoint, load_diffusion_model, load_text_encoders, load_vae
from diffusion.manager import ModelManager
from diffusion.memory import MemoryBudget

def status(field):
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
try:
    open("/proc/self/clear_refs", "w").write("5")
except OSError:
    pass
before = status("VmRSS") or 0
which, path, config, dtype = sys.argv[1], Path(sys.argv[2]), sys.argv[3], getattr(torch, sys.argv[4])
cpu = torch.device("cpu")
def manager():  # as the server makes it: within its default budget of this machine's RAM
    return ModelManager(cpu, dtype, MemoryBudget.for_device(cpu))
if which == "engine":
    loaded = load_checkpoint(manager(), path)
elif which == "engine-network":  # a denoising network alone (UNETLoader's files)
    loaded = load_diffusion_model(manager(), path).network
elif which == "engine-vae":  # a VAE alone (VAELoader's files)
    loaded = load_vae(manager(), path).autoencoder
elif which.startswith("engine-text-encoder:"):  # a text encoder alone under a CLIPLoader type, read at once
    clip = load_text_encoders(manager(), which.split(":", 1)[1], {"clip_name": path})
    loaded = [resolve(module) for module in clip.offloadable()]
elif which == "engine-llama":  # HiDream's Llama 3.1 alone, as QuadrupleCLIPLoader reads it, read at once
    from diffusion.families.hidream.loading import llama_part
    loaded = resolve(llama_part(manager(), path, "clip_name4")[0])
else:
    pipeline = StableDiffusionPipeline.from_single_file(str(path), config=config, local_files_only=True,
                                                        safety_checker=None, torch_dtype=dtype)
    loaded = (pipeline.unet, pipeline.vae, pipeline.text_encoder)
peak = status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
from diffusion.memory import size_in_bytes
print(json.dumps({"before": before, "peak": peak, "model_bytes": size_in_bytes(loaded)}))
"""


def loading_peak(which: str, checkpoint: Path, config_folder: Path, dtype: torch.dtype) -> dict[str, int]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    result = subprocess.run([sys.executable, "-c", MEASURE_LOAD, which, str(checkpoint), str(config_folder),
                             str(dtype).removeprefix("torch.")], capture_output=True, text=True, env=env,
                            cwd=PROJECT_DIR)
    if result.returncode != 0:
        raise RuntimeError(f"{which} load failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_case(case: Case, repeats: int, models_dir: Path, base: Path, dtype: torch.dtype) -> dict[str, Any]:
    from nodes.environment import Folders

    folders = dataclasses.replace(Folders.under(base), models_dir=models_dir)
    folders.create()
    model_name = case.make_models(models_dir)
    checkpoint_path = models_dir / "checkpoints" / f"{model_name}.safetensors"
    folder = models_dir / "diffusers" / model_name
    file_size = checkpoint_path.stat().st_size
    peaks = {which: loading_peak(which, checkpoint_path, folder, dtype) for which in ("engine", "diffusers")}

    engine = EngineRunner(folders, dtype)
    pipeline = PipelineRunner(folder, base / "pipeline_out", dtype)
    seed = 42
    engine.run(workflow(checkpoint_path.name, seed), clear_cache=True)  # warm-up: loads the model
    pipeline.run(seed)
    engine_runs, pipeline_runs, reruns, difference = [], [], [], 0
    for repeat in range(repeats):
        engine_runs.append(engine.run(workflow(checkpoint_path.name, seed), clear_cache=True))
        pipeline_runs.append(pipeline.run(seed))
        difference = max(difference, png_difference(engine_runs[-1].png, pipeline_runs[-1].png))
        reruns.append(engine.run(workflow(checkpoint_path.name, seed + 1 + repeat), clear_cache=False))
    return {
        "case": case.name, "repeats": repeats, "threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."), "file_gb": file_size / 1e9,
        "engine_s": statistics.median(run.seconds for run in engine_runs),
        "diffusers_s": statistics.median(run.seconds for run in pipeline_runs),
        "engine_step_s": statistics.median(run.step_seconds for run in engine_runs),
        "diffusers_step_s": statistics.median(run.step_seconds for run in pipeline_runs),
        "rerun_s": statistics.median(run.seconds for run in reruns), "rerun_nodes": reruns[-1].executed,
        "engine_load_added": (peaks["engine"]["peak"] - peaks["engine"]["before"]) / file_size,
        "engine_load_total": peaks["engine"]["peak"] / file_size,
        "diffusers_load_added": (peaks["diffusers"]["peak"] - peaks["diffusers"]["before"]) / file_size,
        "diffusers_load_total": peaks["diffusers"]["peak"] / file_size,
        "pixel_difference": difference,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    lines = [
        ("", lambda r: r["case"]),
        ("checkpoint file", lambda r: f"{r['file_gb']:.3f} GB {r['dtype']}"),
        ("engine full run (median)", lambda r: f"{r['engine_s']:.3f} s"),
        ("diffusers pipeline (median)", lambda r: f"{r['diffusers_s']:.3f} s"),
        ("ratio engine/diffusers", lambda r: f"{r['engine_s'] / r['diffusers_s']:.3f}"),
        ("engine per step", lambda r: f"{r['engine_step_s'] * 1000:.1f} ms"),
        ("diffusers per step", lambda r: f"{r['diffusers_step_s'] * 1000:.1f} ms"),
        ("per-step ratio", lambda r: f"{r['engine_step_s'] / r['diffusers_step_s']:.3f}"),
        ("seed-only re-run (median)", lambda r: f"{r['rerun_s']:.3f} s"),
        ("re-run / diffusers full call", lambda r: f"{r['rerun_s'] / r['diffusers_s']:.3f}"),
        ("engine load peak RSS: added / file", lambda r: f"{r['engine_load_added']:.2f}x"),
        ("engine load peak RSS: process / file", lambda r: f"{r['engine_load_total']:.2f}x"),
        ("diffusers load peak RSS: added / file", lambda r: f"{r['diffusers_load_added']:.2f}x"),
        ("diffusers load peak RSS: process / file", lambda r: f"{r['diffusers_load_total']:.2f}x"),
        ("largest PNG difference (8-bit)", lambda r: str(r["pixel_difference"])),
    ]
    width = max(len(label) for label, _ in lines)
    cells = [[render(row) for row in rows] for _, render in lines]
    column = max(len(cell) for row in cells for cell in row)
    print(f"\n{STEPS} euler steps, {SIZE}x{SIZE}, cfg {CFG}; {rows[0]['repeats']} alternating runs after a warm-up; "
          f"{rows[0]['threads']} torch threads")
    for (label, _), row in zip(lines, cells):
        print(f"  {label:<{width}}  " + "  ".join(f"{cell:>{column}}" for cell in row))
    print(f"  seed-only re-run ran nodes: {', '.join(rows[0]['rerun_nodes'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="where to write (or find) the random models; default: a temporary folder")
    args = parser.parse_args()
    names = list(CASES) if args.case == "all" else [args.case]
    with tempfile.TemporaryDirectory(prefix="engine_vs_diffusers_") as base:
        models_dir = args.models_dir or Path(base) / "models"
        rows = [bench_case(CASES[name], args.repeats, models_dir, Path(base) / name, DTYPES[args.dtype])
                for name in names]
    print_table(rows)


if __name__ == "__main__":
    main()
