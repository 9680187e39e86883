"""Tiny random-weight Stable Diffusion models for tests, benchmarks and the out-of-the-box demo.

They keep the real SD1.x (and SD2.x) module layout (4 resolutions, 2 layers per block, the same attention
and text-encoder structure; the SD1 one has no attention at full resolution, see `_unet`) with very few
channels, so the real loader paths are exercised: a single-file checkpoint in the original LDM key layout,
the same weights as a diffusers folder, and a kohya-layout LoRA;
`make_editing_models` adds an inpainting (9-channel UNet) and an InstructPix2Pix (8-channel) model.
Everything is seeded: the same seed writes byte-identical files. Images they make are noise.
Knows nothing of nodes or of the node environment; `make_demo_models` only needs a models folder.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffusion.encoders.clip_tokenizer import TINY_VOCAB_SIZE, clip_tokenizer
from diffusion.families import ldm_export
from diffusion.families.sd.detection import V_PREDICTION_MARKER
from diffusion.families.sd.loading import scheduler_config, version_config

DEMO_CHECKPOINT = "tiny-sd1.safetensors"
DEMO_DIFFUSERS = "tiny-sd1"
DEMO_LORA = "tiny-sd1-lora.safetensors"
INPAINTING_CHECKPOINT = "tiny-sd1-inpainting.safetensors"
INPAINTING_DIFFUSERS = "tiny-sd1-inpainting"
PIX2PIX_CHECKPOINT = "tiny-sd1-instruct-pix2pix.safetensors"
PIX2PIX_DIFFUSERS = "tiny-sd1-instruct-pix2pix"
INPAINTING_UNET_CHANNELS = 9  # latents, mask, masked-image latents
PIX2PIX_UNET_CHANNELS = 8  # latents, source-image latents
UNET_LORA_TARGET = re.compile(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")


@dataclass(frozen=True)
class TinyComponents:
    version: str  # "sd1" or "sd2"
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict[str, Any]


def _unet(version: str, text_width: int, in_channels: int = 4) -> Any:
    from diffusers import UNet2DConditionModel

    if version == "sd1":
        channels, heads, linear = (32, 32, 64, 64), 8, False
        # No attention at the full-resolution level (SDXL's layout; real SD1 files have it there, and the loader
        # reads which levels do from the file): at 512x512 its 4,096-token self-attention with 4-channel heads
        # took 95% of a step (2.2 s against 0.19 s without, one CPU thread), and the demo's first image must
        # come quickly.
        attention = (False, True, True, False)
    else:  # SD2 uses 64-channel attention heads, so every level needs 64 channels; its v-prediction probe
        channels, heads, linear = (64, 64, 64, 64), [1, 1, 1, 1], True  # sits in full-resolution attention
        attention = (True, True, True, False)
    return UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=2, block_out_channels=channels,
        down_block_types=tuple("CrossAttnDownBlock2D" if on else "DownBlock2D" for on in attention),
        up_block_types=tuple("CrossAttnUpBlock2D" if on else "UpBlock2D" for on in reversed(attention)),
        cross_attention_dim=text_width, attention_head_dim=heads, use_linear_projection=linear,
        upcast_attention=version == "sd2")


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(32, 32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64,
        scaling_factor=0.18215)


def _text_encoder(version: str) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=TINY_VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=1, max_position_embeddings=77, projection_dim=64,
        hidden_act="quick_gelu" if version == "sd1" else "gelu",
        bos_token_id=TINY_VOCAB_SIZE - 2, eos_token_id=TINY_VOCAB_SIZE - 1,
        pad_token_id=TINY_VOCAB_SIZE - 1 if version == "sd1" else 0)
    return CLIPTextModel(config).eval()


def build_tiny_components(version: str = "sd1", seed: int = 0, v_prediction: bool = False,
                          unet_in_channels: int = 4) -> TinyComponents:
    """Seeded tiny UNet, VAE and text encoder of a version ("sd1" or "sd2"), with its tokenizer and scheduler config
    (`unet_in_channels` 9 makes an inpainting model, 8 an InstructPix2Pix one)."""
    torch.manual_seed(seed)  # each part seeded on its own: one's architecture never changes another's weights
    text_encoder = _text_encoder(version)
    torch.manual_seed(seed + 1)
    vae = _vae().eval()
    torch.manual_seed(seed + 2)
    unet = _unet(version, text_encoder.config.hidden_size, unet_in_channels).eval()
    tokenizer = clip_tokenizer(TINY_VOCAB_SIZE, version_config(version)["tokenizer"]["pad_token"])
    return TinyComponents(version, unet, vae, text_encoder, tokenizer,
                          scheduler_config(version, "v_prediction" if v_prediction else "epsilon"))


def ldm_state_dict(components: TinyComponents) -> dict[str, torch.Tensor]:
    """All three models in the original single-file key layout of their version."""
    text = components.text_encoder.state_dict()
    state = {
        **ldm_export.unet_to_ldm(components.unet.state_dict(), components.unet.config),
        **ldm_export.vae_to_ldm(components.vae.state_dict(), components.vae.config),
        **(ldm_export.clip_to_ldm(text) if components.version == "sd1" else ldm_export.open_clip_to_ldm(text)),
    }
    if components.scheduler_config["prediction_type"] == "v_prediction":
        state[V_PREDICTION_MARKER] = torch.tensor([])
    return {key: tensor.detach().contiguous() for key, tensor in state.items()}


def write_checkpoint(components: TinyComponents, path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm_state_dict(components), str(path))
    return path


def write_diffusers_folder(components: TinyComponents, folder: Path) -> Path:
    """The same models as a diffusers pipeline folder (no safety checker): `StableDiffusionPipeline`, or the
    inpainting / InstructPix2Pix pipeline for UNets with 9 / 8 input channels."""
    import diffusers
    from diffusers import PNDMScheduler

    pipeline_class = {INPAINTING_UNET_CHANNELS: diffusers.StableDiffusionInpaintPipeline,
                      PIX2PIX_UNET_CHANNELS: diffusers.StableDiffusionInstructPix2PixPipeline}.get(
        components.unet.config.in_channels, diffusers.StableDiffusionPipeline)
    pipeline = pipeline_class(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
        unet=components.unet, scheduler=PNDMScheduler.from_config(components.scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(str(folder), safe_serialization=True)
    return folder


def _kohya_name(prefix: str, module_name: str) -> str:
    return f"{prefix}_{module_name.replace('.', '_')}"


def kohya_lora_state_dict(components: TinyComponents, seed: int = 1, rank: int = 4,
                          alpha: float = 2.0) -> dict[str, torch.Tensor]:
    """A kohya-layout LoRA (`lora_unet_*`, `lora_te_*` with `lora_down`/`lora_up`/`alpha`) for the attention
    projections of the UNet and the text encoder, with weights large enough to change the output visibly."""
    generator = torch.Generator().manual_seed(seed)
    targets: list[tuple[str, torch.nn.Linear]] = []
    for name, module in components.unet.named_modules():
        if isinstance(module, torch.nn.Linear) and UNET_LORA_TARGET.search(name):
            targets.append((_kohya_name("lora_unet", name), module))
    for name, module in components.text_encoder.named_modules():
        if isinstance(module, torch.nn.Linear) and ".self_attn." in name:
            targets.append((_kohya_name("lora_te", f"text_model.{name}"), module))
    state: dict[str, torch.Tensor] = {}
    for key, module in targets:
        state[f"{key}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=generator) * 0.5
        state[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=generator) * 0.5
        state[f"{key}.alpha"] = torch.tensor(alpha)
    return state


def write_kohya_lora(components: TinyComponents, path: Path, seed: int = 1) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(kohya_lora_state_dict(components, seed), str(path))
    return path


@dataclass(frozen=True)
class DemoModels:
    checkpoint: Path
    diffusers_folder: Path
    lora: Path


def make_demo_models(models_dir: Path, seed: int = 0) -> DemoModels:
    """Write the tiny SD1 demo checkpoint, diffusers folder and LoRA into a models folder (what
    `main.py make-demo-models` runs). Existing files are left alone. The models are random: their images are noise."""
    models_dir = Path(models_dir)
    demo = DemoModels(models_dir / "checkpoints" / DEMO_CHECKPOINT, models_dir / "diffusers" / DEMO_DIFFUSERS,
                      models_dir / "loras" / DEMO_LORA)
    if demo.checkpoint.exists() and (demo.diffusers_folder / "model_index.json").exists() and demo.lora.exists():
        return demo
    components = build_tiny_components("sd1", seed)
    if not demo.checkpoint.exists():
        write_checkpoint(components, demo.checkpoint)
    if not (demo.diffusers_folder / "model_index.json").exists():
        write_diffusers_folder(components, demo.diffusers_folder)
    if not demo.lora.exists():
        write_kohya_lora(components, demo.lora, seed + 1)
    return demo


def make_editing_models(models_dir: Path, seed: int = 0) -> list[Path]:
    """Write the tiny SD1 inpainting (9-channel UNet) and InstructPix2Pix (8-channel UNet) models, each as a
    single-file checkpoint and a diffusers folder; existing ones are left alone. Their images are noise too."""
    models_dir = Path(models_dir)
    written = []
    for channels, checkpoint_name, folder_name, offset in (
            (INPAINTING_UNET_CHANNELS, INPAINTING_CHECKPOINT, INPAINTING_DIFFUSERS, 10),
            (PIX2PIX_UNET_CHANNELS, PIX2PIX_CHECKPOINT, PIX2PIX_DIFFUSERS, 20)):
        checkpoint = models_dir / "checkpoints" / checkpoint_name
        folder = models_dir / "diffusers" / folder_name
        if checkpoint.exists() and (folder / "model_index.json").exists():
            continue
        components = build_tiny_components("sd1", seed + offset, unet_in_channels=channels)
        if not checkpoint.exists():
            written.append(write_checkpoint(components, checkpoint))
        if not (folder / "model_index.json").exists():
            written.append(write_diffusers_folder(components, folder))
    return written
