"""Chroma model files read into diffusers/transformers modules, offline: a transformer alone (diffusers keys, or the
original layout converted like FLUX's), its T5 file (CLIPLoader type chroma), and diffusers ChromaPipeline folders.
The VAE is FLUX's (`ae.safetensors`, VAELoader). What a file holds is read from its tensor names and shapes; the
scheduler and latent statistics are in `config.json` beside this module. Knows nothing of nodes."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from diffusion import quantized
from diffusion.components import DiffusionModel, Vae
from diffusion.contracts import Place
from diffusion.families.chroma.detection import PROBE
from diffusion.families.chroma.sampling import CHROMA_SAMPLING
from diffusion.families.chroma.text_encoding import ChromaClip
from diffusion.families.flux.loading import bfl_to_diffusers, flux_rope_axes, text_encoder_file
from diffusion.files import block_indices, config_beside, empty_weights, public_config, taken
from diffusion.files import scheduler_config as folder_scheduler_config
from diffusion.lazy_module import LazyModule

if TYPE_CHECKING:
    from diffusion.manager import ModelManager

FAMILY = "chroma"
CLIP_TYPES = ("chroma",)  # CLIPLoader's type for Chroma's T5 file


def config() -> dict[str, Any]:
    return config_beside(__file__)


def chroma_transformer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """ChromaTransformer2DModel arguments read from diffusers-layout tensor shapes."""
    inner, in_channels = state["x_embedder.weight"].shape
    head_dim = state["transformer_blocks.0.attn.norm_q.weight"].shape[0]
    hidden, approximator_channels = state["distilled_guidance_layer.in_proj.weight"].shape
    return dict(patch_size=1, in_channels=in_channels, out_channels=state["proj_out.weight"].shape[0],
                num_layers=len(block_indices(state, "transformer_blocks.")),
                num_single_layers=len(block_indices(state, "single_transformer_blocks.")),
                attention_head_dim=head_dim, num_attention_heads=inner // head_dim,
                joint_attention_dim=state["context_embedder.weight"].shape[1], axes_dims_rope=flux_rope_axes(head_dim),
                approximator_num_channels=approximator_channels, approximator_hidden_dim=hidden,
                approximator_layers=len(block_indices(state, "distilled_guidance_layer.layers.")))


def build_chroma_transformer(state: Mapping[str, torch.Tensor], input_name: str) -> Any:
    from diffusers import ChromaTransformer2DModel

    try:
        weights = state if PROBE in state and "x_embedder.weight" in state else bfl_to_diffusers(state)
        with empty_weights():  # parameters only: the approximator's input projection is a computed buffer
            transformer = ChromaTransformer2DModel(**chroma_transformer_config(quantized.shape_view(weights)))
        quantized.load_quantized(transformer, weights)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: Chroma transformer tensors incomplete or mis-shaped ({error})") from error
    return transformer.eval()


def chroma_model(transformer: Any, name: str, scheduler_config: Mapping[str, Any] | None = None) -> DiffusionModel:
    """MODEL of a Chroma transformer: FLUX's dynamic-shifting schedule (ComfyUI samples Chroma as FLUX)."""
    settings = public_config(scheduler_config or config()["scheduler"])
    return DiffusionModel(transformer, settings, name, FAMILY, CHROMA_SAMPLING)


def load_diffusion_model(state: dict[str, torch.Tensor], name: str, place: Place) -> DiffusionModel:
    """MODEL of a Chroma transformer file (UNETLoader)."""
    return chroma_model(place(build_chroma_transformer(taken(state), "unet_name")), name)


def load_text_encoders(models: "ModelManager", paths: Mapping[str, Path]) -> ChromaClip:
    """Chroma's CLIP from its one T5 file (CLIPLoader type chroma); the encoder is read on the first encode."""
    (input_name, path), *others = paths.items()
    if others:
        raise ValueError(f"type chroma takes one T5 file; got {len(paths)}")
    encoder = text_encoder_file(models, path, input_name)
    if encoder.kind != "t5":
        raise ValueError(f"{input_name}: type chroma needs a T5-XXL encoder file; {Path(path).name} holds a "
                         f"{encoder.kind.upper()} encoder")
    return ChromaClip(encoder.tokenizer, encoder.model, Path(path).name)


def load_folder(folder: Path, name: str, place: Place) -> tuple[DiffusionModel, ChromaClip, Vae]:
    """MODEL, CLIP and VAE from a diffusers ChromaPipeline folder."""
    from diffusers import AutoencoderKL, ChromaTransformer2DModel
    from transformers import T5EncoderModel, T5TokenizerFast

    folder = Path(folder)
    transformer = ChromaTransformer2DModel.from_pretrained(folder, subfolder="transformer", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
    t5_model = LazyModule(lambda: place(T5EncoderModel.from_pretrained(  # read on the first encode
        folder, subfolder="text_encoder", local_files_only=True)).eval(), f"{name}/text_encoder")
    tokenizer = T5TokenizerFast.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    return (chroma_model(place(transformer).eval(), name, folder_scheduler_config(folder)),
            ChromaClip(tokenizer, t5_model, name), Vae(place(vae).eval(), name))
