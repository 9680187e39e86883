"""`comfy.k_diffusion.utils` for plugins: `FolderOfImages` (packs read its `IMG_EXTENSIONS` to list image files)
and `append_dims`. k-diffusion's training helpers (EMA, learning-rate schedules, loggers) are not provided."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from PIL import Image
from torch.utils import data

from comfy.k_diffusion.sampling import append_dims

__all__ = ["FolderOfImages", "append_dims"]


class FolderOfImages(data.Dataset):
    """The images under `root` (all subfolders, sorted by path) as a dataset of one-element tuples: each image as
    RGB, through `transform` when given."""

    IMG_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}

    def __init__(self, root: str | Path, transform: Callable[[Image.Image], Any] | None = None) -> None:
        super().__init__()
        self.root = Path(root)
        self.transform = transform
        self.paths = sorted(path for path in self.root.rglob("*")
                            if path.is_file() and path.suffix.lower() in self.IMG_EXTENSIONS)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any]:
        with Image.open(self.paths[index]) as image:
            rgb = image.convert("RGB")
        return (rgb if self.transform is None else self.transform(rgb),)
