"""ComfyUI's training nodes with its contracts (comfy_extras/nodes_train.py): TrainLoraNode, LoraModelLoader,
SaveLoRANode, LossGraphNode, LoadImageSetFromFolderNode and LoadImageTextSetFromFolderNode.

Thin classes on our own training code: TrainLoraNode trains with `training.latent_lora` (the adapters and loop of
`training.trainer`, fed LATENT and CONDITIONING already encoded) and returns the adapters as ComfyUI's LORA_MODEL,
a dict of tensors in ComfyUI's keys (`diffusion_model.<LDM layer>.lora_up.weight`, ...), which LoraModelLoader
applies through the same LoRA path as LoraLoader and SaveLoRANode writes as a file LoraLoader reads.
What differs from ComfyUI: adapters go on the UNet attention projections (ComfyUI adapts every layer and trains
bias differences too), the loss is on the noise (or velocity) prediction as in our trainer (ComfyUI's is on the
denoised latent), and only plain LoRA is trained (LoHa, LoKr and OFT are listed, as ComfyUI lists them, and
refused at validation). Stable Diffusion 1.x/2.x models. Knows nothing of HTTP or the executor.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffusion import registry
from diffusion.components import DiffusionModel
from diffusion.contracts import LoraPatch, TextEncoder
from diffusion.files import read_safetensors
from diffusion.lora import lora_applied, lora_targets
from engine.progress import report_progress
from nodes.environment import current_environment, resolve_inside
from nodes.image import save_images
from nodes.model_saving import write_safetensors
from nodes.training import dataset_folders
from training.latent_lora import LOSS_FUNCTIONS, OPTIMIZERS, train_on_latents
from training.loss_plot import LossPreview, loss_plot
from training.trainer import TrainingSettings

ALGORITHMS = ["LoRA", "LoHa", "LoKr", "OFT"]  # ComfyUI's list (comfy.weight_adapter.adapter_maps)
TRAINED_ALGORITHMS = ("LoRA",)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
NO_LORA = "[None]"
RESIZE_METHODS = ["None", "Stretch", "Crop", "Pad"]
FOLDER_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # what ComfyUI's folder loaders read
LORA_MODEL_NAME = "trained LoRA"
LOSS_GRAPH_SIZE = (840, 520)  # ComfyUI's canvas: an 800x480 plot and a 40-pixel margin


def _folder_input() -> tuple[list[str], dict[str, Any]]:
    return (dataset_folders(current_environment().folders.input_dir), {"tooltip": "The folder to load images from."})


def _resize_input() -> tuple[list[str], dict[str, Any]]:
    return (RESIZE_METHODS, {"default": "None", "tooltip": "For images whose size differs from the first one's: "
                                                           "None refuses them, Stretch and Pad resize them (as "
                                                           "ComfyUI does), Crop cuts their top-left corner."})


def _input_folder(folder: str) -> Path:
    path = resolve_inside(current_environment().folders.input_dir, folder, "folder")
    if not path.is_dir():
        raise ValueError(f"folder: {folder!r} is not a folder")
    return path


def _image_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir()
                  if path.is_file() and path.suffix.lower() in FOLDER_IMAGE_SUFFIXES and not path.name.startswith("."))


def load_image_set(paths: list[Path], resize_method: str, width: int | None = None,
                   height: int | None = None) -> torch.Tensor:
    """IMAGE [N, H, W, 3] of the files, each brought to (`width`, `height`) (either unset: the first image's) as
    ComfyUI's load_and_process_images does: Lanczos resize (Stretch, Pad), top-left crop (Crop), or a ValueError
    naming `resize_method` (None)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not paths:
        raise ValueError("folder: no images found (.png, .jpg, .jpeg, .webp)")
    images = []
    for path in paths:
        try:
            with Image.open(path) as opened:
                image = opened.point(lambda value: value * (1 / 255)) if opened.mode == "I" else opened.copy()
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"folder: {path.name} is not a readable image ({error})") from error
        image = image.convert("RGB")
        width, height = width or image.size[0], height or image.size[1]  # unset: the first image's
        target = (width, height)
        if image.size != target:
            if resize_method in ("Stretch", "Pad"):
                image = image.resize(target, Image.Resampling.LANCZOS)
            elif resize_method == "Crop":
                image = image.crop((0, 0, *target))
            else:
                raise ValueError(f"resize_method: {path.name} is {image.size[0]}x{image.size[1]}, not {target[0]}x"
                                 f"{target[1]} like the first image; pick Stretch, Crop or Pad")
        images.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0))
    return torch.stack(images)


