"""Stable Diffusion XL, base and refiner, read into diffusers/transformers modules offline: single-file
checkpoints (original layout) and diffusers folders.

The UNet architecture is read from tensor shapes (levels, layers, transformer depth per level, added-embedding
width) with the family facts in `config.json` beside this module (64-channel attention heads); the weights are
re-keyed with diffusers' converters. Knows nothing of nodes or the node environment.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from diffusion import ldm
from diffusion.components import DiffusionModel, Vae
from diffusion.contracts import Place
from diffusion.encoders import text_encoder_files
from diffusion.encoders.clip import TextEncoderSlot, fit_keys
from diffusion.encoders.clip_tokenizer import clip_tokenizer
from diffusion.families.sdxl.detection import (
    ADDED_EMBEDDING,
    BASE_CLIP_G,
    CLIP_L,
    REFINER_CLIP_G,
    UNET,
    is_refiner_checkpoint,
)
from diffusion.families.sdxl.sampling import BASE_TIME_IDS, REFINER_TIME_IDS, sampling_for
from diffusion.families.sdxl.text_encoding import SdxlClip
from diffusion.files import (
    block_indices,
    config_beside,
    empty_weights,
    load_strict,
    model_index,
    pipeline_components,
    public_config,
)
from diffusion.files import scheduler_config as folder_scheduler_config
from diffusion.lora import TEXT_ENCODER, TEXT_ENCODER_2

if TYPE_CHECKING:
    from diffusion.manager import ModelManager

FAMILY = "sdxl"
CLIP_TYPES = ("sdxl",)  # DualCLIPLoader's type for a CLIP-L and a CLIP-G file
SdxlTriple = tuple[DiffusionModel, SdxlClip, Vae]


def config() -> dict[str, Any]:
    return config_beside(__file__)


# ---------------------------------------------------------------- single-file checkpoints

def unet_config(state: Mapping[str, torch.Tensor], pooled_width: int, refiner: bool) -> dict[str, Any]:
    """The diffusers UNet2DConditionModel config of an SDXL UNet, read from its LDM tensors' shapes."""
    input_blocks = block_indices(state, UNET + "input_blocks.")
    downsamplers = [i for i in input_blocks if UNET + f"input_blocks.{i}.0.op.weight" in state]
    levels = len(downsamplers) + 1
    layers = (len(input_blocks) - 1 - len(downsamplers)) // levels
    channels, depths, context_dim, linear = [], [], None, True
    for level in range(levels):
        first = UNET + f"input_blocks.{1 + level * (layers + 1)}."
        channels.append(state[first + "0.out_layers.3.weight"].shape[0])
        depth = len(block_indices(state, first + "1.transformer_blocks."))
        depths.append(depth)
        if depth and context_dim is None:
            context_dim = state[first + "1.transformer_blocks.0.attn2.to_k.weight"].shape[1]
            linear = state[first + "1.proj_in.weight"].ndim == 2
    middle_depth = len(block_indices(state, UNET + "middle_block.1.transformer_blocks."))
    time_ids = REFINER_TIME_IDS if refiner else BASE_TIME_IDS
    added_width = state[ADDED_EMBEDDING].shape[1] - pooled_width
    if added_width <= 0 or added_width % time_ids:
        raise ValueError(f"the UNet's added embedding ({state[ADDED_EMBEDDING].shape[1]} inputs) does not fit "
                         f"{time_ids} size numbers and a {pooled_width}-value pooled text embedding")
    head_channels = config()["unet"]["num_head_channels"]
    return {
        "sample_size": 128, "in_channels": state[UNET + "input_blocks.0.0.weight"].shape[1],
        "out_channels": state[UNET + "out.2.weight"].shape[0], "layers_per_block": layers,
        "block_out_channels": channels,
        "down_block_types": ["CrossAttnDownBlock2D" if depth else "DownBlock2D" for depth in depths],
        "up_block_types": ["CrossAttnUpBlock2D" if depth else "UpBlock2D" for depth in reversed(depths)],
        # diffusers' mid block takes the last entry; levels without attention ignore theirs
        "transformer_layers_per_block": [depth or middle_depth for depth in depths[:-1]] + [middle_depth],
        "attention_head_dim": [max(1, width // head_channels) for width in channels],
        "cross_attention_dim": context_dim, "use_linear_projection": linear,
        "addition_embed_type": "text_time", "addition_time_embed_dim": added_width // time_ids,
        "projection_class_embeddings_input_dim": state[ADDED_EMBEDDING].shape[1],
    }


def _text_config(embedding: torch.Tensor, positions: torch.Tensor, layers: int, intermediate: int,
                 base: Mapping[str, Any], projection_dim: int | None = None) -> Any:
    from transformers import CLIPTextConfig

    vocab_size, hidden_size = embedding.shape
    settings = {key: value for key, value in base.items() if key in ("hidden_act", "layer_norm_eps")}
    return CLIPTextConfig(
        **settings, vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=max(1, hidden_size // base["head_channels"]),
        max_position_embeddings=positions.shape[0], projection_dim=projection_dim or hidden_size,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1)


def build_clip_l(state: Mapping[str, torch.Tensor], prefix: str, base: Mapping[str, Any]) -> Any:
    from transformers import CLIPTextModel

    config = _text_config(state[prefix + "embeddings.token_embedding.weight"],
                          state[prefix + "embeddings.position_embedding.weight"],
                          len(block_indices(state, prefix + "encoder.layers.")),
                          state[prefix + "encoder.layers.0.mlp.fc1.weight"].shape[0], base)
    with empty_weights():
        model = CLIPTextModel(config)
    weights = {key[len(prefix):]: tensor for key, tensor in state.items() if key.startswith(prefix)}
    return load_strict(model, fit_keys(weights, model), "CLIP-L text encoder").eval()


def build_clip_g(state: Mapping[str, torch.Tensor], prefix: str, base: Mapping[str, Any]) -> Any:
    """OpenCLIP-G (all layers: the pooled projection reads the last) as a CLIPTextModelWithProjection."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextModelWithProjection

    projection = state[prefix + "text_projection"]
    config = _text_config(state[prefix + "token_embedding.weight"], state[prefix + "positional_embedding"],
                          len(block_indices(state, prefix + "transformer.resblocks.")),
                          state[prefix + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0], base,
                          projection.shape[1])
    with empty_weights():
        model = CLIPTextModelWithProjection(config)
    converted = convert_open_clip_checkpoint(model, state, prefix=prefix)
    return load_strict(model, fit_keys(converted, model), "OpenCLIP-G text encoder").eval()


def _vae_from_state(state: Mapping[str, torch.Tensor]) -> Any:
    return ldm.build_vae(state, ldm.vae_config(state, ldm.CHECKPOINT_PREFIX, config()["vae"]["scaling_factor"]))


def load_checkpoint(state: Mapping[str, torch.Tensor], name: str, place: Place) -> SdxlTriple:
    """MODEL, CLIP and VAE of an SDXL base or refiner single-file checkpoint; ValueError if it does not fit."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    family = config()
    refiner = is_refiner_checkpoint(state)
    try:
        clip_g_prefix = REFINER_CLIP_G if refiner else BASE_CLIP_G
        clip_g = place(build_clip_g(state, clip_g_prefix, family["text_encoder_2"]))
        clip_l = None if refiner else place(build_clip_l(state, CLIP_L, family["text_encoder"]))
        unet_settings = unet_config(state, int(clip_g.config.projection_dim), refiner)
        with torch.device("meta"):
            unet = UNet2DConditionModel(**unet_settings)
        unet = load_strict(unet, convert_ldm_unet_checkpoint(state, unet_settings), "UNet").eval()
        vae = place(_vae_from_state(state))
    except (KeyError, IndexError, ZeroDivisionError) as error:
        kind = "refiner" if refiner else "base"
        raise ValueError(f"SDXL {kind} checkpoint tensors incomplete or mis-shaped ({error})") from error
    return _triple(place(unet), clip_l, clip_g, vae, dict(family["scheduler"]), name, refiner)


def _triple(unet: Any, clip_l: Any, clip_g: Any, vae: Any, scheduler_config: dict[str, Any], name: str,
            refiner: bool) -> SdxlTriple:
    family = config()
    pad_l, pad_g = family["tokenizer"]["pad_token"], family["tokenizer_2"]["pad_token"]
    slot_l = None if clip_l is None else TextEncoderSlot(
        clip_tokenizer(clip_l.config.vocab_size, pad_l), clip_l, TEXT_ENCODER)
    slot_g = TextEncoderSlot(clip_tokenizer(clip_g.config.vocab_size, pad_g), clip_g, TEXT_ENCODER_2)
    return _assemble(unet, slot_l, slot_g, vae, scheduler_config, name, refiner)


def _assemble(unet: Any, slot_l: TextEncoderSlot | None, slot_g: TextEncoderSlot, vae: Any,
              scheduler_config: dict[str, Any], name: str, refiner: bool) -> SdxlTriple:
    model = DiffusionModel(unet, public_config(scheduler_config), name, FAMILY, sampling_for(unet, refiner))
    clip = SdxlClip(slot_l, slot_g, name, config()["clip_layer"])
    return model, clip, Vae(vae, name)


# ---------------------------------------------------------------- diffusers folders

def load_folder(folder: Path, name: str, place: Place) -> SdxlTriple:
    """MODEL, CLIP and VAE of a StableDiffusionXL(Img2Img)Pipeline folder (the refiner has no `text_encoder`)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    has = pipeline_components(folder)
    options = {"local_files_only": True}
    unet = place(UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **options).eval())
    vae = place(AutoencoderKL.from_pretrained(folder, subfolder="vae", **options).eval())
    clip_g = place(CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2", **options).eval())
    slot_g = TextEncoderSlot(CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer_2", **options), clip_g,
                             TEXT_ENCODER_2)
    slot_l = None
    if "text_encoder" in has:
        clip_l = place(CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **options).eval())
        slot_l = TextEncoderSlot(CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", **options), clip_l,
                                 TEXT_ENCODER)
    refiner = bool(model_index(folder).get("requires_aesthetics_score")) or slot_l is None
    return _assemble(unet, slot_l, slot_g, vae, folder_scheduler_config(folder), name, refiner)


# ---------------------------------------------------------------- separate text encoder files (CLIP loaders)

def load_text_encoders(models: "ModelManager", paths: Mapping[str, Path]) -> SdxlClip:
    """SDXL's CLIP from text encoder files (input name -> path): CLIP-L and CLIP-G in either order (DualCLIPLoader,
    type sdxl), or CLIP-G alone, the refiner's (CLIPLoader, type stable_diffusion, as ComfyUI reads a CLIP-G file).
    Each file is cached by the model manager on its own."""
    family = config()
    headers = {input_name: text_encoder_files.read_header(path, input_name) for input_name, path in paths.items()}
    roles = text_encoder_files.file_roles(headers)
    found = sorted(roles.values())
    if found not in ([text_encoder_files.CLIP_G], [text_encoder_files.CLIP_G, text_encoder_files.CLIP_L]):
        raise ValueError(f"SDXL needs one CLIP-L and one CLIP-G file (or CLIP-G alone, the refiner's); found "
                         f"{text_encoder_files.describe_roles(roles)}")
    slots: dict[str, TextEncoderSlot] = {}
    for input_name, role in roles.items():
        is_g = role == text_encoder_files.CLIP_G
        part = text_encoder_files.load_part(models, paths[input_name], input_name, role,
                                            family["text_encoder_2" if is_g else "text_encoder"], projection=is_g)
        tokenizer = clip_tokenizer(part.vocab_size, family["tokenizer_2" if is_g else "tokenizer"]["pad_token"])
        slots[role] = TextEncoderSlot(tokenizer, part.model, TEXT_ENCODER_2 if is_g else TEXT_ENCODER)
    name = "+".join(Path(path).name for path in paths.values())
    return SdxlClip(slots.get(text_encoder_files.CLIP_L), slots[text_encoder_files.CLIP_G], name,
                    family["clip_layer"])
