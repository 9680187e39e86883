"""Stable Diffusion 3 / 3.5 (MMDiT) read into diffusers/transformers modules offline: diffusers folders, single-file
checkpoints (transformer, text encoders and VAE in one file, as published), and the CLIP-L/CLIP-G/T5 files
TripleCLIPLoader combines. Architectures are read from tensor shapes with the family facts in `config.json` beside
this module; T5 is read only when a prompt is first encoded (`diffusion.lazy_module`). Knows nothing of nodes or
the node environment.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from diffusion import ldm
from diffusion.components import DiffusionModel, Vae
from diffusion.contracts import Place
from diffusion.encoders import t5 as t5_files
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
    read_safetensors,
)
from diffusion.files import scheduler_config as folder_scheduler_config
from diffusion.lazy_module import LazyModule

if TYPE_CHECKING:
    from diffusion.manager import ModelManager

FAMILY = "sd3"
CLIP_TYPES = ("sd3",)  # TripleCLIPLoader's files, under ComfyUI's CLIP loader type name
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


def build_transformer(state: Mapping[str, torch.Tensor]) -> Any:
    from diffusers import SD3Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    weights = {key.removeprefix(TRANSFORMER_PREFIX): tensor for key, tensor in state.items()
               if key.startswith(TRANSFORMER_PREFIX) or key in ("pos_embed",) or key.startswith("joint_blocks.")}
    settings = transformer_config(weights)
    with torch.device("meta"):
        transformer = SD3Transformer2DModel(**settings)
    converted = convert_sd3_transformer_checkpoint_to_diffusers(dict(weights))
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


def load_checkpoint(state: Mapping[str, torch.Tensor], name: str, place: Place) -> Sd3Triple:
    """MODEL, CLIP (None when the file has no CLIP-L/CLIP-G: use TripleCLIPLoader) and VAE of an SD3 file."""
    family = config()
    try:
        transformer = place(build_transformer(state))
        vae_settings = ldm.vae_config(state, ldm.CHECKPOINT_PREFIX, family["vae"]["scaling_factor"])
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


# ---------------------------------------------------------------- separate text encoder files (TripleCLIPLoader)

def _clip_width(state: Mapping[str, torch.Tensor]) -> int:
    for prefix in ("text_model.", ""):
        key = prefix + "embeddings.token_embedding.weight"
        if key in state:
            return int(state[key].shape[1])
    raise KeyError("embeddings.token_embedding.weight")


def clip_from_files(states: Mapping[str, Mapping[str, torch.Tensor]], name: str, place: Place,
                    reread: Callable[[str], Mapping[str, torch.Tensor]] | None = None) -> Sd3Clip:
    """SD3's CLIP from separate files (input name -> tensors, transformers key layout): two CLIPs and optionally
    one T5, in any order. T5 is recognised by its keys; of the CLIPs the narrower is CLIP-L (the first given when
    they are equally wide). With `reread` (an input name -> that file's tensors read again) T5 is built only when
    a prompt is first encoded, and can be freed after encoding."""
    family = config()
    t5_inputs = [input_name for input_name, state in states.items() if t5_files.is_t5_encoder(state)]
    clip_inputs = [input_name for input_name in states if input_name not in t5_inputs]
    if len(clip_inputs) != 2 or len(t5_inputs) > 1:
        raise ValueError(f"SD3 needs a CLIP-L and a CLIP-G file (and optionally one T5); found CLIP files "
                         f"{clip_inputs or 'none'} and T5 files {t5_inputs or 'none'}")
    clip_inputs.sort(key=lambda input_name: _clip_width(states[input_name]))
    encoders = []
    for input_name, role, pad in zip(clip_inputs, ("text_encoder", "text_encoder_2"), ("tokenizer", "tokenizer_2")):
        state = states[input_name]
        prefix = "" if any(key.startswith("text_model.") for key in state) else None
        if prefix is None:
            state = {"text_model." + key if not key.startswith("text_projection") else key: tensor
                     for key, tensor in state.items()}
        try:
            model = place(_clip_from_state(state, "", family[role]))
        except (KeyError, IndexError) as error:
            raise ValueError(f"{input_name}: CLIP text encoder tensors incomplete ({error})") from error
        encoders.append((model, clip_tokenizer(model.config.vocab_size, family[pad]["pad_token"])))
    t5 = t5_tokenizer = None
    if t5_inputs:
        t5_input = t5_inputs[0]
        t5_tokenizer = t5_files.t5_tokenizer_for_vocab(t5_files.t5_vocab_size(states[t5_input]), t5_input)
        if reread is None:
            t5 = place(t5_files.build_t5_encoder(states[t5_input], t5_input))
        else:
            t5 = LazyModule(lambda: place(t5_files.build_t5_encoder(reread(t5_input), t5_input)), t5_input)
    (clip_l, tokenizer_l), (clip_g, tokenizer_g) = encoders
    return make_clip(clip_l, tokenizer_l, clip_g, tokenizer_g, t5, t5_tokenizer, name)


def load_text_encoders(models: "ModelManager", paths: Mapping[str, Path]) -> Sd3Clip:
    """SD3's CLIP from text encoder files (input name -> path: CLIP-L, CLIP-G and optionally T5, in any order),
    cached by the model manager as one value under the first file; T5 is read on the first encode."""
    first = next(iter(paths))

    def load() -> Sd3Clip:
        states = {input_name: read_safetensors(path, input_name) for input_name, path in paths.items()}
        name = "+".join(Path(path).name for path in paths.values())
        return clip_from_files(states, name, models.place,
                               reread=lambda input_name: read_safetensors(paths[input_name], input_name))

    return models.cached("sd3-clip", paths[first], first, load)