class LoadImageSetFromFolderNode:
    DESCRIPTION = "Loads a batch of images from a folder in the input folder, for training."
    CATEGORY = "loaders"
    EXPERIMENTAL = True
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The images, sorted by file name, as one batch.",)
    FUNCTION = "load_images"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"folder": _folder_input()}, "optional": {"resize_method": _resize_input()}}

    def load_images(self, folder: str, resize_method: str = "None") -> tuple[torch.Tensor]:
        return (load_image_set(_image_files(_input_folder(folder)), resize_method),)


def dataset_files(folder: Path) -> list[Path]:
    """The images of `folder`, then of each subfolder, a kohya-style `<repeats>_<name>` one `repeats` times."""
    files = _image_files(folder)
    for sub in sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")):
        head = sub.name.split("_")[0]
        files.extend(_image_files(sub) * (int(head) if head.isdigit() else 1))
    return files


def read_caption(image_path: Path) -> str:
    """The caption in the image's same-name .txt file, "" without one."""
    caption = image_path.with_suffix(".txt")
    return caption.read_text(encoding="utf-8").strip() if caption.is_file() else ""


class LoadImageTextSetFromFolderNode:
    DESCRIPTION = ("Loads a batch of images and their captions (same-name .txt files) from a folder in the input "
                   "folder, captions encoded with the text encoder, for training. Kohya-style subfolders "
                   "(<repeats>_<name>) are read too, their images repeated.")
    CATEGORY = "loaders"
    EXPERIMENTAL = True
    RETURN_TYPES = ("IMAGE", "CONDITIONING")
    OUTPUT_TOOLTIPS = ("The images as one batch.", "One conditioning per image, in the same order.")
    FUNCTION = "load_images"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"default": -1, "min": -1, "max": 10000, "step": 1}
        return {
            "required": {
                "folder": _folder_input(),
                "clip": ("CLIP", {"tooltip": "The CLIP model used for encoding the text."}),
            },
            "optional": {
                "resize_method": _resize_input(),
                "width": ("INT", {**size, "tooltip": "The width to resize the images to. -1 means use the "
                                                     "original width."}),
                "height": ("INT", {**size, "tooltip": "The height to resize the images to. -1 means use the "
                                                      "original height."}),
            },
        }

    def load_images(self, folder: str, clip: TextEncoder, resize_method: str = "None", width: int = -1,
                    height: int = -1) -> tuple[torch.Tensor, list]:
        files = dataset_files(_input_folder(folder))
        images = load_image_set(files, resize_method, None if width == -1 else width,
                                None if height == -1 else height)
        encoded: dict[str, list] = {}
        conditioning = []
        for caption in (read_caption(path) for path in files):
            if caption not in encoded:
                encoded[caption] = clip.encode_prompt(caption)
            conditioning.extend(encoded[caption])
        return images, conditioning


def lora_model_patch(model: DiffusionModel, lora: dict[str, torch.Tensor], strength: float,
                     name: str = LORA_MODEL_NAME) -> LoraPatch:
    """A LORA_MODEL read as the model's family reads a LoRA file, checked to fit the model's network."""
    if not isinstance(lora, dict) or not lora:
        raise ValueError("lora: expected a LORA_MODEL (the tensors Train LoRA gives)")
    read = registry.family(model.family).read_lora
    if read is None:
        raise ValueError(f"model: {model.name} takes no LoRAs")
    state, alphas = read({key: tensor.detach().cpu() for key, tensor in lora.items()})
    patch = LoraPatch(name, state, alphas, strength)
    component = model.lora_component
    if not lora_targets(patch)[component]:
        raise ValueError(f"lora: has no layers of this model's {component}")
    try:
        with lora_applied(model.network, component, [patch]):
            pass
    except ValueError as error:
        raise ValueError(f"lora: {error}") from error
    return patch


def _conditioning_embeddings(positive: list, count: int) -> torch.Tensor:
    """[count, T, D]: one text embedding per latent (a single conditioning is used for all, as ComfyUI does)."""
    if not isinstance(positive, list) or not positive:
        raise ValueError("positive: expected a conditioning")
    if len(positive) == 1 and count > 1:
        positive = positive * count
    if len(positive) != count:
        raise ValueError(f"positive: {len(positive)} conditionings for {count} latents; give one, or one per latent")
    rows = []
    for entry in positive:
        embedding = entry[0]
        if embedding.ndim != 3 or embedding.shape[0] != 1:
            raise ValueError(f"positive: expected one [1, tokens, width] embedding per entry, got "
                             f"{tuple(embedding.shape)}")
        rows.append(embedding[0])
    if len({tuple(row.shape) for row in rows}) != 1:
        raise ValueError("positive: the conditionings have different token lengths; keep captions under 75 tokens")
    return torch.stack(rows)


