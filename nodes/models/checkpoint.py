"""Single-file Stable Diffusion checkpoints (original LDM key layout) read into diffusers modules, offline.

The family (SD1.x with a CLIP text encoder, SD2.x with OpenCLIP) and the prediction type are detected from the
tensors' names and shapes; the architecture is read from the shapes, on top of the family description the
project ships in `configs/`; the weights are re-keyed with diffusers' own single-file converters. Nothing is
fetched from a hub and pickled `.ckpt` files are refused. Knows nothing of nodes or the node environment.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from nodes.models.families import V_PREDICTION_MARKER, family_config, scheduler_config
from nodes.models.memory import allocator_aligned

UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP = "cond_stage_model.transformer.text_model."
OPEN_CLIP = "cond_stage_model.model."
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
V_PREDICTION_NORM_STD = 0.09  # SD2 768-v checkpoints have this spread in a late norm bias; 512 ones do not
V_PREDICTION_PROBE = UNET + "output_blocks.11.1.transformer_blocks.0.norm1.bias"


def read_safetensors(path: Path, input_name: str, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file, each in memory of its own (floating-point ones in `dtype` when given:
    converted one at a time as read, so an fp32 file loaded in bf16 never holds the whole file in fp32); a
    ValueError naming the input for pickles, missing, truncated or corrupt files.

    Tensors are read one at a time with `pread` rather than memory-mapped: a model built from a mapping keeps the
    file's pages resident beside its own copies (2x the file at peak), and dies with SIGBUS if the file is
    rewritten while loaded. A tensor the reader put at an address the CPU allocator would not use is moved once
    (see `memory.is_allocator_aligned`), so peak memory stays near one file size plus one tensor."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(
            f"{input_name}: {path.name} is a pickled PyTorch file, which can run arbitrary code when loaded; "
            "only .safetensors files are loaded (convert it to safetensors first)")
    if not path.is_file():
        raise ValueError(f"{input_name}: file {path} not found")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", backend="pread") as file:
            return {key: allocator_aligned(_in_dtype(file.get_tensor(key), dtype)) for key in file.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"{input_name}: {path.name} is not a readable safetensors file ({error})") from error


def _in_dtype(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor  # no copy if equal


@dataclass(frozen=True)
class CheckpointLayout:
    """What a checkpoint holds: its family, prediction type and the diffusers/transformers configs to build."""

    family: str
    prediction_type: str
    unet_config: dict[str, Any]
    vae_config: dict[str, Any]
    text_encoder_config: dict[str, Any]
    pad_token: str
    scheduler_config: dict[str, Any]


def _indices(state: Mapping[str, torch.Tensor], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(match.group(1)) for key in state if (match := pattern.match(key))})


def _unet_params(state: Mapping[str, torch.Tensor], family_params: Mapping[str, Any]) -> dict[str, Any]:
    """LDM `unet_config.params` read from shapes (channels, levels, blocks, attention, context width)."""
    conv_in = state[UNET + "input_blocks.0.0.weight"]
    model_channels = conv_in.shape[0]
    input_blocks = _indices(state, UNET + "input_blocks.")
    downsamplers = [i for i in input_blocks if UNET + f"input_blocks.{i}.0.op.weight" in state]
    levels = len(downsamplers) + 1
    res_blocks = (len(input_blocks) - 1 - len(downsamplers)) // levels
    channel_mult, attention_resolutions = [], []
    context_dim = transformer_depth = linear = None
    for level in range(levels):
        first = UNET + f"input_blocks.{1 + level * (res_blocks + 1)}."
        channel_mult.append(state[first + "0.out_layers.3.weight"].shape[0] // model_channels)
        if first + "1.proj_in.weight" in state:
            attention_resolutions.append(2 ** level)
            if context_dim is None:
                context_dim = state[first + "1.transformer_blocks.0.attn2.to_k.weight"].shape[1]
                transformer_depth = len(_indices(state, first + "1.transformer_blocks."))
                linear = state[first + "1.proj_in.weight"].ndim == 2
    params = dict(family_params)
    params.update(in_channels=conv_in.shape[1], out_channels=state[UNET + "out.2.weight"].shape[0],
                  model_channels=model_channels, channel_mult=channel_mult, num_res_blocks=res_blocks,
                  attention_resolutions=attention_resolutions, context_dim=context_dim,
                  transformer_depth=transformer_depth, use_linear_in_transformer=linear)
    head_channels = params.get("num_head_channels")
    if head_channels and any(model_channels * mult % head_channels for mult in channel_mult):
        raise ValueError(f"UNet widths {[model_channels * m for m in channel_mult]} are not multiples of the "
                         f"{head_channels}-channel attention heads of this model family")
    return params


def vae_ddconfig(state: Mapping[str, torch.Tensor], prefix: str, base: Mapping[str, Any]) -> dict[str, Any]:
    """LDM VAE `ddconfig` read from shapes."""
    ch = state[prefix + "encoder.conv_in.weight"].shape[0]
    levels = _indices(state, prefix + "encoder.down.")
    ddconfig = dict(base)
    ddconfig.update(
        ch=ch, in_channels=state[prefix + "encoder.conv_in.weight"].shape[1],
        out_ch=state[prefix + "decoder.conv_out.weight"].shape[0],
        z_channels=state[prefix + "decoder.conv_in.weight"].shape[1],
        ch_mult=[state[prefix + f"encoder.down.{level}.block.0.conv2.weight"].shape[0] // ch for level in levels],
        num_res_blocks=len(_indices(state, prefix + "encoder.down.0.block.")))
    return ddconfig


def _text_encoder_config(state: Mapping[str, torch.Tensor], family: str,
                         base: Mapping[str, Any]) -> dict[str, Any]:
    if family == "sd1":
        embedding = state[CLIP + "embeddings.token_embedding.weight"]
        positions = state[CLIP + "embeddings.position_embedding.weight"]
        layers = len(_indices(state, CLIP + "encoder.layers."))
        intermediate = state[CLIP + "encoder.layers.0.mlp.fc1.weight"].shape[0]
    else:  # OpenCLIP; SD2 uses the penultimate layer, so the last one is left out as diffusers does
        embedding = state[OPEN_CLIP + "token_embedding.weight"]
        positions = state[OPEN_CLIP + "positional_embedding"]
        layers = len(_indices(state, OPEN_CLIP + "transformer.resblocks.")) - 1
        intermediate = state[OPEN_CLIP + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    vocab_size, hidden_size = embedding.shape
    config = dict(base)
    config.update(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate,
                  num_hidden_layers=layers, num_attention_heads=max(1, hidden_size // 64),
                  max_position_embeddings=positions.shape[0], bos_token_id=vocab_size - 2,
                  eos_token_id=vocab_size - 1)
    return config


def detect_family(state: Mapping[str, torch.Tensor]) -> str:
    if UNET + "input_blocks.0.0.weight" not in state:
        if any(key.startswith("conditioner.embedders.") for key in state):
            raise ValueError("this is an SDXL-style checkpoint; only SD1.x and SD2.x checkpoints are supported")
        if any(key.startswith(("down_blocks.", "transformer_blocks.", "double_blocks.")) for key in state):
            raise ValueError("this file holds a bare diffusers/transformer model, not an SD1.x/SD2.x checkpoint "
                             "in the original layout")
        raise ValueError("unknown checkpoint layout: no UNet under 'model.diffusion_model.'")
    if CLIP + "embeddings.token_embedding.weight" in state:
        return "sd1"
    if OPEN_CLIP + "token_embedding.weight" in state:
        return "sd2"
    raise ValueError("unknown checkpoint layout: no CLIP or OpenCLIP text encoder under 'cond_stage_model.'")


def detect_prediction_type(state: Mapping[str, torch.Tensor], family: str) -> str:
    """v-prediction when the checkpoint says so (ComfyUI's `v_pred` key) or, for SD2, when the late norm bias
    has the spread of the 768-v models (the test ComfyUI uses); epsilon otherwise."""
    if V_PREDICTION_MARKER in state:
        return "v_prediction"
    probe = state.get(V_PREDICTION_PROBE)
    if family == "sd2" and probe is not None and torch.std(probe.float(), unbiased=False) > V_PREDICTION_NORM_STD:
        return "v_prediction"
    return "epsilon"


def inspect_checkpoint(state: Mapping[str, torch.Tensor]) -> CheckpointLayout:
    """Family, prediction type and model configs of an LDM-layout checkpoint; ValueError if not understood."""
    from diffusers.loaders.single_file_utils import (
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )

    family = detect_family(state)
    base = family_config(family)
    try:
        original_config = {"model": {"params": {
            "unet_config": {"params": _unet_params(state, base["unet"])},
            "first_stage_config": {"params": {"ddconfig": vae_ddconfig(state, VAE, base["vae"]["ddconfig"])}},
            "scale_factor": base["vae"]["scale_factor"],
        }}}
        unet_config = create_unet_diffusers_config_from_ldm(original_config, state)
        vae_config = create_vae_diffusers_config_from_ldm(original_config, state)
        text_config = _text_encoder_config(state, family, base["text_encoder"])
    except (KeyError, IndexError, ZeroDivisionError) as error:
        raise ValueError(f"unknown checkpoint layout: {family} tensors incomplete or mis-shaped ({error})") from error
    unet_config["upcast_attention"] = family == "sd2"
    prediction_type = detect_prediction_type(state, family)
    return CheckpointLayout(family, prediction_type, unet_config, vae_config, text_config,
                            base["tokenizer"]["pad_token"], scheduler_config(family, prediction_type))


@contextlib.contextmanager
def empty_weights() -> Iterator[None]:
    """Build modules with their parameters on the meta device: no memory and no random initialisation for
    weights that loading replaces (`_load_strict` assigns the file's tensors). Buffers stay real: text encoders
    make position ids that files do not hold."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        yield


def _load_strict(module: torch.nn.Module, weights: Mapping[str, torch.Tensor], what: str) -> torch.nn.Module:
    expected = set(module.state_dict())
    missing = sorted(expected - set(weights))
    if missing:
        raise ValueError(f"{what} weights incomplete: {len(missing)} tensors missing, e.g. {missing[:3]}")
    try:
        module.load_state_dict({key: weights[key] for key in expected}, strict=True, assign=True)
    except RuntimeError as error:
        raise ValueError(f"{what} weights do not fit the detected architecture: {error}") from error
    return module


def build_unet(state: Mapping[str, torch.Tensor], layout: CheckpointLayout) -> Any:
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    with torch.device("meta"):
        unet = UNet2DConditionModel(**layout.unet_config)
    return _load_strict(unet, convert_ldm_unet_checkpoint(state, layout.unet_config), "UNet").eval()


def build_vae(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> Any:
    """A diffusers AutoencoderKL from LDM-layout VAE tensors (with `first_stage_model.` or no prefix)."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    with torch.device("meta"):
        vae = AutoencoderKL(**config)
    return _load_strict(vae, convert_ldm_vae_checkpoint(state, dict(config)), "VAE").eval()


def build_text_encoder(state: Mapping[str, torch.Tensor], layout: CheckpointLayout) -> Any:
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    with empty_weights():
        model = CLIPTextModel(CLIPTextConfig(**layout.text_encoder_config))
    if layout.family == "sd1":
        converted = convert_ldm_clip_checkpoint(state)
    else:
        converted = convert_open_clip_checkpoint(model, state, prefix=OPEN_CLIP)
    last_layer = f"encoder.layers.{layout.text_encoder_config['num_hidden_layers']}."
    weights = {key.removeprefix("text_model."): tensor for key, tensor in converted.items()}
    weights = {key: tensor for key, tensor in weights.items()
               if not key.startswith(last_layer) and not key.endswith("position_ids")}
    return _load_strict(model, weights, "text encoder").eval()


def vae_config_for_file(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The diffusers config of a standalone LDM-layout VAE file (keys `encoder.*`/`decoder.*`)."""
    from diffusers.loaders.single_file_utils import create_vae_diffusers_config_from_ldm

    prefix = VAE if VAE + "encoder.conv_in.weight" in state else ""
    base = family_config("sd1")["vae"]
    original_config = {"model": {"params": {
        "first_stage_config": {"params": {"ddconfig": vae_ddconfig(state, prefix, base["ddconfig"])}},
        "scale_factor": base["scale_factor"],
    }}}
    return create_vae_diffusers_config_from_ldm(original_config, state)
