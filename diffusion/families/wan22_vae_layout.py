"""Wan 2.2 style VAE weights (Qwen-Image 2.1's VAE) between two layouts: the original one of ComfyUI's
`qwen_image_2.1_vae*.safetensors` (nested `encoder.downsamples.N.downsamples.M.*` / `decoder.upsamples.N.upsamples.M.*`
stages, `nn.Sequential` indices inside residual blocks and heads, `conv1`/`conv2` around the latent) and diffusers'
`AutoencoderKLQwenImage21` (`down_blocks.N.resnets.M` / `downsampler`, `up_blocks.N.resnets.M` / `upsampler`,
`mid_block`, `norm_out`/`conv_out`, `quant_conv`/`post_quant_conv`).

Besides the names, the two differ in the shape of their causal convolutions: the original model is a video VAE whose
causal convolutions are 3-D (`[out, in, t, h, w]`), diffusers' is its image specialization, whose same layers are
2-D (`[out, in, h, w]`). ComfyUI builds Qwen-Image 2.1's VAE with a temporal kernel of one, so its file holds one
temporal tap (`[out, in, 1, h, w]`: the file is the model's size), which is what is written. A file with more taps
(Wan 2.2's three-frame video layout) reads too: an image is a single frame and a causal convolution pads only the
past with zeros, so only the last tap ever meets data; it is the 2-D weight. The temporal `time_conv` layers never
run on a single frame (either model skips them for the first chunk) and are carried along the same way so that both
files are complete. Every other tensor (norm scales, biases, the plain 2-D convolutions of resampling and attention)
passes through as the same object.

The level and block structure is read from the key names, so any size of the architecture converts (the real one,
base widths 96/144 and 64 latent channels, or a tiny test model). Knows nothing of files, nodes or model loading.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Collection, Mapping

import torch


@dataclass(frozen=True)
class _Kind:
    """What a layer holds: its parameter names, and whether it is a causal convolution (3-D in the original layout,
    2-D in diffusers'; other layers' tensors are the same in both)."""
    params: tuple[str, ...]
    causal: bool = False


_NORM = _Kind(("gamma",))  # RMS norm scale; no bias in this architecture
_CONV2D = _Kind(("weight", "bias"))  # a plain 2-D convolution in both layouts
_CAUSAL = _Kind(("weight", "bias"), causal=True)  # written with ComfyUI's one temporal tap, read with any number

# One table of (ComfyUI name, diffusers name, kind) pairs per kind of block, read in both directions, so that the
# two conversions cannot drift apart. ComfyUI's residual block is an nn.Sequential: 0 norm, 1 SiLU, 2 conv,
# 3 norm, 4 SiLU, 5 dropout, 6 conv; only the indices with weights appear.
_RESIDUAL = (("residual.0", "norm1", _NORM), ("residual.2", "conv1", _CAUSAL), ("residual.3", "norm2", _NORM),
             ("residual.6", "conv2", _CAUSAL), ("shortcut", "conv_shortcut", _CAUSAL))
_ATTENTION = (("norm", "norm", _NORM), ("to_qkv", "to_qkv", _CONV2D), ("proj", "proj", _CONV2D))
# the resampling stage: index 1 of its nn.Sequential is the strided / after-upsampling conv (0 is pad or upsample)
_RESAMPLE = (("resample.1", "resample.1", _CONV2D), ("time_conv", "time_conv", _CAUSAL))
# The middle's nn.Sequential is residual block, attention, residual block: diffusers splits it into two lists.
_MIDDLE = tuple((f"middle.{stage}.{comfy}", f"mid_block.{group}.{diffusers}", kind)
                for stage, group, table in ((0, "resnets.0", _RESIDUAL), (1, "attentions.0", _ATTENTION),
                                            (2, "resnets.1", _RESIDUAL))
                for comfy, diffusers, kind in table)
# Single layers: the heads are nn.Sequential(norm, SiLU, conv); `conv1`/`conv2` at the top level are the quant and
# post-quant convs (the decoder's and encoder's own `conv1` are their input convs).
_FIXED = (("conv1", "quant_conv", _CAUSAL), ("conv2", "post_quant_conv", _CAUSAL),
          *((f"{side}.{comfy}", f"{side}.{diffusers}", kind) for side in ("encoder", "decoder")
            for comfy, diffusers, kind in (("conv1", "conv_in", _CAUSAL), ("head.0", "norm_out", _NORM),
                                           ("head.2", "conv_out", _CAUSAL), *_MIDDLE)))

_COMFY_FIXED = {comfy: (diffusers, kind) for comfy, diffusers, kind in _FIXED}
_DIFFUSERS_FIXED = {diffusers: (comfy, kind) for comfy, diffusers, kind in _FIXED}
_COMFY_RESIDUAL = {comfy: (diffusers, kind) for comfy, diffusers, kind in _RESIDUAL}
_DIFFUSERS_RESIDUAL = {diffusers: (comfy, kind) for comfy, diffusers, kind in _RESIDUAL}
_COMFY_RESAMPLE = {comfy: (diffusers, kind) for comfy, diffusers, kind in _RESAMPLE}
_DIFFUSERS_RESAMPLE = {diffusers: (comfy, kind) for comfy, diffusers, kind in _RESAMPLE}

# Per side: ComfyUI's name of the level list (each level's stage list has the same name), diffusers' names of the
# level list and of a level's resampler. A level's stages are its residual blocks, then at most one resampling stage.
_SIDES = {"encoder": ("downsamples", "down_blocks", "downsampler"),
          "decoder": ("upsamples", "up_blocks", "upsampler")}
_COMFY_STAGE = {side: re.compile(rf"{side}\.{levels}\.(\d+)\.{levels}\.(\d+)\.(.+)")
                for side, (levels, _, _) in _SIDES.items()}
_DIFFUSERS_RESNET = {side: re.compile(rf"{side}\.{levels}\.(\d+)\.resnets\.(\d+)\.(.+)")
                     for side, (_, levels, _) in _SIDES.items()}
_DIFFUSERS_RESAMPLER = {side: re.compile(rf"{side}\.{levels}\.(\d+)\.{resampler}\.(.+)")
                        for side, (_, levels, resampler) in _SIDES.items()}
# the nested stages only Wan 2.2 style residual VAEs have (Wan 2.1's and Qwen-Image's put blocks straight in a level)
_COMFY_NESTED = re.compile(r"(?:encoder\.downsamples\.\d+\.downsamples|decoder\.upsamples\.\d+\.upsamples)\.\d+\.")


def is_comfy_layout(keys: Collection[str]) -> bool:
    """Whether tensor names are in the original Wan 2.2 style layout (ComfyUI's file) rather than diffusers': told
    by the nested per-level stages, which diffusers' names and the flat layout of Wan 2.1's / Qwen-Image's original
    VAE both lack. Wan 2.2's own VAE has the same layout; telling it apart is the caller's (by its channels)."""
    return any(_COMFY_NESTED.match(key) for key in keys)


def _split(key: str) -> tuple[str, str]:
    """A tensor name as (module path, parameter name)."""
    module, _, param = key.rpartition(".")
    return module, param


def _to_2d(value: torch.Tensor, kind: _Kind, param: str) -> torch.Tensor:
    """The image (2-D) weight of a causal convolution: the last temporal tap, the only one a lone frame meets (a
    view of a one-tap weight; of more taps, a contiguous copy, so that a model loading it with assign=True holds
    neither a strided parameter nor, through it, the unused taps). Other tensors are returned as they are."""
    if not kind.causal or param != "weight" or value.ndim != 5:
        return value  # the same in both layouts, or already 2-D
    return value[:, :, -1].contiguous()


def _to_3d(value: torch.Tensor, kind: _Kind, param: str) -> torch.Tensor:
    """The original (3-D) weight of a causal convolution from its 2-D one, with ComfyUI's one temporal tap (a view).
    Other tensors are returned as they are."""
    if not kind.causal or param != "weight" or value.ndim != 4:
        return value
    return value.unsqueeze(2)


def _no_place(key: str, layout: str) -> ValueError:
    return ValueError(f"Qwen-Image 2.1 VAE: no place in {layout} for tensor {key!r}")


def _comfy_place(key: str) -> tuple[str, _Kind, tuple[str, int, int, bool] | None]:
    """Diffusers' name and the layer kind of a ComfyUI-layout key, and (side, level, stage, is resampling stage) for
    a key inside a level's stages; ValueError for a key this architecture has no place for."""
    module, param = _split(key)
    side = module.partition(".")[0]
    placed, stage_info = _COMFY_FIXED.get(module), None
    if placed is None and side in _SIDES and (match := _COMFY_STAGE[side].fullmatch(module)):
        level, stage, layer = int(match.group(1)), int(match.group(2)), match.group(3)
        _, levels, resampler = _SIDES[side]
        if layer in _COMFY_RESIDUAL:
            name, kind = _COMFY_RESIDUAL[layer]
            placed, stage_info = (f"{side}.{levels}.{level}.resnets.{stage}.{name}", kind), (side, level, stage, False)
        elif layer in _COMFY_RESAMPLE:
            name, kind = _COMFY_RESAMPLE[layer]
            placed, stage_info = (f"{side}.{levels}.{level}.{resampler}.{name}", kind), (side, level, stage, True)
    if placed is None or param not in placed[1].params:
        raise _no_place(key, "diffusers' AutoencoderKLQwenImage21")
    return f"{placed[0]}.{param}", placed[1], stage_info


def comfy_to_diffusers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI's (original Wan 2.2 style) Qwen-Image 2.1 VAE tensors under diffusers' AutoencoderKLQwenImage21 names.
    Causal convolution weights become 2-D (their last temporal tap, see the module docstring); every other tensor is
    passed through as the same object. A level's residual blocks keep their numbers; its resampling stage, which
    ComfyUI numbers after them, becomes the level's `downsampler` / `upsampler`. ValueError naming the first key
    that has no place, or a resampling stage that does not directly follow its level's residual blocks."""
    converted: dict[str, torch.Tensor] = {}
    resnets: dict[tuple[str, int], set[int]] = {}
    resamplers: dict[tuple[str, int], tuple[int, str]] = {}
    for key, value in state.items():
        name, kind, stage_info = _comfy_place(key)
        if stage_info is not None:
            side, level, stage, is_resample = stage_info
            if is_resample:
                resamplers.setdefault((side, level), (stage, key))
            else:
                resnets.setdefault((side, level), set()).add(stage)
        converted[name] = _to_2d(value, kind, _split(key)[1])
    # diffusers' resamplers carry no stage number, so a misnumbered one would otherwise be placed silently
    for level, (stage, key) in resamplers.items():
        blocks = resnets.get(level, set())
        if blocks != set(range(len(blocks))) or stage != len(blocks):
            raise ValueError(f"Qwen-Image 2.1 VAE: tensor {key!r} is not in the resampling stage that follows its "
                             f"level's {len(blocks)} residual blocks")
    return converted


def _diffusers_place(key: str, blocks: Mapping[tuple[str, int], int]) -> tuple[str, _Kind]:
    """ComfyUI's name and the layer kind of a diffusers key (`blocks`: the residual blocks of each (side, level),
    after which ComfyUI numbers the level's resampling stage); ValueError for a key this architecture has no place
    for."""
    module, param = _split(key)
    side = module.partition(".")[0]
    placed = _DIFFUSERS_FIXED.get(module)
    if placed is None and side in _SIDES:
        levels = _SIDES[side][0]
        if (match := _DIFFUSERS_RESNET[side].fullmatch(module)) and match.group(3) in _DIFFUSERS_RESIDUAL:
            name, kind = _DIFFUSERS_RESIDUAL[match.group(3)]
            placed = f"{side}.{levels}.{match.group(1)}.{levels}.{match.group(2)}.{name}", kind
        elif (match := _DIFFUSERS_RESAMPLER[side].fullmatch(module)) and match.group(2) in _DIFFUSERS_RESAMPLE:
            name, kind = _DIFFUSERS_RESAMPLE[match.group(2)]
            stage = blocks.get((side, int(match.group(1))), 0)
            placed = f"{side}.{levels}.{match.group(1)}.{levels}.{stage}.{name}", kind
    if placed is None or param not in placed[1].params:
        raise _no_place(key, "ComfyUI's original VAE layout")
    return f"{placed[0]}.{param}", placed[1]


def diffusers_to_comfy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Diffusers' AutoencoderKLQwenImage21 tensors under ComfyUI's (original Wan 2.2 style) names and shapes, the
    inverse of `comfy_to_diffusers`: causal convolution weights become 3-D (the 2-D weight as the last temporal tap,
    zeros before it; a 1x1 one a view), every other tensor passes through as the same object. ValueError naming the
    first key that has no place."""
    blocks: dict[tuple[str, int], int] = {}  # residual blocks per level, counted from the names
    for key in state:
        side = key.partition(".")[0]
        if side in _SIDES and (match := _DIFFUSERS_RESNET[side].match(key)):
            level = (side, int(match.group(1)))
            blocks[level] = max(blocks.get(level, 0), int(match.group(2)) + 1)
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name, kind = _diffusers_place(key, blocks)
        converted[name] = _to_3d(value, kind, _split(key)[1])
    return converted