def _existing_lora(name: str) -> tuple[dict[str, torch.Tensor] | None, int]:
    """The LoRA to continue and the steps its name says it was trained for (`<prefix>_<steps>_steps_...`)."""
    if name == NO_LORA:
        return None, 0
    path = current_environment().folders.model_file("loras", name, "existing_lora")
    head = Path(name).name.split("_steps_")[0].rpartition("_")[2]
    return read_safetensors(path, "existing_lora"), int(head) if "_steps_" in name and head.isdigit() else 0


class TrainLoraNode:
    DESCRIPTION = ("Trains a LoRA on latents and their conditioning (Stable Diffusion 1.x/2.x): rank-`rank` "
                   "adapters on the UNet attention layers, the model's noise (or velocity) prediction loss. "
                   "Gives the model with the LoRA, the LoRA itself (for Save LoRA Weights or Load LoRA Model), "
                   "the loss of every step and the total steps trained. The input model is not changed.")
    CATEGORY = "training"
    EXPERIMENTAL = True
    RETURN_TYPES = ("MODEL", "LORA_MODEL", "LOSS_MAP", "INT")
    RETURN_NAMES = ("model_with_lora", "lora", "loss", "steps")
    OUTPUT_TOOLTIPS = ("The model with the trained LoRA applied.", "The trained LoRA weights.",
                       "The loss of every training micro-batch.",
                       "Steps trained, counting those of existing_lora.")
    FUNCTION = "train"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        loras = current_environment().folders.list_models("loras")
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model to train the LoRA on."}),
            "latents": ("LATENT", {"tooltip": "The Latents to use for training, serve as dataset/input of the model."}),
            "positive": ("CONDITIONING", {"tooltip": "The positive conditioning to use for training."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 10000, "step": 1,
                                   "tooltip": "The batch size to use for training."}),
            "grad_accumulation_steps": ("INT", {"default": 1, "min": 1, "max": 1024, "step": 1,
                                                "tooltip": "The number of gradient accumulation steps to use for "
                                                           "training."}),
            "steps": ("INT", {"default": 16, "min": 1, "max": 100000,
                              "tooltip": "The number of steps to train the LoRA for."}),
            "learning_rate": ("FLOAT", {"default": 0.0005, "min": 0.0000001, "max": 1.0, "step": 0.000001,
                                        "tooltip": "The learning rate to use for training."}),
            "rank": ("INT", {"default": 8, "min": 1, "max": 128, "tooltip": "The rank of the LoRA layers."}),
            "optimizer": (list(OPTIMIZERS), {"default": "AdamW", "tooltip": "The optimizer to use for training."}),
            "loss_function": (list(LOSS_FUNCTIONS), {"default": "MSE",
                                                     "tooltip": "The loss function to use for training."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                             "tooltip": "The seed to use for training (used in generator for LoRA weight "
                                        "initialization and noise sampling)"}),
            "training_dtype": (list(DTYPES), {"default": "bf16", "tooltip": "The dtype to use for training (a "
                                                                            "float32 model on an accelerator; a "
                                                                            "half-precision model computes in its "
                                                                            "own, the CPU in fp32)."}),
            "lora_dtype": (list(DTYPES), {"default": "bf16", "tooltip": "The dtype of the LoRA weights given "
                                                                        "(they train in fp32)."}),
            "algorithm": (ALGORITHMS, {"default": "LoRA", "tooltip": "The algorithm to use for training; only LoRA "
                                                                     "is trained here."}),
            "gradient_checkpointing": ("BOOLEAN", {"default": True,
                                                   "tooltip": "Use gradient checkpointing for training."}),
            "existing_lora": (loras + [NO_LORA], {"default": NO_LORA,
                                                  "tooltip": "The existing LoRA to append to. Set to None for new "
                                                             "LoRA."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, algorithm: str = "LoRA") -> bool | str:
        if algorithm not in TRAINED_ALGORITHMS:
            return (f"algorithm: {algorithm!r} cannot be trained here; only {', '.join(TRAINED_ALGORITHMS)} "
                    f"(ComfyUI also lists {', '.join(a for a in ALGORITHMS if a not in TRAINED_ALGORITHMS)})")
        return True

    def train(self, model: DiffusionModel, latents: dict[str, Any], positive: list, batch_size: int,
              grad_accumulation_steps: int, steps: int, learning_rate: float, rank: int, optimizer: str,
              loss_function: str, seed: int, training_dtype: str, lora_dtype: str, algorithm: str,
              gradient_checkpointing: bool, existing_lora: str) -> tuple[DiffusionModel, dict, dict, int]:
        message = self.VALIDATE_INPUTS(algorithm)
        if message is not True:
            raise ValueError(message)
        samples = latents["samples"]
        embeddings = _conditioning_embeddings(positive, samples.shape[0])
        existing, existing_steps = _existing_lora(existing_lora)
        settings = TrainingSettings(rank=rank, alpha=1.0, learning_rate=learning_rate, steps=steps,
                                    batch_size=batch_size, gradient_accumulation=grad_accumulation_steps,
                                    gradient_checkpointing=gradient_checkpointing, seed=seed % 2**63)

        def on_step(step: int, total: int, losses: list[float]) -> None:
            report_progress(step, total, LossPreview(losses))

        result = train_on_latents(model, samples, embeddings, settings, optimizer, loss_function,
                                  DTYPES[lora_dtype], DTYPES[training_dtype], existing, on_step)
        trained = model.with_lora(lora_model_patch(model, result.lora, 1.0))
        return trained, result.lora, {"loss": result.losses}, steps + existing_steps


class LoraModelLoader:
    DESCRIPTION = ("Applies a LoRA from Train LoRA (a LORA_MODEL, not a file) to a model, as LoraLoader applies a "
                   "file; the input model is not changed.")
    CATEGORY = "loaders"
    EXPERIMENTAL = True
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The modified diffusion model.",)
    FUNCTION = "load_lora_model"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": ("MODEL", {"tooltip": "The diffusion model the LoRA will be applied to."}),
            "lora": ("LORA_MODEL", {"tooltip": "The LoRA model to apply to the diffusion model."}),
            "strength_model": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01,
                                         "tooltip": "How strongly to modify the diffusion model. This value can be "
                                                    "negative."}),
        }}

    def load_lora_model(self, model: DiffusionModel, lora: dict[str, torch.Tensor],
                        strength_model: float) -> tuple[DiffusionModel]:
        if strength_model == 0:
            return (model,)
        return (model.with_lora(lora_model_patch(model, lora, strength_model)),)


