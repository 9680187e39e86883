"""A tiny FLUX.2 [klein] and [dev] (random weights) in the files ComfyUI users have: the transformers in BFL's
layout (fused q/k/v, `model.diffusion_model.`; [dev]'s with a guidance embedding) in diffusion_models/, the VAE in
the LDM layout with its batch-norm statistics in vae/, in text_encoders/ a Qwen3 (`model.*` keys, enough layers for
FLUX.2's layer 27) and a Mistral with its tekken.json as `tekken_model` (more layers than the 30 FLUX.2 reads, as
the real one has 40). Knows nothing of nodes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffusion.encoders import tekken
from diffusion.families import ldm_export
from diffusion.families.flux2.loading import MISTRAL_HEAD_DIM
from diffusion.families.flux2.text_encoding import TINY_VOCAB_SIZE

DEMO_FLUX2_TRANSFORMER = "tiny-flux2-klein-transformer.safetensors"
DEMO_FLUX2_VAE = "tiny-flux2-vae.safetensors"
DEMO_FLUX2_TEXT_ENCODER = "tiny-flux2-qwen3.safetensors"
DEMO_FLUX2_DEV_TRANSFORMER = "tiny-flux2-dev-transformer.safetensors"
DEMO_FLUX2_MISTRAL = "tiny-flux2-mistral.safetensors"
TEXT_WIDTH = 32
MISTRAL_LAYERS = 32

# diffusers name -> BFL name, inside a double block and a single block, and at the top
DOUBLE_BLOCK = {"attn.norm_q.weight": "img_attn.norm.query_norm.scale",
                "attn.norm_k.weight": "img_attn.norm.key_norm.scale", "attn.to_out.0.": "img_attn.proj.",
                "ff.linear_in.": "img_mlp.0.", "ff.linear_out.": "img_mlp.2.",
                "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale",
                "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale", "attn.to_add_out.": "txt_attn.proj.",
                "ff_context.linear_in.": "txt_mlp.0.", "ff_context.linear_out.": "txt_mlp.2."}
SINGLE_BLOCK = {"attn.to_qkv_mlp_proj.": "linear1.", "attn.to_out.": "linear2.",
                "attn.norm_q.weight": "norm.query_norm.scale", "attn.norm_k.weight": "norm.key_norm.scale"}
TOP = {"x_embedder.": "img_in.", "context_embedder.": "txt_in.",
       "time_guidance_embed.timestep_embedder.linear_1.": "time_in.in_layer.",
       "time_guidance_embed.timestep_embedder.linear_2.": "time_in.out_layer.",
       "time_guidance_embed.guidance_embedder.linear_1.": "guidance_in.in_layer.",
       "time_guidance_embed.guidance_embedder.linear_2.": "guidance_in.out_layer.",
       "double_stream_modulation_img.linear.": "double_stream_modulation_img.lin.",
       "double_stream_modulation_txt.linear.": "double_stream_modulation_txt.lin.",
       "single_stream_modulation.linear.": "single_stream_modulation.lin.", "proj_out.": "final_layer.linear."}


@dataclass(frozen=True)
class TinyFlux2:
    transformer: Any
    vae: Any
    text_encoder: Any  # Qwen3ForCausalLM
    dev_transformer: Any  # FLUX.2 [dev]'s: a guidance embedding
    mistral: Any  # MistralForCausalLM, FLUX.2 [dev]'s text encoder


def _transformer(guidance_embeds: bool) -> Any:
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(
        patch_size=1, in_channels=128, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=3 * TEXT_WIDTH, timestep_guidance_channels=256,
        axes_dims_rope=(4, 4, 4, 4), guidance_embeds=guidance_embeds).eval()


def build_tiny_flux2(seed: int = 8) -> TinyFlux2:
    from diffusers import AutoencoderKLFlux2
    from transformers import MistralConfig, MistralForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    transformer = _transformer(guidance_embeds=False)
    vae = AutoencoderKLFlux2(block_out_channels=(32, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                             up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=32).eval()
    with torch.no_grad():  # statistics of a trained VAE, so that normalizing the latents does something
        vae.bn.running_mean.normal_(0.0, 0.2)
        vae.bn.running_var.uniform_(0.5, 2.0)
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=TINY_VOCAB_SIZE, hidden_size=TEXT_WIDTH, intermediate_size=64, num_hidden_layers=28, head_dim=8,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        rope_theta=1000000.0, rms_norm_eps=1e-6)).eval()
    dev_transformer = _transformer(guidance_embeds=True)
    mistral = MistralForCausalLM(MistralConfig(
        vocab_size=tekken.TINY_VOCAB_SIZE, hidden_size=TEXT_WIDTH, head_dim=MISTRAL_HEAD_DIM, intermediate_size=64,
        num_hidden_layers=MISTRAL_LAYERS, num_attention_heads=2, num_key_value_heads=1, rms_norm_eps=1e-5,
        sliding_window=None, rope_parameters={"rope_type": "default", "rope_theta": 1_000_000_000.0})).eval()
    return TinyFlux2(transformer, vae, text_encoder, dev_transformer, mistral)


def mistral_file(mistral: Any) -> dict[str, torch.Tensor]:
    """A Mistral text encoder in ComfyUI's file layout: `model.*` keys and the tekken.json as `tekken_model`."""
    state = {key: value for key, value in mistral.state_dict().items() if key.startswith("model.")}
    state[tekken.TEKKEN_TENSOR] = torch.frombuffer(bytearray(tekken.tiny_tekken_json()), dtype=torch.uint8)
    return state


