"""Stable Diffusion 1.x/2.x read into diffusers modules, offline: single-file checkpoints in the original (LDM)
layout and diffusers folders.

The version (SD1.x with a CLIP text encoder, SD2.x with OpenCLIP) and the prediction type are detected from the
tensors' names and shapes (`detection`); the architecture is read from the shapes, on top of the version's
description shipped beside this module (`sd1.json`, `sd2.json`); the weights are re-keyed with diffusers' own
single-file converters. SD2.1 unCLIP checkpoints load the same way, their UNet with its class embedding (the image
embedding's input) and, with `load_unclip_checkpoint`, their image encoder re-keyed to transformers' layout. Knows
nothing of nodes or the node environment.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from diffusion import ldm
from diffusion.components import DiffusionModel, Vae
from diffusion.contracts import Place
from diffusion.encoders import text_encoder_files
from diffusion.encoders.clip_tokenizer import clip_tokenizer
from diffusion.encoders.clip_vision import ClipVisionEncoder, encoder_from_weights
from diffusion.families.sd.detection import (
    CLIP,
    OPEN_CLIP,
    UNCLIP_PROBE,
    UNCLIP_VISION,
    UNET,
    detect_prediction_type,
    detect_version,
    is_unclip,
)
from diffusion.families.sd.sampling import SD_SAMPLING, unclip_sampling_for
from diffusion.families.sd.text_encoding import SdClip
from diffusion.files import block_indices, config_beside, empty_weights, load_strict, public_config
from diffusion.files import scheduler_config as folder_scheduler_config

if TYPE_CHECKING:
    from diffusion.manager import ModelManager

FAMILY = "sd"
CLIP_TYPES = ("stable_diffusion",)  # CLIPLoader's type for an SD1 CLIP-L or SD2 OpenCLIP-H file
CLIP_HEAD_CHANNELS = 64
FOLDER_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline",
                    "StableDiffusionInstructPix2PixPipeline")


def version_config(version: str) -> dict[str, Any]:
    """A fresh copy of a version's description ("sd1" or "sd2"): the facts its files cannot tell."""
    return config_beside(__file__, f"{version}.json")


def scheduler_config(version: str, prediction_type: str) -> dict[str, Any]:
    """The version's diffusers scheduler config (without the class name) for a prediction type."""
    config = public_config(version_config(version)["scheduler"])
    config["prediction_type"] = prediction_type
    return config


@dataclass(frozen=True)
class CheckpointLayout:
    """What a checkpoint holds: its version, prediction type and the diffusers/transformers configs to build."""

    version: str
    prediction_type: str
    unet_config: dict[str, Any]
    vae_config: dict[str, Any]
    text_encoder_config: dict[str, Any]
    pad_token: str
    scheduler_config: dict[str, Any]


def _unet_params(state: Mapping[str, torch.Tensor], version_params: Mapping[str, Any]) -> dict[str, Any]:
    """LDM `unet_config.params` read from shapes (channels, levels, blocks, attention, context width)."""
    conv_in = state[UNET + "input_blocks.0.0.weight"]
    model_channels = conv_in.shape[0]
    input_blocks = block_indices(state, UNET + "input_blocks.")
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
                transformer_depth = len(block_indices(state, first + "1.transformer_blocks."))
                linear = state[first + "1.proj_in.weight"].ndim == 2
    params = dict(version_params)
    params.update(in_channels=conv_in.shape[1], out_channels=state[UNET + "out.2.weight"].shape[0],
                  model_channels=model_channels, channel_mult=channel_mult, num_res_blocks=res_blocks,
                  attention_resolutions=attention_resolutions, context_dim=context_dim,
                  transformer_depth=transformer_depth, use_linear_in_transformer=linear)
    if UNCLIP_PROBE in state:  # SD2.1 unCLIP: the image embedding enters through a class embedding
        params.update(num_classes="sequential", adm_in_channels=state[UNCLIP_PROBE].shape[1])
    head_channels = params.get("num_head_channels")
    if head_channels and any(model_channels * mult % head_channels for mult in channel_mult):
        raise ValueError(f"UNet widths {[model_channels * m for m in channel_mult]} are not multiples of the "
                         f"{head_channels}-channel attention heads of this model family")
    return params