class SaveLoRANode:
    DESCRIPTION = ("Saves a LORA_MODEL as `<prefix>_<steps>_steps_<counter>_.safetensors` (without steps: "
                   "`<prefix>_<counter>_.safetensors`) in the output folder, atomically; the default prefix puts "
                   "it in output/loras.")
    CATEGORY = "loaders"
    EXPERIMENTAL = True
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "lora": ("LORA_MODEL", {"tooltip": "The LoRA model to save. Do not use the model with LoRA layers."}),
                "prefix": ("STRING", {"default": "loras/ComfyUI_trained_lora",
                                      "tooltip": "The prefix to use for the saved LoRA file."}),
            },
            "optional": {
                "steps": ("INT", {"forceInput": True, "tooltip": "Optional: The number of steps to LoRA has been "
                                                                 "trained for, used to name the saved file."}),
            },
        }

    def save(self, lora: dict[str, torch.Tensor], prefix: str, steps: int | None = None) -> dict[str, Any]:
        if not isinstance(lora, dict) or not lora:
            raise ValueError("lora: expected a LORA_MODEL (the tensors Train LoRA gives)")
        name = prefix if steps is None else f"{prefix}_{steps}_steps"
        saved = write_safetensors(name, lora, {})
        return {"ui": {"text": [f"{saved['subfolder']}/{saved['filename']}".lstrip("/")]}}


class LossGraphNode:
    DESCRIPTION = "Plots the loss graph of a training run and shows it (written to the temporary folder)."
    CATEGORY = "training"
    EXPERIMENTAL = True
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "plot_loss"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "loss": ("LOSS_MAP", {"default": {}, "tooltip": "The loss map from Train LoRA."}),
                "filename_prefix": ("STRING", {"default": "loss_graph", "tooltip": "The image's file name prefix."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def plot_loss(self, loss: dict[str, Any], filename_prefix: str, prompt: Any = None,
                  extra_pnginfo: Any = None) -> dict[str, Any]:
        import numpy as np

        if not isinstance(loss, dict) or not loss.get("loss"):
            raise ValueError("loss: expected a loss map with a non-empty 'loss' list")
        image = loss_plot(loss["loss"], *LOSS_GRAPH_SIZE)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)
        saved = save_images(pixels, current_environment().folders.temp_dir, filename_prefix, "temp", prompt,
                            extra_pnginfo, compress_level=1)
        return {"ui": {"images": saved}}


NODE_CLASS_MAPPINGS = {
    "TrainLoraNode": TrainLoraNode,
    "SaveLoRANode": SaveLoRANode,
    "LoraModelLoader": LoraModelLoader,
    "LoadImageSetFromFolderNode": LoadImageSetFromFolderNode,
    "LoadImageTextSetFromFolderNode": LoadImageTextSetFromFolderNode,
    "LossGraphNode": LossGraphNode,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "TrainLoraNode": "Train LoRA",
    "SaveLoRANode": "Save LoRA Weights",
    "LoraModelLoader": "Load LoRA Model",
    "LoadImageSetFromFolderNode": "Load Image Dataset from Folder",
    "LoadImageTextSetFromFolderNode": "Load Image and Text Dataset from Folder",
    "LossGraphNode": "Plot Loss Graph",
}
