"""Upscale models (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, ... every single-image architecture spandrel knows):
reading them from the files people download, and running them over images tile by tile within memory.

spandrel (the library ComfyUI uses) detects the architecture and its hyperparameters from the tensor names and
shapes. It declares torchvision as a dependency, but only two of its architectures call it: RestoreFormer
(`normalize`, provided here) and the LaMa inpainter (`rotate`, which fails with a clear error; LaMa is no
single-image model, so the loader refuses it anyway). Without torchvision its import is given a stand-in for
those two functions, removed again afterwards, so nothing else sees a torchvision.

Tiling is ComfyUI's (`comfy.utils.tiled_scale`): 512-pixel tiles overlapping by 32, each output tile feathered
linearly over the scaled overlap on every side and the sum divided by the summed weights, the tile halved (down
to 128) when the device runs out of memory. The first tile is the largest of 512, 256 and 128 whose estimated
working memory fits what the device has free, so a large model on a small GPU does not start with a failure.

Knows nothing of nodes or folders: callers pass resolved paths and the input name for error messages.
"""
from __future__ import annotations

import enum
import importlib.util
import math
import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from diffusion.files import read_safetensors, safetensors_keys
from diffusion.manager import ModelManager
from diffusion.memory import allocator_aligned, free_memory_bytes

UPSCALE_MODEL_EXTENSIONS = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
TILE = 512
OVERLAP = 32
MIN_TILE = 128
# ComfyUI's estimate of an upscale model's working memory: this many bytes per input element, times the scale.
WORKING_MEMORY_FACTOR = 384.0

_import_lock = threading.Lock()


def import_spandrel() -> types.ModuleType:
    """The spandrel package, imported with a torchvision stand-in when torchvision is not installed."""
    with _import_lock:  # held while importing: another thread must not take a half-imported spandrel
        if "spandrel" in sys.modules:
            return sys.modules["spandrel"]
        if importlib.util.find_spec("torchvision") is not None:
            return _import_or_explain()
        stand_ins = _torchvision_stand_ins()
        sys.modules.update(stand_ins)
        try:
            return _import_or_explain()
        finally:
            for name in stand_ins:
                sys.modules.pop(name, None)


def _import_or_explain() -> types.ModuleType:
    try:
        import spandrel
    except ImportError as error:
        raise RuntimeError(f"upscale models need the spandrel package ({error}); install it with "
                           "`pip install --no-deps -r requirements-nodeps.txt`") from error
    except Exception as error:  # a torchvision built for another torch fails while registering its operators
        raise RuntimeError(f"spandrel could not be imported because torchvision does not load ({error}): "
                           "uninstall torchvision (spandrel runs without it) or install the build that matches "
                           "this torch") from error
    return spandrel


def _torchvision_stand_ins() -> dict[str, types.ModuleType]:
    """Modules named like torchvision's that hold what spandrel's architectures import from it."""

    class InterpolationMode(enum.Enum):
        NEAREST = "nearest"
        BILINEAR = "bilinear"
        BICUBIC = "bicubic"

    def normalize(tensor: torch.Tensor, mean: list[float], std: list[float], inplace: bool = False) -> torch.Tensor:
        shape = (-1, 1, 1)
        mean_t = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(shape)
        std_t = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(shape)
        return tensor.sub_(mean_t).div_(std_t) if inplace else (tensor - mean_t) / std_t

    def rotate(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise RuntimeError("this model rotates images with torchvision, which is not installed")

    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode, functional.normalize, functional.rotate = InterpolationMode, normalize, rotate
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    package = types.ModuleType("torchvision")
    package.transforms = transforms
    return {"torchvision": package, "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional}


@dataclass(frozen=True, eq=False)
class UpscaleModel:
    """UPSCALE_MODEL: a network that turns an image into one `scale` times larger (or, at scale 1, restores it),
    with spandrel's descriptor of it (`descriptor(image)` pads to the network's size requirements and clamps the
    result to 0..1). The model manager moves and counts `network`; the descriptor follows it."""

    network: torch.nn.Module
    descriptor: Any
    name: str

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.name)

    @property
    def input_channels(self) -> int:
        return int(self.descriptor.input_channels)

    @property
    def output_channels(self) -> int:
        return int(self.descriptor.output_channels)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.network.parameters()).dtype


