"""Training images for LoRA fine-tuning: a folder of images and captions turned into cached VAE latents.

Each image is resized so its shorter side is the training resolution and cropped to a square (centred, or at a
seeded random place), then encoded once with the VAE; with random flips on, the mirrored image is encoded too,
so training never runs the VAE. Captions come from a same-name `.txt` file beside each image, else from one
caption for all. Knows nothing of nodes or of the node environment: callers pass the folder and input names.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from diffusion.components import Vae

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
ENCODE_BATCH = 4


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """DATASET: the VAE's raw latents [images, 4, res/8, res/8] (and their mirrored twins; the trainer applies the
    model's latent format), one caption per image."""

    latents: torch.Tensor
    flipped_latents: torch.Tensor | None
    captions: tuple[str, ...]
    image_names: tuple[str, ...]
    resolution: int
    repeats: int
    folder: str

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def fingerprint(self) -> str:
        """Changes whenever the training data does (latents, captions, repeats, flips)."""
        digest = hashlib.sha256()
        for tensor in (self.latents, self.flipped_latents):
            if tensor is not None:
                digest.update(tensor.contiguous().numpy().tobytes())
        digest.update(json.dumps([self.captions, self.repeats]).encode())
        return digest.hexdigest()

    def caption_summary(self) -> dict[str, object]:
        """For LoRA metadata: image count, distinct captions (up to 20) and kohya-style tag frequencies."""
        frequency: dict[str, int] = {}
        for caption in self.captions:
            for tag in (part.strip() for part in caption.split(",")):
                if tag:
                    frequency[tag] = frequency.get(tag, 0) + 1
        distinct = list(dict.fromkeys(self.captions))
        return {"images": len(self), "distinct_captions": len(distinct), "examples": distinct[:20],
                "tag_frequency": {self.folder: frequency}}


def image_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir()
                  if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."))


def read_caption(image_path: Path, default_caption: str) -> str:
    caption_path = image_path.with_suffix(".txt")
    if caption_path.is_file():
        return " ".join(caption_path.read_text(encoding="utf-8", errors="replace").split())
    return default_caption.strip()


def _square_crop(image, resolution: int, center_crop: bool, rng: random.Random):
    """Resize so the shorter side is `resolution` (Lanczos), then crop a `resolution` square."""
    from PIL import Image

    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    image = image.resize(size, Image.Resampling.LANCZOS)
    spare_x, spare_y = size[0] - resolution, size[1] - resolution
    left = spare_x // 2 if center_crop else rng.randint(0, spare_x)
    top = spare_y // 2 if center_crop else rng.randint(0, spare_y)
    return image.crop((left, top, left + resolution, top + resolution))


def load_pixels(path: Path, resolution: int, center_crop: bool, rng: random.Random,
                input_name: str) -> torch.Tensor:
    """One image as IMAGE [H, W, 3] in 0..1, cropped to the training square."""
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{input_name}: {path.name} is not a readable image ({error})") from error
    cropped = _square_crop(image, resolution, center_crop, rng)
    return torch.from_numpy(np.asarray(cropped, dtype=np.float32) / 255.0)


def build_dataset(folder: Path, vae: Vae, resolution: int, center_crop: bool, random_flip: bool, repeats: int,
                  caption: str, seed: int = 0, input_name: str = "folder",
                  on_encoded: Callable[[int, int], None] | None = None) -> ImageDataset:
    """Read, crop and encode every image of `folder`; `on_encoded(done, total)` reports progress."""
    if resolution < 8 or resolution % 8:
        raise ValueError(f"resolution: {resolution} is not a positive multiple of 8")
    if repeats < 1:
        raise ValueError(f"repeats: must be at least 1, got {repeats}")
    paths = image_files(folder)
    if not paths:
        raise ValueError(f"{input_name}: {folder.name!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
    rng = random.Random(seed)
    pixels = torch.stack([load_pixels(path, resolution, center_crop, rng, input_name) for path in paths])
    latents = _encode_all(vae, pixels, on_encoded, 2 if random_flip else 1)
    flipped = _encode_all(vae, pixels.flip(2), on_encoded, 2, offset=len(paths)) if random_flip else None
    return ImageDataset(latents, flipped, tuple(read_caption(path, caption) for path in paths),
                        tuple(path.name for path in paths), resolution, repeats, folder.name)


def _encode_all(vae: Vae, pixels: torch.Tensor, on_encoded: Callable[[int, int], None] | None, passes: int,
                offset: int = 0) -> torch.Tensor:
    chunks = []
    total = len(pixels) * passes
    for start in range(0, len(pixels), ENCODE_BATCH):
        chunks.append(vae.encode(pixels[start:start + ENCODE_BATCH]))
        if on_encoded is not None:
            on_encoded(offset + min(start + ENCODE_BATCH, len(pixels)), total)
    return torch.cat(chunks)
