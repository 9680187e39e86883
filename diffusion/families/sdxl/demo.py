"""Tiny random-weight SDXL models (base and refiner) for tests and demos, in the real SDXL module layout.

The base has SDXL's three levels (the first without attention), two layers per block, a deeper transformer at the
lowest level, CLIP-L plus OpenCLIP-G with projection and the text-time added embedding; the refiner has four levels
with attention in the middle two, OpenCLIP-G only and aesthetic-score conditioning. Widths are tiny. They are
written as diffusers folders and as single files in the original layout (`conditioner.embedders.*`,
`model.diffusion_model.*`, `first_stage_model.*`), so the loaders' detection and conversion are exercised. Seeded:
the same seed writes the same weights. Knows nothing of nodes or the node environment.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffusion.encoders.clip_tokenizer import TINY_VOCAB_SIZE, clip_tokenizer
from diffusion.families import ldm_export
from diffusion.families.sdxl.detection import BASE_CLIP_G, CLIP_L, REFINER_CLIP_G
from diffusion.families.sdxl.loading import config

TEXT_WIDTH = 32
TIME_EMBED_WIDTH = 8


@dataclass(frozen=True)
class TinySdxl:
    refiner: bool
    unet: Any
    vae: Any
    text_encoder: Any  # CLIP-L; None in the refiner
    text_encoder_2: Any  # OpenCLIP-G with projection
    tokenizer: Any
    tokenizer_2: Any
    scheduler_config: dict[str, Any]


def _text_config(act: str, pad_token_id: int, layers: int) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=TINY_VOCAB_SIZE, hidden_size=TEXT_WIDTH, intermediate_size=2 * TEXT_WIDTH, num_hidden_layers=layers,
        num_attention_heads=1, max_position_embeddings=77, projection_dim=TEXT_WIDTH, hidden_act=act,
        bos_token_id=TINY_VOCAB_SIZE - 2, eos_token_id=TINY_VOCAB_SIZE - 1, pad_token_id=pad_token_id)


def _unet(refiner: bool) -> Any:
    from diffusers import UNet2DConditionModel

    if refiner:
        channels, down = (32, 64, 64, 64), ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                             "DownBlock2D")
        up, depths, context, time_ids = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), 1, \
            TEXT_WIDTH, 5
    else:
        channels, down = (32, 64, 64), ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
        up, depths, context, time_ids = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), (2, 1, 2), \
            2 * TEXT_WIDTH, 6
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=channels,
        down_block_types=down, up_block_types=up, transformer_layers_per_block=depths,
        attention_head_dim=[max(1, width // 64) for width in channels], use_linear_projection=True,
        cross_attention_dim=context, addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED_WIDTH,
        projection_class_embeddings_input_dim=time_ids * TIME_EMBED_WIDTH + TEXT_WIDTH).eval()


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(32, 32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64,
        scaling_factor=config()["vae"]["scaling_factor"]).eval()


def build_tiny_sdxl(seed: int = 0, refiner: bool = False) -> TinySdxl:
    """A seeded tiny SDXL base (or refiner) with its tokenizers and scheduler config."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    family = config()
    torch.manual_seed(seed)
    text_encoder = None if refiner else CLIPTextModel(_text_config("quick_gelu", TINY_VOCAB_SIZE - 1, 2)).eval()
    text_encoder_2 = CLIPTextModelWithProjection(_text_config("gelu", 0, 3)).eval()
    unet = _unet(refiner)
    vae = _vae()
    tokenizer = None if refiner else clip_tokenizer(TINY_VOCAB_SIZE, family["tokenizer"]["pad_token"])
    tokenizer_2 = clip_tokenizer(TINY_VOCAB_SIZE, family["tokenizer_2"]["pad_token"])
    scheduler = {key: value for key, value in family["scheduler"].items() if not key.startswith("_")}
    return TinySdxl(refiner, unet, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler)


