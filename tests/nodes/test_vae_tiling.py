"""VAE tiling: VAEDecodeTiled / VAEEncodeTiled (diffusers' AutoencoderKL tiling) and the automatic switch in
Vae.decode / Vae.encode when the activation estimate exceeds free memory."""
from __future__ import annotations

import torch

from diffusion import memory
from diffusion.components import Vae
from nodes.latent import (
    TILED_DECODE_TOLERANCE,
    TILED_ENCODE_TOLERANCE,
    VAEDecode,
    VAEDecodeTiled,
    VAEEncode,
    VAEEncodeTiled,
)

SIZE = 128  # pixels: a few 64-pixel tiles
TILE = 64


def _latents(size=SIZE, seed=0):
    """Raw VAE latents (as LATENT holds them) of unit-variance latents in SD's sampling space."""
    return torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(seed)) / 0.18215


def _pixels(size=SIZE, seed=0):
    return torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(seed))


def test_tiled_decode_matches_untiled_within_tolerance(sd1):
    vae = sd1[2]
    samples = {"samples": _latents()}
    untiled = VAEDecode().decode(vae, samples)[0]
    tiled = VAEDecodeTiled().decode(vae, samples, tile_size=TILE)[0]
    assert tiled.shape == untiled.shape == (1, SIZE, SIZE, 3)
    difference = (tiled - untiled).abs().max().item()
    print("decode max abs difference", difference)
    assert 0 < difference <= TILED_DECODE_TOLERANCE  # tiling really ran, and stays within the documented tolerance


def test_tiled_encode_matches_untiled_within_tolerance(sd1):
    vae = sd1[2]
    pixels = _pixels()
    untiled = VAEEncode().encode(vae, pixels)[0]["samples"]
    tiled = VAEEncodeTiled().encode(vae, pixels, tile_size=TILE)[0]["samples"]
    assert tiled.shape == untiled.shape == (1, 4, SIZE // 8, SIZE // 8)
    difference = (tiled - untiled).abs().max().item()
    print("encode max abs difference", difference)
    assert 0 < difference <= TILED_ENCODE_TOLERANCE


def test_tiling_settings_are_restored(sd1):
    autoencoder = sd1[2].autoencoder
    before = (autoencoder.use_tiling, autoencoder.tile_sample_min_size, autoencoder.tile_latent_min_size)
    VAEDecodeTiled().decode(sd1[2], {"samples": _latents()}, tile_size=TILE)
    assert (autoencoder.use_tiling, autoencoder.tile_sample_min_size, autoencoder.tile_latent_min_size) == before


def test_automatic_tiling_when_free_memory_is_low(sd1, monkeypatch):
    vae = sd1[2]
    latents, pixels = _latents(), _pixels()
    untiled_image = vae.decode(latents)
    untiled_latents = vae.encode(pixels)
    forced_image = vae.decode(latents, tile_size=TILE, force_tiling=True)
    forced_latents = vae.encode(pixels, tile_size=TILE, force_tiling=True)
    monkeypatch.setattr(type(vae), "AUTO_TILE_SIZE", TILE)
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: 1024)
    assert vae.needs_tiling(1, SIZE, SIZE)
    auto_image, auto_latents = vae.decode(latents), vae.encode(pixels)
    assert torch.equal(auto_image, forced_image) and not torch.equal(auto_image, untiled_image)
    assert torch.equal(auto_latents, forced_latents) and not torch.equal(auto_latents, untiled_latents)


def test_small_images_are_untouched(sd1, monkeypatch):
    """With ample free memory the untiled path runs exactly as diffusers' plain decode/encode."""
    vae = sd1[2]
    autoencoder = vae.autoencoder
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: 1 << 50)
    assert not vae.needs_tiling(1, SIZE, SIZE)
    latents, pixels = _latents(), _pixels()
    with torch.inference_mode():
        expected_image = autoencoder.decode(latents, return_dict=False)[0]  # LATENT holds the raw latents
        expected_image = (expected_image / 2 + 0.5).clamp(0, 1).float().movedim(1, -1)
        expected_latents = autoencoder.encode(pixels.movedim(-1, 1) * 2.0 - 1.0).latent_dist.mode()
    assert torch.equal(vae.decode(latents), expected_image)
    assert torch.equal(vae.encode(pixels), expected_latents)


def test_estimate_grows_with_the_image(sd1):
    vae: Vae = sd1[2]
    assert vae.activation_bytes(1, 2 * SIZE, 2 * SIZE) == 4 * vae.activation_bytes(1, SIZE, SIZE) > 0


def test_free_memory_is_positive():
    assert memory.free_memory_bytes(torch.device("cpu")) > 0
