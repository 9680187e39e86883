"""txt2img through the engine vs diffusers' StableDiffusionPipeline: pixel parity and speed, in one process.

Two cases: the tiny demo model (20 steps, 64x64) and the real SD1.5 UNet/VAE/CLIP architectures with random
weights (10 steps, 256x256). For each, the engine runs the API-format workflow CheckpointLoaderSimple ->
CLIPTextEncode x2 -> EmptyLatentImage -> KSampler -> VAEDecode -> SaveImage on the single-file checkpoint, and
the pipeline runs the same settings on the diffusers folder of the same weights and saves a PNG too. Runs
alternate; the table gives medians and the engine/diffusers ratio (target <= 1.02). Full engine runs clear the
output cache (models stay loaded, as they do for the pipeline); the seed-only re-run keeps it, so only the
sampler, decoder and saver run. Parity is the largest difference between the two 8-bit PNGs.
Run: `OMP_NUM_THREADS=1 .venv/bin/python -m bench.sd_parity_speed [--case tiny|sd15|all] [--repeats 5]`.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

PROMPT = "a photo of an astronaut riding a horse on mars"
NEGATIVE = "blurry"
CFG = 7.5


@dataclass(frozen=True)
class Case:
    name: str
    steps: int
    size: int
    make_models: Callable[[Path], str]  # writes <name>.safetensors and the diffusers folder <name>; returns name


def _tiny_models(models_dir: Path) -> str:
    from nodes.models import tiny

    tiny.make_demo_models(models_dir)
    return tiny.DEMO_DIFFUSERS


def _sd15_models(models_dir: Path) -> str:
    """SD1.5's real UNet, VAE and CLIP ViT-L/14 architectures with seeded random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodes.models import tiny
    from nodes.models.families import family_config, scheduler_config
    from nodes.models.tokenizer import clip_tokenizer

    name = "random-sd15"
    if (models_dir / "checkpoints" / f"{name}.safetensors").exists():
        return name
    torch.manual_seed(0)
    family = family_config("sd1")
    text_encoder = CLIPTextModel(CLIPTextConfig(**family["text_encoder"], bos_token_id=49406, eos_token_id=49407))
    unet = UNet2DConditionModel(
        sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=8,
        cross_attention_dim=768, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=512, scaling_factor=0.18215)
    components = tiny.TinyComponents("sd1", unet.eval(), vae.eval(), text_encoder.eval(), clip_tokenizer(),
                                     scheduler_config("sd1", "epsilon"))
    tiny.write_checkpoint(components, models_dir / "checkpoints" / f"{name}.safetensors")
    tiny.write_diffusers_folder(components, models_dir / "diffusers" / name)
    return name


CASES = {
    "tiny": Case("tiny SD1 (20 steps, 64x64)", 20, 64, _tiny_models),
    "sd15": Case("SD1.5 architecture, random weights (10 steps, 256x256)", 10, 256, _sd15_models),
}


def workflow(checkpoint: str, steps: int, size: int, seed: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": seed, "steps": steps, "cfg": CFG, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "bench"}},
    }


