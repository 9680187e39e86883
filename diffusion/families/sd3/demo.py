"""Tiny random-weight SD3 models for tests and demos: an MMDiT with SD3's structure (2x2 patches, joint blocks,
64-channel attention heads), CLIP-L and CLIP-G with projections, a small T5 and a 16-channel VAE with SD3's
shift and scale factors, written as a StableDiffusion3Pipeline folder (with or without T5) and as separate
text encoder files in the transformers layout (what TripleCLIPLoader reads), plus a peft-layout transformer LoRA.
Seeded: the same seed gives the same weights. Knows nothing of nodes or the node environment.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffusion.encoders.clip_tokenizer import TINY_VOCAB_SIZE, clip_tokenizer
from diffusion.encoders.t5 import TINY_T5_VOCAB_SIZE, tiny_t5_tokenizer
from diffusion.families import ldm_export
from diffusion.families.sd3.detection import CLIP_G, CLIP_L, T5, TRANSFORMER_PREFIX
from diffusion.families.sd3.loading import config

CLIP_L_WIDTH, CLIP_G_WIDTH = 32, 48  # CLIP-G is the wider one, as in SD3 (768 and 1280)
JOINT_WIDTH = 96  # T5's width; wider than the two CLIPs side by side, as in SD3 (2048 < 4096)


@dataclass(frozen=True)
class TinySd3:
    transformer: Any
    vae: Any
    text_encoder: Any
    text_encoder_2: Any
    text_encoder_3: Any
    tokenizer: Any
    tokenizer_2: Any
    tokenizer_3: Any
    scheduler_config: dict[str, Any]


def _clip(act: str, layers: int, pad_token_id: int, width: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=TINY_VOCAB_SIZE, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
        num_attention_heads=1, max_position_embeddings=77, projection_dim=width, hidden_act=act,
        bos_token_id=TINY_VOCAB_SIZE - 2, eos_token_id=TINY_VOCAB_SIZE - 1, pad_token_id=pad_token_id)).eval()


def _t5() -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=TINY_T5_VOCAB_SIZE, d_model=JOINT_WIDTH, d_kv=16, d_ff=64, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
        use_cache=False)).eval()


def build_tiny_sd3(seed: int = 0) -> TinySd3:
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    family = config()
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=4, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=64, num_attention_heads=1,
        joint_attention_dim=JOINT_WIDTH, caption_projection_dim=64, pooled_projection_dim=CLIP_L_WIDTH + CLIP_G_WIDTH,
        out_channels=16, pos_embed_max_size=16).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1, block_out_channels=(32, 32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=32,
        scaling_factor=family["vae"]["scaling_factor"], shift_factor=family["vae"]["shift_factor"],
        use_quant_conv=False, use_post_quant_conv=False).eval()
    text_encoder = _clip("quick_gelu", 2, TINY_VOCAB_SIZE - 1, CLIP_L_WIDTH)
    text_encoder_2 = _clip("gelu", 3, 0, CLIP_G_WIDTH)
    text_encoder_3 = _t5()
    scheduler = {key: value for key, value in family["scheduler"].items() if not key.startswith("_")}
    return TinySd3(transformer, vae, text_encoder, text_encoder_2, text_encoder_3,
                   clip_tokenizer(TINY_VOCAB_SIZE, family["tokenizer"]["pad_token"]),
                   clip_tokenizer(TINY_VOCAB_SIZE, family["tokenizer_2"]["pad_token"]), tiny_t5_tokenizer(), scheduler)


def write_diffusers_folder(tiny: TinySd3, folder: Path, with_t5: bool = True) -> Path:
    """A StableDiffusion3Pipeline folder; without T5, `text_encoder_3`/`tokenizer_3` are left out."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    pipeline = StableDiffusion3Pipeline(
        transformer=tiny.transformer, scheduler=FlowMatchEulerDiscreteScheduler.from_config(tiny.scheduler_config),
        vae=tiny.vae, text_encoder=tiny.text_encoder, tokenizer=tiny.tokenizer, text_encoder_2=tiny.text_encoder_2,
        tokenizer_2=tiny.tokenizer_2, text_encoder_3=tiny.text_encoder_3 if with_t5 else None,
        tokenizer_3=tiny.tokenizer_3 if with_t5 else None)
    pipeline.save_pretrained(str(folder), safe_serialization=True)
    return folder


