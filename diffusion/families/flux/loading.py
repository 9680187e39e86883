"""FLUX.1 model files read into diffusers/transformers modules, offline: a diffusers `FluxPipeline` folder, a
transformer file alone (diffusers keys, or BFL's original layout through diffusers' converter), and the
CLIP-L/T5 encoder files that DualCLIPLoader combines. What a file holds is read from its tensor names and
shapes, never asked of the user; the facts files cannot tell (scheduler, latent statistics) are in `config.json`
beside this module. Knows nothing of nodes or the node environment.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from diffusion import ldm, quantized
from diffusion.components import DiffusionModel, Vae
from diffusion.contracts import Place
from diffusion.encoders.clip_tokenizer import clip_tokenizer
from diffusion.encoders.t5 import build_t5_encoder, is_t5_encoder, t5_tokenizer_for_vocab, t5_vocab_size
from diffusion.families.flux.detection import (
    BFL_PREFIX,
    CLIP_L,
    DIFFUSERS_PROBE,
    T5,
    checkpoint_vae_prefix,
    is_bfl_layout,
)
from diffusion.families.flux.sampling import FLUX_SAMPLING, SCHNELL_SCHEDULER_CHANGES, flux_model_sampling
from diffusion.families.flux.text_encoding import FluxClip
from diffusion.files import (
    block_indices,
    config_beside,
    empty_weights,
    public_config,
    read_safetensors,
    read_weights,
    safetensors_shapes,
    taken,
)
from diffusion.files import scheduler_config as folder_scheduler_config
from diffusion.lazy_module import LazyModule

if TYPE_CHECKING:
    from diffusion.manager import ModelManager

FAMILY = "flux"
CLIP_TYPES = ("flux",)  # DualCLIPLoader's type for a CLIP-L and a T5 file


def config() -> dict[str, Any]:
    return config_beside(__file__)


def flux_rope_axes(head_dim: int) -> tuple[int, int, int]:
    """FLUX.1 splits each attention head's rotary dims as 16/56/56 of 128; the same proportions for any width."""
    return head_dim // 8, head_dim * 7 // 16, head_dim * 7 // 16


def flux_transformer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """FluxTransformer2DModel arguments read from diffusers-layout tensor shapes."""
    inner, in_channels = state[DIFFUSERS_PROBE].shape
    head_dim = state["transformer_blocks.0.attn.norm_q.weight"].shape[0]
    return dict(patch_size=1, in_channels=in_channels, out_channels=state["proj_out.weight"].shape[0],
                num_layers=len(block_indices(state, "transformer_blocks.")),
                num_single_layers=len(block_indices(state, "single_transformer_blocks.")),
                attention_head_dim=head_dim, num_attention_heads=inner // head_dim,
                joint_attention_dim=state["context_embedder.weight"].shape[1],
                pooled_projection_dim=state["time_text_embed.text_embedder.linear_1.weight"].shape[1],
                guidance_embeds="time_text_embed.guidance_embedder.linear_1.weight" in state,
                axes_dims_rope=flux_rope_axes(head_dim))


# BFL's original names -> diffusers' (FluxTransformer2DModel), outside and inside the blocks
_BFL_RENAMES = {"img_in": "x_embedder", "txt_in": "context_embedder", "final_layer.linear": "proj_out",
                "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
                "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
                "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
                "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
                "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
                "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2"}
_BFL_DOUBLE = {"img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear", "img_attn.proj": "attn.to_out.0",
               "txt_attn.proj": "attn.to_add_out", "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2",
               "txt_mlp.0": "ff_context.net.0.proj", "txt_mlp.2": "ff_context.net.2",
               "img_attn.norm.query_norm": "attn.norm_q", "img_attn.norm.key_norm": "attn.norm_k",
               "txt_attn.norm.query_norm": "attn.norm_added_q", "txt_attn.norm.key_norm": "attn.norm_added_k"}
_BFL_QKV = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
            "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}