def load_upscale_model(models: ModelManager, path: Path, input_name: str = "model_name") -> UpscaleModel:
    """An upscale model from a .safetensors or .pth file (any layout spandrel detects, wrapped in `params_ema`
    and the like or not), in float32 (as ComfyUI runs them) on the manager's device, cached and budgeted by it."""
    path = Path(path)

    def load() -> UpscaleModel:
        if path.suffix.lower() == ".safetensors":  # a LoRA or a checkpoint is told from its header, unread
            other = _other_model(set(safetensors_keys(path, input_name)))
            if other is not None:
                raise ValueError(f"{input_name}: {path.name} is not an upscale model: this file holds {other}")
        return upscale_model_from_state_dict(read_state_dict(path, input_name), path.name, models.device,
                                             input_name)

    return models.cached("upscale_model", path, input_name, load)


def upscale_model_from_state_dict(state: dict[str, Any], name: str, device: torch.device,
                                  input_name: str = "model_name") -> UpscaleModel:
    """The upscale model whose tensors `state` holds (any layout spandrel detects), in float32 on `device`."""
    descriptor = describe_state_dict(state, name, input_name)
    network = descriptor.model.eval().requires_grad_(False)
    with torch.no_grad():
        for tensor in [*network.parameters(), *network.buffers()]:
            data = tensor.data.to(device=device)
            tensor.data = allocator_aligned(data.float() if data.is_floating_point() else data)
    return UpscaleModel(network, descriptor, name)


