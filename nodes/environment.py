"""Where built-in nodes find their files, models and compute device: the `NodeEnvironment`.

A node never reaches for a global folder or model registry: it asks `current_environment()`, which is a
context variable with a process default (`set_default_environment`) and a scoped override
(`use_environment`), so two environments (two model folders, two caches) can live in one process, as tests do.
Knows nothing of HTTP, the executor or the graph; the program's entry point builds one and installs it.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch

    from nodes.models.manager import ModelManager

MODEL_KINDS = ("checkpoints", "diffusers", "loras", "vae", "diffusion_models", "text_encoders")
CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class Folders:
    """The folders nodes read from and write to; `models_dir` holds one subfolder per model kind."""

    models_dir: Path
    input_dir: Path
    output_dir: Path
    temp_dir: Path
    user_dir: Path

    @classmethod
    def under(cls, base_dir: str | os.PathLike[str]) -> "Folders":
        """The default layout: models/, input/, output/, temp/ and user/ inside one base folder."""
        base = Path(base_dir)
        return cls(base / "models", base / "input", base / "output", base / "temp", base / "user")

    def model_dir(self, kind: str) -> Path:
        if kind not in MODEL_KINDS:
            raise ValueError(f"unknown model folder kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
        return self.models_dir / kind

    def create(self) -> None:
        """Create every folder (and the model kind subfolders) that does not exist yet."""
        for kind in MODEL_KINDS:
            self.model_dir(kind).mkdir(parents=True, exist_ok=True)
        for folder in (self.input_dir, self.output_dir, self.temp_dir, self.user_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def list_models(self, kind: str, extensions: tuple[str, ...] = CHECKPOINT_EXTENSIONS) -> list[str]:
        """Files of a model kind, as '/'-separated paths relative to its folder, sorted."""
        return list_files(self.model_dir(kind), extensions)

    def list_diffusers_models(self) -> list[str]:
        """Folders under diffusers/ that hold a `model_index.json` (a saved diffusers pipeline)."""
        root = self.model_dir("diffusers")
        if not root.is_dir():
            return []
        return sorted(index.parent.relative_to(root).as_posix() for index in root.rglob("model_index.json"))

    def list_input_images(self) -> list[str]:
        return list_files(self.input_dir, IMAGE_EXTENSIONS)


def list_files(root: Path, extensions: tuple[str, ...]) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and path.suffix.lower() in extensions and not path.name.startswith(".")
    )


def resolve_inside(root: Path, relative_name: str, input_name: str) -> Path:
    """The file `relative_name` inside `root`; a ValueError naming the input if it escapes root or is missing."""
    if not relative_name:
        raise ValueError(f"{input_name}: no file name given")
    root_resolved = root.resolve()
    candidate = (root_resolved / relative_name).resolve()
    if root_resolved != candidate and root_resolved not in candidate.parents:
        raise ValueError(f"{input_name}: {relative_name!r} points outside {root}")
    if not candidate.exists():
        raise ValueError(f"{input_name}: {relative_name!r} not found in {root}")
    return candidate


def pick_device(force_cpu: bool = False) -> "torch.device":
    """CPU when forced, else CUDA, else MPS, else CPU."""
    import torch

    if not force_cpu:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: "torch.device") -> "torch.dtype":
    """fp32 on CPU; bf16 on CUDA devices that support it, else fp16."""
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


@dataclass
class NodeEnvironment:
    """Folders, the model manager and the compute device/dtype that built-in nodes run with.

    Without `models`, the environment gets its own model manager; environments that should share loaded
    models (tests with separate output folders, for instance) pass the same one.
    """

    folders: Folders
    device: "torch.device"
    dtype: "torch.dtype"
    models: "ModelManager" = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.models is None:
            from nodes.models.manager import ModelManager

            self.models = ModelManager(self.device, self.dtype)

    @classmethod
    def create(cls, folders: Folders, force_cpu: bool = False) -> "NodeEnvironment":
        """An environment on the best available device (`force_cpu` is the `--cpu` switch)."""
        device = pick_device(force_cpu)
        return cls(folders, device, pick_dtype(device))


_default_environment: list[NodeEnvironment] = []
_current: contextvars.ContextVar[NodeEnvironment | None] = contextvars.ContextVar("node_environment", default=None)


def set_default_environment(environment: NodeEnvironment) -> None:
    """Install the environment used wherever no `use_environment` block is active (the program does this once)."""
    _default_environment[:] = [environment]


def current_environment() -> NodeEnvironment:
    environment = _current.get()
    if environment is not None:
        return environment
    if _default_environment:
        return _default_environment[0]
    raise RuntimeError("no node environment: call nodes.environment.set_default_environment() at start-up")


@contextlib.contextmanager
def use_environment(environment: NodeEnvironment) -> Iterator[NodeEnvironment]:
    """Make `environment` current inside the block (for this thread/task only)."""
    token = _current.set(environment)
    try:
        yield environment
    finally:
        _current.reset(token)
