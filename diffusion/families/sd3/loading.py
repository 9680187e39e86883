"""Stable Diffusion 3 / 3.5 (MMDiT) read into diffusers/transformers modules offline: diffusers folders, single-file
checkpoints (transformer, text encoders and VAE in one file, as published), and the CLIP-L/CLIP-G/T5 files
TripleCLIPLoader combines. Architectures are read from tensor shapes with the family facts in `config.json` beside
this module; T5 is read only when a prompt is first encoded (`diffusion.lazy_module`). Knows nothing of nodes or
the node environment.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from diffusion import ldm
from diffusion.components import DiffusionModel, Vae
from diffusion.contracts import Place
from diffusion.encoders import t5 as t5_files
from diffusion.encoders import text_encoder_files
from diffusion.encoders.clip import fit_keys
from diffusion.encoders.clip_tokenizer import clip_tokenizer
from diffusion.families.sd3.detection import CLIP_G, CLIP_L, T5, TRANSFORMER_PREFIX
from diffusion.families.sd3.sampling import SD3_SAMPLING
from diffusion.families.sd3.text_encoding import Sd3Clip, make_clip
from diffusion.files import (
    block_indices,
    config_beside,
    empty_weights,
    load_strict,
    pipeline_components,
    public_config,
)
from diffusion.files import scheduler_config as folder_scheduler_config
from diffusion.lazy_module import LazyModule

if TYPE_CHECKING:
    from diffusion.manager import ModelManager

FAMILY = "sd3"
CLIP_TYPES = ("sd3",)  # the CLIP loaders' type for SD3's encoder files (one, two or three of them)
Sd3Triple = tuple[DiffusionModel, "Sd3Clip | None", Vae]


def config() -> dict[str, Any]:
    return config_beside(__file__)


def sd3_model(transformer: Any, scheduler_config: Mapping[str, Any], name: str) -> DiffusionModel:
    return DiffusionModel(transformer, public_config(scheduler_config), name, FAMILY, SD3_SAMPLING)


# ---------------------------------------------------------------- diffusers folders

def load_folder(folder: Path, name: str, place: Place) -> Sd3Triple:
    """MODEL, CLIP and VAE of a StableDiffusion3Pipeline folder (`text_encoder_3` may be absent: no T5)."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import AutoTokenizer, CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel

    has = pipeline_components(folder)
    options = {"local_files_only": True}
    transformer = place(SD3Transformer2DModel.from_pretrained(folder, subfolder="transformer", **options).eval())
    vae = place(AutoencoderKL.from_pretrained(folder, subfolder="vae", **options).eval())
    encoders = [place(CLIPTextModelWithProjection.from_pretrained(folder, subfolder=sub, **options).eval())
                for sub in ("text_encoder", "text_encoder_2")]
    tokenizers = [CLIPTokenizer.from_pretrained(folder, subfolder=sub, **options)
                  for sub in ("tokenizer", "tokenizer_2")]
    t5 = t5_tokenizer = None
    if "text_encoder_3" in has:  # read on the first encode (LazyModule)
        t5 = LazyModule(lambda: place(T5EncoderModel.from_pretrained(folder, subfolder="text_encoder_3",
                                                                     **options).eval()), f"{name}/text_encoder_3")
        t5_tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer_3", **options)
    clip = make_clip(encoders[0], tokenizers[0], encoders[1], tokenizers[1], t5, t5_tokenizer, name)
    return sd3_model(transformer, folder_scheduler_config(folder), name), clip, Vae(vae, name)



# ---------------------------------------------------------------- single-file checkpoints

def transformer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """SD3Transformer2DModel arguments read from original-layout (MMDiT) tensor shapes."""
    patch = state["x_embedder.proj.weight"]
    hidden, in_channels, patch_size = patch.shape[0], patch.shape[1], patch.shape[2]
    head_channels = config()["transformer"]["head_channels"]
    layers = block_indices(state, "joint_blocks.")
    context = state["context_embedder.weight"]
    return {
        "sample_size": 128, "patch_size": patch_size, "in_channels": in_channels, "num_layers": len(layers),
        "attention_head_dim": head_channels, "num_attention_heads": hidden // head_channels,
        "joint_attention_dim": context.shape[1], "caption_projection_dim": context.shape[0],
        "pooled_projection_dim": state["y_embedder.mlp.0.weight"].shape[1],
        "out_channels": state["final_layer.linear.weight"].shape[0] // (patch_size * patch_size),
        "pos_embed_max_size": math.isqrt(state["pos_embed"].shape[1]),
        "dual_attention_layers": tuple(i for i in layers if f"joint_blocks.{i}.x_block.attn2.qkv.weight" in state),
        "qk_norm": "rms_norm" if "joint_blocks.0.x_block.attn.ln_q.weight" in state else None,
    }


def build_transformer(state: dict[str, torch.Tensor]) -> Any:
    """The MMDiT of an SD3 file, its tensors moved out of `state`: diffusers' converter then holds the only
    references to them and pops them as it goes, so each fused q/k/v is freed once its parts are copied, instead of
    the whole model's staying beside the copies (1.17x of the model's bytes at peak for SD3.5 Large before)."""
    from diffusers import SD3Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    keys = [key for key in state
            if key.startswith(TRANSFORMER_PREFIX) or key in ("pos_embed",) or key.startswith("joint_blocks.")]
    weights = {key.removeprefix(TRANSFORMER_PREFIX): state.pop(key) for key in keys}
    settings = transformer_config(weights)
    with torch.device("meta"):
        transformer = SD3Transformer2DModel(**settings)
    converted = convert_sd3_transformer_checkpoint_to_diffusers(weights)
    return load_strict(transformer, converted, "SD3 transformer").eval()


