"""Switches added for the world-v3 calibration: the recompute thread count and tiny-harmon's x0-prediction."""

import pytest
import torch

from segros import pipeline
from segros.objectives import DiffusionSchedule, diffusion_mse
from segros.rng import torch_threads


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="n must be"):
        with torch_threads(0):
            pass
    assert pipeline.RECOMPUTE_THREADS == 1


def test_eps_from_x0_inverts_q_sample():
    s = DiffusionSchedule(1000)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    t = torch.tensor([0, 10, 100, 300, 500, 700, 900, 999])
    xt = s.q_sample(x0, t, eps)
    assert torch.allclose(s.eps_from_x0(xt, x0, t)[1:], eps[1:], atol=1e-3)


def test_x0_prediction_loss_targets_x0():
    s = DiffusionSchedule(1000)
    z0 = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))
    cond = torch.zeros(2, 3, 6)
    w = torch.ones(2, 3)
    zero = lambda x, t, c: torch.zeros_like(x)  # noqa: E731
    x0_loss = diffusion_mse(zero, z0, cond, w, s, num_samples=1, prediction="x0")
    assert torch.allclose(x0_loss, z0.pow(2).mean(), atol=1e-6)
    eps_loss = diffusion_mse(zero, z0, cond, w, s, num_samples=1, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(eps_loss, x0_loss)
    with pytest.raises(ValueError, match="prediction"):
        diffusion_mse(zero, z0, cond, w, s, prediction="v")
