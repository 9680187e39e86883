"""FLUX.1 model files read into diffusers/transformers modules, offline: a diffusers `FluxPipeline` folder, a
transformer file alone (diffusers keys, or BFL's original layout through diffusers' converter), and the
CLIP-L/T5 encoder files that DualCLIPLoader combines. What a file holds is read from its tensor names and
shapes, never asked of the user. Knows nothing of nodes or the node environment.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from nodes.models.checkpoint import empty_weights
from nodes.models.components import DiffusionModel, Vae
from nodes.models.flux import FLUX_SAMPLING, FluxTextEncoders
from nodes.models.lazy_module import LazyModule
from nodes.models.t5 import build_t5_encoder, is_t5_encoder, t5_tokenizer_for_vocab, t5_vocab_size
from nodes.models.tiny_flux import FLUX_SCHEDULER, FLUX_VAE_SCALE, FLUX_VAE_SHIFT, flux_rope_axes
from nodes.models.tokenizer import clip_tokenizer

BFL_PREFIX = "model.diffusion_model."
BFL_WIDTH = 3072  # the only width diffusers' converter of BFL-layout files handles (FLUX.1 dev/schnell)
DIFFUSERS_PROBE = "x_embedder.weight"
BFL_PROBE = "double_blocks.0.img_attn.qkv.weight"
Place = Callable[[Any], Any]


def _count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({match.group(1) for key in state if (match := pattern.match(key))})


def describe_diffusion_model(state: Mapping[str, torch.Tensor]) -> str:
    """What kind of denoising network a file holds, in words (for errors about files the engine cannot run)."""
    keys = set(state)
    if DIFFUSERS_PROBE in keys and "single_transformer_blocks.0.proj_out.weight" in keys:
        return "a FLUX transformer (diffusers layout)"
    if BFL_PROBE in keys or BFL_PREFIX + BFL_PROBE in keys:
        return "a FLUX transformer (original BFL layout)"
    if any(key.startswith(("joint_blocks.", BFL_PREFIX + "joint_blocks.")) for key in keys) or \
            ("pos_embed.proj.weight" in keys and "context_embedder.weight" in keys):
        return "an SD3 (MMDiT) transformer"
    if any(key.startswith(("down_blocks.", "input_blocks.", BFL_PREFIX + "input_blocks.")) for key in keys):
        return "a UNet (Stable Diffusion style)"
    return f"an unknown network ({len(keys)} tensors, e.g. {sorted(keys)[:3]})"


def flux_transformer_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """FluxTransformer2DModel arguments read from diffusers-layout tensor shapes."""
    inner, in_channels = state[DIFFUSERS_PROBE].shape
    head_dim = state["transformer_blocks.0.attn.norm_q.weight"].shape[0]
    return dict(patch_size=1, in_channels=in_channels, out_channels=state["proj_out.weight"].shape[0],
                num_layers=_count(state, "transformer_blocks."),
                num_single_layers=_count(state, "single_transformer_blocks."),
                attention_head_dim=head_dim, num_attention_heads=inner // head_dim,
                joint_attention_dim=state["context_embedder.weight"].shape[1],
                pooled_projection_dim=state["time_text_embed.text_embedder.linear_1.weight"].shape[1],
                guidance_embeds="time_text_embed.guidance_embedder.linear_1.weight" in state,
                axes_dims_rope=flux_rope_axes(head_dim))


def _diffusers_layout(state: Mapping[str, torch.Tensor], input_name: str) -> Mapping[str, torch.Tensor]:
    if DIFFUSERS_PROBE in state:
        return state
    if BFL_PROBE in state or BFL_PREFIX + BFL_PROBE in state:
        from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

        width = state.get("img_in.weight", state.get(BFL_PREFIX + "img_in.weight")).shape[0]
        if width != BFL_WIDTH:
            raise ValueError(f"{input_name}: a FLUX transformer in the original BFL layout {width} wide; diffusers' "
                             f"converter handles only FLUX.1's {BFL_WIDTH} (save it in the diffusers layout instead)")
        return convert_flux_transformer_checkpoint_to_diffusers(dict(state))
    raise ValueError(f"{input_name}: this file holds {describe_diffusion_model(state)}, not a FLUX transformer; "
                     "UNETLoader runs FLUX transformers (use CheckpointLoaderSimple for Stable Diffusion checkpoints)")


def build_flux_transformer(state: Mapping[str, torch.Tensor], input_name: str) -> Any:
    from diffusers import FluxTransformer2DModel

    weights = _diffusers_layout(state, input_name)
    try:
        config = flux_transformer_config(weights)
        with torch.device("meta"):
            transformer = FluxTransformer2DModel(**config)
        transformer.load_state_dict(dict(weights), strict=True, assign=True)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{input_name}: FLUX transformer tensors incomplete or mis-shaped ({error})") from error
    return transformer.eval()


def flux_model(transformer: Any, name: str, scheduler_config: Mapping[str, Any] | None = None) -> DiffusionModel:
    return DiffusionModel(transformer, dict(scheduler_config or FLUX_SCHEDULER), name, sampling=FLUX_SAMPLING)


def describe_text_encoder(state: Mapping[str, torch.Tensor]) -> str:
    if is_t5_encoder(state):
        return "t5"
    if _clip_weights(state) is not None:
        return "clip"
    return "unknown"


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
        num_hidden_layers=_count(weights, "encoder.layers."), num_attention_heads=max(1, width // 64),
        max_position_embeddings=weights["embeddings.position_embedding.weight"].shape[0], hidden_act="quick_gelu",
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    with empty_weights():
        model = CLIPTextModel(config)
    weights = {key: value for key, value in weights.items() if key in model.state_dict()}
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as error:
        raise ValueError(f"{input_name}: CLIP text encoder tensors do not fit ({error})") from error
    return model.eval()


@dataclass(frozen=True)
class TextEncoderFile:
    """One text encoder read from a file: its kind ("clip" or "t5"), model and tokenizer."""

    kind: str
    model: Any
    tokenizer: Any


def text_encoder_from_state(state: Mapping[str, torch.Tensor], input_name: str, place: Place,
                            reread: Callable[[], Mapping[str, torch.Tensor]] | None = None) -> TextEncoderFile:
    """The encoder a file holds; with `reread` (reading the file's tensors again) a T5 is built only when a prompt
    is first encoded, and can be freed after encoding (`LazyModule`)."""
    kind = describe_text_encoder(state)
    if kind == "t5" and reread is not None:
        model = LazyModule(lambda: place(build_t5_encoder(reread(), input_name)), input_name)
        return TextEncoderFile(kind, model, t5_tokenizer_for_vocab(t5_vocab_size(state), input_name))
    if kind == "clip":
        model = build_clip_text_model(state, input_name)
        return TextEncoderFile(kind, place(model), clip_tokenizer(model.config.vocab_size))
    if kind == "t5":
        model = build_t5_encoder(state, input_name)
        return TextEncoderFile(kind, place(model), t5_tokenizer_for_vocab(model.config.vocab_size, input_name))
    raise ValueError(f"{input_name}: not a text encoder this engine knows (CLIP or T5 in the transformers layout)")


def flux_text_encoders(files: Mapping[str, TextEncoderFile], name: str) -> FluxTextEncoders:
    """FLUX's CLIP from two encoder files (input name -> encoder), one CLIP-L and one T5, in either order."""
    by_kind = {encoder.kind: encoder for encoder in files.values()}
    if sorted(encoder.kind for encoder in files.values()) != ["clip", "t5"]:
        found = ", ".join(f"{input_name}: {encoder.kind}" for input_name, encoder in files.items())
        raise ValueError(f"type flux needs one CLIP-L and one T5 encoder file; found {found}")
    clip, t5 = by_kind["clip"], by_kind["t5"]
    return FluxTextEncoders(clip.tokenizer, clip.model, t5.tokenizer, t5.model, name)


def standalone_vae_overrides(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """What an LDM-layout VAE file's config needs beyond its shapes: no quant convolutions where the file has none,
    and for 16 latent channels FLUX.1's latent statistics (a standalone 16-channel VAE file is FLUX's
    ae.safetensors in practice; SD3 checkpoints carry their VAE inside)."""
    overrides: dict[str, Any] = {}
    if prefix + "quant_conv.weight" not in state:
        overrides.update(use_quant_conv=False, use_post_quant_conv=False)
    if state[prefix + "decoder.conv_in.weight"].shape[1] == 16:
        overrides.update(scaling_factor=FLUX_VAE_SCALE, shift_factor=FLUX_VAE_SHIFT)
    return overrides


PIPELINES = ("FluxPipeline",)


def load_folder(folder: Path, name: str, place: Place) -> tuple[DiffusionModel, FluxTextEncoders, Vae]:
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
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    scheduler_config = {key: value for key, value in scheduler_config.items() if not key.startswith("_")}
    return (flux_model(place(transformer).eval(), name, scheduler_config),
            FluxTextEncoders(clip, place(clip_model).eval(), t5, t5_model, name),
            Vae(place(vae).eval(), name))
