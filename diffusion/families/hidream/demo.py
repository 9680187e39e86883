"""A tiny HiDream-I1 (random weights) in the files ComfyUI users have: the transformer (diffusers' names under
`model.diffusion_model.`, with HiDream's 128-wide attention heads and mixture-of-experts feed-forwards) in
diffusion_models/, and in text_encoders/ CLIP-L and CLIP-G with projections and 248 positions (as HiDream's are),
a T5 and a Llama 3 (`model.*` keys, Llama 3's special tokens after a byte vocabulary); FLUX's kind of VAE in vae/.
Also a diffusers HiDreamImagePipeline folder of the same models. Knows nothing of nodes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffusion.encoders.clip_tokenizer import TINY_VOCAB_SIZE, clip_tokenizer
from diffusion.encoders.llama_tokenizer import TINY_VOCAB_SIZE as TINY_LLAMA_VOCAB_SIZE
from diffusion.encoders.llama_tokenizer import tiny_llama3_tokenizer
from diffusion.encoders.t5 import TINY_T5_VOCAB_SIZE, tiny_t5_tokenizer
from diffusion.families import ldm_export
from diffusion.families.flux.loading import config as flux_config
from diffusion.families.hidream.loading import config

DEMO_HIDREAM_TRANSFORMER = "tiny-hidream-i1-transformer.safetensors"
DEMO_HIDREAM_CLIP_L = "tiny-hidream-clip-l.safetensors"
DEMO_HIDREAM_CLIP_G = "tiny-hidream-clip-g.safetensors"
DEMO_HIDREAM_T5 = "tiny-hidream-t5.safetensors"
DEMO_HIDREAM_LLAMA = "tiny-hidream-llama3.safetensors"
DEMO_HIDREAM_VAE = "tiny-hidream-vae.safetensors"
DEMO_HIDREAM_DIFFUSERS = "tiny-hidream-i1"
CLIP_L_WIDTH, CLIP_G_WIDTH = 32, 48  # CLIP-G is the wider one (768 and 1280 in HiDream)
T5_WIDTH = 32
LLAMA_WIDTH = 128  # one of Llama 3's 128-wide heads


@dataclass(frozen=True)
class TinyHiDream:
    transformer: Any
    vae: Any
    text_encoder: Any  # CLIP-L
    text_encoder_2: Any  # CLIP-G
    text_encoder_3: Any  # T5
    text_encoder_4: Any  # LlamaForCausalLM

    def pipeline(self) -> Any:
        """diffusers' HiDreamImagePipeline of these models, with the tokenizers the engine uses for them."""
        from diffusers import FlowMatchEulerDiscreteScheduler, HiDreamImagePipeline

        family = config()
        scheduler = {key: value for key, value in family["scheduler"].items() if not key.startswith("_")}
        pipeline = HiDreamImagePipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(**scheduler), vae=self.vae, text_encoder=self.text_encoder,
            tokenizer=clip_tokenizer(TINY_VOCAB_SIZE, family["tokenizer"]["pad_token"]),
            text_encoder_2=self.text_encoder_2,
            tokenizer_2=clip_tokenizer(TINY_VOCAB_SIZE, family["tokenizer_2"]["pad_token"]),
            text_encoder_3=self.text_encoder_3, tokenizer_3=tiny_t5_tokenizer(), text_encoder_4=self.text_encoder_4,
            tokenizer_4=tiny_llama3_tokenizer(), transformer=self.transformer)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline


def _clip(act: str, layers: int, pad_token_id: int, width: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=TINY_VOCAB_SIZE, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
        num_attention_heads=1, max_position_embeddings=248, projection_dim=width, hidden_act=act,
        bos_token_id=TINY_VOCAB_SIZE - 2, eos_token_id=TINY_VOCAB_SIZE - 1, pad_token_id=pad_token_id)).eval()


