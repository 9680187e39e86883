"""The random draws of ComfyUI-compatible sampling (`diffusion.sampling.noise`): the starting noise is a seeded CPU
generator's draw (row by row for picked batch rows), ancestral noise one draw per step from a generator seeded
once, and SDE noise Brownian-motion increments fixed by the seed alone, normalised to unit variance."""
import pytest
import torch

from diffusion.sampling.noise import (
    BrownianTreeNoise,
    SeededNoise,
    initial_noise,
    inpaint_noise,
)

pytestmark = pytest.mark.filterwarnings("ignore:Should have tb<=t1:UserWarning")  # torchsde rounds its ends


def test_initial_noise_is_one_draw_of_a_generator_seeded_with_the_seed():
    latent = torch.zeros(2, 4, 8, 8)
    expected = torch.randn(latent.shape, generator=torch.Generator().manual_seed(123))
    assert torch.equal(initial_noise(latent, 123), expected)
    assert not torch.equal(initial_noise(latent, 124), expected)


def test_initial_noise_accepts_comfyuis_full_seed_range():
    assert initial_noise(torch.zeros(1, 4, 8, 8), 0xffffffffffffffff).shape == (1, 4, 8, 8)


def test_picked_batch_rows_get_the_noise_of_those_rows_in_the_whole_batch():
    whole = initial_noise(torch.zeros(6, 4, 8, 8), 7)
    picked = initial_noise(torch.zeros(3, 4, 8, 8), 7, batch_index=[4, 1, 4])
    assert torch.equal(picked, whole[[4, 1, 4]])


def test_picked_rows_are_drawn_one_row_at_a_time():
    # a row of 15 values: torch's 16-at-a-time normals make row draws differ from one whole-batch draw
    generator = torch.Generator().manual_seed(7)
    rows = [torch.randn(1, 3, 5, 1, generator=generator) for _ in range(3)]
    assert torch.equal(initial_noise(torch.zeros(2, 3, 5, 1), 7, batch_index=[2, 0]), torch.cat([rows[2], rows[0]]))


def test_initial_noise_follows_the_latents_dtype():
    assert initial_noise(torch.zeros(1, 4, 8, 8, dtype=torch.float16), 1).dtype == torch.float16


def test_inpaint_noise_comes_from_the_next_seed():
    like = torch.zeros(1, 4, 8, 8, dtype=torch.float16)
    expected = torch.randn(like.shape, generator=torch.Generator().manual_seed(11)).half()
    assert torch.equal(inpaint_noise(like, 10), expected)


def test_seeded_noise_draws_successively_from_one_generator():
    like = torch.zeros(2, 4, 8, 8)
    noise = SeededNoise(like, 99)
    generator = torch.Generator().manual_seed(99)
    for sigma, sigma_next in [(5.0, 3.0), (3.0, 1.0)]:
        assert torch.equal(noise(torch.tensor(sigma), torch.tensor(sigma_next)),
                           torch.randn(like.shape, generator=generator))


def _sigma(value):
    return torch.tensor(value)


def test_brownian_noise_is_fixed_by_the_seed_whatever_else_is_asked():
    like = torch.zeros(1, 4, 16, 16)
    first = BrownianTreeNoise(like, 0.03, 14.6, seed=5)
    wanted = first(_sigma(2.0), _sigma(1.0))
    other_order = BrownianTreeNoise(like, 0.03, 14.6, seed=5)
    other_order(_sigma(10.0), _sigma(0.5))
    other_order(_sigma(0.7), _sigma(0.2))
    assert torch.allclose(other_order(_sigma(2.0), _sigma(1.0)), wanted, atol=1e-5)
    assert not torch.allclose(BrownianTreeNoise(like, 0.03, 14.6, seed=6)(_sigma(2.0), _sigma(1.0)), wanted)


def test_brownian_noise_has_unit_variance_and_adds_up_along_the_path():
    like = torch.zeros(1, 8, 64, 64)
    noise = BrownianTreeNoise(like, 0.03, 14.6, seed=1)
    whole = noise(_sigma(4.0), _sigma(1.0))
    assert abs(whole.std().item() - 1) < 0.03 and abs(whole.mean().item()) < 0.03
    halves = noise(_sigma(4.0), _sigma(2.0)) * 2.0 ** 0.5 + noise(_sigma(2.0), _sigma(1.0)) * 1.0 ** 0.5
    assert torch.allclose(halves, whole * 3.0 ** 0.5, atol=1e-4)


def test_brownian_noise_downwards_is_minus_the_increment_upwards():
    noise = BrownianTreeNoise(torch.zeros(1, 4, 8, 8), 0.03, 14.6, seed=2)
    assert torch.equal(noise(_sigma(3.0), _sigma(1.0)), -noise(_sigma(1.0), _sigma(3.0)))


def test_brownian_tree_beside_the_latents_is_the_cpu_tree_on_a_cpu():
    like = torch.zeros(1, 4, 8, 8)
    on_cpu = BrownianTreeNoise(like, _sigma(0.03), _sigma(14.6), seed=3, cpu_tree=True)
    beside = BrownianTreeNoise(like, _sigma(0.03), _sigma(14.6), seed=3, cpu_tree=False)
    assert torch.equal(on_cpu(_sigma(5.0), _sigma(2.0)), beside(_sigma(5.0), _sigma(2.0)))
