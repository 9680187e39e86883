"""LoRA training speed: the TrainLoRA loop vs a plain diffusers + peft training loop doing the same work.

Two cases: the tiny SD1 test model (64x64 images, batch 2) and the real SD1.5 UNet and CLIP text encoder
architectures with seeded random weights (256x256 images, batch 1), on CPU. Both loops train rank-16 adapters on
the UNet attention projections with AdamW, gradient clipping and a constant schedule, from the same cached latents
and caption embeddings, so the only difference is our loop's machinery (adapters on a structural copy, seeded
per-step draws, checkpoint bookkeeping). The loops' steps interleave (one of ours, one plain) so both see the
same machine load; a step's time is measured inside each loop, the first step of every run is left out as
warm-up, and the table gives median steps per second and the time ratio ours/plain (goal <= 1.05), and the
ratio of the fastest steps (what the loops cost on an idle machine; medians move with other load). Setup
(copying, hashing, adapter injection) is not counted for either.
Run: `OMP_NUM_THREADS=1 .venv/bin/python -m bench.train_speed [--case tiny|sd15|all] [--repeats N] [--steps N]`.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

RANK = 16
LEARNING_RATE = 1e-4
IMAGES = 8


@dataclass(frozen=True)
class Case:
    name: str
    size: int
    batch_size: int
    steps: int
    repeats: int
    make_models: Callable[[], tuple[Any, Any]]


def _tiny_models() -> tuple[Any, Any]:
    from diffusion.families.sd.demo import build_tiny_components
    from diffusion.families.sd.loading import sd_model
    from diffusion.families.sd.text_encoding import SdClip

    parts = build_tiny_components("sd1", seed=0)
    return (sd_model(parts.unet, parts.scheduler_config, "tiny-sd1"),
            SdClip(parts.tokenizer, parts.text_encoder, "tiny-sd1"))


def _sd15_models() -> tuple[Any, Any]:
    """SD1.5's UNet and CLIP ViT-L/14 text encoder architectures with seeded random weights."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from diffusion.encoders.clip_tokenizer import TINY_VOCAB_SIZE, clip_tokenizer
    from diffusion.families.sd.loading import scheduler_config, sd_model
    from diffusion.families.sd.text_encoding import SdClip

    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64).eval()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)).eval()
    tokenizer = clip_tokenizer(TINY_VOCAB_SIZE)  # ids below 1000 are valid ids of the full vocabulary too
    return (sd_model(unet, scheduler_config("sd1", "epsilon"), "random-sd15"),
            SdClip(tokenizer, text_encoder, "random-sd15"))


def _dataset(size: int) -> Any:
    from training.dataset import ImageDataset

    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((IMAGES, 4, size // 8, size // 8), generator=generator)
    captions = tuple(f"a photo of thing number {index}" for index in range(IMAGES))
    return ImageDataset(latents, None, captions, tuple(f"{i}.png" for i in range(IMAGES)), size, 1, "bench")


def ours(model: Any, clip: Any, dataset: Any, case: Case, folder: Path,
         on_step: Callable[..., None]) -> list[float]:
    from training.trainer import LoraTrainer, TrainingSettings

    settings = TrainingSettings(rank=RANK, alpha=float(RANK), learning_rate=LEARNING_RATE, steps=case.steps,
                                batch_size=case.batch_size)
    trainer = LoraTrainer(model, clip, dataset, settings, folder / "bench.safetensors", folder / ".bench.pt")
    return trainer.run(on_step=on_step).step_seconds


class PlainLoop:
    """The loop of diffusers' train_text_to_image_lora.py without accelerate, one `step()` at a time: what a
    script would do (adapters added to the model itself; `close()` removes them again)."""

    def __init__(self, model: Any, clip: Any, dataset: Any, case: Case) -> None:
        self.model, self.clip, self.dataset, self.case = model, clip, dataset, case
        self.seconds: list[float] = []
        self.unet: Any = None

    def _setup(self) -> None:
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler
        from peft import LoraConfig

        unet = self.unet = self.model.network
        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights="gaussian",
                                    target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
        unet.train()
        self.parameters = [parameter for parameter in unet.parameters() if parameter.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=LEARNING_RATE, weight_decay=1e-2)
        self.lr_scheduler = get_scheduler("constant", self.optimizer)
        self.noise_scheduler = DDPMScheduler.from_config(dict(self.model.scheduler_config))
        ids = self.clip.tokenizer(list(self.dataset.captions), max_length=77, padding="max_length",
                                  truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            self.embeddings = self.clip.text_encoder(ids)[0]
        self.generator = torch.Generator().manual_seed(0)

    def step(self, *_: Any) -> None:
        if self.unet is None:
            self._setup()
        started = time.perf_counter()
        batch, generator, noise_scheduler = self.case.batch_size, self.generator, self.noise_scheduler
        images = torch.randint(0, len(self.dataset), (batch,), generator=generator)
        latents = self.dataset.latents[images]
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        prediction = self.unet(noisy, timesteps, self.embeddings[images], return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        float(loss.detach())
        self.seconds.append(time.perf_counter() - started)

    def close(self) -> None:
        from diffusers.utils import recurse_remove_peft_layers

        if self.unet is not None:
            recurse_remove_peft_layers(self.unet.eval())
            del self.unet.peft_config
            self.unet._hf_peft_config_loaded = False


def run_case(case: Case) -> dict[str, float]:
    """Steps interleave: after each step of ours (inside its progress callback, which its timing leaves out)
    the plain loop takes one step, so both see the same machine load."""
    model, clip = case.make_models()
    dataset = _dataset(case.size)
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(case.repeats):
            plain = PlainLoop(model, clip, dataset, case)
            try:
                times["ours"] += ours(model, clip, dataset, case, Path(folder), plain.step)[1:]
            finally:
                plain.close()
            times["plain"] += plain.seconds[1:]
    ours_step, plain_step = statistics.median(times["ours"]), statistics.median(times["plain"])
    return {"ours": 1 / ours_step, "plain": 1 / plain_step, "ratio": ours_step / plain_step,
            "best_ratio": min(times["ours"]) / min(times["plain"]), "samples": len(times["ours"])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("tiny", "sd15", "all"), default="all")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each loop (default: 3 tiny, 1 sd15)")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: 15 tiny, 3 sd15)")
    args = parser.parse_args(argv)
    cases = [Case("tiny SD1, 64x64, batch 2", 64, 2, args.steps or 15, args.repeats or 3, _tiny_models),
             Case("SD1.5 arch, 256x256, batch 1", 256, 1, args.steps or 3, args.repeats or 1, _sd15_models)]
    chosen = {"tiny": cases[:1], "sd15": cases[1:], "all": cases}[args.case]
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"{'case':<30} {'ours steps/s':>13} {'plain steps/s':>14} {'time ratio':>11} {'best-step ratio':>16} "
          f"{'steps timed':>12}")
    for case in chosen:
        result = run_case(case)
        print(f"{case.name:<30} {result['ours']:>13.3f} {result['plain']:>14.3f} {result['ratio']:>11.3f} "
              f"{result['best_ratio']:>16.3f} {result['samples']:>12}", flush=True)


if __name__ == "__main__":
    main()
