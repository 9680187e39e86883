"""Training nodes: a folder of images to a cached DATASET, LoRA fine-tuning into models/loras, loss curves.

Thin ComfyUI-style classes: the dataset lives in `training.dataset`, the training loop in `training.trainer`, the
file format in `training.lora_file`, the plot in `training.loss_plot`.
TrainLoRA reports every step (with a loss-curve preview) through the normal progress events, so an interrupt
stops it at the next step; the LoRA and resume state saved so far stay. Knows nothing of HTTP or the executor.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from diffusion.components import DiffusionModel, Vae
from diffusion.families.sd.text_encoding import SdClip
from engine.progress import report_progress
from nodes.environment import current_environment, resolve_inside
from training.dataset import ImageDataset, build_dataset
from training.loss_plot import LossPreview, loss_plot
from training.trainer import LR_SCHEDULERS, LoraTrainer, TrainingSettings, available_optimizers

LORA_SUFFIX = ".safetensors"


def dataset_folders(input_dir: Path) -> list[str]:
    """Every folder under the input folder, as '/'-separated relative paths (hidden ones left out)."""
    if not input_dir.is_dir():
        return []
    return sorted(path.relative_to(input_dir).as_posix() for path in input_dir.rglob("*")
                  if path.is_dir() and not any(part.startswith(".") for part in path.relative_to(input_dir).parts))


def _dataset_folder(folder: str) -> Path:
    path = resolve_inside(current_environment().folders.input_dir, folder, "folder")
    if not path.is_dir():
        raise ValueError(f"folder: {folder!r} is not a folder")
    return path


class LoadImageDataset:
    DESCRIPTION = ("Reads a folder of training images from the input folder, with captions from same-name .txt "
                   "files (or one caption for all), crops them to squares and encodes them once with the VAE.")
    CATEGORY = "training"
    RETURN_TYPES = ("DATASET",)
    OUTPUT_TOOLTIPS = ("Cached latents and captions, for TrainLoRA.",)
    FUNCTION = "load_dataset"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        folders = dataset_folders(current_environment().folders.input_dir)
        return {"required": {
            "folder": (folders, {"tooltip": "The folder of images (and .txt captions) in the input folder."}),
            "vae": ("VAE", {"tooltip": "The VAE that encodes the images into latents, once."}),
            "resolution": ("INT", {"default": 512, "min": 8, "max": 4096, "step": 8, "multiple_of": 8,
                                   "tooltip": "Side of the square training images; a multiple of 8."}),
            "center_crop": ("BOOLEAN", {"default": True,
                                        "tooltip": "Crop the middle of each image; off: a random (seeded) place."}),
            "random_flip": ("BOOLEAN", {"default": False,
                                        "tooltip": "Also train on mirrored images (encodes each image twice)."}),
            "repeats": ("INT", {"default": 1, "min": 1, "max": 10000,
                                "tooltip": "How many times each image appears per epoch."}),
            "caption": ("STRING", {"default": "", "multiline": True,
                                   "tooltip": "The caption for images without a same-name .txt file."}),
        }}

    @classmethod
    def IS_CHANGED(cls, folder: str, **_: Any) -> str:
        path = _dataset_folder(folder)
        digest = hashlib.sha256()
        for entry in sorted(path.iterdir()):
            if entry.is_file():
                stat = entry.stat()
                digest.update(f"{entry.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        return digest.hexdigest()

    def load_dataset(self, folder: str, vae: Vae, resolution: int, center_crop: bool, random_flip: bool,
                     repeats: int, caption: str = "") -> tuple[ImageDataset]:
        return (build_dataset(_dataset_folder(folder), vae, resolution, center_crop, random_flip, repeats, caption,
                              on_encoded=report_progress),)


def lora_output_path(output_name: str) -> tuple[str, Path]:
    """(name as LoraLoader lists it, path) for an output name like "style" or "people/anna"."""
    name = output_name.replace("\\", "/").strip().removesuffix(LORA_SUFFIX)
    if not name or name.endswith("/") or name.rpartition("/")[2].startswith("."):
        raise ValueError(f"output_name: {output_name!r} is not a usable file name")
    root = current_environment().folders.model_dir("loras").resolve()
    path = (root / (name + LORA_SUFFIX)).resolve()
    if root not in path.parents:
        raise ValueError(f"output_name: {output_name!r} points outside {root}")
    return path.relative_to(root).as_posix(), path


def resume_state_path(lora_path: Path) -> Path:
    """The hidden file beside the LoRA that a later run resumes from (loaders do not list hidden files)."""
    return lora_path.with_name(f".{lora_path.stem}.training-state.pt")


class TrainLoRA:
    DESCRIPTION = ("Fine-tunes a LoRA on a dataset and writes it to models/loras (kohya layout, with training "
                   "metadata). The input model is not changed. Interrupting keeps the last saved checkpoint; "
                   "with resume on, the next run continues from it.")
    CATEGORY = "training"
    RETURN_TYPES = ("COMBO", "LOSS_MAP")
    RETURN_NAMES = ("lora_name", "loss_history")
    OUTPUT_TOOLTIPS = ("The LoRA's name in models/loras (connect it to a LoRA loader).",
                       "The loss of every training step.")
    OUTPUT_NODE = True
    FUNCTION = "train"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model to adapt; it is not changed."}),
            "clip": ("CLIP", {"tooltip": "The text encoder that reads the captions."}),
            "dataset": ("DATASET", {"tooltip": "Images and captions from Load Image Dataset."}),
            "rank": ("INT", {"default": 16, "min": 1, "max": 512, "tooltip": "LoRA rank (size of the adapters)."}),
            "alpha": ("FLOAT", {"default": 16.0, "min": 0.01, "max": 1024.0, "step": 0.5,
                                "tooltip": "LoRA alpha: adapters are scaled by alpha / rank."}),
            "learning_rate": ("FLOAT", {"default": 1e-4, "min": 1e-7, "max": 10.0, "step": 1e-5, "round": False,
                                        "tooltip": "Peak learning rate."}),
            "steps": ("INT", {"default": 500, "min": 1, "max": 1_000_000, "tooltip": "Optimizer steps."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 256, "tooltip": "Images per micro-batch."}),
            "gradient_accumulation": ("INT", {"default": 1, "min": 1, "max": 256,
                                              "tooltip": "Micro-batches summed into one optimizer step."}),
            "optimizer": (available_optimizers(), {"tooltip": "AdamW; AdamW8bit and Prodigy when installed."}),
            "lr_scheduler": (list(LR_SCHEDULERS), {"tooltip": "How the learning rate changes after warm-up."}),
            "warmup_steps": ("INT", {"default": 0, "min": 0, "max": 1_000_000,
                                     "tooltip": "Steps over which the learning rate rises from 0."}),
            "train_text_encoder": ("BOOLEAN", {"default": False,
                                               "tooltip": "Also train adapters on the text encoder."}),
            "min_snr_gamma": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.5,
                                        "tooltip": "Min-SNR loss weighting gamma (5 is usual); 0 turns it off."}),
            "gradient_checkpointing": ("BOOLEAN", {"default": False,
                                                   "tooltip": "Recompute activations: less memory, slower."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**63 - 1, "control_after_generate": False,
                             "tooltip": "Seeds data order, noise, timesteps and adapter initialisation."}),
            "save_every": ("INT", {"default": 0, "min": 0, "max": 1_000_000,
                                   "tooltip": "Save the LoRA and resume state every N steps (0: only at the end)."}),
            "output_name": ("STRING", {"default": "my_lora",
                                       "tooltip": "File name in models/loras (.safetensors is added)."}),
            "resume": ("BOOLEAN", {"default": False,
                                   "tooltip": "Continue from this output's saved state if it has one."}),
        }}

    def train(self, model: DiffusionModel, clip: SdClip, dataset: ImageDataset, rank: int, alpha: float,
              learning_rate: float, steps: int, batch_size: int, gradient_accumulation: int, optimizer: str,
              lr_scheduler: str, warmup_steps: int, train_text_encoder: bool, min_snr_gamma: float,
              gradient_checkpointing: bool, seed: int, save_every: int, output_name: str,
              resume: bool = False) -> dict[str, Any]:
        settings = TrainingSettings(rank, alpha, learning_rate, steps, batch_size, gradient_accumulation,
                                    optimizer, lr_scheduler, warmup_steps, train_text_encoder, min_snr_gamma,
                                    gradient_checkpointing, seed, save_every)
        lora_name, path = lora_output_path(output_name)
        trainer = LoraTrainer(model, clip, dataset, settings, path, resume_state_path(path))

        def on_step(step: int, total: int, losses: list[float]) -> None:
            report_progress(step, total, LossPreview(losses))

        result = trainer.run(resume, on_step)
        history = {"loss": result.losses, "learning_rate": result.learning_rates, "resumed_at": result.first_step}
        last = f"{result.losses[-1]:.5g}" if result.losses else "n/a"
        return {"ui": {"text": [f"{lora_name}: {len(result.losses)} steps, last loss {last}"]},
                "result": (lora_name, history)}


class PlotLoss:
    DESCRIPTION = "Draws a loss history as an image: every step in a light line, the moving average in a bold one."
    CATEGORY = "training"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The loss curve.",)
    FUNCTION = "plot"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "loss_history": ("LOSS_MAP", {"tooltip": "The loss history from TrainLoRA."}),
            "width": ("INT", {"default": 512, "min": 128, "max": 4096, "step": 8, "tooltip": "Image width."}),
            "height": ("INT", {"default": 320, "min": 96, "max": 4096, "step": 8, "tooltip": "Image height."}),
        }}

    def plot(self, loss_history: dict[str, Any], width: int = 512, height: int = 320) -> tuple[torch.Tensor]:
        import numpy as np

        if not isinstance(loss_history, dict) or "loss" not in loss_history:
            raise ValueError("loss_history: expected a loss history with a 'loss' list")
        image = loss_plot(loss_history["loss"], width, height)
        return (torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0),)
