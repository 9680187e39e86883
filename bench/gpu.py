"""Speed and memory on a GPU: our server against the matching diffusers pipeline (and ComfyUI's server when its code
is given), for SD1.5 at 512x512, SDXL at 1024x1024 and FLUX.1-dev at 1024x1024, batch 1 and 4, real-size
architectures with seeded random weights written by the project's own tools in the files people download
(single-file checkpoints; FLUX as ComfyUI's split files).

Per engine, family and batch: time to first image (from launching the engine's process to its first image saved:
imports, start-up, loading, text encoding, sampling, decoding and saving, alike for every engine) with two of its
parts: start-up (until the engine begins the work: a server, whose first prompt is queued as soon as it answers,
until its first node starts; the diffusers worker until its imports are done) and loading (a server: its loader
nodes in the first run, each from its websocket `executing` message to the next node's; the worker: building the
pipeline), whole-image time (median of the later runs, models loaded; the servers reuse the cached text encoding of
an unchanged prompt, the pipelines encode it on every call), per-step time ((time for `--steps` steps - time for 1
step) / (steps - 1), so loading, text encoding, decoding and saving cancel out), peak GPU memory (the device's used
memory from `torch.cuda.mem_get_info`, sampled every 50 ms from this process while the engine runs: the same measure
for every engine, its CUDA context included; the diffusers worker also reports its allocator's peak,
`torch.cuda.max_memory_allocated`, as `vram_allocated` in its line of the log, which a server cannot be asked for)
and the engine process's peak resident memory (Linux VmHWM, what `ru_maxrss` reports). Engines take turns, repeat
after repeat. Our server and ComfyUI's run the same API-format workflow (euler, "simple" schedule, SaveImage, no
previews), each run timed from queueing it to the server's websocket message that it has finished; the diffusers
pipelines run the same size, steps and cfg in a fresh process each (this script with `--worker`) and save their PNGs
as SaveImage does (compress level 4). Ratios are ours over the others.

Files (`--models-dir`, written once, reused): SD1.5 fp32 checkpoint and folder (8.5 GB), SDXL fp16 checkpoint and
folder (14 GB), FLUX.1-dev's transformer (BFL layout, bf16, 24 GB), CLIP-L, T5-XXL (bf16, the published
32,128-token embedding, so every engine tokenizes with T5's own tokenizer) and the VAE; the FLUX diffusers pipeline
is built from those same files in the worker.
Run on a CUDA machine: `python -m bench.gpu --models-dir /tmp/gpu-models [--families sd15,sdxl,flux]
[--batches 1,4] [--steps 20] [--repeats 2] [--dtype bf16] [--comfyui DIR]`; smoke run on a CPU (tiny demo models
at 64x64): `OMP_NUM_THREADS=1 python -m bench.gpu --device cpu --tiny --steps 3 --repeats 1`.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROMPT = "a photo of an astronaut riding a horse on mars"
NEGATIVE = "blurry"
TIMEOUT_S = 1800.0
DTYPE_FLAGS = {"bf16": "--bf16", "fp16": "--fp16", "fp32": "--fp32"}
# ComfyUI's flags for the same precision everywhere (its defaults pick per model)
COMFYUI_DTYPE_FLAGS = {"bf16": ["--bf16-unet", "--bf16-vae", "--bf16-text-enc"], "fp16": ["--force-fp16"],
                       "fp32": ["--force-fp32"]}


@dataclass(frozen=True)
class Family:
    """One benchmarked family: its image size, guidance, how its files are written and its workflow."""

    name: str
    size: int
    cfg: float
    write_files: Callable[[Path, bool], dict[str, str]]  # (models dir, tiny) -> file names the workflow names
    workflow: Callable[..., dict[str, Any]]  # (files, size, batch, steps, seed, cfg, weight_dtype) -> API prompt


def _checkpoint_workflow(files: dict[str, str], size: int, batch: int, steps: int, seed: int, cfg: float,
                         weight_dtype: str = "default") -> dict[str, Any]:
    """SD1.5's and SDXL's workflow; `weight_dtype` is UNETLoader's, which checkpoints do not go through (main
    refuses anything but "default" for them)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": files["checkpoint"]}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "gpu-bench"}},
    }


