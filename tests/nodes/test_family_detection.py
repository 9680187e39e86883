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
