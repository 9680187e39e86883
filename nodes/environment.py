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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from nodes.folder_listings import FolderListings

if TYPE_CHECKING:
    import torch

    from diffusion.manager import ModelManager
    from diffusion.read_ahead import ReadAhead

MODEL_KINDS = ("checkpoints", "diffusers", "loras", "vae", "diffusion_models", "text_encoders", "upscale_models",
               "clip_vision", "style_models", "controlnet", "t2i_adapter", "gligen",
               "hypernetworks", "configs")
CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class Folders:
    """The folders nodes read from and write to; `models_dir` holds one subfolder per model kind.
    Listings of the model and input folders are cached in `listings` while the folders do not change.

    A model file that is a symbolic link to somewhere outside the models folder is offered and loaded only with
    `follow_model_links` (`--allow-model-links`): a link the machine's owner put there to reach another disk is
    then followed, and otherwise neither listed nor loaded, so no name a request can pick leads outside the
    allowed folders. Links out of the input folder are never followed."""

    models_dir: Path
    input_dir: Path
    output_dir: Path
    temp_dir: Path
    user_dir: Path
    follow_model_links: bool = False
    listings: FolderListings = field(default_factory=FolderListings, init=False, repr=False, compare=False)

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
        return self.listings.files(self.model_dir(kind), extensions, self.follow_model_links)

    def list_diffusers_models(self) -> list[str]:
        """Folders under diffusers/ that hold a `model_index.json` (a saved diffusers pipeline)."""
        return self.listings.diffusers_models(self.model_dir("diffusers"), self.follow_model_links)

    def model_file(self, kind: str, name: str, input_name: str) -> Path:
        """The file (or diffusers folder) `name` of a model kind, by the link rule above; a ValueError naming
        the input when it escapes the folder, is missing, or is a link out of it that is not followed."""
        return resolve_inside(self.model_dir(kind), name, input_name, self.follow_model_links,
                              links_flag="--allow-model-links")

    def list_input_images(self) -> list[str]:
        return self.listings.files(self.input_dir, IMAGE_EXTENSIONS)


def resolve_inside(root: Path, relative_name: str, input_name: str, follow_links: bool = False,
                   links_flag: str | None = None) -> Path:
    """The file `relative_name` inside `root`; a ValueError naming the input if it escapes root or is missing.
    The name itself must stay inside (no `..` out, no absolute path); with `follow_links` a symbolic link in
    `root` may then lead anywhere, otherwise where it leads must be inside `root` too (`links_flag`, the switch
    that would follow it, is named in the error)."""
    if not relative_name:
        raise ValueError(f"{input_name}: no file name given")
    root_resolved = root.resolve()
    named = Path(os.path.normpath(root_resolved / relative_name))
    if named != root_resolved and root_resolved not in named.parents:
        raise ValueError(f"{input_name}: {relative_name!r} points outside {root}")
    candidate = named.resolve()
    if not follow_links and candidate != root_resolved and root_resolved not in candidate.parents:
        how = f"; start with {links_flag} to follow links out of it" if links_flag else ", which is not followed"
        raise ValueError(f"{input_name}: {relative_name!r} is a link to {candidate}, outside {root}{how}")
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
    """bf16 on CUDA devices that support it, else fp16; on the CPU bf16 where it computes bf16 natively (see
    `cpu_computes_bf16_natively`), else fp32."""
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_computes_bf16_natively() else torch.float32