def _flux_workflow(files: dict[str, str], size: int, batch: int, steps: int, seed: int, cfg: float,
                   weight_dtype: str = "default") -> dict[str, Any]:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": files["transformer"], "weight_dtype": weight_dtype}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": files["clip_l"], "clip_name2": files["t5"],
                                                          "type": "flux"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": files["vae"]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["2", 0]}},
        "5": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["4", 0], "guidance": 3.5}},
        "6": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["4", 0]}},
        "7": {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["5", 0], "negative": ["6", 0], "latent_image": ["7", 0],
            "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["3", 0]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "gpu-bench"}},
    }


def _sd15_files(models_dir: Path, tiny: bool) -> dict[str, str]:
    if tiny:
        from diffusion.families.sd import demo

        demo.make_demo_models(models_dir)
        return {"checkpoint": demo.DEMO_CHECKPOINT, "folder": demo.DEMO_DIFFUSERS}
    from bench.engine_vs_diffusers import _sd15_models

    name = _sd15_models(models_dir)
    return {"checkpoint": f"{name}.safetensors", "folder": name}


def _sdxl_files(models_dir: Path, tiny: bool) -> dict[str, str]:
    if tiny:
        from diffusion.families.sdxl import demo

        demo.make_sdxl_demo_models(models_dir)
        return {"checkpoint": f"{demo.DEMO_BASE}.safetensors", "folder": demo.DEMO_BASE}
    from bench.load_memory import _sdxl_models

    name = _sdxl_models(models_dir, with_folder=True)
    return {"checkpoint": f"{name}.safetensors", "folder": name}


def _save(state: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: tensor.contiguous() for key, tensor in state.items()}, str(path))


def _flux_files(models_dir: Path, tiny: bool) -> dict[str, str]:
    from diffusion.families.flux import demo

    if tiny:
        models = demo.make_flux_demo_models(models_dir)
        transformer = "tiny-flux1-bfl.safetensors"  # the demo's file has diffusers' names; people's have BFL's
        if not (models_dir / "diffusion_models" / transformer).exists():
            _save(demo.bfl_layout(models.transformer.state_dict()), models_dir / "diffusion_models" / transformer)
        return {"transformer": transformer, "clip_l": demo.DEMO_FLUX_CLIP_L, "t5": demo.DEMO_FLUX_T5,
                "vae": demo.DEMO_FLUX_VAE}
    files = {"transformer": "random-flux1-dev.safetensors", "clip_l": "random-flux-clip-l.safetensors",
             "t5": "random-flux-t5xxl.safetensors", "vae": "random-flux-vae.safetensors"}
    if (models_dir / "diffusion_models" / files["transformer"]).exists():
        return files
    import torch
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from diffusion.encoders.clip_tokenizer import clip_tokenizer
    from diffusion.encoders.t5 import T5_VOCAB_SIZES, t5_tokenizer
    from diffusion.families.flux.loading import config as flux_config

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: fp32 copies of 17B parameters would not fit
    try:
        models = demo.TinyFlux(
            FluxTransformer2DModel(guidance_embeds=True).eval(),
            AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2,
                          block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                          up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024, use_quant_conv=False,
                          use_post_quant_conv=False, scaling_factor=flux_config()["vae"]["scaling_factor"],
                          shift_factor=flux_config()["vae"]["shift_factor"]).eval(),
            CLIPTextModel(CLIPTextConfig(hidden_act="quick_gelu", projection_dim=768, bos_token_id=49406,
                                         eos_token_id=49407)).eval(), clip_tokenizer(),
            T5EncoderModel(T5Config(vocab_size=T5_VOCAB_SIZES[0], d_model=4096, d_kv=64, d_ff=10240,
                                    num_layers=24, num_heads=64, feed_forward_proj="gated-gelu",
                                    is_encoder_decoder=False, use_cache=False)).eval(), t5_tokenizer())
    finally:
        torch.set_default_dtype(torch.float32)
    # the demo's writer lays out the text encoders and the VAE as published; the transformer (24 GB) is written
    # once, in BFL's layout, so an empty module stands in for it there
    demo.write_flux_single_files(dataclasses.replace(models, transformer=torch.nn.Module()), models_dir)
    (models_dir / "diffusion_models" / demo.DEMO_FLUX_TRANSFORMER).unlink()
    for role, default_name in (("clip_l", demo.DEMO_FLUX_CLIP_L), ("t5", demo.DEMO_FLUX_T5),
                               ("vae", demo.DEMO_FLUX_VAE)):
        folder = "vae" if role == "vae" else "text_encoders"
        (models_dir / folder / default_name).rename(models_dir / folder / files[role])
    # written last: its presence says the set is complete
    _save(demo.bfl_layout(models.transformer.state_dict()), models_dir / "diffusion_models" / files["transformer"])
    return files