def _text_encoder_config(state: Mapping[str, torch.Tensor], version: str,
                         base: Mapping[str, Any]) -> dict[str, Any]:
    if version == "sd1":
        embedding = state[CLIP + "embeddings.token_embedding.weight"]
        positions = state[CLIP + "embeddings.position_embedding.weight"]
        layers = len(block_indices(state, CLIP + "encoder.layers."))
        intermediate = state[CLIP + "encoder.layers.0.mlp.fc1.weight"].shape[0]
    else:  # OpenCLIP; SD2 uses the penultimate layer, so the last one is left out as diffusers does
        embedding = state[OPEN_CLIP + "token_embedding.weight"]
        positions = state[OPEN_CLIP + "positional_embedding"]
        layers = len(block_indices(state, OPEN_CLIP + "transformer.resblocks.")) - 1
        intermediate = state[OPEN_CLIP + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    vocab_size, hidden_size = embedding.shape
    config = dict(base)
    config.update(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate,
                  num_hidden_layers=layers, num_attention_heads=max(1, hidden_size // 64),
                  max_position_embeddings=positions.shape[0], bos_token_id=vocab_size - 2,
                  eos_token_id=vocab_size - 1)
    return config


def inspect_checkpoint(state: Mapping[str, torch.Tensor]) -> CheckpointLayout:
    """Version, prediction type and model configs of an LDM-layout checkpoint; ValueError if not understood."""
    from diffusers.loaders.single_file_utils import create_unet_diffusers_config_from_ldm

    version = detect_version(state)
    base = version_config(version)
    try:
        original_config = {"model": {"params": {  # diffusers reads the VAE's depth for the UNet's sample size
            "unet_config": {"params": _unet_params(state, base["unet"])},
            "first_stage_config": {"params": {"ddconfig": ldm.ddconfig(state, ldm.CHECKPOINT_PREFIX)}}}}}
        unet_config = create_unet_diffusers_config_from_ldm(original_config, state)
        vae_config = ldm.vae_config(state, ldm.CHECKPOINT_PREFIX, base["vae"]["scale_factor"])
        text_config = _text_encoder_config(state, version, base["text_encoder"])
    except (KeyError, IndexError, ZeroDivisionError) as error:
        raise ValueError(f"unknown checkpoint layout: {version} tensors incomplete or mis-shaped ({error})") from error
    unet_config["upcast_attention"] = version == "sd2"
    prediction_type = detect_prediction_type(state, version)
    return CheckpointLayout(version, prediction_type, unet_config, vae_config, text_config,
                            base["tokenizer"]["pad_token"], scheduler_config(version, prediction_type))


def build_unet(state: Mapping[str, torch.Tensor], layout: CheckpointLayout) -> Any:
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    with torch.device("meta"):
        unet = UNet2DConditionModel(**layout.unet_config)
    return load_strict(unet, convert_ldm_unet_checkpoint(state, layout.unet_config), "UNet").eval()


def build_text_encoder(state: Mapping[str, torch.Tensor], layout: CheckpointLayout) -> Any:
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    with empty_weights():
        model = CLIPTextModel(CLIPTextConfig(**layout.text_encoder_config))
    if layout.version == "sd1":
        converted = convert_ldm_clip_checkpoint(state)
    else:
        converted = convert_open_clip_checkpoint(model, state, prefix=OPEN_CLIP)
    last_layer = f"encoder.layers.{layout.text_encoder_config['num_hidden_layers']}."
    weights = {key.removeprefix("text_model."): tensor for key, tensor in converted.items()}
    weights = {key: tensor for key, tensor in weights.items()
               if not key.startswith(last_layer) and not key.endswith("position_ids")}
    return load_strict(model, weights, "text encoder").eval()


def sd_model(unet: Any, scheduler_config: Mapping[str, Any], name: str) -> DiffusionModel:
    """MODEL of an SD UNet; an unCLIP UNet (with a class embedding) samples with its image-embedding input."""
    sampling = SD_SAMPLING if getattr(unet, "class_embedding", None) is None else unclip_sampling_for(unet)
    return DiffusionModel(unet, dict(scheduler_config), name, FAMILY, sampling)


def load_checkpoint(state: Mapping[str, torch.Tensor], name: str, place: Place) -> tuple[DiffusionModel, SdClip, Vae]:
    """MODEL, CLIP and VAE of an SD1.x/SD2.x single-file checkpoint; ValueError if it does not fit."""
    layout = inspect_checkpoint(state)
    unet = place(build_unet(state, layout))
    vae = place(ldm.build_vae(state, layout.vae_config))
    text_encoder = place(build_text_encoder(state, layout))
    tokenizer = clip_tokenizer(layout.text_encoder_config["vocab_size"], layout.pad_token)
    return sd_model(unet, layout.scheduler_config, name), SdClip(tokenizer, text_encoder, name), Vae(vae, name)


def load_unclip_checkpoint(state: Mapping[str, torch.Tensor], name: str,
                           place: Place) -> tuple[DiffusionModel, SdClip, Vae, ClipVisionEncoder]:
    """MODEL, CLIP, VAE and CLIP_VISION of an SD2.1 unCLIP single-file checkpoint (sd21-unclip-h/-l); ValueError
    for a checkpoint without the UNet's image-embedding input or without the image encoder."""
    if not is_unclip(state):
        raise ValueError("not an unCLIP checkpoint: its UNet takes no image embedding (no label_emb); load it with "
                         "CheckpointLoaderSimple")
    vision = unclip_vision_weights(state)
    if not vision:
        raise ValueError(f"this unCLIP checkpoint has no image encoder (no {UNCLIP_VISION}* tensors)")
    encoder = encoder_from_weights(vision, place, "image encoder", name)
    return (*load_checkpoint(state, name, place), encoder)


def unclip_vision_weights(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint's image encoder (`embedder.model.visual.*`, OpenCLIP's layout, which OpenAI's CLIP shares)
    re-keyed to transformers' CLIPVisionModelWithProjection."""
    visual = {key[len(UNCLIP_VISION):]: tensor for key, tensor in state.items() if key.startswith(UNCLIP_VISION)}
    named = {"conv1.weight": "embeddings.patch_embedding.weight", "class_embedding": "embeddings.class_embedding",
             "positional_embedding": "embeddings.position_embedding.weight", "ln_pre.weight": "pre_layrnorm.weight",
             "ln_pre.bias": "pre_layrnorm.bias", "ln_post.weight": "post_layernorm.weight",
             "ln_post.bias": "post_layernorm.bias"}
    parts = {"ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.", "attn.out_proj.": "self_attn.out_proj.",
             "mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2."}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in visual.items():
        if key in named:
            out["vision_model." + named[key]] = tensor
        elif key == "proj":
            out["visual_projection.weight"] = tensor.t().contiguous()
        elif key.startswith("transformer.resblocks."):
            index, rest = key[len("transformer.resblocks."):].split(".", 1)
            layer = f"vision_model.encoder.layers.{index}."
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = rest.rsplit("_", 1)[1]
                for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3)):
                    out[f"{layer}self_attn.{name}.{kind}"] = part.contiguous()
            else:
                prefix = next((old for old in parts if rest.startswith(old)), None)
                out[layer + (rest if prefix is None else parts[prefix] + rest[len(prefix):])] = tensor
        else:
            out["vision_model." + key] = tensor
    return out


def load_folder(folder: Path, name: str, place: Place) -> tuple[DiffusionModel, SdClip, Vae]:
    """MODEL, CLIP and VAE of a diffusers Stable Diffusion folder (txt2img, img2img, inpainting, InstructPix2Pix)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    scheduler = folder_scheduler_config(folder)
    return (sd_model(place(unet).eval(), scheduler, name), SdClip(tokenizer, place(text_encoder).eval(), name),
            Vae(place(vae).eval(), name))


def load_text_encoders(models: "ModelManager", paths: Mapping[str, Path]) -> SdClip:
    """The CLIP of one text encoder file (CLIPLoader, type stable_diffusion): SD1's CLIP-L, or SD2's OpenCLIP-H
    (24 layers, in the transformers layout), whose last layer is left out as for SD2 checkpoints (SD2 reads the
    penultimate layer). The model manager caches it per file."""
    if len(paths) != 1:
        raise ValueError(f"type stable_diffusion takes one text encoder file, got {len(paths)}")
    (input_name, path), = paths.items()
    role = text_encoder_files.file_roles({input_name: text_encoder_files.read_header(path, input_name)})[input_name]
    versions = {text_encoder_files.CLIP_L: ("sd1", 0), text_encoder_files.CLIP_H: ("sd2", 1)}
    if role not in versions:
        raise ValueError(f"{input_name}: type stable_diffusion takes an SD1 CLIP-L or SD2 OpenCLIP-H file; "
                         f"this one is {role}")
    version, dropped = versions[role]
    base = version_config(version)
    text = base["text_encoder"]
    settings = {"hidden_act": text["hidden_act"], "layer_norm_eps": text["layer_norm_eps"],
                "head_channels": CLIP_HEAD_CHANNELS}
    part = text_encoder_files.load_part(models, path, input_name, role, settings, projection=False,
                                        drop_layers=dropped)
    tokenizer = clip_tokenizer(part.vocab_size, base["tokenizer"]["pad_token"])
    return SdClip(tokenizer, part.model, Path(path).name)