def write_text_encoder_files(tiny: TinySd3, folder: Path, prefix: str = "tiny-sd3") -> list[Path]:
    """clip_l, clip_g and t5xxl files in the transformers key layout, as SD3's separate encoder files come."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for part, model in (("clip_l", tiny.text_encoder), ("clip_g", tiny.text_encoder_2), ("t5xxl", tiny.text_encoder_3)):
        state = {key: tensor.detach().contiguous() for key, tensor in model.state_dict().items()
                 if not key.endswith("position_ids") and key != "encoder.embed_tokens.weight"}
        paths.append(folder / f"{prefix}-{part}.safetensors")
        save_file(state, str(paths[-1]))
    return paths


def peft_lora_state_dict(tiny: TinySd3, seed: int = 1, rank: int = 4,
                         text_encoders: bool = False) -> dict[str, torch.Tensor]:
    """A diffusers/peft-layout LoRA (`transformer.*.lora_A/lora_B.weight`) on the joint attention projections,
    with `text_encoders` also on both CLIPs' attention (`text_encoder.*`, `text_encoder_2.*`)."""
    generator = torch.Generator().manual_seed(seed)
    targets = [("transformer", name, module) for name, module in tiny.transformer.named_modules()
               if isinstance(module, torch.nn.Linear) and ".attn." in name and name.rsplit(".", 1)[-1] in (
                   "to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")]
    if text_encoders:
        for component, model in (("text_encoder", tiny.text_encoder), ("text_encoder_2", tiny.text_encoder_2)):
            targets += [(component, name, module) for name, module in model.named_modules()
                        if isinstance(module, torch.nn.Linear) and ".self_attn." in name]
    state: dict[str, torch.Tensor] = {}
    for component, name, module in targets:
        state[f"{component}.{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=generator) * 0.3
        state[f"{component}.{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=generator) * 0.3
    return state


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    """diffusers' adaLN output is (scale, shift) where MMDiT's is (shift, scale): swapping twice is the identity."""
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def transformer_to_original(transformer: Any) -> dict[str, torch.Tensor]:
    """An SD3Transformer2DModel state dict in the original MMDiT layout (`joint_blocks.N.x_block/context_block`,
    fused qkv, `final_layer`), written independently as the inverse of diffusers' single-file converter."""
    state = dict(transformer.state_dict())
    pop = state.pop
    original = {
        "pos_embed": pop("pos_embed.pos_embed"), "x_embedder.proj.weight": pop("pos_embed.proj.weight"),
        "x_embedder.proj.bias": pop("pos_embed.proj.bias"),
        "context_embedder.weight": pop("context_embedder.weight"),
        "context_embedder.bias": pop("context_embedder.bias"),
        "final_layer.linear.weight": pop("proj_out.weight"), "final_layer.linear.bias": pop("proj_out.bias"),
        "final_layer.adaLN_modulation.1.weight": _swap_halves(pop("norm_out.linear.weight")),
        "final_layer.adaLN_modulation.1.bias": _swap_halves(pop("norm_out.linear.bias")),
    }
    for embedder, diffusers_name in (("t_embedder", "timestep_embedder"), ("y_embedder", "text_embedder")):
        for index, linear in ((0, 1), (2, 2)):
            for kind in ("weight", "bias"):
                diffusers_key = f"time_text_embed.{diffusers_name}.linear_{linear}.{kind}"
                original[f"{embedder}.mlp.{index}.{kind}"] = pop(diffusers_key)
    layers = transformer.config.num_layers
    for i in range(layers):
        block, joint = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        last = i == layers - 1
        for kind in ("weight", "bias"):
            original[f"{joint}x_block.attn.qkv.{kind}"] = torch.cat(
                [pop(f"{block}attn.to_{name}.{kind}") for name in ("q", "k", "v")])
            original[f"{joint}context_block.attn.qkv.{kind}"] = torch.cat(
                [pop(f"{block}attn.add_{name}_proj.{kind}") for name in ("q", "k", "v")])
            original[f"{joint}x_block.attn.proj.{kind}"] = pop(f"{block}attn.to_out.0.{kind}")
            original[f"{joint}x_block.adaLN_modulation.1.{kind}"] = pop(f"{block}norm1.linear.{kind}")
            context_norm = pop(f"{block}norm1_context.linear.{kind}")
            original[f"{joint}context_block.adaLN_modulation.1.{kind}"] = _swap_halves(context_norm) if last \
                else context_norm
            original[f"{joint}x_block.mlp.fc1.{kind}"] = pop(f"{block}ff.net.0.proj.{kind}")
            original[f"{joint}x_block.mlp.fc2.{kind}"] = pop(f"{block}ff.net.2.{kind}")
            if not last:
                original[f"{joint}context_block.attn.proj.{kind}"] = pop(f"{block}attn.to_add_out.{kind}")
                original[f"{joint}context_block.mlp.fc1.{kind}"] = pop(f"{block}ff_context.net.0.proj.{kind}")
                original[f"{joint}context_block.mlp.fc2.{kind}"] = pop(f"{block}ff_context.net.2.{kind}")
    if state:
        raise KeyError(f"SD3 transformer keys with no original equivalent: {sorted(state)[:5]}")
    return original


def original_state_dict(tiny: TinySd3) -> dict[str, torch.Tensor]:
    """The whole model as one original-layout SD3 file with its text encoders (like sd3_medium_incl_clips_t5)."""
    state = {TRANSFORMER_PREFIX + key: tensor for key, tensor in transformer_to_original(tiny.transformer).items()}
    state.update(ldm_export.vae_to_ldm(tiny.vae.state_dict(), tiny.vae.config))
    for prefix, model in ((CLIP_L, tiny.text_encoder), (CLIP_G, tiny.text_encoder_2), (T5, tiny.text_encoder_3)):
        state.update({prefix + key: tensor for key, tensor in model.state_dict().items()
                      if not key.endswith("position_ids") and key != "encoder.embed_tokens.weight"})
    return {key: tensor.detach().contiguous() for key, tensor in state.items()}


DEMO_CHECKPOINT = "tiny-sd3.safetensors"
DEMO_DIFFUSERS = "tiny-sd3"
DEMO_DIFFUSERS_NO_T5 = "tiny-sd3-no-t5"
DEMO_LORA = "tiny-sd3-lora.safetensors"
DEMO_LORA_ALL = "tiny-sd3-lora-with-text-encoders.safetensors"


def make_sd3_demo_models(models_dir: Path, seed: int = 20) -> TinySd3:
    """Write the tiny SD3 into a models folder: diffusers folders with and without T5, a single original-layout
    file with its text encoders (`checkpoints/tiny-sd3.safetensors`), the three text encoder files
    (`text_encoders/tiny-sd3-{clip_l,clip_g,t5xxl}.safetensors`) and peft-layout LoRAs (transformer only, and
    transformer plus both CLIPs)."""
    from safetensors.torch import save_file

    models_dir = Path(models_dir)
    tiny = build_tiny_sd3(seed)
    write_diffusers_folder(tiny, models_dir / "diffusers" / DEMO_DIFFUSERS)
    write_diffusers_folder(tiny, models_dir / "diffusers" / DEMO_DIFFUSERS_NO_T5, with_t5=False)
    write_text_encoder_files(tiny, models_dir / "text_encoders")
    (models_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_file(original_state_dict(tiny), str(models_dir / "checkpoints" / DEMO_CHECKPOINT))
    (models_dir / "loras").mkdir(parents=True, exist_ok=True)
    save_file(peft_lora_state_dict(tiny, seed + 1), str(models_dir / "loras" / DEMO_LORA))
    save_file(peft_lora_state_dict(tiny, seed + 2, text_encoders=True), str(models_dir / "loras" / DEMO_LORA_ALL))
    return tiny