FAMILIES = {
    "sd15": Family("sd15", 512, 7.5, _sd15_files, _checkpoint_workflow),
    "sdxl": Family("sdxl", 1024, 7.0, _sdxl_files, _checkpoint_workflow),
    "flux": Family("flux", 1024, 1.0, _flux_files, _flux_workflow),
}


# ------------------------------------------------------------------------------------------ measuring

class GpuMemory:
    """The device's used memory, sampled every 50 ms in a thread while the context is open (None on the CPU)."""

    def __init__(self, device: str) -> None:
        self.device, self.peak, self._stop = device, None, threading.Event()

    def _used(self) -> int:
        import torch

        free, total = torch.cuda.mem_get_info()
        return total - free

    @contextlib.contextmanager
    def sampling(self) -> Iterator["GpuMemory"]:
        if self.device != "cuda":
            yield self
            return
        self._stop.clear()
        baseline = self._used()
        readings = [0]

        def sample() -> None:
            while not self._stop.wait(0.05):
                readings.append(self._used() - baseline)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self.peak = max(readings)


def resident_peak(pid: int) -> int | None:
    """A process's peak resident memory in bytes (Linux), None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


class Server:
    """Our `main.py` or ComfyUI's, started on a free port over the benchmark's models folder."""

    def __init__(self, engine: str, args: argparse.Namespace, work: Path) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        for folder in ("input", "output", "temp", "user"):
            (work / folder).mkdir(parents=True, exist_ok=True)
        device = ["--cpu"] if args.device == "cpu" else []
        if engine == "ours":
            command = [sys.executable, "main.py", "--port", str(port), "--models-dir", str(args.models_dir),
                       "--output-dir", str(work / "output"), "--input-dir", str(work / "input"),
                       "--temp-dir", str(work / "temp"), "--user-dir", str(work / "user"), "--disable-custom-nodes",
                       "--no-demo-models", "--no-previews", DTYPE_FLAGS[args.dtype], *device]
            cwd = PROJECT_DIR  # (no previews to the bench's websocket: ComfyUI makes none unless told to)
        else:
            paths = work / "extra_model_paths.yaml"
            paths.write_text("bench:\n  base_path: " + str(args.models_dir) + "\n" + "".join(
                f"  {name}: {name}/\n" for name in ("checkpoints", "diffusion_models", "text_encoders", "vae",
                                                    "loras")))
            # an empty web root: ComfyUI exits without its frontend package otherwise, and no browser comes here
            (work / "web").mkdir(exist_ok=True)
            command = [str(args.comfyui_python), "main.py", "--listen", "127.0.0.1", "--port", str(port),
                       "--extra-model-paths-config", str(paths), "--output-directory", str(work / "output"),
                       "--front-end-root", str(work / "web"), "--disable-auto-launch",
                       *COMFYUI_DTYPE_FLAGS[args.dtype], *device]
            cwd = args.comfyui
        self.launched = time.perf_counter()
        self.process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.node_starts: list[tuple[str, float]] = []  # the last run's nodes as they started (`executing`)
        self.finished_at = 0.0  # (time.perf_counter()) and when that run finished
        while time.perf_counter() - self.launched < TIMEOUT_S:
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                _request(f"{self.url}/object_info/KSampler")
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"{engine} server exited: {self.process.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)  # part of the time to first image: polled finely
        raise RuntimeError(f"{engine} server did not start in {TIMEOUT_S:.0f} s")

    def run(self, prompt: dict[str, Any]) -> float:
        """Seconds from queueing `prompt` to the server's saying it has finished (its websocket's
        `execution_success`: both servers send it once the outputs are saved, and nothing polls the server while
        it works); then its images must be in the history."""
        prompt_id, finished = asyncio.run(self._queue_and_wait(prompt))
        began = time.perf_counter()
        while time.perf_counter() - began < 60:  # ComfyUI writes the history just after that message
            entry = _request(f"{self.url}/history/{prompt_id}").get(prompt_id)
            if entry and any(output.get("images") for output in entry.get("outputs", {}).values()):
                return finished
            time.sleep(0.05)
        raise RuntimeError(f"prompt {prompt_id} finished without images in the history")

    async def _queue_and_wait(self, prompt: dict[str, Any]) -> tuple[str, float]:
        import aiohttp

        client_id = f"gpu-bench-{os.getpid()}"
        async with aiohttp.ClientSession() as session, session.ws_connect(
                f"{self.url.replace('http', 'ws', 1)}/ws?clientId={client_id}", max_msg_size=0) as events:
            began = time.perf_counter()
            async with session.post(f"{self.url}/prompt", json={"prompt": prompt, "client_id": client_id}) as reply:
                body = await reply.json()
                if reply.status != 200:
                    raise RuntimeError(f"the workflow was refused: {body}")
            prompt_id = body["prompt_id"]
            self.node_starts = []
            async with asyncio.timeout(TIMEOUT_S):
                async for message in events:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue  # previews
                    event = json.loads(message.data)
                    if event.get("data", {}).get("prompt_id") != prompt_id:
                        continue
                    if event["type"] == "executing" and event["data"].get("node") is not None:
                        self.node_starts.append((str(event["data"]["node"]), time.perf_counter()))
                    if event["type"] == "execution_success":
                        self.finished_at = time.perf_counter()
                        return prompt_id, self.finished_at - began
                    if event["type"] in ("execution_error", "execution_interrupted"):
                        raise RuntimeError(f"the workflow failed: {event['data']}")
            raise RuntimeError(f"the server closed its websocket before prompt {prompt_id} finished")

    def close(self) -> int | None:
        peak = resident_peak(self.process.pid)
        self.process.terminate()
        self.process.wait(timeout=60)
        return peak


def measure_server(engine: str, family: Family, files: dict[str, str], batch: int, args: argparse.Namespace,
                   work: Path) -> dict[str, Any]:
    memory = GpuMemory(args.device)
    server = Server(engine, args, work)
    size = args.size or family.size
    try:
        with memory.sampling():
            workflow = family.workflow(files, size, batch, args.steps, 1, family.cfg, args.weight_dtype)
            server.run(workflow)
            first = time.perf_counter() - server.launched
            start = server.node_starts[0][1] - server.launched
            load = loader_seconds(workflow, server.node_starts, server.finished_at)
            images = [server.run(family.workflow(files, size, batch, args.steps, 2 + index, family.cfg,
                                                 args.weight_dtype)) for index in range(args.runs)]
            single = [server.run(family.workflow(files, size, batch, 1, 20 + index, family.cfg, args.weight_dtype))
                      for index in range(args.runs)]
    finally:
        ram = server.close()
    return _result(first, images, single, args.steps, memory.peak, ram, start, load)


def loader_seconds(workflow: dict[str, Any], node_starts: list[tuple[str, float]], finished: float) -> float:
    """How long a server's run spent in its loader nodes: each node runs from its `executing` message to the next
    one's (or the run's end, `finished`), as both servers run one node at a time."""
    ends = [start for _, start in node_starts[1:]] + [finished]
    return sum(end - start for (node, start), end in zip(node_starts, ends)
               if "Loader" in workflow.get(node, {}).get("class_type", ""))


def _result(first: float, images: list[float], single: list[float], steps: int, vram: int | None,
            ram: int | None, start: float, load: float) -> dict[str, Any]:
    image, one = statistics.median(images), statistics.median(single)
    return {"first_image_s": first, "start_s": start, "load_s": load, "image_s": image,
            "step_s": (image - one) / max(1, steps - 1), "vram": vram, "ram": ram}


def measure_diffusers(family: Family, files: dict[str, str], batch: int, args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline in a fresh process (this module's `--worker`), so loading and memory are its own."""
    command = [sys.executable, "-m", "bench.gpu", "--worker", family.name, "--batch", str(batch),
               "--models-dir", str(args.models_dir), "--files", json.dumps(files), "--steps", str(args.steps),
               "--runs", str(args.runs), "--dtype", args.dtype, "--device", args.device,
               "--weight-dtype", args.weight_dtype,
               "--size", str(args.size or family.size), "--launched", repr(time.time())]
    result = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"diffusers worker failed: {result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _pipeline(family: str, files: dict[str, str], models_dir: Path, dtype: Any, device: str,
              weight_dtype: str = "default") -> Any:
    """The diffusers pipeline of `family` with the benchmark's weights (FLUX's transformer stored in
    `weight_dtype` as UNETLoader stores it: diffusers' layerwise casting)."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    if family in ("sd15", "sdxl"):
        cls = StableDiffusionPipeline if family == "sd15" else StableDiffusionXLPipeline
        options = {"safety_checker": None} if family == "sd15" else {}
        pipeline = cls.from_pretrained(models_dir / "diffusers" / files["folder"], local_files_only=True,
                                       torch_dtype=dtype, **options)
        pipeline.scheduler = EulerDiscreteScheduler.from_config(pipeline.scheduler.config)
        return pipeline.to(device)
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from diffusion.families.flux import demo
    from diffusion.lazy_module import resolve
    from diffusion.loading import load_diffusion_model, load_text_encoders, load_vae
    from diffusion.manager import ModelManager

    # the same files read into diffusers' and transformers' classes by the project's readers (diffusers has no
    # reader for split files; a diffusers folder would be a second 34 GB on disk): the pipeline's own loop runs them
    manager = ModelManager(torch.device(device), dtype)
    clip = load_text_encoders(manager, "flux", {"clip_name1": models_dir / "text_encoders" / files["clip_l"],
                                                 "clip_name2": models_dir / "text_encoders" / files["t5"]})
    transformer = load_diffusion_model(manager, models_dir / "diffusion_models" / files["transformer"],
                                       weight_dtype=weight_dtype).network
    vae = load_vae(manager, models_dir / "vae" / files["vae"]).autoencoder
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**demo.FLUX_SCHEDULER), vae=vae,
                        text_encoder=resolve(clip.clip_model), tokenizer=clip.clip_tokenizer,
                        text_encoder_2=resolve(clip.t5_model), tokenizer_2=clip.t5_tokenizer, transformer=transformer)


def _import_pipeline(family: str) -> None:
    """The imports `_pipeline` needs for `family` (start-up, not loading): resolving a pipeline's name in diffusers'
    lazy module imports it and its models."""
    import diffusers

    getattr(diffusers, {"sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline",
                        "flux": "FluxPipeline"}[family])


def worker(args: argparse.Namespace) -> None:
    """`--worker`: load the pipeline, run it as the servers run their workflow, print the measurements as JSON."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    family, files = FAMILIES[args.worker], json.loads(args.files)
    memory = GpuMemory(args.device)

    def run(steps: int, seed: int) -> float:
        began = time.perf_counter()
        options = {"negative_prompt": NEGATIVE} if family.cfg > 1 else {}
        images = pipeline(PROMPT, num_inference_steps=steps, guidance_scale=family.cfg if family.cfg > 1 else 3.5,
                          height=args.size, width=args.size, num_images_per_prompt=args.batch,
                          generator=torch.Generator("cpu").manual_seed(seed), **options).images
        for index, image in enumerate(images):  # saved as the servers' SaveImage saves them
            image.save(output / f"{seed}-{index}.png", compress_level=4)
        return time.perf_counter() - began

    with tempfile.TemporaryDirectory(prefix="gpu-bench-diffusers-") as folder, memory.sampling():
        output = Path(folder)
        _import_pipeline(args.worker)
        start = time.time() - args.launched  # its imports
        began = time.perf_counter()
        pipeline = _pipeline(args.worker, files, args.models_dir, dtype, args.device, args.weight_dtype)
        load = time.perf_counter() - began
        pipeline.set_progress_bar_config(disable=True)
        run(args.steps, 1)
        first = time.time() - args.launched  # from the parent's launching this process, as for the servers
        images = [run(args.steps, 2 + index) for index in range(args.runs)]
        single = [run(1, 20 + index) for index in range(args.runs)]
    result = _result(first, images, single, args.steps, memory.peak, resident_peak(os.getpid()), start, load)
    result["vram_allocated"] = torch.cuda.max_memory_allocated() if args.device == "cuda" else None
    print(json.dumps(result))


