"""Tiny random-weight FLUX.1 models for tests and demos: the real module layout with very few channels.

Writes the same seeded weights as a diffusers `FluxPipeline` folder and as the single files FLUX users have
(a transformer file for UNETLoader, CLIP-L and T5 encoder files for DualCLIPLoader, an LDM-layout VAE file),
plus LoRAs in the kohya and diffusers/peft layouts. The CLIP tokenizer is the project's small BPE, the T5
tokenizer its small Unigram vocabulary (`diffusion.encoders.t5`), so nothing comes from a hub. Images are noise.
Knows nothing of nodes or the node environment.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffusion.encoders.clip_tokenizer import TINY_VOCAB_SIZE, clip_tokenizer
from diffusion.encoders.t5 import TINY_T5_VOCAB_SIZE, tiny_t5_tokenizer
from diffusion.families import ldm_export
from diffusion.families.flux.loading import config, flux_rope_axes, schnell_scheduler_config
from diffusion.files import public_config

FLUX_SCHEDULER = public_config(config()["scheduler"])  # FLUX.1-dev's flow-matching scheduler config
SCHNELL_SCHEDULER = public_config(schnell_scheduler_config())  # FLUX.1-schnell's
DEMO_FLUX_DIFFUSERS = "tiny-flux"
DEMO_FLUX_TRANSFORMER = "tiny-flux-transformer.safetensors"
DEMO_FLUX_CLIP_L = "tiny-flux-clip-l.safetensors"
DEMO_FLUX_T5 = "tiny-flux-t5.safetensors"
DEMO_FLUX_VAE = "tiny-flux-vae.safetensors"
DEMO_FLUX_FILL_TRANSFORMER = "tiny-flux-fill-transformer.safetensors"  # FLUX.1 Fill's inpainting channels
DEMO_FLUX_DEPTH_TRANSFORMER = "tiny-flux-depth-transformer.safetensors"  # FLUX.1 Depth/Canny's control channels
DEMO_FLUX_LORA = "tiny-flux-realism-lora.safetensors"  # kohya layout
DEMO_FLUX_PEFT_LORA = "tiny-flux-style-lora.safetensors"  # diffusers/peft layout


@dataclass(frozen=True)
class TinyFlux:
    transformer: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    text_encoder_2: Any
    tokenizer_2: Any


def build_tiny_flux(seed: int = 0, guidance_embeds: bool = True) -> TinyFlux:
    """Seeded tiny FLUX transformer (guidance-distilled like FLUX.1-dev unless told otherwise), 16-channel VAE,
    CLIP-L and T5 encoders with their tokenizers."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=TINY_VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
        max_position_embeddings=77, projection_dim=32, hidden_act="quick_gelu", bos_token_id=TINY_VOCAB_SIZE - 2,
        eos_token_id=TINY_VOCAB_SIZE - 1, pad_token_id=TINY_VOCAB_SIZE - 1)).eval()
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=TINY_T5_VOCAB_SIZE, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
        use_cache=False)).eval()
    transformer = tiny_flux_transformer(guidance_embeds=guidance_embeds)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1, block_out_channels=(32, 32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=32, use_quant_conv=False, use_post_quant_conv=False,
        scaling_factor=config()["vae"]["scaling_factor"], shift_factor=config()["vae"]["shift_factor"]).eval()
    return TinyFlux(transformer, vae, text_encoder, clip_tokenizer(TINY_VOCAB_SIZE), text_encoder_2,
                    tiny_t5_tokenizer())


