"""`comfy.utils` for plugins: the progress bar (reporting through the engine), image resizing, reading and writing
weights files, renaming state dict keys, and tiled processing (`diffusion.upscale`'s tiling, as the upscale
model nodes use it)."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from diffusion.sampling.custom import noise_mask_for
from diffusion.upscale import read_state_dict
from diffusion.upscale import tile_steps as _tile_steps
from diffusion.upscale import tiled_scale as _tiled_scale
from engine.progress import ProgressBar
from nodes import resize
from nodes.environment import current_environment
from nodes.latent_ops import cycle_to_batch

__all__ = ["ProgressBar", "common_upscale", "MAX_RESOLUTION", "PROGRESS_BAR_ENABLED", "load_torch_file",
           "save_torch_file", "state_dict_prefix_replace", "get_tiled_scale_steps", "tiled_scale",
           "tiled_scale_multidim", "repeat_to_batch_size"]

MAX_RESOLUTION = 16384
PROGRESS_BAR_ENABLED = True  # ComfyUI's switch for console bars, which plugins pass on as `disable_pbar`; ours are on
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")


def common_upscale(samples: torch.Tensor, width: int, height: int, upscale_method: str, crop: str) -> torch.Tensor:
    """Resize a [B, C, H, W] tensor like ComfyUI: optional centre crop to the target aspect, then interpolate
    (nearest-exact, bilinear, area, bicubic, bislerp or lanczos); the engine's own resize."""
    return resize.upscale(samples, width, height, upscale_method, crop)


def load_torch_file(ckpt: str, safe_load: bool = False, device: torch.device | str | None = None,
                    return_metadata: bool = False) -> Any:
    """The tensors of a weights file: safetensors, or a pickle read with torch's weights-only unpickler whatever
    `safe_load` says (a file cannot run code here). A pickle's "state_dict" entry, or its single entry, is
    unwrapped as ComfyUI does. With `return_metadata`: (tensors, the safetensors header metadata or None)."""
    path = Path(ckpt)
    state = read_state_dict(path, "ckpt")
    metadata = None
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        if return_metadata:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata()
    elif "state_dict" in state:
        state = state["state_dict"]
    elif len(state) == 1 and isinstance(next(iter(state.values())), dict):
        state = next(iter(state.values()))
    if device is not None:
        state = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in state.items()}
    return (state, metadata) if return_metadata else state


def _writable_folders() -> list[Path]:
    folders = current_environment().folders
    return [folders.models_dir, folders.output_dir, folders.temp_dir, folders.user_dir]


def save_torch_file(sd: Mapping[str, torch.Tensor], ckpt: str, metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors as a safetensors file, atomically (complete or not at all), only inside the models, output,
    temp or user folder."""
    from safetensors.torch import save_file

    target = Path(os.path.realpath(ckpt))
    if not any(target.is_relative_to(os.path.realpath(folder)) for folder in _writable_folders()):
        raise ValueError(f"ckpt: {ckpt} is outside the models, output, temp and user folders")
    target.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: tensor.detach().contiguous().cpu() for key, tensor in sd.items()}
    handle, temporary = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=dict(metadata) if metadata is not None else None)
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise


def state_dict_prefix_replace(state_dict: dict[str, Any], replace_prefix: Mapping[str, str],
                              filter_keys: bool = False) -> dict[str, Any]:
    """Rename keys starting with each prefix to start with its replacement instead. The renamed entries move
    out of `state_dict`; the result is `state_dict` itself, or with `filter_keys` a new dict of only them."""
    result = {} if filter_keys else state_dict
    for old, new in replace_prefix.items():
        for key in [key for key in state_dict if key.startswith(old)]:
            result[new + key[len(old):]] = state_dict.pop(key)
    return result


def get_tiled_scale_steps(width: int, height: int, tile_x: int, tile_y: int, overlap: int) -> int:
    """How many tiles `tiled_scale` runs for one width x height image."""
    return _tile_steps(1, height, tile_y, overlap) * _tile_steps(width, 1, tile_x, overlap)


def tiled_scale_multidim(samples: torch.Tensor, function: Callable[[torch.Tensor], torch.Tensor],
                         tile: tuple[int, ...] = (64, 64), overlap: int = 8, upscale_amount: float = 4,
                         out_channels: int = 3, output_device: str | torch.device = "cpu", downscale: bool = False,
                         index_formulas: Any = None, pbar: Any = None) -> torch.Tensor:
    """`function` over [B, C, H, W] `samples` in overlapping tiles, blended. Our tiling covers square 2-D tiles
    and one upscale factor; other shapes raise an error naming the argument."""
    if len(tile) != 2 or tile[0] != tile[1]:
        raise ValueError(f"tiled_scale: tile {tuple(tile)} is not supported here, only square 2-D tiles")
    if isinstance(upscale_amount, (tuple, list)):
        if len(set(upscale_amount)) != 1:
            raise ValueError(f"tiled_scale: upscale_amount {tuple(upscale_amount)} is not supported here, "
                             "only one factor for both sides")
        upscale_amount = upscale_amount[0]
    if downscale or index_formulas is not None:
        raise ValueError("tiled_scale: downscale and index_formulas are not supported here")
    on_tile = (lambda: pbar.update(1)) if pbar is not None else None
    output = _tiled_scale(samples, function, float(upscale_amount), out_channels, tile=tile[0], overlap=overlap,
                          on_tile=on_tile)
    return output.to(output_device)


def tiled_scale(samples: torch.Tensor, function: Callable[[torch.Tensor], torch.Tensor], tile_x: int = 64,
                tile_y: int = 64, overlap: int = 8, upscale_amount: float = 4, out_channels: int = 3,
                output_device: str | torch.device = "cpu", pbar: Any = None) -> torch.Tensor:
    return tiled_scale_multidim(samples, function, (tile_y, tile_x), overlap=overlap, upscale_amount=upscale_amount,
                                out_channels=out_channels, output_device=output_device, pbar=pbar)


def repeat_to_batch_size(tensor: torch.Tensor, batch_size: int, dim: int = 0) -> torch.Tensor:
    """`tensor` with `batch_size` entries along `dim`: cut down, or repeated whole and cut (0, 1, 0, 1, ...)."""
    return cycle_to_batch(tensor.movedim(dim, 0), batch_size).movedim(0, dim)


def reshape_mask(input_mask: torch.Tensor, output_shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """A mask ([B, H, W] or [B, 1, H, W]) resized (bilinear) to image latents of `output_shape` [B, C, H, W], its
    channel repeated to C and its batch cycled to B: what our samplers make of a noise mask. Masks for 1-D or
    video (3-D) latents are not supported."""
    if len(output_shape) != 4:
        raise ValueError(f"comfy.utils.reshape_mask: output_shape {tuple(output_shape)} is not [B, C, H, W]; only "
                         "image latents are supported by nodeflow")
    return noise_mask_for(input_mask, torch.Size(output_shape))
