"""The model family is read from the files: every supported family is recognised, and anything else is a clear
error naming what the file holds."""
import re

import pytest
import torch
from safetensors.torch import save_file

from diffusion import registry
from diffusion.families.sd import loading as sd
from diffusion.families.sd3 import loading as sd3
from diffusion.families.sdxl import loading as sdxl
from nodes.loaders import CheckpointLoaderSimple


@pytest.mark.parametrize("keys, description", [
    (["model.diffusion_model.double_blocks.0.img_attn.qkv.weight"], "a FLUX transformer (load it with UNETLoader)"),
    (["clip_txt_mapper.weight"], "a Stable Cascade stage"),
    (["lora_unet_down_blocks_0_attn1_to_q.lora_down.weight"], "a LoRA"),
    (["encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight"], "a T5 text encoder"),
    (["text_model.embeddings.token_embedding.weight"], "a CLIP text encoder"),
    (["decoder.up.0.block.0.conv1.weight"], "a VAE alone"),
    (["down_blocks.0.resnets.0.conv1.weight"], "a diffusers-layout model alone"),
    ([f"model.diffusion_model.{key}" for key in ("txt_norm.weight", "img_in.weight",
                                                 "transformer_blocks.0.img_mod.1.weight")],
     "a Qwen-Image transformer (load it with UNETLoader)"),
    (["decoder.middle.0.residual.0.gamma", "encoder.conv1.weight"], "a Qwen-Image VAE (load it with VAELoader)"),
    (["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.bias"],
     "a Qwen2.5-VL text encoder (Qwen-Image's: load it with CLIPLoader type qwen_image)"),
    (["model.embed_tokens.weight", "model.layers.0.self_attn.q_norm.weight"],
     "a Qwen3 text encoder (Z-Image's: load it with CLIPLoader type lumina2)"),
    (["model.embed_tokens.weight", "model.layers.0.pre_feedforward_layernorm.weight"],
     "a Gemma 2 text encoder (Lumina 2's: load it with CLIPLoader type lumina2)"),
])
def test_files_of_other_kinds_are_named(node_env, keys, description):
    folder = node_env.folders.model_dir("checkpoints") / "other"
    folder.mkdir(exist_ok=True)
    name = f"{abs(hash(tuple(keys)))}.safetensors"
    save_file({key: torch.zeros(2) for key in keys}, str(folder / name))
    expected = f"ckpt_name: {name}: unknown checkpoint layout: this file holds {description}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        CheckpointLoaderSimple().load_checkpoint(f"other/{name}")


def test_supported_families_have_readers():
    assert registry.pipeline_family("StableDiffusionXLPipeline").load_folder is sdxl.load_folder
    assert registry.pipeline_family("StableDiffusionXLImg2ImgPipeline").load_folder is sdxl.load_folder
    assert registry.pipeline_family("StableDiffusion3Pipeline").load_folder is sd3.load_folder
    assert registry.pipeline_family("StableDiffusionPipeline").load_folder is sd.load_folder
    assert registry.checkpoint_family({"model.diffusion_model.input_blocks.0.0.weight"}).load_checkpoint \
        is sd.load_checkpoint
