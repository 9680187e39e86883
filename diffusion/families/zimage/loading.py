"""Z-Image model files read into diffusers/transformers modules, offline: the transformer alone (ComfyUI's original
layout through diffusers' converter, or diffusers keys), its Qwen3 text encoder file (CLIPLoader type lumina2, as
ComfyUI loads it: the loader sends a Qwen3 file here), and diffusers ZImagePipeline folders. The VAE is FLUX's
(`ae.safetensors`, VAELoader). What a file holds is read from its tensor names and shapes; the scheduler and
latent statistics are in `config.json` beside this module. Knows nothing of nodes."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from diffusion import quantized
from diffusion.components import DiffusionModel, Vae, sigma_timestep_flow_model
from diffusion.contracts import Place
from diffusion.families.zimage.detection import PREFIX, is_qwen3_encoder
from diffusion.families.zimage.sampling import ZIMAGE_SAMPLING
from diffusion.families.zimage.text_encoding import ZImageClip, qwen_tokenizer_for_vocab
from diffusion.files import (
    block_indices,
    config_beside,
    embedding_rows,
    empty_weights,
    read_weights,
    safetensors_shapes,
    taken,
)
from diffusion.files import scheduler_config as folder_scheduler_config
from diffusion.lazy_module import LazyModule

if TYPE_CHECKING:
    from diffusion.manager import ModelManager

FAMILY = "zimage"
# ComfyUI loads Z-Image's Qwen3 file as CLIPLoader type lumina2: that type is Lumina 2's, and a Qwen3 file under it
# comes here (diffusion.loading.FILE_ROLE_FAMILIES)
CLIP_TYPES: tuple[str, ...] = ()
DIFFUSERS_PROBE = "all_x_embedder.2-1.weight"


def config() -> dict[str, Any]:
    return config_beside(__file__)


def zimage_transformer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """ZImageTransformer2DModel arguments read from diffusers-layout tensor shapes (Z-Image's fixed choices, 2x2
    patches, rotary axes in Z-Image's 1:1.5:1.5 proportions, as the rest)."""
    dim, caption_width = state["cap_embedder.1.weight"].shape
    head_dim = state["layers.0.attention.norm_q.weight"].shape[0]
    axis = head_dim // 8
    return dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=state[DIFFUSERS_PROBE].shape[1] // 4,
                dim=dim, n_layers=len(block_indices(state, "layers.")),
                n_refiner_layers=len(block_indices(state, "noise_refiner.")), n_heads=dim // head_dim,
                n_kv_heads=state["layers.0.attention.to_k.weight"].shape[0] // head_dim, cap_feat_dim=caption_width,
                axes_dims=[2 * axis, 3 * axis, 3 * axis])


def build_zimage_transformer(state: Mapping[str, torch.Tensor], input_name: str) -> Any:
    from diffusers import ZImageTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers

    try:
        weights = taken(state, PREFIX)  # the file's tensors move into the model (see files.taken)
        if DIFFUSERS_PROBE not in weights:
            weights = convert_z_image_transformer_checkpoint_to_diffusers(weights)
        with empty_weights():
            transformer = ZImageTransformer2DModel(**zimage_transformer_config(quantized.shape_view(weights)))
        quantized.load_quantized(transformer, weights)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: Z-Image transformer tensors incomplete or mis-shaped ({error})") from error
    return transformer.eval()


def zimage_model(transformer: Any, name: str, scheduler_config: Mapping[str, Any] | None = None) -> DiffusionModel:
    """MODEL of a Z-Image transformer: shifted flow whose timesteps are sigmas (ComfyUI's AuraFlow-style sampling)."""
    return sigma_timestep_flow_model(transformer, scheduler_config or config()["scheduler"], name, FAMILY,
                                     ZIMAGE_SAMPLING)


def load_diffusion_model(state: Mapping[str, torch.Tensor], name: str, place: Place) -> DiffusionModel:
    """MODEL of a Z-Image transformer file (UNETLoader)."""
    return zimage_model(place(build_zimage_transformer(state, "unet_name")), name)


def build_qwen3_encoder(state: Mapping[str, torch.Tensor], input_name: str) -> Any:
    """A transformers Qwen3Model rebuilt from a Qwen3 file's shapes (`model.*` keys as published, or bare)."""
    from transformers import Qwen3Config, Qwen3Model

    weights = {key.removeprefix("model."): value for key, value in state.items() if not key.startswith("lm_head.")}
    try:
        vocab, width = weights["embed_tokens.weight"].shape
        head_dim = weights["layers.0.self_attn.q_norm.weight"].shape[0]
        settings = Qwen3Config(
            vocab_size=vocab, hidden_size=width, head_dim=head_dim,
            intermediate_size=weights["layers.0.mlp.gate_proj.weight"].shape[0],
            num_hidden_layers=len(block_indices(weights, "layers.")),
            num_attention_heads=weights["layers.0.self_attn.q_proj.weight"].shape[0] // head_dim,
            num_key_value_heads=weights["layers.0.self_attn.k_proj.weight"].shape[0] // head_dim,
            rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=40960, tie_word_embeddings=True)
        with empty_weights():
            model = Qwen3Model(settings)
        quantized.load_quantized(model, weights)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: Qwen3 text encoder tensors incomplete or mis-shaped ({error})") from error
    return model.eval()


def load_text_encoders(models: "ModelManager", paths: Mapping[str, Path]) -> ZImageClip:
    """Z-Image's CLIP from its Qwen3 file (CLIPLoader type lumina2); the encoder is read on the first encode."""
    (input_name, path), *others = paths.items()
    if others:
        raise ValueError(f"type lumina2 takes one text encoder file; got {len(paths)}")

    def read() -> ZImageClip:
        shapes = safetensors_shapes(path, input_name)
        if not is_qwen3_encoder(shapes):
            raise ValueError(f"{input_name}: type lumina2 runs Z-Image, whose text encoder is Qwen3; "
                             f"{Path(path).name} is not a Qwen3 file (Lumina 2's Gemma is not supported)")
        vocab = embedding_rows(shapes)
        model = LazyModule(lambda: models.place(build_qwen3_encoder(
            read_weights(path, input_name, models.keeps_fp8_weights), input_name)), input_name)
        return ZImageClip(qwen_tokenizer_for_vocab(vocab, input_name), model, Path(path).name)

    return models.cached("zimage-text-encoder", path, input_name, read)  # its own kind: the value is a CLIP


def load_folder(folder: Path, name: str, place: Place) -> tuple[DiffusionModel, ZImageClip, Vae]:
    """MODEL, CLIP and VAE from a diffusers ZImagePipeline folder (its tokenizer comes with it)."""
    from diffusers import AutoencoderKL, ZImageTransformer2DModel
    from transformers import AutoModel, AutoTokenizer

    folder = Path(folder)
    transformer = ZImageTransformer2DModel.from_pretrained(folder, subfolder="transformer", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
    text_encoder = LazyModule(lambda: place(AutoModel.from_pretrained(  # read on the first encode
        folder, subfolder="text_encoder", local_files_only=True)).eval(), f"{name}/text_encoder")
    tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    return (zimage_model(place(transformer).eval(), name, folder_scheduler_config(folder)),
            ZImageClip(tokenizer, text_encoder, name), Vae(place(vae).eval(), name))