_BFL_SINGLE = {"modulation.lin": "norm.linear", "linear2": "proj_out", "norm.query_norm": "attn.norm_q",
               "norm.key_norm": "attn.norm_k"}


def bfl_to_diffusers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A FLUX transformer in Black Forest Labs' original layout (released files, ComfyUI's checkpoints under
    `model.diffusion_model.`) with diffusers' names, at any width: fused q/k/v split, the single blocks' first
    linear split into q, k, v and the MLP, RMSNorm `scale` as `weight`, the final modulation's halves swapped
    (BFL stores shift before scale); Chroma's approximator (`distilled_guidance_layer`) renamed too. diffusers'
    own converters assume FLUX.1's width of 3072."""
    prefixed = any(key.startswith(BFL_PREFIX) for key in state)
    weights = {key.removeprefix(BFL_PREFIX): value for key, value in state.items()
               if not prefixed or key.startswith(BFL_PREFIX)}
    width = weights["img_in.weight"].shape[0]
    converted: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        module, _, kind = key.rpartition(".")
        kind = "weight" if kind == "scale" else kind
        block, _, rest = module.partition(".")
        index, _, inner = rest.partition(".")
        if module in _BFL_RENAMES:
            converted[f"{_BFL_RENAMES[module]}.{kind}"] = value
        elif block == "distilled_guidance_layer":  # Chroma's modulation approximator
            renamed = module.replace(".in_layer", ".linear_1").replace(".out_layer", ".linear_2")
            converted[f"{renamed}.{kind}"] = value
        elif module == "final_layer.adaLN_modulation.1":
            shift, scale = value.chunk(2)
            converted[f"norm_out.linear.{kind}"] = torch.cat([scale, shift])
        elif block == "double_blocks" and inner in _BFL_QKV:
            for name, part in zip(_BFL_QKV[inner], value.chunk(3)):
                converted[f"transformer_blocks.{index}.{name}.{kind}"] = part
        elif block == "double_blocks" and inner in _BFL_DOUBLE:
            converted[f"transformer_blocks.{index}.{_BFL_DOUBLE[inner]}.{kind}"] = value
        elif block == "single_blocks" and inner == "linear1":
            parts = value.split([width, width, width, value.shape[0] - 3 * width])
            for name, part in zip(("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), parts):
                converted[f"single_transformer_blocks.{index}.{name}.{kind}"] = part
        elif block == "single_blocks" and inner in _BFL_SINGLE:
            converted[f"single_transformer_blocks.{index}.{_BFL_SINGLE[inner]}.{kind}"] = value
        else:
            raise KeyError(f"unexpected tensor {key!r} in a BFL-layout FLUX transformer")
    return converted


def _diffusers_layout(state: Mapping[str, torch.Tensor], input_name: str) -> Mapping[str, torch.Tensor]:
    if DIFFUSERS_PROBE in state:
        return state
    if is_bfl_layout(state):
        return bfl_to_diffusers(state)
    raise ValueError(f"{input_name}: not a FLUX transformer")


def build_flux_transformer(state: Mapping[str, torch.Tensor], input_name: str) -> Any:
    from diffusers import FluxTransformer2DModel

    try:
        weights = _diffusers_layout(state, input_name)
        config = flux_transformer_config(quantized.shape_view(weights))  # a GGUF file's quantized tensors: byte shapes
        with torch.device("meta"):
            transformer = FluxTransformer2DModel(**config)
        quantized.load_quantized(transformer, weights)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: FLUX transformer tensors incomplete or mis-shaped ({error})") from error
    return transformer.eval()


def schnell_scheduler_config() -> dict[str, Any]:
    """FLUX.1-schnell's scheduler config (FLUX.1-dev's, `config.json`, without dynamic shifting)."""
    return {**config()["scheduler"], **SCHNELL_SCHEDULER_CHANGES}


def flux_model(transformer: Any, name: str, scheduler_config: Mapping[str, Any] | None = None) -> DiffusionModel:
    """MODEL of a FLUX transformer. Without a scheduler config (a transformer file) it is told by the transformer,
    as ComfyUI tells FLUX.1-dev from schnell: FLUX.1-dev's with a guidance embedding, FLUX.1-schnell's without.
    The sigma core samples a config without dynamic shifting (schnell's) with timesteps that are sigmas
    (`flux_model_sampling`), where the config alone would give SD3's timesteps (sigma x 1000)."""
    if scheduler_config is None:
        guided = bool(transformer.config.guidance_embeds)
        scheduler_config = config()["scheduler"] if guided else schnell_scheduler_config()
    settings = public_config(scheduler_config)
    # a dynamic-shifting config (FLUX.1-dev's) already gives FLUX's schedule (`DiffusionModel.model_sampling`)
    schedule = None if settings.get("use_dynamic_shifting", False) else flux_model_sampling(settings)
    return DiffusionModel(transformer, settings, name, FAMILY, FLUX_SAMPLING, schedule_override=schedule)


def _under(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def load_checkpoint(state: Mapping[str, torch.Tensor], name: str,
                    place: Place) -> tuple[DiffusionModel, FluxClip | None, Vae]:
    """MODEL, CLIP (None when the file holds no CLIP-L and T5: load them with DualCLIPLoader) and VAE of an
    all-in-one FLUX checkpoint (ComfyUI's layout, fp8 or not), as CheckpointLoaderSimple reads it."""
    family = config()
    transformer = place(build_flux_transformer(state, "ckpt_name"))
    vae_state = _under(state, checkpoint_vae_prefix(state.keys()) or "vae.")
    try:
        vae_settings = ldm.vae_config(vae_state, "", family["vae"]["scaling_factor"])
        vae_settings["shift_factor"] = family["vae"]["shift_factor"]
        vae = place(ldm.build_vae(vae_state, vae_settings))
    except (KeyError, IndexError) as error:
        raise ValueError(f"FLUX checkpoint VAE tensors incomplete ({error})") from error
    clip = None
    clip_state, t5_state = _under(state, CLIP_L), _under(state, T5)
    if clip_state and t5_state:
        clip_l = build_clip_text_model(clip_state, "ckpt_name")
        t5 = build_t5_encoder(t5_state, "ckpt_name")
        clip = FluxClip(clip_tokenizer(clip_l.config.vocab_size), place(clip_l),
                        t5_tokenizer_for_vocab(t5.config.vocab_size, "ckpt_name"), place(t5), name)
    return flux_model(transformer, name), clip, Vae(vae, name)


def load_diffusion_model(state: dict[str, torch.Tensor], name: str, place: Place) -> DiffusionModel:
    """MODEL of a FLUX transformer file (UNETLoader), with FLUX.1-dev's scheduler config, or FLUX.1-schnell's for
    a transformer without a guidance embedding."""
    return flux_model(place(build_flux_transformer(taken(state), "unet_name")), name)


def _clip_weights(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """A CLIP text model's tensors with the `text_model.` prefix of published files removed (transformers 5 keys)."""
    for prefix in ("text_model.", ""):
        if prefix + "embeddings.token_embedding.weight" in state:
            return {key.removeprefix(prefix): value for key, value in state.items()
                    if key.startswith(prefix) and not key.endswith("position_ids")}
    return None


def build_clip_text_model(state: Mapping[str, torch.Tensor], input_name: str) -> Any:
    """A transformers CLIPTextModel (CLIP-L style: quick-GELU, 64-channel heads) rebuilt from its shapes."""
    from transformers import CLIPTextConfig, CLIPTextModel

    weights = _clip_weights(state)
    if weights is None:
        raise ValueError(f"{input_name}: not a CLIP text encoder file")
    vocab_size, width = weights["embeddings.token_embedding.weight"].shape
    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=width, intermediate_size=weights["encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=len(block_indices(weights, "encoder.layers.")), num_attention_heads=max(1, width // 64),
        max_position_embeddings=weights["embeddings.position_embedding.weight"].shape[0], hidden_act="quick_gelu",
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    with empty_weights():
        model = CLIPTextModel(config)
    weights = {key: value for key, value in weights.items() if key in model.state_dict()}
    try:
        quantized.load_quantized(model, weights)
    except RuntimeError as error:
        raise ValueError(f"{input_name}: CLIP text encoder tensors do not fit ({error})") from error
    return model.eval()


@dataclass(frozen=True)
class TextEncoderFile:
    """One text encoder read from a file: its kind ("clip" or "t5"), model and tokenizer."""

    kind: str
    model: Any
    tokenizer: Any


def text_encoder_file(models: "ModelManager", path: Path, input_name: str) -> TextEncoderFile:
    """The encoder a CLIP-L or T5 file holds, cached by the model manager per file. Which one, and a T5's token
    count, are read from the header; a T5 is read only when a prompt is first encoded (and can be freed after
    encoding, `LazyModule`), a CLIP at once."""
    def read() -> TextEncoderFile:
        shapes = safetensors_shapes(path, input_name)
        if is_t5_encoder(shapes):
            model = LazyModule(lambda: models.place(build_t5_encoder(
                read_weights(path, input_name, models.keeps_fp8_weights), input_name)), input_name)
            return TextEncoderFile("t5", model, t5_tokenizer_for_vocab(t5_vocab_size(shapes), input_name))
        state = read_safetensors(path, input_name)
        if _clip_weights(state) is None:
            raise ValueError(f"{input_name}: not a text encoder this engine knows (CLIP or T5 in the transformers "
                             "layout)")
        model = build_clip_text_model(state, input_name)
        return TextEncoderFile("clip", models.place(model), clip_tokenizer(model.config.vocab_size))

    return models.cached("text_encoder", path, input_name, read)


def flux_text_encoders(files: Mapping[str, TextEncoderFile], name: str) -> FluxClip:
    """FLUX's CLIP from two encoder files (input name -> encoder), one CLIP-L and one T5, in either order."""
    by_kind = {encoder.kind: encoder for encoder in files.values()}
    if sorted(encoder.kind for encoder in files.values()) != ["clip", "t5"]:
        found = ", ".join(f"{input_name}: {encoder.kind}" for input_name, encoder in files.items())
        raise ValueError(f"type flux needs one CLIP-L and one T5 encoder file; found {found}")
    clip, t5 = by_kind["clip"], by_kind["t5"]
    return FluxClip(clip.tokenizer, clip.model, t5.tokenizer, t5.model, name)


def load_folder(folder: Path, name: str, place: Place) -> tuple[DiffusionModel, FluxClip, Vae]:
    """MODEL, CLIP and VAE from a diffusers FluxPipeline folder (the model manager names the input in errors)."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    folder = Path(folder)
    transformer = FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
    clip_model = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True)
    t5_model = LazyModule(lambda: place(T5EncoderModel.from_pretrained(  # read on the first encode
        folder, subfolder="text_encoder_2", local_files_only=True)).eval(), f"{name}/text_encoder_2")
    clip = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    t5 = T5TokenizerFast.from_pretrained(folder, subfolder="tokenizer_2", local_files_only=True)
    return (flux_model(place(transformer).eval(), name, folder_scheduler_config(folder)),
            FluxClip(clip, place(clip_model).eval(), t5, t5_model, name),
            Vae(place(vae).eval(), name))


def load_text_encoders(models: "ModelManager", paths: Mapping[str, Path]) -> FluxClip:
    """FLUX's CLIP from two text encoder files (input name -> path: one CLIP-L and one T5, in either order), each
    cached by the model manager on its own; a T5 is read on the first encode."""
    files = {input_name: text_encoder_file(models, path, input_name) for input_name, path in paths.items()}
    return flux_text_encoders(files, "+".join(Path(path).name for path in paths.values()))
