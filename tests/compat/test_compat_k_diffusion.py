"""`comfy.k_diffusion.sampling`'s helpers give k-diffusion's values (hand-computed from its formulas)."""
from __future__ import annotations

import math

import pytest
import torch
from comfy.k_diffusion import sampling as kds


def test_append_zero_and_to_d_broadcast_a_per_sample_sigma():
    assert kds.append_zero(torch.tensor([3.0, 1.0])).tolist() == [3.0, 1.0, 0.0]
    x = torch.full((2, 1, 2, 2), 4.0)
    denoised = torch.ones_like(x)
    d = kds.to_d(x, torch.tensor([1.0, 3.0]), denoised)
    assert d[0].unique().tolist() == [3.0] and d[1].unique().tolist() == [1.0]
    with pytest.raises(ValueError, match="append_dims"):
        kds.append_dims(torch.zeros(2, 2), 1)


def test_ancestral_step_splits_the_next_sigma():
    down, up = kds.get_ancestral_step(torch.tensor(2.0), torch.tensor(1.0), eta=1.0)
    # sigma_up = sqrt(1 * (4 - 1) / 4), sigma_down = sqrt(1 - sigma_up^2)
    assert float(up) == pytest.approx(math.sqrt(0.75)) and float(down) == pytest.approx(0.5)
    assert kds.get_ancestral_step(2.0, 1.0, eta=0.0) == (1.0, 0.0)


def test_schedules_match_k_diffusion_formulas():
    karras = kds.get_sigmas_karras(3, 0.1, 10.0, rho=7.0)
    lo, hi = 0.1 ** (1 / 7), 10.0 ** (1 / 7)
    expected = [hi ** 7, ((hi + lo) / 2) ** 7, lo ** 7, 0.0]
    assert karras.tolist() == pytest.approx(expected, rel=1e-5)
    assert kds.get_sigmas_exponential(3, 0.1, 10.0).tolist() == pytest.approx([10.0, 1.0, 0.1, 0.0], rel=1e-5)
    # rho = 2: log sigma = ramp^2 * (log 10 - log 0.1) + log 0.1 at ramp 1, 0.5, 0
    poly = kds.get_sigmas_polyexponential(3, 0.1, 10.0, rho=2.0)
    assert poly.tolist() == pytest.approx([10.0, 0.1 * 100 ** 0.25, 0.1, 0.0], rel=1e-5)
    vp = kds.get_sigmas_vp(2, beta_d=19.9, beta_min=0.1, eps_s=1e-3)
    assert vp[0].item() == pytest.approx(math.sqrt(math.expm1(19.9 / 2 + 0.1)), rel=1e-5)
    assert vp[-1].item() == 0.0
