"""Qwen-Image model files read into diffusers/transformers modules, offline: the transformer alone (ComfyUI's
`qwen_image*.safetensors`: diffusers' names, with or without `model.diffusion_model.`), its VAE (Wan 2.1's
architecture: ComfyUI's original layout through diffusers' Wan converter, or diffusers keys; VAELoader), its
Qwen2.5-VL text encoder file (CLIPLoader type qwen_image; its language model is what text-to-image reads), and
diffusers QwenImagePipeline folders. What a file holds is read from its tensor names and shapes; the scheduler and
latent statistics are in `config.json` beside this module. Knows nothing of nodes."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from diffusion import quantized, registry
from diffusion.components import DiffusionModel, FrameVae, sigma_timestep_flow_model
from diffusion.contracts import Place
from diffusion.families.qwenimage.detection import ORIGINAL_VAE_PROBE, PREFIX, language_model_prefix
from diffusion.families.qwenimage.sampling import QWEN_IMAGE_SAMPLING
from diffusion.families.qwenimage.text_encoding import QwenImageClip, tokenizer_for_vocab, vision_token_ids
from diffusion.files import block_indices, config_beside, empty_weights, read_weights, safetensors_shapes, taken
from diffusion.files import scheduler_config as folder_scheduler_config
from diffusion.lazy_module import LazyModule

if TYPE_CHECKING:
    from diffusion.manager import ModelManager

FAMILY = "qwenimage"
CLIP_TYPES = ("qwen_image",)  # CLIPLoader's type for Qwen-Image's Qwen2.5-VL file
# Wan 2.1's VAE choices, which Qwen-Image's keeps (diffusers' Wan converter assumes two blocks per level)
TEXT_HEAD_DIM = 128  # every Qwen2.5 language model's attention head width (a file's shapes do not tell it)
VISION_HEAD_DIM, VISION_WINDOW = 80, 112  # Qwen2.5-VL's vision heads' width and attention window (pixels)
VAE_LEVELS = dict(dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True])


def config() -> dict[str, Any]:
    return config_beside(__file__)


def transformer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """QwenImageTransformer2DModel arguments read from tensor shapes (the rotary axes in Qwen-Image's 1:3.5:3.5
    proportions of a head, 2x2 patches)."""
    width, in_channels = state["img_in.weight"].shape
    head_dim = state["transformer_blocks.0.attn.norm_q.weight"].shape[0]
    frames = head_dim // 8
    return dict(patch_size=2, in_channels=in_channels, out_channels=state["proj_out.weight"].shape[0] // 4,
                num_layers=len(block_indices(state, "transformer_blocks.")), attention_head_dim=head_dim,
                num_attention_heads=width // head_dim, joint_attention_dim=state["txt_in.weight"].shape[1],
                axes_dims_rope=(frames, (head_dim - frames) // 2, (head_dim - frames) // 2))


def build_transformer(state: Mapping[str, torch.Tensor], input_name: str) -> Any:
    from diffusers import QwenImageTransformer2DModel

    weights = taken(state, PREFIX)  # the file's tensors move into the model (see files.taken)
    try:
        with empty_weights():
            transformer = QwenImageTransformer2DModel(**transformer_config(quantized.shape_view(weights)))
        quantized.load_quantized(transformer, weights)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: Qwen-Image transformer tensors incomplete or mis-shaped ({error})") from error
    return transformer.eval()


def qwen_image_model(transformer: Any, name: str, scheduler_config: Mapping[str, Any] | None = None) -> DiffusionModel:
    """MODEL of a Qwen-Image transformer: shifted flow whose timesteps are sigmas (ComfyUI's multiplier 1)."""
    return sigma_timestep_flow_model(transformer, scheduler_config or config()["scheduler"], name, FAMILY,
                                     QWEN_IMAGE_SAMPLING)


def load_diffusion_model(state: Mapping[str, torch.Tensor], name: str, place: Place) -> DiffusionModel:
    """MODEL of a Qwen-Image transformer file (UNETLoader)."""
    return qwen_image_model(place(build_transformer(state, "unet_name")), name)


def build_vae(state: Mapping[str, torch.Tensor], input_name: str) -> Any:
    """AutoencoderKLQwenImage from a Wan-architecture VAE's tensors (original or diffusers layout)."""
    from diffusers import AutoencoderKLQwenImage
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    weights = convert_wan_vae_to_diffusers(dict(state)) if ORIGINAL_VAE_PROBE in state else dict(state)
    try:
        latent_channels = weights["decoder.conv_in.weight"].shape[1]
        if latent_channels != config()["vae"]["latent_channels"]:
            raise ValueError(f"{input_name}: a Wan-architecture VAE with {latent_channels} latent channels (Wan "
                             "2.2's?); Qwen-Image's has 16")
        with empty_weights():
            autoencoder = AutoencoderKLQwenImage(base_dim=weights["encoder.conv_in.weight"].shape[0],
                                                 z_dim=latent_channels, **VAE_LEVELS)
        autoencoder.load_state_dict(weights, strict=True, assign=True)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: Qwen-Image VAE tensors incomplete or mis-shaped ({error})") from error
    return autoencoder.eval()


def load_vae(state: Mapping[str, torch.Tensor], name: str, place: Place) -> FrameVae:
    """VAE of a Qwen-Image (or Wan 2.1) VAE file (VAELoader)."""
    return FrameVae(place(build_vae(state, name)), name)


def text_config(weights: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Qwen2.5-VL language model arguments read from its tensor shapes (`layers.*`, `embed_tokens.*` keys); the
    rotary sections are Qwen2.5-VL's proportions of a head (2:3:3)."""
    vocab, width = weights["embed_tokens.weight"].shape
    half = TEXT_HEAD_DIM // 2
    frames = half // 4
    return dict(vocab_size=vocab, hidden_size=width, num_attention_heads=width // TEXT_HEAD_DIM,
                intermediate_size=weights["layers.0.mlp.gate_proj.weight"].shape[0],
                num_hidden_layers=len(block_indices(weights, "layers.")),
                num_key_value_heads=weights["layers.0.self_attn.k_proj.weight"].shape[0] // TEXT_HEAD_DIM,
                rms_norm_eps=1e-6, max_position_embeddings=128000,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                 "mrope_section": [frames, (half - frames) // 2, half - frames - (half - frames) // 2]})


def vision_config(weights: Mapping[str, torch.Tensor], out_width: int) -> dict[str, Any]:
    """Qwen2.5-VL vision tower arguments read from its tensor shapes (`blocks.*`, `merger.*` keys); the heads'
    width, the attention window and which blocks attend to the whole image are Qwen2.5-VL's (every eighth)."""
    width = weights["blocks.0.norm1.weight"].shape[0]
    _, channels, frames, patch, _ = weights["patch_embed.proj.weight"].shape
    depth = len(block_indices(weights, "blocks."))
    return dict(depth=depth, hidden_size=width, num_heads=width // VISION_HEAD_DIM,
                intermediate_size=weights["blocks.0.mlp.gate_proj.weight"].shape[0], out_hidden_size=out_width,
                in_channels=channels, patch_size=patch, temporal_patch_size=frames,
                spatial_merge_size=round((weights["merger.mlp.0.weight"].shape[1] // width) ** 0.5),
                window_size=VISION_WINDOW, fullatt_block_indexes=list(range(7, depth, 8)) or [depth - 1])


def build_text_encoder(state: Mapping[str, torch.Tensor], input_name: str, tokenizer: Any) -> Any:
    """A Qwen2.5-VL file as a transformers module rebuilt from its shapes: Qwen2_5_VLModel when the file has the
    vision tower (`visual.*`, which edit encodings need), its language model alone (Qwen2_5_VLTextModel)
    otherwise. Text alone puts every token at one position on all three rotary axes, so both encode text
    alike."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    prefix = language_model_prefix(state.keys())
    vision_prefix = next((candidate for candidate in ("visual.", "model.visual.")
                          if candidate + "blocks.0.norm1.weight" in state), None)
    text = {key[len(prefix):]: value for key, value in state.items()
            if key.startswith(prefix) and not key.startswith(("visual.", "lm_head.", "model.visual."))}
    try:
        if vision_prefix is None:
            with empty_weights():
                model = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(**text_config(text)))
            quantized.load_quantized(model, text)
            return model.eval()
        vision = {key[len(vision_prefix):]: value for key, value in state.items() if key.startswith(vision_prefix)}
        settings = Qwen2_5_VLConfig(text_config=text_config(text),
                                    vision_config=vision_config(vision, text["embed_tokens.weight"].shape[1]),
                                    **vision_token_ids(tokenizer))
        with empty_weights():
            model = Qwen2_5_VLModel(settings)
        weights = {**{f"language_model.{key}": value for key, value in text.items()},
                   **{f"visual.{key}": value for key, value in vision.items()}}
        quantized.load_quantized(model, weights)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: Qwen2.5-VL text encoder tensors incomplete or mis-shaped ({error})") from error
    return model.eval()


def load_text_encoders(models: "ModelManager", paths: Mapping[str, Path]) -> QwenImageClip:
    """Qwen-Image's CLIP from its Qwen2.5-VL file (CLIPLoader type qwen_image); the encoder is read on the first
    encode."""
    (input_name, path), *others = paths.items()
    if others:
        raise ValueError(f"type qwen_image takes one text encoder file; got {len(paths)}")

    def read() -> QwenImageClip:
        shapes = safetensors_shapes(path, input_name)
        prefix = language_model_prefix(shapes.keys())
        if prefix is None:
            raise ValueError(f"{input_name}: type qwen_image runs Qwen-Image, whose text encoder is Qwen2.5-VL; "
                             f"{Path(path).name} holds {registry.describe_other_file(shapes.keys())}")
        tokenizer = tokenizer_for_vocab(shapes[prefix + "embed_tokens.weight"][0], input_name)
        model = LazyModule(lambda: models.place(build_text_encoder(
            read_weights(path, input_name, models.keeps_fp8_weights), input_name, tokenizer)), input_name)
        return QwenImageClip(tokenizer, model, Path(path).name)

    return models.cached("qwenimage-text-encoder", path, input_name, read)  # its own kind: the value is a CLIP


def load_folder(folder: Path, name: str, place: Place) -> tuple[DiffusionModel, QwenImageClip, FrameVae]:
    """MODEL, CLIP and VAE from a diffusers QwenImagePipeline folder (its tokenizer comes with it)."""
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    folder = Path(folder)
    transformer = QwenImageTransformer2DModel.from_pretrained(folder, subfolder="transformer", local_files_only=True)
    vae = AutoencoderKLQwenImage.from_pretrained(folder, subfolder="vae", local_files_only=True)
    text_encoder = LazyModule(lambda: place(Qwen2_5_VLForConditionalGeneration.from_pretrained(  # on first encode
        folder, subfolder="text_encoder", local_files_only=True)).eval(), f"{name}/text_encoder")
    tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    return (qwen_image_model(place(transformer).eval(), name, folder_scheduler_config(folder)),
            QwenImageClip(tokenizer, text_encoder, name), FrameVae(place(vae).eval(), name))