def bfl_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers FluxTransformer2DModel state dict in Black Forest Labs' released layout (`flux1-dev.safetensors`:
    fused q/k/v, the single blocks' q/k/v/MLP input as one `linear1`, RMSNorm `scale`, the final modulation's shift
    before its scale). Written from its own name tables, not the loader's, so that tests of the loader's converter
    check it against an independent inverse."""
    renames = {"time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
               "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
               "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
               "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
               "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
               "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
               "context_embedder": "txt_in", "x_embedder": "img_in", "proj_out": "final_layer.linear"}
    double = {"norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin", "ff.net.0.proj": "img_mlp.0",
              "ff.net.2": "img_mlp.2", "ff_context.net.0.proj": "txt_mlp.0", "ff_context.net.2": "txt_mlp.2",
              "attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj"}
    norms = {"attn.norm_q": "img_attn.norm.query_norm", "attn.norm_k": "img_attn.norm.key_norm",
             "attn.norm_added_q": "txt_attn.norm.query_norm", "attn.norm_added_k": "txt_attn.norm.key_norm"}
    bfl = {}
    for key, value in state.items():
        module, _, kind = key.rpartition(".")
        if module in renames:
            bfl[f"{renames[module]}.{kind}"] = value
        elif module == "norm_out.linear":  # BFL stores shift before scale
            scale, shift = value.chunk(2)
            bfl[f"final_layer.adaLN_modulation.1.{kind}"] = torch.cat([shift, scale])
    for index in range(len({key.split(".")[1] for key in state if key.startswith("transformer_blocks.")})):
        prefix, target = f"transformer_blocks.{index}.", f"double_blocks.{index}."
        for module, name in double.items():
            for kind in ("weight", "bias"):
                bfl[f"{target}{name}.{kind}"] = state[f"{prefix}{module}.{kind}"]
        for module, name in norms.items():
            bfl[f"{target}{name}.scale"] = state[f"{prefix}{module}.weight"]
        for stream, parts in (("img", ("to_q", "to_k", "to_v")), ("txt", ("add_q_proj", "add_k_proj", "add_v_proj"))):
            for kind in ("weight", "bias"):
                bfl[f"{target}{stream}_attn.qkv.{kind}"] = torch.cat([state[f"{prefix}attn.{p}.{kind}"] for p in parts])
    for index in range(len({key.split(".")[1] for key in state if key.startswith("single_transformer_blocks.")})):
        prefix, target = f"single_transformer_blocks.{index}.", f"single_blocks.{index}."
        for kind in ("weight", "bias"):
            bfl[f"{target}linear1.{kind}"] = torch.cat(
                [state[f"{prefix}{part}.{kind}"] for part in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")])
            bfl[f"{target}linear2.{kind}"] = state[f"{prefix}proj_out.{kind}"]
            bfl[f"{target}modulation.lin.{kind}"] = state[f"{prefix}norm.linear.{kind}"]
        bfl[f"{target}norm.query_norm.scale"] = state[f"{prefix}attn.norm_q.weight"]
        bfl[f"{target}norm.key_norm.scale"] = state[f"{prefix}attn.norm_k.weight"]
    return bfl


def tiny_flux_transformer(guidance_embeds: bool = True, in_channels: int = 64, out_channels: int | None = None
                          ) -> Any:
    """The tiny FLUX transformer (random weights from torch's current seed); FLUX.1 Fill's takes 384 channels
    (latents, masked image latents, 8x8 mask blocks, packed) and returns 64."""
    from diffusers import FluxTransformer2DModel

    head_dim = 32
    return FluxTransformer2DModel(
        patch_size=1, in_channels=in_channels, out_channels=out_channels, num_layers=1, num_single_layers=1,
        attention_head_dim=head_dim, num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=64,
        guidance_embeds=guidance_embeds, axes_dims_rope=flux_rope_axes(head_dim)).eval()


def tiny_flux_fill_transformer(seed: int = 3) -> Any:
    torch.manual_seed(seed)
    return tiny_flux_transformer(in_channels=384, out_channels=64)


def tiny_flux_depth_transformer(seed: int = 4) -> Any:
    """FLUX.1 Depth/Canny's layout: the packed latents and the control image's packed latents, 64 out."""
    torch.manual_seed(seed)
    return tiny_flux_transformer(in_channels=128, out_channels=64)


def write_flux_diffusers_folder(models: TinyFlux, folder: Path,
                                scheduler_config: dict[str, Any] | None = None) -> Path:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    pipeline = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**(scheduler_config or FLUX_SCHEDULER)), vae=models.vae,
        text_encoder=models.text_encoder, tokenizer=models.tokenizer, text_encoder_2=models.text_encoder_2,
        tokenizer_2=models.tokenizer_2,
        transformer=models.transformer)
    pipeline.save_pretrained(str(folder), safe_serialization=True)
    return folder


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: tensor.detach().contiguous() for key, tensor in state.items()}, str(path))
    return path


def write_flux_single_files(models: TinyFlux, models_dir: Path) -> None:
    """The transformer (diffusers keys), CLIP-L (`text_model.*` keys as published), T5 encoder and an LDM-layout
    VAE, each in the folder ComfyUI users put it in."""
    models_dir = Path(models_dir)
    _save(models.transformer.state_dict(), models_dir / "diffusion_models" / DEMO_FLUX_TRANSFORMER)
    clip_state = {f"text_model.{key}": value for key, value in models.text_encoder.state_dict().items()
                  if not key.endswith("position_ids")}
    _save(clip_state, models_dir / "text_encoders" / DEMO_FLUX_CLIP_L)
    t5_state = {key: value for key, value in models.text_encoder_2.state_dict().items()
                if key != "encoder.embed_tokens.weight"}
    _save(t5_state, models_dir / "text_encoders" / DEMO_FLUX_T5)
    _save(ldm_export.vae_to_ldm(models.vae.state_dict(), models.vae.config, prefix=""),
          models_dir / "vae" / DEMO_FLUX_VAE)


def _lora_pair(generator: torch.Generator, module: torch.nn.Linear, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    down = torch.randn(rank, module.in_features, generator=generator) * 0.3
    up = torch.randn(module.out_features, rank, generator=generator) * 0.3
    return down, up


def kohya_flux_lora(models: TinyFlux, seed: int = 1, rank: int = 4, alpha: float = 2.0) -> dict[str, torch.Tensor]:
    """A kohya (sd-scripts) FLUX LoRA: `lora_unet_double_blocks_*` on the fused attention projections (BFL layout
    names), `lora_unet_single_blocks_*_linear2`, and `lora_te1_*` on CLIP-L's attention."""
    generator = torch.Generator().manual_seed(seed)
    blocks = models.transformer.transformer_blocks
    width = models.transformer.config.num_attention_heads * models.transformer.config.attention_head_dim
    targets: dict[str, tuple[int, int]] = {}
    for index in range(len(blocks)):
        for stream in ("img", "txt"):
            targets[f"lora_unet_double_blocks_{index}_{stream}_attn_qkv"] = (width, 3 * width)
            targets[f"lora_unet_double_blocks_{index}_{stream}_attn_proj"] = (width, width)
    for index in range(len(models.transformer.single_transformer_blocks)):
        mlp = models.transformer.single_transformer_blocks[index].proj_mlp.out_features
        targets[f"lora_unet_single_blocks_{index}_linear2"] = (width + mlp, width)
    for name, module in models.text_encoder.named_modules():
        if isinstance(module, torch.nn.Linear) and ".self_attn." in name:
            targets["lora_te1_text_model_" + name.replace(".", "_")] = (module.in_features, module.out_features)
    state: dict[str, torch.Tensor] = {}
    for key, (fan_in, fan_out) in targets.items():
        state[f"{key}.lora_down.weight"] = torch.randn(rank, fan_in, generator=generator) * 0.3
        state[f"{key}.lora_up.weight"] = torch.randn(fan_out, rank, generator=generator) * 0.3
        state[f"{key}.alpha"] = torch.tensor(alpha)
    return state


def peft_flux_lora(models: TinyFlux, seed: int = 2, rank: int = 4) -> dict[str, torch.Tensor]:
    """A diffusers/peft FLUX LoRA (`transformer.*.lora_A/lora_B`) on the attention of every block."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in models.transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith((".attn.to_q", ".attn.to_k", ".attn.to_v")):
            down, up = _lora_pair(generator, module, rank)
            state[f"transformer.{name}.lora_A.weight"] = down
            state[f"transformer.{name}.lora_B.weight"] = up
    return state


def make_flux_demo_models(models_dir: Path, seed: int = 0) -> TinyFlux:
    """The tiny FLUX diffusers folder, its single files, FLUX.1 Fill and Depth transformers and two LoRAs (what the
    shipped FLUX workflows load),
    written into a models folder; files already there are left alone. Returns the models."""
    models_dir = Path(models_dir)
    models = build_tiny_flux(seed)
    folder = models_dir / "diffusers" / DEMO_FLUX_DIFFUSERS
    if not (folder / "model_index.json").exists():
        write_flux_diffusers_folder(models, folder)
    single_files = [models_dir / "diffusion_models" / DEMO_FLUX_TRANSFORMER, models_dir / "vae" / DEMO_FLUX_VAE,
                    *(models_dir / "text_encoders" / name for name in (DEMO_FLUX_CLIP_L, DEMO_FLUX_T5))]
    if not all(path.exists() for path in single_files):
        write_flux_single_files(models, models_dir)
    for name, build in ((DEMO_FLUX_FILL_TRANSFORMER, tiny_flux_fill_transformer),
                        (DEMO_FLUX_DEPTH_TRANSFORMER, tiny_flux_depth_transformer)):
        if not (models_dir / "diffusion_models" / name).exists():
            _save(build().state_dict(), models_dir / "diffusion_models" / name)
    for name, state in ((DEMO_FLUX_LORA, lambda: kohya_flux_lora(models, seed + 1)),
                        (DEMO_FLUX_PEFT_LORA, lambda: peft_flux_lora(models, seed + 2))):
        if not (models_dir / "loras" / name).exists():
            _save(state(), models_dir / "loras" / name)
    return models