def build_tiny_hidream(seed: int = 11) -> TinyHiDream:
    from diffusers import AutoencoderKL, HiDreamImageTransformer2DModel
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5EncoderModel

    family = config()
    fixed = family["transformer"]
    torch.manual_seed(seed)
    transformer = HiDreamImageTransformer2DModel(
        patch_size=fixed["patch_size"], in_channels=16, out_channels=16, num_layers=1, num_single_layers=2,
        attention_head_dim=fixed["attention_head_dim"], num_attention_heads=1,
        caption_channels=[T5_WIDTH, LLAMA_WIDTH], text_emb_dim=CLIP_L_WIDTH + CLIP_G_WIDTH, num_routed_experts=2,
        num_activated_experts=fixed["num_activated_experts"], axes_dims_rope=tuple(fixed["axes_dims_rope"]),
        max_resolution=tuple(fixed["max_resolution"]), llama_layers=[0, 1, 2]).eval()
    flux_vae = flux_config()["vae"]
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1, block_out_channels=(32, 32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=32,
        use_quant_conv=False, use_post_quant_conv=False, scaling_factor=flux_vae["scaling_factor"],
        shift_factor=flux_vae["shift_factor"]).eval()
    t5 = T5EncoderModel(T5Config(
        vocab_size=TINY_T5_VOCAB_SIZE, d_model=T5_WIDTH, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
        use_cache=False)).eval()
    llama_settings = family["llama"]
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=TINY_LLAMA_VOCAB_SIZE, hidden_size=LLAMA_WIDTH, head_dim=llama_settings["head_dim"],
        intermediate_size=64, num_hidden_layers=4, num_attention_heads=1, num_key_value_heads=1,
        rms_norm_eps=llama_settings["rms_norm_eps"], rope_parameters=dict(llama_settings["rope_parameters"]),
        max_position_embeddings=llama_settings["max_position_embeddings"])).eval()
    return TinyHiDream(transformer, vae, _clip("quick_gelu", 2, TINY_VOCAB_SIZE - 1, CLIP_L_WIDTH),
                       _clip("gelu", 3, 0, CLIP_G_WIDTH), t5, llama)


def _save(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.detach().contiguous() for key, value in state.items()}, str(path))


def make_hidream_demo_models(models_dir: Path) -> TinyHiDream:
    """The tiny HiDream files and diffusers folder; those already there are left alone."""
    models_dir = Path(models_dir)
    models = build_tiny_hidream()
    files = {
        models_dir / "diffusion_models" / DEMO_HIDREAM_TRANSFORMER: lambda: {
            f"model.diffusion_model.{key}": value for key, value in models.transformer.state_dict().items()},
        models_dir / "text_encoders" / DEMO_HIDREAM_CLIP_L: lambda: _clip_file(models.text_encoder),
        models_dir / "text_encoders" / DEMO_HIDREAM_CLIP_G: lambda: _clip_file(models.text_encoder_2),
        models_dir / "text_encoders" / DEMO_HIDREAM_T5: lambda: {
            key: value for key, value in models.text_encoder_3.state_dict().items()
            if key != "encoder.embed_tokens.weight"},
        models_dir / "text_encoders" / DEMO_HIDREAM_LLAMA: lambda: {
            key: value for key, value in models.text_encoder_4.state_dict().items() if key.startswith("model.")},
        models_dir / "vae" / DEMO_HIDREAM_VAE: lambda: ldm_export.vae_to_ldm(
            models.vae.state_dict(), models.vae.config, prefix="")}
    for path, state in files.items():
        if not path.exists():
            _save(state(), path)
    folder = models_dir / "diffusers" / DEMO_HIDREAM_DIFFUSERS
    if not folder.exists():
        models.pipeline().save_pretrained(str(folder), safe_serialization=True)
    return models


def _clip_file(model: Any) -> dict[str, torch.Tensor]:
    """A CLIP with projection as published: `text_model.*` and `text_projection.weight`."""
    return {key: value for key, value in model.state_dict().items() if not key.endswith("position_ids")}