# ------------------------------------------------------------------------------------------ the table

def _gigabytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e9:.2f}"


def print_table(family: Family, size: int, results: dict[tuple[str, int], list[dict[str, Any]]],
                batches: list[int]) -> None:
    """Medians per engine and batch; the ratios are ours over that engine's (below 1: ours is faster)."""
    print(f"\n{family.name} ({size}x{size}, cfg {family.cfg})")
    print(f"  {'engine':<10}{'batch':>6}{'first image s':>15}{'start s':>9}{'load s':>8}{'image s':>10}"
          f"{'step s':>10}{'peak VRAM GB':>14}{'peak RAM GB':>13}{'ours/it step':>14}{'ours/it image':>15}")
    for batch in batches:
        rows = {engine: runs for (engine, size), runs in results.items() if size == batch}
        medians = {engine: {key: statistics.median(run[key] for run in runs)
                            for key in ("first_image_s", "start_s", "load_s", "image_s", "step_s")}
                   for engine, runs in rows.items()}
        for engine, runs in rows.items():
            value = medians[engine]
            ours = medians.get("ours")
            ratio = (f"{ours['step_s'] / value['step_s']:>13.2f}x{ours['image_s'] / value['image_s']:>14.2f}x"
                     if ours and engine != "ours" else f"{'':>14}{'':>15}")
            vram = max((run["vram"] or 0) for run in runs) or None
            ram = max((run["ram"] or 0) for run in runs) or None
            print(f"  {engine:<10}{batch:>6}{value['first_image_s']:>15.2f}{value['start_s']:>9.2f}"
                  f"{value['load_s']:>8.2f}{value['image_s']:>10.2f}{value['step_s']:>10.3f}{_gigabytes(vram):>14}"
                  f"{_gigabytes(ram):>13}{ratio}")


