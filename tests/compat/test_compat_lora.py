"""`comfy.lora` and weight patches: a pack loading a LoRA itself (key maps, load_lora, add_patches on MODEL and
CLIP) gets LoraLoader's result; block filters see ComfyUI's key names; merges through get_key_patches."""
from __future__ import annotations

import logging

import pytest
import torch
from comfy import lora as comfy_lora
from comfy import utils as comfy_utils

from diffusion.families.sd.demo import DEMO_CHECKPOINT, DEMO_LORA
from nodes.conditioning import CLIPTextEncode
from nodes.loaders import CheckpointLoaderSimple, LoraLoader


@pytest.fixture
def loaded(node_env):
    """(MODEL, CLIP, the demo LoRA's patches by model key)."""
    model, clip, _ = CheckpointLoaderSimple().load_checkpoint(DEMO_CHECKPOINT)
    lora = comfy_utils.load_torch_file(str(node_env.folders.models_dir / "loras" / DEMO_LORA), safe_load=True)
    key_map = comfy_lora.model_lora_keys_unet(model.model, {})
    key_map = comfy_lora.model_lora_keys_clip(clip.cond_stage_model, key_map)
    return model, clip, comfy_lora.load_lora(lora, key_map)


def _sampled(model, positive, euler_sampled) -> torch.Tensor:
    return euler_sampled(model, positive, positive, cfg=1.0)


def test_add_patches_of_a_loaded_lora_equals_lora_loader(loaded, euler_sampled):
    model, clip, patches = loaded
    assert all(key.startswith(("diffusion_model.", "clip_l.transformer.text_model.")) for key in patches)
    assert any(".input_blocks." in key or ".output_blocks." in key for key in patches)  # ComfyUI's names
    adapter = next(iter(patches.values()))
    assert isinstance(adapter, comfy_lora.LoRAAdapter) and len(adapter.weights) == 6
    patched_model, patched_clip = model.clone(), clip.clone()
    applied = patched_model.add_patches(patches, 0.7)
    assert applied and set(applied) == {key for key in patches if key.startswith("diffusion_model.")}
    assert patched_clip.add_patches(patches, 0.7)
    expected_model, expected_clip = LoraLoader().load_lora(model, clip, DEMO_LORA, 0.7, 0.7)
    text = "a red cat"
    torch.testing.assert_close(CLIPTextEncode().encode(patched_clip, text)[0][0][0],
                               CLIPTextEncode().encode(expected_clip, text)[0][0][0])
    positive = CLIPTextEncode().encode(clip, text)[0]
    torch.testing.assert_close(_sampled(patched_model, positive, euler_sampled),
                               _sampled(expected_model, positive, euler_sampled), atol=1e-4, rtol=1e-4)
    # the values add_patches was called on changed; their sources did not
    assert _sampled(model, positive, euler_sampled).equal(_sampled(model.clone(), positive, euler_sampled))
    assert not torch.allclose(_sampled(model, positive, euler_sampled),
                              _sampled(patched_model, positive, euler_sampled))


def test_block_filters_and_alpha_changes(loaded, euler_sampled):
    """KJNodes' block LoRA loader drops keys by ComfyUI's block names and sets adapters' alphas."""
    model, clip, patches = loaded
    positive = CLIPTextEncode().encode(clip, "a red cat")[0]
    unet = {key: value for key, value in patches.items() if key.startswith("diffusion_model.")}
    whole = model.clone()
    whole.add_patches(unet, 0.5)
    halved = model.clone()
    for adapter in unet.values():
        rank = adapter.weights[1].shape[0]
        alpha = adapter.weights[2] if adapter.weights[2] is not None else rank
        weights = list(adapter.weights)
        weights[2] = alpha * 0.5
        adapter.weights = tuple(weights)
    halved.add_patches(unet, 1.0)
    torch.testing.assert_close(_sampled(halved, positive, euler_sampled), _sampled(whole, positive, euler_sampled),
                               atol=1e-4, rtol=1e-4)
    outputs_only = model.clone()
    outputs_only.add_patches({key: value for key, value in unet.items() if ".input_blocks." not in key}, 1.0)
    assert not torch.allclose(_sampled(outputs_only, positive, euler_sampled),
                              _sampled(halved, positive, euler_sampled))


def test_merge_patches_and_differences(loaded, euler_sampled):
    """ComfyUI's merges: W' = strength_model * W + strength_patch * other, through get_key_patches."""
    model, clip, _ = loaded
    positive = CLIPTextEncode().encode(clip, "a red cat")[0]
    expected = _sampled(model, positive, euler_sampled)
    key_patches = model.get_key_patches("diffusion_model.")
    assert key_patches and all(key.startswith("diffusion_model.") for key in key_patches)
    same = model.clone()
    # half of a doubled copy, none of the original: the original again
    same.add_patches({key: [(value[0][0] * 2,)] for key, value in key_patches.items()}, 0.5, 0.0)
    torch.testing.assert_close(_sampled(same, positive, euler_sampled), expected, atol=1e-4, rtol=1e-4)
    zero = model.clone()
    zero.add_patches({key: ("diff", (torch.zeros_like(value[0][0]),)) for key, value in key_patches.items()})
    torch.testing.assert_close(_sampled(zero, positive, euler_sampled), expected)
    doubled = model.clone()
    doubled.add_patches({key: [(value[0][0],)] for key, value in key_patches.items()}, 1.0, 1.0)
    assert not torch.allclose(_sampled(doubled, positive, euler_sampled), expected)
    with pytest.raises(ValueError, match="a str patch is not supported"):
        model.clone().add_patches({next(iter(key_patches)): "nonsense"})


def test_keys_nobody_claims_are_logged_and_model_state_dict(loaded, caplog):
    model, _, _ = loaded
    with caplog.at_level(logging.WARNING):
        assert comfy_lora.load_lora({"lora_unet_nowhere.lora_up.weight": torch.zeros(1)}, {}) == {}
    assert "lora key not loaded: lora_unet_nowhere.lora_up.weight" in caplog.text
    state = model.model_state_dict("diffusion_model.out.")
    assert set(state) == {"diffusion_model.out.0.weight", "diffusion_model.out.0.bias", "diffusion_model.out.2.weight",
                          "diffusion_model.out.2.bias"}
    key_map = comfy_lora.model_lora_keys_unet(model.model)
    conv_in = "diffusion_model.input_blocks.0.0.weight"
    assert key_map["lora_unet_conv_in"] == key_map["lora_unet_input_blocks_0_0"] == conv_in
