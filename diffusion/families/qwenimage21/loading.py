"""Qwen-Image 2.1 model files read into diffusers/transformers modules, offline: the transformer alone (ComfyUI's
`qwen_image_2.1_*.safetensors`, whose SwiGLU gate and up projections are one fused weight, gate rows first; or
diffusers' names; with or without `model.diffusion_model.`; GGUF too), its VAE (ComfyUI's original layout through
`vae_layout`, or diffusers'), its Qwen3-VL text encoder file (CLIPLoader type qwen_image, told from Qwen-Image's
Qwen2.5-VL by its vision tower, which reference images need), and diffusers QwenImage21Pipeline
folders. What a file holds is read from its tensor names and shapes; the scheduler and latent statistics are in
`config.json` beside this module. Knows nothing of nodes."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from diffusion import quantized, registry
from diffusion.components import DiffusionModel, FrameVae
from diffusion.contracts import Place
from diffusion.families import wan22_vae_layout as vae_layout
from diffusion.families.qwenimage.text_encoding import vision_token_ids
from diffusion.families.qwenimage21 import detection
from diffusion.families.qwenimage21.detection import PREFIX, language_model_prefix
from diffusion.families.qwenimage21.sampling import QWEN_IMAGE21_SAMPLING
from diffusion.families.qwenimage21.text_encoding import QwenImage21Clip, tokenizer_for_vocab
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
from diffusion.sampling.model_sampling import FluxModelSampling

if TYPE_CHECKING:
    from diffusion.manager import ModelManager

FAMILY = "qwenimage21"
FUSED_MLP = ".img_mlp.gate_up.weight"  # ComfyUI's fused SwiGLU projection: gate rows, then up rows
ROPE_THETA = 5000000.0  # Qwen3-VL's language model's rotary base (a file's shapes do not tell it)
NOT_TEXT = ("model.visual.", "visual.", "lm_head.")  # a Qwen3-VL file's vision tower and output head
VAE_LEVELS = dict(dim_mult=[1, 2, 4, 8, 8], num_res_blocks=2, temperal_downsample=[False, True, True, True])


def config() -> dict[str, Any]:
    return config_beside(__file__)


def diffusers_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformer file's tensors in diffusers' names: without `model.diffusion_model.`, each fused SwiGLU weight
    split into `gate_layer` and `proj` (row splits work on GGUF's quantized rows too)."""
    weights = {}
    for key, value in taken(state, PREFIX).items():  # the file's tensors move into the model (see files.taken)
        if key.endswith(FUSED_MLP):
            gate, up = value.chunk(2)
            stem = key[:-len(FUSED_MLP)] + ".img_mlp."
            weights[stem + "gate_layer.weight"], weights[stem + "proj.weight"] = gate, up
        else:
            weights[key] = value
    return weights