def main() -> None:
    from diffusion.weight_storage import WEIGHT_DTYPES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--families", default="sd15,sdxl,flux")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=2, help="timed runs per measurement, after the first")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of every engine in turn")
    parser.add_argument("--dtype", choices=tuple(DTYPE_FLAGS), default="bf16")
    parser.add_argument("--weight-dtype", choices=tuple(WEIGHT_DTYPES), default="default",
                        help="FLUX's UNETLoader weight_dtype (fp8 storage), for every engine")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the tiny demo models at 64x64 (a smoke run)")
    parser.add_argument("--size", type=int, default=None, help="image side (default: the family's)")
    parser.add_argument("--comfyui", type=Path, default=None, help="a ComfyUI checkout to compare with")
    parser.add_argument("--comfyui-python", type=Path, default=Path(sys.executable),
                        help="the Python that runs ComfyUI (default: this one), e.g. its own venv's")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run on a GPU machine, or smoke-test with --device cpu --tiny")
    if args.comfyui and args.tiny:
        raise SystemExit("--comfyui needs the real-size files: ComfyUI detects models by fixed architectures and "
                         "does not load the tiny demo models")
    args.comfyui = args.comfyui and args.comfyui.resolve()
    if args.comfyui and not (args.comfyui / "main.py").is_file():
        raise SystemExit(f"--comfyui {args.comfyui}: no main.py there (give a ComfyUI repository checkout)")
    unknown = set(args.families.split(",")) - set(FAMILIES)
    if unknown:
        raise SystemExit(f"--families: unknown {', '.join(sorted(unknown))} (choose from {', '.join(FAMILIES)})")
    if args.weight_dtype != "default" and args.families != "flux":
        raise SystemExit(f"--weight-dtype {args.weight_dtype} is UNETLoader's: run it with --families flux alone")
    if args.tiny and args.size is None:
        args.size = 64
    args.models_dir = (args.models_dir or Path(tempfile.mkdtemp(prefix="gpu-bench-"))).resolve()
    engines = ["ours", "diffusers"] + (["comfyui"] if args.comfyui else [])
    batches = [int(batch) for batch in args.batches.split(",")]
    for name in args.families.split(","):
        family = FAMILIES[name]
        began = time.perf_counter()
        files = family.write_files(args.models_dir, args.tiny)
        print(f"{name}: files ready in {time.perf_counter() - began:.0f} s", flush=True)
        results: dict[tuple[str, int], list[dict[str, Any]]] = {}
        with tempfile.TemporaryDirectory(prefix="gpu-bench-work-") as work:
            for repeat in range(args.repeats):
                for batch in batches:
                    order = engines[repeat % len(engines):] + engines[:repeat % len(engines)]
                    for engine in order:
                        if engine == "diffusers":
                            result = measure_diffusers(family, files, batch, args)
                        else:
                            result = measure_server(engine, family, files, batch, args,
                                                    Path(work) / f"{engine}-{repeat}-{batch}")
                        results.setdefault((engine, batch), []).append(result)
                        print(f"  {name} {engine} batch {batch}: {json.dumps(result)}", flush=True)
        print_table(family, args.size or family.size, results, batches)


if __name__ == "__main__":
    main()