def read_state_dict(path: Path, input_name: str) -> dict[str, Any]:
    """The tensors of an upscale model file. Pickled files (.pth and friends, the usual format of upscale models)
    are read with torch's weights-only unpickler, as ComfyUI reads them: tensors and plain containers only, so a
    file cannot run code; one that holds anything else is refused."""
    if path.suffix.lower() == ".safetensors":
        return read_safetensors(path, input_name)
    if not path.is_file():
        raise ValueError(f"{input_name}: file {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler raises many kinds; the file is unusable whichever it is
        raise ValueError(f"{input_name}: {path.name} is not a readable PyTorch weights file (only tensors are "
                         f"loaded from pickled files): {error}") from error
    if not isinstance(state, dict):
        raise ValueError(f"{input_name}: {path.name} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def describe_state_dict(state: dict[str, Any], file_name: str, input_name: str) -> Any:
    """spandrel's ImageModelDescriptor for a state dict; a ValueError saying what the file is when it is no
    single-image model spandrel knows (a LoRA, a checkpoint, an inpainting model, ...)."""
    spandrel = import_spandrel()
    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise ValueError(f"{input_name}: {file_name} is not an upscale model of an architecture spandrel knows: "
                         f"this file holds {_what_file_holds(state)}") from None
    except (KeyError, RuntimeError, ValueError, AssertionError, IndexError) as error:
        raise ValueError(f"{input_name}: {file_name} looks like an upscale model but could not be loaded "
                         f"({type(error).__name__}: {error})") from error
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ValueError(f"{input_name}: {file_name} is a {descriptor.architecture.name} model that takes an image "
                         "and a mask (inpainting); upscale models must be single-image models")
    return descriptor


def _what_file_holds(state: dict[str, Any]) -> str:
    from diffusion import registry

    keys = set(spandrel_canonical_keys(state))
    return _other_model(keys) or registry.describe_other_file(keys)


def _other_model(keys: set[str]) -> str | None:
    """What a file is, in words, when its tensor names are a LoRA's or a supported family's checkpoint's."""
    from diffusion import registry

    if any("lora_" in key or key.endswith(".alpha") for key in keys):
        return "a LoRA (load it with LoraLoader)"
    try:
        family = registry.checkpoint_family(keys)
    except ValueError:
        return None
    return f"a {family.title} checkpoint (load it with CheckpointLoaderSimple)"


def spandrel_canonical_keys(state: dict[str, Any]) -> list[str]:
    """The tensor names spandrel looks at, after unwrapping `params_ema`, `state_dict` and the like."""
    return [str(key) for key in import_spandrel().canonicalize_state_dict(state)]


# -- running a model over an image, tile by tile ------------------------------------------------------------------


def tile_steps(width: int, height: int, tile: int, overlap: int = OVERLAP) -> int:
    """How many tiles one image of width x height takes (ComfyUI's `get_tiled_scale_steps`)."""
    rows = 1 if height <= tile else math.ceil((height - overlap) / (tile - overlap))
    columns = 1 if width <= tile else math.ceil((width - overlap) / (tile - overlap))
    return rows * columns


def first_tile(free_bytes: int, scale: float, element_size: int = 4) -> int:
    """The largest of 512, 256, 128 whose estimated working memory (ComfyUI's estimate) fits `free_bytes`."""
    tile = TILE
    while tile > MIN_TILE and tile * tile * 3 * element_size * max(scale, 1.0) * WORKING_MEMORY_FACTOR > free_bytes:
        tile //= 2
    return tile


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    return [0] if size <= tile else list(range(0, size - overlap, tile - overlap))


def _feather(length: int, feather: int) -> torch.Tensor:
    """Weights along one side of an output tile: ramping up over `feather` pixels at both ends, 1 between."""
    weights = torch.ones(length)
    if feather < length:
        ramp = torch.arange(1, feather + 1, dtype=torch.float64).div(feather).float()
        weights[:feather] *= ramp
        weights[length - feather:] *= ramp.flip(0)
    return weights


def tiled_scale(images: torch.Tensor, function: Callable[[torch.Tensor], torch.Tensor], scale: float,
                out_channels: int, tile: int = TILE, overlap: int = OVERLAP,
                on_tile: Callable[[], None] | None = None) -> torch.Tensor:
    """`function` (one [1, C, h, w] tile in, [1, out_channels, h*scale, w*scale] out) over every image of
    [B, C, H, W] `images` in overlapping tiles, blended as ComfyUI blends them; float32 on the CPU. `on_tile` is
    called after each tile (progress, interrupts)."""
    batch, _, height, width = images.shape
    out_height, out_width = round(height * scale), round(width * scale)
    output = torch.empty(batch, out_channels, out_height, out_width)
    feather = round(overlap * scale)
    for index in range(batch):
        image = images[index:index + 1]
        if height <= tile and width <= tile:
            output[index:index + 1] = function(image).float().cpu()
            if on_tile is not None:
                on_tile()
            continue
        total = torch.zeros(1, out_channels, out_height, out_width)
        weights = torch.zeros(1, 1, out_height, out_width)
        for top in _tile_starts(height, tile, overlap):
            for left in _tile_starts(width, tile, overlap):
                piece = image[..., top:top + min(tile, height - top), left:left + min(tile, width - left)]
                result = function(piece).float().cpu()
                rows, columns = result.shape[-2:]
                mask = _feather(rows, feather).view(-1, 1) * _feather(columns, feather).view(1, -1)
                out_top, out_left = round(top * scale), round(left * scale)
                total[..., out_top:out_top + rows, out_left:out_left + columns] += result * mask
                weights[..., out_top:out_top + rows, out_left:out_left + columns] += mask
                if on_tile is not None:
                    on_tile()
        output[index:index + 1] = total / weights
    return output


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


def upscale_image(model: UpscaleModel, image: torch.Tensor, tile: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """IMAGE [B, H, W, C] upscaled by `model`, clamped to 0..1 (float32 on the CPU). Tiles start at `tile` (by
    default the largest that fits the device's free memory) and halve on running out of memory, down to 128.
    `progress(done, total)` is called after each tile; what it raises (an interrupt) stops the run."""
    if image.ndim != 4 or image.shape[-1] != model.input_channels:
        raise ValueError(f"image: expected [batch, height, width, {model.input_channels}] for this "
                         f"{model.architecture} model, got shape {tuple(image.shape)}")
    samples = image.movedim(-1, 1)
    tile = tile or first_tile(_free_bytes(model.device), model.scale)

    def run_tile(piece: torch.Tensor) -> torch.Tensor:
        return model.descriptor(piece.to(device=model.device, dtype=model.dtype))

    while True:
        total = samples.shape[0] * tile_steps(samples.shape[3], samples.shape[2], tile)
        done = [0]

        def on_tile() -> None:
            done[0] += 1
            if progress is not None:
                progress(done[0], total)

        try:
            with torch.inference_mode():
                upscaled = tiled_scale(samples, run_tile, model.scale, model.output_channels, tile, OVERLAP, on_tile)
            break
        except Exception as error:
            if not _is_out_of_memory(error) or tile // 2 < MIN_TILE:
                raise
        tile //= 2  # out of memory: outside the handler, so the failed attempt's tensors are already freed
        if model.device.type == "cuda":
            torch.cuda.empty_cache()
    return upscaled.movedim(1, -1).clamp(0, 1)


def _free_bytes(device: torch.device) -> int:
    """Memory free for activations on `device`, counting what torch's CUDA allocator holds but does not use."""
    free = free_memory_bytes(device)
    if device.type == "cuda":
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return free