def _clip_from_state(state: Mapping[str, torch.Tensor], prefix: str, settings: Mapping[str, Any]) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    text = prefix + "text_model."
    embedding = state[text + "embeddings.token_embedding.weight"]
    vocab_size, hidden_size = embedding.shape
    projection = state.get(prefix + "text_projection.weight")
    with empty_weights():
        model = CLIPTextModelWithProjection(CLIPTextConfig(
            hidden_act=settings["hidden_act"], layer_norm_eps=settings["layer_norm_eps"], vocab_size=vocab_size,
            hidden_size=hidden_size, intermediate_size=state[text + "encoder.layers.0.mlp.fc1.weight"].shape[0],
            num_hidden_layers=len(block_indices(state, text + "encoder.layers.")),
            num_attention_heads=max(1, hidden_size // settings["head_channels"]),
            max_position_embeddings=state[text + "embeddings.position_embedding.weight"].shape[0],
            projection_dim=hidden_size if projection is None else projection.shape[0],
            bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1))
    weights = {key[len(prefix):]: tensor for key, tensor in state.items() if key.startswith(prefix)}
    if projection is None:  # SD3 files may leave CLIP-L's projection out: diffusers uses the identity
        weights["text_projection.weight"] = torch.eye(hidden_size)
    return load_strict(model, fit_keys(weights, model), f"SD3 text encoder {prefix}").eval()


def load_checkpoint(state: dict[str, torch.Tensor], name: str, place: Place) -> Sd3Triple:
    """MODEL, CLIP (None when the file has no CLIP-L/CLIP-G: use TripleCLIPLoader) and VAE of an SD3 file (the
    transformer's tensors are moved out of `state`)."""
    family = config()
    try:
        transformer = place(build_transformer(state))
        vae_settings = ldm.vae_config(state, ldm.CHECKPOINT_PREFIX, family["vae"]["scaling_factor"],
                                      family["vae"]["sample_size"])
        vae_settings["shift_factor"] = family["vae"]["shift_factor"]
        vae = place(ldm.build_vae(state, vae_settings))
        clip = None
        if CLIP_L + "text_model.embeddings.token_embedding.weight" in state and \
                CLIP_G + "text_model.embeddings.token_embedding.weight" in state:
            clip_l = place(_clip_from_state(state, CLIP_L, family["text_encoder"]))
            clip_g = place(_clip_from_state(state, CLIP_G, family["text_encoder_2"]))
            t5 = t5_tokenizer = None
            if T5 + "shared.weight" in state:
                t5_state = {key[len(T5):]: tensor for key, tensor in state.items() if key.startswith(T5)}
                t5 = place(t5_files.build_t5_encoder(t5_state, "ckpt_name"))
                t5_tokenizer = t5_files.t5_tokenizer_for_vocab(t5.config.vocab_size, "ckpt_name")
            clip = make_clip(clip_l, clip_tokenizer(clip_l.config.vocab_size, family["tokenizer"]["pad_token"]),
                             clip_g, clip_tokenizer(clip_g.config.vocab_size, family["tokenizer_2"]["pad_token"]),
                             t5, t5_tokenizer, name)
    except (KeyError, IndexError, ZeroDivisionError) as error:
        raise ValueError(f"SD3 checkpoint tensors incomplete or mis-shaped ({error})") from error
    return sd3_model(transformer, family["scheduler"], name), clip, Vae(vae, name)


# ---------------------------------------------------------------- separate text encoder files (CLIP loaders)

def load_text_encoders(models: "ModelManager", paths: Mapping[str, Path]) -> Sd3Clip:
    """SD3's CLIP from one to three text encoder files (input name -> path), any of CLIP-L, CLIP-G and T5 in any
    order (CLIPLoader, DualCLIPLoader and TripleCLIPLoader with type sd3; absent encoders give ComfyUI's zeros).
    Each file is cached by the model manager on its own; T5 is read on the first encode."""
    family = config()
    headers = {input_name: text_encoder_files.read_header(path, input_name) for input_name, path in paths.items()}
    roles = text_encoder_files.file_roles(headers)
    by_role: dict[str, str] = {}
    for input_name, role in roles.items():
        if role not in (text_encoder_files.CLIP_L, text_encoder_files.CLIP_G, text_encoder_files.T5) \
                or role in by_role:
            raise ValueError(f"{input_name}: SD3 takes at most one CLIP-L, one CLIP-G and one T5 file; found "
                             f"{text_encoder_files.describe_roles(roles)}")
        by_role[role] = input_name
    settings = {text_encoder_files.CLIP_L: "text_encoder", text_encoder_files.CLIP_G: "text_encoder_2"}
    pads = {text_encoder_files.CLIP_L: "tokenizer", text_encoder_files.CLIP_G: "tokenizer_2"}
    encoders: dict[str, tuple[Any, Any]] = {}
    for role, input_name in by_role.items():
        if role == text_encoder_files.T5:
            part = text_encoder_files.load_part(models, paths[input_name], input_name, role)
            encoders[role] = part.model, t5_files.t5_tokenizer_for_vocab(part.vocab_size, input_name)
        else:
            part = text_encoder_files.load_part(models, paths[input_name], input_name, role, family[settings[role]])
            encoders[role] = part.model, clip_tokenizer(part.vocab_size, family[pads[role]]["pad_token"])
    clip_l, tokenizer_l = encoders.get(text_encoder_files.CLIP_L, (None, None))
    clip_g, tokenizer_g = encoders.get(text_encoder_files.CLIP_G, (None, None))
    t5, t5_tokenizer = encoders.get(text_encoder_files.T5, (None, None))
    name = "+".join(Path(path).name for path in paths.values())
    return make_clip(clip_l, tokenizer_l, clip_g, tokenizer_g, t5, t5_tokenizer, name)