def transformer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """QwenImage21Transformer2DModel arguments read from tensor shapes (diffusers' names); the rotary axes in
    Qwen-Image's 1:3.5:3.5 proportions of a head."""
    width, in_channels = state["img_in.weight"].shape
    head_dim = state["transformer_blocks.0.attn.norm_q.weight"].shape[0]
    frames = head_dim // 8
    return dict(patch_size=1, in_channels=in_channels, out_channels=state["proj_out.weight"].shape[0],
                num_layers=len(block_indices(state, "transformer_blocks.")), attention_head_dim=head_dim,
                num_attention_heads=width // head_dim, context_in_dim=state["txt_in.in_layer.weight"].shape[1],
                mlp_ratio=state["transformer_blocks.0.img_mlp.proj.weight"].shape[0] // width,
                axes_dims_rope=(frames, (head_dim - frames) // 2, (head_dim - frames) // 2))


def build_transformer(state: Mapping[str, torch.Tensor], input_name: str) -> Any:
    from diffusers import QwenImage21Transformer2DModel

    try:
        weights = diffusers_layout(state)
        with empty_weights():
            transformer = QwenImage21Transformer2DModel(**transformer_config(quantized.shape_view(weights)))
        quantized.load_quantized(transformer, weights)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: Qwen-Image 2.1 transformer tensors incomplete or mis-shaped "
                         f"({error})") from error
    return transformer.eval()


def qwen_image21_model(transformer: Any, name: str, scheduler_config: Mapping[str, Any] | None = None
                       ) -> DiffusionModel:
    """MODEL of a Qwen-Image 2.1 transformer: the sigma core samples it as ComfyUI does, FLUX's exponential time
    shift at a fixed mu (0.69, the pipeline's mu at 1024x1024) with timesteps that are sigmas; the diffusers loop
    takes the scheduler config's resolution-dependent shift (`sampling.set_timesteps`)."""
    settings = public_config(scheduler_config or config()["scheduler"])
    return DiffusionModel(transformer, settings, name, FAMILY, QWEN_IMAGE21_SAMPLING,
                          schedule_override=FluxModelSampling(mu=config()["comfy_shift"]))


def load_diffusion_model(state: Mapping[str, torch.Tensor], name: str, place: Place) -> DiffusionModel:
    """MODEL of a Qwen-Image 2.1 transformer file (UNETLoader)."""
    return qwen_image21_model(place(build_transformer(state, "unet_name")), name)


def build_vae(state: Mapping[str, torch.Tensor], input_name: str) -> Any:
    """AutoencoderKLQwenImage21 from its tensors (ComfyUI's layout or diffusers'); the widths are read from the
    encoder's and decoder's first convolutions, the latent and image channels from the decoder's ends."""
    from diffusers import AutoencoderKLQwenImage21

    weights = vae_layout.comfy_to_diffusers(state) if vae_layout.is_comfy_layout(state) else dict(state)
    try:
        latent_channels = weights["decoder.conv_in.weight"].shape[1]
        if latent_channels != config()["vae"]["latent_channels"]:
            raise ValueError(f"{input_name}: a Wan 2.2 style VAE with {latent_channels} latent channels (Wan 2.2's?); "
                             f"Qwen-Image 2.1's has {config()['vae']['latent_channels']}")
        with empty_weights():
            autoencoder = AutoencoderKLQwenImage21(
                base_dim=weights["encoder.conv_in.weight"].shape[0],
                decoder_base_dim=weights["decoder.norm_out.gamma"].shape[0], z_dim=latent_channels,
                in_channels=weights["encoder.conv_in.weight"].shape[1],
                out_channels=weights["decoder.conv_out.weight"].shape[0], **VAE_LEVELS)
        autoencoder.load_state_dict(weights, strict=True, assign=True)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: Qwen-Image 2.1 VAE tensors incomplete or mis-shaped ({error})") from error
    return autoencoder.eval()


def load_vae(state: Mapping[str, torch.Tensor], name: str, place: Place) -> FrameVae:
    """VAE of a Qwen-Image 2.1 VAE file (VAELoader)."""
    return FrameVae(place(build_vae(state, name)), name)


def text_config(weights: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Qwen3-VL language model arguments read from its tensor shapes (`layers.*`, `embed_tokens.*` keys); the
    rotary sections are Qwen3-VL's proportions of a head (24:20:20; text alone reads every section at the same
    position, so they shape nothing here)."""
    vocab, width = weights["embed_tokens.weight"].shape
    head_dim = weights["layers.0.self_attn.q_norm.weight"].shape[0]
    half = head_dim // 2
    spatial = half * 20 // 64
    return dict(vocab_size=vocab, hidden_size=width, head_dim=head_dim,
                num_attention_heads=weights["layers.0.self_attn.q_proj.weight"].shape[0] // head_dim,
                num_key_value_heads=weights["layers.0.self_attn.k_proj.weight"].shape[0] // head_dim,
                intermediate_size=weights["layers.0.mlp.gate_proj.weight"].shape[0],
                num_hidden_layers=len(block_indices(weights, "layers.")), rms_norm_eps=1e-6,
                max_position_embeddings=262144,
                rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA,
                                 "mrope_section": [half - 2 * spatial, spatial, spatial], "mrope_interleaved": True})


def vision_config(weights: Mapping[str, torch.Tensor], out_width: int) -> dict[str, Any]:
    """Qwen3-VL vision tower arguments read from its tensor shapes (`blocks.*`, `merger.*` keys); its 16 heads and
    which blocks feed the language model's first layers (DeepStack) are Qwen3-VL's, by its depth, as ComfyUI fixes
    them."""
    width = weights["blocks.0.norm1.weight"].shape[0]
    _, channels, frames, patch, _ = weights["patch_embed.proj.weight"].shape
    depth = len(block_indices(weights, "blocks."))
    deepstack = config()["vision"]["deepstack_layers"].get(str(depth))
    if deepstack is None or len(deepstack) != len(block_indices(weights, "deepstack_merger_list.")):
        raise ValueError(f"a Qwen3-VL vision tower of {depth} blocks, which no Qwen3-VL has (known: "
                         f"{', '.join(config()['vision']['deepstack_layers'])})")
    return dict(depth=depth, hidden_size=width, num_heads=config()["vision"]["heads"],
                intermediate_size=weights["blocks.0.mlp.linear_fc1.weight"].shape[0], out_hidden_size=out_width,
                in_channels=channels, patch_size=patch, temporal_patch_size=frames,
                spatial_merge_size=round((weights["merger.linear_fc1.weight"].shape[1] // width) ** 0.5),
                num_position_embeddings=weights["pos_embed.weight"].shape[0], deepstack_visual_indexes=deepstack)


def build_text_encoder(state: Mapping[str, torch.Tensor], input_name: str, tokenizer: Any) -> Any:
    """A Qwen3-VL file (language model and vision tower, which reference images need) as transformers'
    Qwen3VLModel rebuilt from its shapes, without its language model's final norm (Qwen-Image 2.1 reads the last
    layer's output before it). The output head is not read."""
    from transformers import Qwen3VLConfig, Qwen3VLModel

    prefix = language_model_prefix(state.keys())
    vision_prefix = detection.vision_prefix(state.keys())
    if prefix is None or vision_prefix is None:
        raise ValueError(f"{input_name}: Qwen-Image 2.1's text encoder is Qwen3-VL, a Qwen3 language model with its "
                         "vision tower; this file lacks " + ("the language model" if prefix is None else
                                                             "the vision tower"))
    text = {key[len(prefix):]: value for key, value in state.items()
            if key.startswith(prefix) and not key.startswith(NOT_TEXT) and key[len(prefix):] != "norm.weight"}
    try:
        vision = {key[len(vision_prefix):]: value for key, value in state.items() if key.startswith(vision_prefix)}
        settings = Qwen3VLConfig(text_config=text_config(text),
                                 vision_config=vision_config(vision, text["embed_tokens.weight"].shape[1]),
                                 **vision_token_ids(tokenizer))
        with empty_weights():
            model = Qwen3VLModel(settings)
        model.language_model.norm = torch.nn.Identity()
        quantized.load_quantized(model, {**{f"language_model.{key}": value for key, value in text.items()},
                                         **{f"visual.{key}": value for key, value in vision.items()}})
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: Qwen3-VL text encoder tensors incomplete or mis-shaped ({error})") from error
    except ValueError as error:
        raise ValueError(f"{input_name}: {error}") from error
    return model.eval()


def load_text_encoders(models: "ModelManager", paths: Mapping[str, Path]) -> QwenImage21Clip:
    """Qwen-Image 2.1's CLIP from its Qwen3-VL file (CLIPLoader type qwen_image); the encoder is read on the first
    encode."""
    (input_name, path), *others = paths.items()
    if others:
        raise ValueError(f"type qwen_image takes one text encoder file; got {len(paths)}")

    def read() -> QwenImage21Clip:
        shapes = safetensors_shapes(path, input_name)
        prefix = language_model_prefix(shapes.keys())
        if prefix is None:
            raise ValueError(f"{input_name}: Qwen-Image 2.1's text encoder is Qwen3-VL; {Path(path).name} holds "
                             f"{registry.describe_other_file(shapes.keys())}")
        tokenizer = tokenizer_for_vocab(shapes[prefix + "embed_tokens.weight"][0], input_name)
        model = LazyModule(lambda: models.place(build_text_encoder(
            read_weights(path, input_name, models.keeps_fp8_weights, keep=lambda key: not key.startswith("lm_head.")),
            input_name, tokenizer)), input_name)
        return QwenImage21Clip(tokenizer, model, Path(path).name)

    return models.cached("qwenimage21-text-encoder", path, input_name, read)  # its own kind: the value is a CLIP


def load_folder(folder: Path, name: str, place: Place) -> tuple[DiffusionModel, QwenImage21Clip, FrameVae]:
    """MODEL, CLIP and VAE from a diffusers QwenImage21Pipeline folder (its tokenizer comes with its processor; its
    text encoder is read as a Qwen3-VL file)."""
    from diffusers import AutoencoderKLQwenImage21, QwenImage21Transformer2DModel
    from transformers import AutoTokenizer

    folder = Path(folder)
    transformer = QwenImage21Transformer2DModel.from_pretrained(folder, subfolder="transformer", local_files_only=True)
    vae = AutoencoderKLQwenImage21.from_pretrained(folder, subfolder="vae", local_files_only=True)
    files = sorted((folder / "text_encoder").glob("*.safetensors"))
    if not files:
        raise ValueError(f"{name}: its text_encoder folder holds no safetensors files")

    tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="processor", local_files_only=True)

    def read_text_encoder() -> Any:
        state = {}
        for file in files:
            state.update(read_safetensors(file, name, keep=lambda key: not key.startswith("lm_head.")))
        return place(build_text_encoder(state, f"{name}/text_encoder", tokenizer))

    return (qwen_image21_model(place(transformer).eval(), name, folder_scheduler_config(folder)),
            QwenImage21Clip(tokenizer, LazyModule(read_text_encoder, f"{name}/text_encoder"), name),
            FrameVae(place(vae).eval(), name))