class EngineRunner:
    def __init__(self, base: Path) -> None:
        import nodes
        from engine.cache import OutputCache
        from engine.executor import Executor
        from engine.registry import NodeRegistry
        from nodes.environment import Folders, NodeEnvironment, set_default_environment

        self.folders = Folders.under(base)
        self.folders.create()
        set_default_environment(NodeEnvironment(self.folders, torch.device("cpu"), torch.float32))
        self.registry = NodeRegistry()
        self.registry.register_mappings(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
        self.executor = Executor(self.registry, OutputCache())

    def run(self, prompt: dict[str, Any], clear_cache: bool) -> tuple[float, list[str], Path]:
        from engine.validation import validate_prompt

        if clear_cache:
            self.executor.cache.clear()
        start = time.perf_counter()
        validation = validate_prompt(prompt, self.registry)
        if not validation.ok:
            raise RuntimeError(f"invalid workflow: {validation.to_response()}")
        result = self.executor.execute(validation.prompt, str(uuid.uuid4()), {}, validation.outputs)
        elapsed = time.perf_counter() - start
        if not result.success:
            raise RuntimeError(f"engine run failed: {result.error}")
        saved = result.outputs["7"]["images"][0]
        return elapsed, sorted(result.executed), self.folders.output_dir / saved["subfolder"] / saved["filename"]


class PipelineRunner:
    def __init__(self, folder: Path, output_dir: Path) -> None:
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

        self.pipeline = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None)
        for module in (self.pipeline.unet, self.pipeline.vae, self.pipeline.text_encoder):
            for tensor in [*module.parameters(), *module.buffers()]:  # own storage, as the model manager does
                tensor.data = tensor.data.clone()
        self.pipeline.scheduler = EulerDiscreteScheduler.from_config(self.pipeline.scheduler.config)
        self.pipeline.set_progress_bar_config(disable=True)
        self.output_dir = output_dir
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def run(self, steps: int, size: int, seed: int) -> tuple[float, Path]:
        start = time.perf_counter()
        image = self.pipeline(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=CFG,
                              height=size, width=size, generator=torch.Generator("cpu").manual_seed(seed)).images[0]
        path = self.output_dir / f"pipeline_{uuid.uuid4().hex[:8]}.png"
        image.save(path, compress_level=4)
        return time.perf_counter() - start, path


def png_difference(first: Path, second: Path) -> int:
    a = np.asarray(Image.open(first).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(second).convert("RGB"), dtype=np.int16)
    return int(np.abs(a - b).max())


def bench_case(case: Case, repeats: int, base: Path) -> None:
    engine = EngineRunner(base)
    model_name = case.make_models(engine.folders.models_dir)
    checkpoint = f"{model_name}.safetensors"
    pipeline = PipelineRunner(engine.folders.models_dir / "diffusers" / model_name, base / "pipeline_out")
    seed = 42
    engine.run(workflow(checkpoint, case.steps, case.size, seed), clear_cache=True)  # warm-up: loads the model
    pipeline.run(case.steps, case.size, seed)
    engine_times, pipeline_times, reruns, difference = [], [], [], 0
    executed: list[str] = []
    for repeat in range(repeats):
        elapsed, _, engine_png = engine.run(workflow(checkpoint, case.steps, case.size, seed), clear_cache=True)
        engine_times.append(elapsed)
        elapsed, pipeline_png = pipeline.run(case.steps, case.size, seed)
        pipeline_times.append(elapsed)
        difference = max(difference, png_difference(engine_png, pipeline_png))
        elapsed, executed, _ = engine.run(workflow(checkpoint, case.steps, case.size, seed + 1 + repeat),
                                          clear_cache=False)
        reruns.append(elapsed)
    engine_median, pipeline_median = statistics.median(engine_times), statistics.median(pipeline_times)
    rerun_median = statistics.median(reruns)
    print(f"\n{case.name}  ({repeats} alternating runs, {torch.get_num_threads()} torch threads)")
    print(f"  engine full run        median {engine_median * 1000:9.1f} ms")
    print(f"  diffusers pipeline     median {pipeline_median * 1000:9.1f} ms")
    print(f"  ratio engine/diffusers        {engine_median / pipeline_median:9.3f}   (target <= 1.02)")
    print(f"  engine seed-only rerun median {rerun_median * 1000:9.1f} ms   "
          f"({rerun_median / engine_median:.2f} of a full run; ran nodes {', '.join(executed)})")
    print(f"  largest PNG pixel difference  {difference:9d}   (8-bit levels)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    names = list(CASES) if args.case == "all" else [args.case]
    with tempfile.TemporaryDirectory(prefix="sd_parity_speed_") as base:
        for name in names:
            bench_case(CASES[name], args.repeats, Path(base) / name)


if __name__ == "__main__":
    main()
