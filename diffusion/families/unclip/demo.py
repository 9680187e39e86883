"""Tiny random-weight Kandinsky 2.2 models (diffusers' DALL-E 2 style unCLIP cascade) for tests and demos.

A prior folder (`KandinskyV22PriorPipeline`: PriorTransformer, CLIP text encoder and CLIP image encoder with
projections, image processor, UnCLIPScheduler) and a decoder folder (`KandinskyV22Pipeline`: a UNet that adds
the image embedding to its time embedding, a MoVQ `VQModel`, DDPMScheduler), in the configurations diffusers'
own tests use, shrunk further; the MoVQ keeps Kandinsky's 8x downscale. Seeded; images are noise.
Knows nothing of nodes or the node environment.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffusion.encoders.clip_tokenizer import TINY_VOCAB_SIZE, clip_tokenizer

EMBEDDING_DIM = 32  # the CLIP projection width: what the prior predicts and the decoder is conditioned on
IMAGE_SIZE = 32  # the tiny CLIP image encoder's input size
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
DEMO_PRIOR = "tiny-kandinsky-prior"
DEMO_DECODER = "tiny-kandinsky-decoder"


@dataclass(frozen=True)
class TinyKandinsky:
    prior: Any
    text_encoder: Any
    tokenizer: Any
    image_encoder: Any
    image_processor: Any
    unet: Any
    movq: Any


def build_tiny_kandinsky(seed: int = 0) -> TinyKandinsky:
    from diffusers import PriorTransformer, UNet2DConditionModel, VQModel
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=TINY_VOCAB_SIZE, hidden_size=32, projection_dim=EMBEDDING_DIM, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, bos_token_id=TINY_VOCAB_SIZE - 2,
        eos_token_id=TINY_VOCAB_SIZE - 1, pad_token_id=TINY_VOCAB_SIZE - 1)).eval()
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, image_size=IMAGE_SIZE, projection_dim=EMBEDDING_DIM, intermediate_size=37,
        num_attention_heads=4, num_channels=3, num_hidden_layers=2, patch_size=8)).eval()
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=EMBEDDING_DIM,
                             num_layers=1).eval()
    with torch.no_grad():  # the CLIP image-embedding statistics the prior un-normalizes its output with
        prior.clip_mean.copy_(torch.randn(prior.clip_mean.shape) * 0.1)
        prior.clip_std.copy_(torch.rand(prior.clip_std.shape) + 0.5)
    unet = UNet2DConditionModel(
        in_channels=4, out_channels=8, addition_embed_type="image", block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", encoder_hid_dim=EMBEDDING_DIM,
        encoder_hid_dim_type="image_proj", cross_attention_dim=64, attention_head_dim=4,
        resnet_time_scale_shift="scale_shift", class_embed_type=None).eval()
    movq = VQModel(
        block_out_channels=[32, 32, 32, 32], in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=["DownEncoderBlock2D"] * 3 + ["AttnDownEncoderBlock2D"],
        up_block_types=["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 3, norm_num_groups=32, norm_type="spatial",
        num_vq_embeddings=12, vq_embed_dim=4).eval()
    image_processor = CLIPImageProcessor(
        crop_size=IMAGE_SIZE, size=IMAGE_SIZE, do_center_crop=True, do_normalize=True, do_resize=True,
        image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=3)
    return TinyKandinsky(prior, text_encoder, clip_tokenizer(TINY_VOCAB_SIZE), image_encoder, image_processor,
                         unet, movq)


def write_kandinsky_folders(models: TinyKandinsky, diffusers_dir: Path) -> tuple[Path, Path]:
    """The prior and decoder as diffusers folders `tiny-kandinsky-prior` and `tiny-kandinsky-decoder`."""
    from diffusers import DDPMScheduler, KandinskyV22Pipeline, KandinskyV22PriorPipeline, UnCLIPScheduler

    prior_folder, decoder_folder = Path(diffusers_dir) / DEMO_PRIOR, Path(diffusers_dir) / DEMO_DECODER
    KandinskyV22PriorPipeline(
        prior=models.prior, image_encoder=models.image_encoder, text_encoder=models.text_encoder,
        tokenizer=models.tokenizer, scheduler=UnCLIPScheduler(
            variance_type="fixed_small_log", prediction_type="sample", num_train_timesteps=1000,
            clip_sample=True, clip_sample_range=10.0),
        image_processor=models.image_processor).save_pretrained(str(prior_folder), safe_serialization=True)
    KandinskyV22Pipeline(
        unet=models.unet, movq=models.movq, scheduler=DDPMScheduler(
            num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
            clip_sample=False, steps_offset=1, prediction_type="epsilon",
            thresholding=False)).save_pretrained(str(decoder_folder), safe_serialization=True)
    return prior_folder, decoder_folder


def make_kandinsky_demo_models(models_dir: Path, seed: int = 0) -> TinyKandinsky:
    """The tiny prior and decoder folders (what the shipped unCLIP workflows load) in a models folder; written
    only if one is missing. Returns the models."""
    models = build_tiny_kandinsky(seed)
    diffusers_dir = Path(models_dir) / "diffusers"
    if not all((diffusers_dir / name / "model_index.json").exists() for name in (DEMO_PRIOR, DEMO_DECODER)):
        write_kandinsky_folders(models, diffusers_dir)
    return models