def cpu_computes_bf16_natively() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (AVX512-BF16 or AMX tiles). There an SD1.5 UNet step ran
    2.7x faster in bf16 than in fp32 (docs/performance.md); without it torch emulates bf16, slower than fp32."""
    import torch

    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


@dataclass
class NodeEnvironment:
    """Folders, the model manager and the compute device/dtype that built-in nodes run with, and the model files
    read ahead of their loaders (`diffusion.read_ahead`, started by `app.runtime.Runtime.read_ahead`).

    Without `models`, the environment gets its own model manager; environments that should share loaded
    models (tests with separate output folders, for instance) pass the same one. `text_encoder_offload` says when
    big text encoders (T5) are freed after encoding: "never", "when-tight" or "always" (see
    `diffusion.lazy_module`); a freed encoder is read again on the next encode.
    """

    folders: Folders
    device: "torch.device"
    dtype: "torch.dtype"
    models: "ModelManager" = None  # type: ignore[assignment]
    text_encoder_offload: str = "when-tight"
    read_ahead: "ReadAhead" = None  # type: ignore[assignment]  # model files read before their loader runs

    def __post_init__(self) -> None:
        from diffusion.lazy_module import OFFLOAD_POLICIES

        if self.text_encoder_offload not in OFFLOAD_POLICIES:
            raise ValueError(f"text_encoder_offload: {self.text_encoder_offload!r} is not one of "
                             f"{', '.join(OFFLOAD_POLICIES)}")
        if self.models is None:
            from diffusion.manager import ModelManager

            self.models = ModelManager(self.device, self.dtype)
        if self.read_ahead is None:
            from diffusion.read_ahead import ReadAhead

            self.read_ahead = ReadAhead()

    @classmethod
    def create(cls, folders: Folders, force_cpu: bool = False,
               text_encoder_offload: str = "when-tight", dtype_name: str | None = None,
               max_ram: str | None = None, reserve_vram_gb: float | None = None,
               text_encoder_dtype_name: str | None = None) -> "NodeEnvironment":
        """An environment on the best available device (`force_cpu` is the `--cpu` switch), in `dtype_name`
        ("fp16", "bf16", "fp32": the `--fp16`/`--bf16`/`--fp32` overrides) or the device's default dtype, with a
        model manager kept within `max_ram` (`--max-ram`) and, on CUDA, the VRAM less `reserve_vram_gb`; text
        encoders in `text_encoder_dtype_name` when given (`--fp16-text-enc`, ...)."""
        from diffusion.manager import ModelManager
        from diffusion.memory import DEFAULT_RESERVE_VRAM_GB, MemoryBudget

        device = pick_device(force_cpu)
        dtype = dtype_from_name(dtype_name) if dtype_name else pick_dtype(device)
        reserve = DEFAULT_RESERVE_VRAM_GB if reserve_vram_gb is None else reserve_vram_gb
        encoder_dtype = dtype_from_name(text_encoder_dtype_name) if text_encoder_dtype_name else None
        models = ModelManager(device, dtype, MemoryBudget.for_device(device, max_ram, reserve), encoder_dtype)
        return cls(folders, device, dtype, models, text_encoder_offload=text_encoder_offload)


DTYPE_NAMES = ("fp16", "bf16", "fp32")


def dtype_from_name(name: str) -> "torch.dtype":
    """The torch dtype of a `--fp16`/`--bf16`/`--fp32` override."""
    import torch

    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if name not in dtypes:
        raise ValueError(f"unknown dtype {name!r}; known: {', '.join(DTYPE_NAMES)}")
    return dtypes[name]


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


def release_text_encoders(clip: object) -> list[str]:
    """After a prompt was encoded with `clip`: free its big text encoders (T5) if the current environment's
    `text_encoder_offload` policy says so; the names of those freed. CLIPs without such encoders need no
    environment."""
    offloadable = getattr(clip, "offloadable", None)
    if offloadable is None:
        return []
    from diffusion.lazy_module import release

    return release(offloadable(), current_environment().text_encoder_offload)


@contextlib.contextmanager
def pin_loaded_models(inputs: Mapping[str, Any]) -> Iterator[None]:
    """The node-call guard of the engine (`Executor(node_call_guard=pin_loaded_models)`): while a node runs,
    every loaded model among its inputs (MODEL, CLIP, VAE, CONTROL_NET, ..., whatever type name a plugin gives it)
    is pinned in the current model manager, so nothing the node loads meanwhile evicts it, and moved back to its
    device first if it was offloaded. One mechanism for every node: nodes never pin by hand. Without an
    environment there is nothing to pin."""
    environment = _current.get() or (_default_environment[0] if _default_environment else None)
    if environment is None:
        yield
        return
    with environment.models.using(*inputs.values()):
        yield


@contextlib.contextmanager
def use_environment(environment: NodeEnvironment) -> Iterator[NodeEnvironment]:
    """Make `environment` current inside the block (for this thread/task only)."""
    token = _current.set(environment)
    try:
        yield environment
    finally:
        _current.reset(token)