def bfl_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers Flux2Transformer2DModel state dict in BFL's layout (ComfyUI's files), the inverse of diffusers'
    `convert_flux2_transformer_checkpoint_to_diffusers`."""
    def renamed(key: str, mapping: dict[str, str]) -> str | None:
        return next((new + key[len(old):] for old, new in mapping.items() if key.startswith(old)), None)

    original: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("transformer_blocks."):
            _, index, rest = key.split(".", 2)
            for stream, names in (("img_attn", ("to_q", "to_k", "to_v")), ("txt_attn", (
                    "add_q_proj", "add_k_proj", "add_v_proj"))):
                if rest.startswith(f"attn.{names[0]}."):
                    suffix = rest.split(".", 2)[2]
                    original[f"double_blocks.{index}.{stream}.qkv.{suffix}"] = torch.cat(
                        [state[f"transformer_blocks.{index}.attn.{name}.{suffix}"] for name in names])
            if any(rest.startswith(f"attn.{name}.") for name in (
                    "to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")):
                continue
            original[f"double_blocks.{index}.{renamed(rest, DOUBLE_BLOCK)}"] = value
        elif key.startswith("single_transformer_blocks."):
            _, index, rest = key.split(".", 2)
            original[f"single_blocks.{index}.{renamed(rest, SINGLE_BLOCK)}"] = value
        elif key.startswith("norm_out.linear."):  # diffusers keeps (scale, shift), BFL (shift, scale)
            scale, shift = value.chunk(2, dim=0)
            original["final_layer.adaLN_modulation.1." + key.rsplit(".", 1)[1]] = torch.cat([shift, scale])
        else:
            original[renamed(key, TOP) or key] = value
    return {f"model.diffusion_model.{key}": value for key, value in original.items()}


def make_flux2_demo_models(models_dir: Path) -> TinyFlux2:
    """The tiny FLUX.2 [klein] and [dev] files; files already there are left alone."""
    from safetensors.torch import save_file

    models_dir = Path(models_dir)
    models = build_tiny_flux2()
    for path, state in (
            (models_dir / "diffusion_models" / DEMO_FLUX2_TRANSFORMER, lambda: bfl_layout(
                models.transformer.state_dict())),
            (models_dir / "vae" / DEMO_FLUX2_VAE, lambda: ldm_export.vae_to_ldm(
                models.vae.state_dict(), models.vae.config, prefix="")),
            (models_dir / "text_encoders" / DEMO_FLUX2_TEXT_ENCODER, lambda: {
                key: value for key, value in models.text_encoder.state_dict().items() if key != "lm_head.weight"}),
            (models_dir / "diffusion_models" / DEMO_FLUX2_DEV_TRANSFORMER, lambda: bfl_layout(
                models.dev_transformer.state_dict())),
            (models_dir / "text_encoders" / DEMO_FLUX2_MISTRAL, lambda: mistral_file(models.mistral))):
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({key: value.contiguous() for key, value in state().items()}, str(path))
    return models