def write_diffusers_folder(tiny: TinySdxl, folder: Path) -> Path:
    """A StableDiffusionXLPipeline folder (the refiner: StableDiffusionXLImg2ImgPipeline without `text_encoder`)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    scheduler = EulerDiscreteScheduler.from_config(tiny.scheduler_config)
    parts = dict(vae=tiny.vae, text_encoder=tiny.text_encoder, text_encoder_2=tiny.text_encoder_2,
                 tokenizer=tiny.tokenizer, tokenizer_2=tiny.tokenizer_2, unet=tiny.unet, scheduler=scheduler)
    if tiny.refiner:
        pipeline = StableDiffusionXLImg2ImgPipeline(**parts, requires_aesthetics_score=True,
                                                    force_zeros_for_empty_prompt=False)
    else:
        pipeline = StableDiffusionXLPipeline(**parts)
    pipeline.save_pretrained(str(folder), safe_serialization=True)
    return folder


def _unet_to_ldm(unet: Any) -> dict[str, torch.Tensor]:
    state = dict(unet.state_dict())
    added = {f"label_emb.0.{index}.{kind}": state.pop(f"add_embedding.linear_{number}.{kind}")
             for number, index in ((1, 0), (2, 2)) for kind in ("weight", "bias")}
    converted = ldm_export.unet_to_ldm(state, unet.config)
    converted.update({ldm_export.UNET_PREFIX + key: tensor for key, tensor in added.items()})
    return converted


def _open_clip_to_ldm(model: Any, prefix: str) -> dict[str, torch.Tensor]:
    """OpenCLIP-G keys under `prefix`, all layers, with OpenCLIP's [width, projection] `text_projection`."""
    state = dict(model.state_dict())
    projection = state.pop("text_projection.weight")
    converted = ldm_export.open_clip_to_ldm(state)
    unused = f"{ldm_export.OPEN_CLIP_PREFIX}transformer.resblocks.{model.config.num_hidden_layers}."
    renamed = {prefix + key[len(ldm_export.OPEN_CLIP_PREFIX):]: tensor for key, tensor in converted.items()
               if not key.startswith(unused)}
    renamed[prefix + "text_projection"] = projection.T.contiguous()
    return renamed


def ldm_state_dict(tiny: TinySdxl) -> dict[str, torch.Tensor]:
    """The whole model in the original single-file SDXL layout."""
    state = {**_unet_to_ldm(tiny.unet), **ldm_export.vae_to_ldm(tiny.vae.state_dict(), tiny.vae.config)}
    if tiny.refiner:
        state.update(_open_clip_to_ldm(tiny.text_encoder_2, REFINER_CLIP_G))
    else:
        state.update({CLIP_L + key.removeprefix("text_model."): tensor
                      for key, tensor in tiny.text_encoder.state_dict().items() if not key.endswith("position_ids")})
        state.update(_open_clip_to_ldm(tiny.text_encoder_2, BASE_CLIP_G))
    return {key: tensor.detach().contiguous() for key, tensor in state.items()}


def write_checkpoint(tiny: TinySdxl, path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm_state_dict(tiny), str(path))
    return path


def kohya_lora_state_dict(tiny: TinySdxl, seed: int = 1, rank: int = 4, alpha: float = 2.0) -> dict[str, torch.Tensor]:
    """A kohya-layout SDXL LoRA (`lora_unet_*`, `lora_te1_*`, `lora_te2_*`) on the attention projections."""
    generator = torch.Generator().manual_seed(seed)
    targets: list[tuple[str, torch.nn.Linear]] = []
    for name, module in tiny.unet.named_modules():
        if isinstance(module, torch.nn.Linear) and (".attn1.to_" in name or ".attn2.to_" in name):
            targets.append(("lora_unet_" + name.replace(".", "_"), module))
    for prefix, encoder in (("lora_te1_", tiny.text_encoder), ("lora_te2_", tiny.text_encoder_2)):
        for name, module in encoder.named_modules():
            if isinstance(module, torch.nn.Linear) and ".self_attn." in name:
                targets.append((prefix + ("text_model." + name.removeprefix("text_model.")).replace(".", "_"), module))
    state: dict[str, torch.Tensor] = {}
    for key, module in targets:
        state[f"{key}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=generator) * 0.5
        state[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=generator) * 0.5
        state[f"{key}.alpha"] = torch.tensor(alpha)
    return state


DEMO_BASE = "tiny-sdxl"
DEMO_REFINER = "tiny-sdxl-refiner"
DEMO_LORA = "tiny-sdxl-lora.safetensors"


@dataclass(frozen=True)
class SdxlDemoModels:
    base: TinySdxl
    refiner: TinySdxl


def make_sdxl_demo_models(models_dir: Path, seed: int = 10) -> SdxlDemoModels:
    """Write the tiny SDXL base and refiner into a models folder, each as a single-file checkpoint
    (`checkpoints/tiny-sdxl*.safetensors`) and a diffusers folder (`diffusers/tiny-sdxl*`), and a kohya LoRA."""
    from safetensors.torch import save_file

    models_dir = Path(models_dir)
    demo = SdxlDemoModels(build_tiny_sdxl(seed), build_tiny_sdxl(seed + 1, refiner=True))
    for tiny, name in ((demo.base, DEMO_BASE), (demo.refiner, DEMO_REFINER)):
        write_checkpoint(tiny, models_dir / "checkpoints" / f"{name}.safetensors")
        write_diffusers_folder(tiny, models_dir / "diffusers" / name)
    (models_dir / "loras").mkdir(parents=True, exist_ok=True)
    save_file(kohya_lora_state_dict(demo.base, seed + 2), str(models_dir / "loras" / DEMO_LORA))
    return demo
