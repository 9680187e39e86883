"""Lumina 2 model files read into diffusers/transformers modules, offline: the transformer alone (ComfyUI's original
layout or diffusers keys), its Gemma 2 text encoder file (CLIPLoader type lumina2), and diffusers Lumina2Pipeline
folders. The VAE is FLUX's (`ae.safetensors`, VAELoader). What a file holds is read from its tensor names and
shapes; the scheduler and latent statistics are in `config.json` beside this module. Knows nothing of nodes."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from diffusion import quantized, registry
from diffusion.components import DiffusionModel, Vae, sigma_timestep_flow_model
from diffusion.contracts import Place
from diffusion.encoders.spiece import SPIECE_TENSOR, gemma_tokenizer
from diffusion.families.lumina2.detection import DIFFUSERS_PROBE, PREFIX, is_gemma2_encoder
from diffusion.families.lumina2.sampling import LUMINA2_SAMPLING
from diffusion.families.lumina2.text_encoding import Lumina2Clip, gemma_tokenizer_for_vocab
from diffusion.files import (
    block_indices,
    config_beside,
    embedding_rows,
    empty_weights,
    read_safetensors,
    read_weights,
    safetensors_keys,
    safetensors_shapes,
    taken,
)
from diffusion.files import scheduler_config as folder_scheduler_config
from diffusion.lazy_module import LazyModule

if TYPE_CHECKING:
    from diffusion.manager import ModelManager

FAMILY = "lumina2"
CLIP_TYPES = ("lumina2",)  # a Qwen3 file under this type is Z-Image's (diffusion.loading.FILE_ROLE_FAMILIES)
GEMMA2_HEAD_DIM = 256  # Gemma 2's, whatever its width (the tensors cannot tell heads from their size)


def config() -> dict[str, Any]:
    return config_beside(__file__)


def original_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original layout in diffusers' names, at any size: the fused q/k/v split by the head counts the shapes
    tell (diffusers' converter assumes Lumina-Image-2.0's 2304/768), then diffusers' renames."""
    from diffusers.loaders.single_file_utils import convert_lumina2_to_diffusers

    weights = taken(state, PREFIX)  # the file's tensors move into the model (see files.taken)
    width = weights["x_embedder.weight"].shape[0]
    split: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        if key.endswith(".attention.qkv.weight"):
            key_value = (value.shape[0] - width) // 2
            for name, part in zip(("to_q", "to_k", "to_v"), value.split([width, key_value, key_value])):
                split[key.replace(".qkv.", f".{name}.")] = part
        else:
            split[key] = value
    return convert_lumina2_to_diffusers(split)


