"""Qwen-Image 2.1's VAE between ComfyUI's original (Wan 2.2 style) layout and diffusers' AutoencoderKLQwenImage21,
on a tiny random model: names and tensors survive the round trip, the converted weights load strictly and decode
the same image, and a tensor with no place is refused by name."""
import re

import pytest
import torch
from diffusers import AutoencoderKLQwenImage21

from diffusion.families import wan22_vae_layout as vae_layout

Z_DIM = 4
# the real architecture's levels at tiny widths (the real one: 96 / 144 channels, 64 latent channels)
TINY = dict(base_dim=8, decoder_base_dim=12, z_dim=Z_DIM, dim_mult=[1, 2, 4, 8, 8], num_res_blocks=2,
            temperal_downsample=[False, True, True, True], latents_mean=[0.0] * Z_DIM, latents_std=[1.0] * Z_DIM)


def tiny_vae(seed: int) -> AutoencoderKLQwenImage21:
    torch.manual_seed(seed)
    vae = AutoencoderKLQwenImage21(**TINY).eval()
    with torch.no_grad():
        for name, parameter in vae.named_parameters():
            if name.endswith("gamma"):  # norm scales start as ones: make them tell the norms apart
                parameter.uniform_(0.5, 1.5)
    return vae


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return tiny_vae(seed=0).state_dict()


def test_round_trip_keeps_every_name_and_tensor(state):
    comfy = vae_layout.diffusers_to_comfy(state)
    assert vae_layout.is_comfy_layout(comfy) and not vae_layout.is_comfy_layout(state)
    # ComfyUI's names and shapes, 3-D causal convolutions of one temporal tap included (checked against ComfyUI's
    # WanVAE; ComfyUI builds Qwen-Image 2.1's with a temporal kernel of one)
    assert comfy["decoder.conv1.weight"].shape == (96, Z_DIM, 1, 3, 3)
    assert comfy["decoder.upsamples.0.upsamples.3.time_conv.weight"].shape == (192, 96, 1, 1, 1)
    assert comfy["encoder.downsamples.1.downsamples.0.shortcut.weight"].shape == (16, 8, 1, 1, 1)
    assert comfy["encoder.downsamples.0.downsamples.2.resample.1.weight"].shape == (8, 8, 3, 3)
    assert comfy["encoder.middle.1.to_qkv.weight"].shape == (192, 64, 1, 1)
    assert comfy["conv1.weight"].shape == (2 * Z_DIM, 2 * Z_DIM, 1, 1, 1)
    assert comfy["decoder.head.2.weight"].shape == (4, 12, 1, 3, 3)
    assert len(comfy) == len(state)
    # the sequential indices of a residual block: 0 and 3 its norms, 2 and 6 its convolutions
    block, resnet = "encoder.downsamples.1.downsamples.0.", "encoder.down_blocks.1.resnets.0."
    assert comfy[block + "residual.0.gamma"] is state[resnet + "norm1.gamma"]
    assert comfy[block + "residual.3.gamma"] is state[resnet + "norm2.gamma"]
    # a 2-D weight is the 3-D one's single temporal tap; of a video layout's three taps, the last (the only one a
    # lone frame meets)
    conv = "decoder.upsamples.2.upsamples.1.residual.6.weight"
    assert torch.equal(comfy[conv][:, :, 0], state["decoder.up_blocks.2.resnets.1.conv2.weight"])
    video = {**comfy, conv: torch.cat([torch.randn_like(comfy[conv]), torch.randn_like(comfy[conv]), comfy[conv]],
                                      dim=2)}
    assert torch.equal(vae_layout.comfy_to_diffusers(video)["decoder.up_blocks.2.resnets.1.conv2.weight"],
                       state["decoder.up_blocks.2.resnets.1.conv2.weight"])

    back = vae_layout.comfy_to_diffusers(comfy)
    assert list(back) == list(state)
    for key, tensor in state.items():
        assert back[key].dtype == tensor.dtype and torch.equal(back[key], tensor), key
        assert back[key].is_contiguous(), key
        if back[key].ndim != 4:  # norm scales and biases: the very same tensors, never copied
            assert back[key] is tensor, key


def test_converted_weights_load_strictly_and_decode_the_same(state):
    original = tiny_vae(seed=0)
    reloaded = tiny_vae(seed=1)
    latent = torch.randn(1, Z_DIM, 1, 2, 3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = original.decode(latent).sample
        assert not torch.equal(reloaded.decode(latent).sample, expected)  # the check below can fail
        reloaded.load_state_dict(vae_layout.comfy_to_diffusers(vae_layout.diffusers_to_comfy(state)), strict=True)
        decoded = reloaded.decode(latent).sample
    assert decoded.shape == (1, 4, 1, 32, 48)
    assert torch.equal(decoded, expected)


@pytest.mark.parametrize("key", [
    "encoder.downsamples.0.downsamples.0.residual.5.weight",  # a weightless layer of the residual block
    "encoder.downsamples.0.residual.0.gamma",  # Wan 2.1's flat layout
    "decoder.upsamples.0.upsamples.3.time_conv.scale",  # a parameter the layer does not have
    "model.mystery.weight",
])
def test_a_key_without_place_is_refused_by_name(state, key):
    comfy = vae_layout.diffusers_to_comfy(state)
    with pytest.raises(ValueError, match=re.escape(repr(key))):
        vae_layout.comfy_to_diffusers({**comfy, key: torch.zeros(1)})
    with pytest.raises(ValueError, match=re.escape(repr("decoder.up_blocks.0.mystery.weight"))):
        vae_layout.diffusers_to_comfy({**state, "decoder.up_blocks.0.mystery.weight": torch.zeros(1)})


def test_a_misnumbered_resampling_stage_is_refused(state):
    comfy = vae_layout.diffusers_to_comfy(state)
    moved = {key.replace("encoder.downsamples.0.downsamples.2.", "encoder.downsamples.0.downsamples.5."): value
             for key, value in comfy.items()}
    with pytest.raises(ValueError, match=re.escape("'encoder.downsamples.0.downsamples.5.resample.1.")):
        vae_layout.comfy_to_diffusers(moved)