def lumina2_transformer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Lumina2Transformer2DModel arguments read from diffusers-layout tensor shapes (2x2 patches; the rotary axes in
    Lumina 2's equal thirds; the feed-forward width as the weights have it)."""
    width, caption_width = state[DIFFUSERS_PROBE].shape
    head_dim = state["layers.0.attn.norm_q.weight"].shape[0]
    hidden = state["layers.0.feed_forward.linear_1.weight"].shape[0]
    return dict(patch_size=2, in_channels=state["x_embedder.weight"].shape[1] // 4,
                out_channels=state["norm_out.linear_2.weight"].shape[0] // 4, hidden_size=width,
                num_layers=len(block_indices(state, "layers.")),
                num_refiner_layers=len(block_indices(state, "noise_refiner.")),
                num_attention_heads=width // head_dim,
                num_kv_heads=state["layers.0.attn.to_k.weight"].shape[0] // head_dim,
                multiple_of=hidden, ffn_dim_multiplier=None, axes_dim_rope=(head_dim // 3,) * 3,
                cap_feat_dim=caption_width)


def build_lumina2_transformer(state: Mapping[str, torch.Tensor], input_name: str) -> Any:
    from diffusers import Lumina2Transformer2DModel

    try:
        weights = taken(state) if DIFFUSERS_PROBE in state else original_to_diffusers(state)
        weights.pop("norm_final.weight", None)
        with empty_weights():
            transformer = Lumina2Transformer2DModel(**lumina2_transformer_config(quantized.shape_view(weights)))
        quantized.load_quantized(transformer, weights)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: Lumina 2 transformer tensors incomplete or mis-shaped ({error})") from error
    return transformer.eval()


def lumina2_model(transformer: Any, name: str, scheduler_config: Mapping[str, Any] | None = None) -> DiffusionModel:
    """MODEL of a Lumina 2 transformer: shifted flow whose timesteps are sigmas (ComfyUI's AuraFlow-style
    sampling)."""
    return sigma_timestep_flow_model(transformer, scheduler_config or config()["scheduler"], name, FAMILY,
                                     LUMINA2_SAMPLING)


def load_diffusion_model(state: Mapping[str, torch.Tensor], name: str, place: Place) -> DiffusionModel:
    """MODEL of a Lumina 2 transformer file (UNETLoader)."""
    return lumina2_model(place(build_lumina2_transformer(state, "unet_name")), name)


def build_gemma2_encoder(state: Mapping[str, torch.Tensor], input_name: str) -> Any:
    """A transformers Gemma2Model rebuilt from a Gemma 2 file's shapes (`model.*` keys as published, or bare)."""
    from transformers import Gemma2Config, Gemma2Model

    weights = {key.removeprefix("model."): value for key, value in state.items()
               if not key.startswith("lm_head.") and key != SPIECE_TENSOR}
    try:
        vocab, width = weights["embed_tokens.weight"].shape
        settings = Gemma2Config(
            vocab_size=vocab, hidden_size=width, head_dim=GEMMA2_HEAD_DIM,
            num_attention_heads=weights["layers.0.self_attn.q_proj.weight"].shape[0] // GEMMA2_HEAD_DIM,
            num_key_value_heads=weights["layers.0.self_attn.k_proj.weight"].shape[0] // GEMMA2_HEAD_DIM,
            intermediate_size=weights["layers.0.mlp.gate_proj.weight"].shape[0],
            num_hidden_layers=len(block_indices(weights, "layers.")))
        with empty_weights():
            model = Gemma2Model(settings)
        quantized.load_quantized(model, weights)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: Gemma 2 text encoder tensors incomplete or mis-shaped ({error})") from error
    return model.eval()


def load_text_encoders(models: "ModelManager", paths: Mapping[str, Path]) -> Lumina2Clip:
    """Lumina 2's CLIP from its Gemma 2 file (CLIPLoader type lumina2); the encoder is read on the first encode."""
    (input_name, path), *others = paths.items()
    if others:
        raise ValueError(f"type lumina2 takes one text encoder file; got {len(paths)}")

    def read() -> Lumina2Clip:
        keys = safetensors_keys(path, input_name)
        if not is_gemma2_encoder(keys):
            raise ValueError(f"{input_name}: type lumina2 needs Lumina 2's Gemma 2 file or Z-Image's Qwen3 file; "
                             f"{Path(path).name} holds {registry.describe_other_file(keys)}")
        if SPIECE_TENSOR in keys:
            model_proto = read_safetensors(path, input_name, keep=lambda key: key == SPIECE_TENSOR)[SPIECE_TENSOR]
            tokenizer = gemma_tokenizer(model_proto, config()["max_length"], input_name)
        else:
            tokenizer = gemma_tokenizer_for_vocab(embedding_rows(safetensors_shapes(path, input_name)), input_name)
        model = LazyModule(lambda: models.place(build_gemma2_encoder(
            read_weights(path, input_name, models.keeps_fp8_weights), input_name)), input_name)
        return Lumina2Clip(tokenizer, model, Path(path).name)

    return models.cached("lumina2-text-encoder", path, input_name, read)  # its own kind: the value is a CLIP


def load_folder(folder: Path, name: str, place: Place) -> tuple[DiffusionModel, Lumina2Clip, Vae]:
    """MODEL, CLIP and VAE from a diffusers Lumina2Pipeline folder (its tokenizer comes with it)."""
    from diffusers import AutoencoderKL, Lumina2Transformer2DModel
    from transformers import AutoModel, AutoTokenizer

    folder = Path(folder)
    transformer = Lumina2Transformer2DModel.from_pretrained(folder, subfolder="transformer", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
    text_encoder = LazyModule(lambda: place(AutoModel.from_pretrained(  # read on the first encode
        folder, subfolder="text_encoder", local_files_only=True)).eval(), f"{name}/text_encoder")
    tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    return (lumina2_model(place(transformer).eval(), name, folder_scheduler_config(folder)),
            Lumina2Clip(tokenizer, text_encoder, name), Vae(place(vae).eval(), name))
