"""Tests of segros.supervision (§2, §3.4, Eq. 12, Tables 5, 6, 8, 9) against tests/reference.py."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import reference as ref
from segros.supervision import (
    Supervision,
    build_supervision,
    perturb,
    random_supervision,
    resample_map,
    sample_gamma,
)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rand_map(B, N, seed, dtype=torch.float64):
    return torch.rand(B, N, generator=gen(seed), dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Eq. 12

def test_perturb_matches_reference_and_range():
    m_bar = rand_map(3, 20, 0)
    m_tilde = perturb(m_bar, alpha=0.5, generator=gen(1))
    u = torch.rand(3, 20, generator=gen(1), dtype=torch.float64)  # the same stream, as documented
    for b in range(3):
        assert m_tilde[b].tolist() == pytest.approx(ref.perturb(m_bar[b].tolist(), u[b].tolist(), 0.5), abs=1e-15)
    xi = m_tilde - m_bar
    assert xi.min() >= 0 and xi.max() < 0.5


def test_perturb_seeded_alpha_zero_and_errors():
    m_bar = rand_map(2, 16, 3, dtype=torch.float32)
    assert torch.equal(perturb(m_bar, 0.5, gen(7)), perturb(m_bar, 0.5, gen(7)))
    assert not torch.equal(perturb(m_bar, 0.5, gen(7)), perturb(m_bar, 0.5, gen(8)))
    assert perturb(m_bar, 0.0, gen(7)) is m_bar
    assert perturb(m_bar.bfloat16(), 0.5, gen(7)).dtype == torch.float32
    for alpha in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha"):
            perturb(m_bar, alpha)
    bad = m_bar.clone()
    bad[1, 3] = float("nan")
    with pytest.raises(ValueError, match="m_bar.*sample 1"):
        perturb(bad, 0.5)


# ----------------------------------------------------------------------------------------------
# §3.4 against the reference

@pytest.mark.parametrize("hint_from", ["top", "bottom"])
@pytest.mark.parametrize("seen_from", ["top", "bottom"])
@pytest.mark.parametrize("loss_on", ["masked", "top_masked"])
def test_build_supervision_matches_reference(hint_from, seen_from, loss_on):
    B, N = 4, 37
    m_tilde = rand_map(B, N, 10)
    m_tilde[2, 5:15] = 0.25  # a run of ties
    gamma = torch.tensor([0.7, 0.95, 0.0, 1.0], dtype=torch.float64)
    sup = build_supervision(m_tilde, eta=0.3, gamma=gamma, hint_from=hint_from, seen_from=seen_from,
                            loss_on=loss_on, loss_top=0.3)
    for b in range(B):
        hints, seen, masked, weight = ref.supervision(m_tilde[b].tolist(), m_tilde[b].tolist(), 0.3,
                                                      float(gamma[b]), hint_from, seen_from, loss_on, 0.3)
        assert sup.hint_idx[b].tolist() == hints
        assert sup.seen[b].tolist() == seen
        assert sup.masked[b].tolist() == masked
        assert sup.loss_weight[b].tolist() == weight


def test_build_supervision_with_target_map_matches_reference():
    """Show-o: hints on the 24×24 CLIP grid, seen/masked on the 16×16 code grid, same m̃."""
    m_tilde = perturb(rand_map(2, 576, 11), 0.5, gen(12))
    target = resample_map(m_tilde, (24, 24), (16, 16))
    sup = build_supervision(m_tilde, eta=0.4, gamma=0.8, target_map=target, loss_on="top_masked")
    assert sup.hint_idx.shape == (2, math.floor(0.4 * 576))
    assert sup.seen.shape == (2, 256) and sup.loss_weight.shape == (2, 256)
    for b in range(2):
        hints, seen, masked, weight = ref.supervision(m_tilde[b].tolist(), target[b].tolist(), 0.4, 0.8,
                                                      loss_on="top_masked")
        assert sup.hint_idx[b].tolist() == hints
        assert sup.seen[b].tolist() == seen
        assert sup.loss_weight[b].tolist() == weight


def test_default_semantics_by_hand():
    # map over N = 10 tokens; top tokens are 9, 8, 7, ...
    m = torch.arange(10, dtype=torch.float32)[None]
    sup = build_supervision(m, eta=0.3, gamma=0.7)
    assert sup.hint_idx.tolist() == [[7, 8, 9]]                     # top-3, ascending
    assert sup.seen[0].tolist() == [True] * 3 + [False] * 7          # bottom 10 − 7 = 3 visible
    assert sup.loss_weight[0].tolist() == [0.0] * 3 + [1.0] * 7
    drop = build_supervision(m, eta=0.3, gamma=0.7, loss_on="top_masked", loss_top=0.3)
    assert drop.loss_weight[0].tolist() == [0.0] * 7 + [1.0] * 3     # only the top-30% targets
    swapped = build_supervision(m, eta=0.2, gamma=0.7, hint_from="bottom", seen_from="top")
    assert swapped.hint_idx.tolist() == [[0, 1]]
    assert swapped.seen[0].tolist() == [False] * 7 + [True] * 3


def test_constant_map_selects_in_raster_order():
    m = torch.zeros(2, 8)
    sup = build_supervision(m, eta=0.25, gamma=0.5)
    assert sup.hint_idx.tolist() == [[0, 1], [0, 1]]
    assert sup.seen[0].tolist() == [True] * 4 + [False] * 4  # bottom-4 with ties: lowest indices
    assert torch.isfinite(sup.loss_weight).all()


# ----------------------------------------------------------------------------------------------
# properties (hypothesis)

@settings(max_examples=60, deadline=None)
@given(B=st.integers(1, 4), N=st.integers(1, 80), eta=st.floats(0, 1), seed=st.integers(0, 10_000),
       per_sample=st.booleans(), loss_on=st.sampled_from(["masked", "top_masked"]))
def test_counts_and_partition(B, N, eta, seed, per_sample, loss_on):
    g = gen(seed)
    m_tilde = torch.rand(B, N, generator=g)
    gamma = torch.rand(B, generator=g, dtype=torch.float64) if per_sample else float(torch.rand(1, generator=g))
    sup = build_supervision(m_tilde, eta=eta, gamma=gamma, loss_on=loss_on)
    H = math.floor(eta * N * (1 + 1e-6))
    assert sup.hint_idx.shape == (B, H)
    if H > 1:
        assert (sup.hint_idx[:, 1:] > sup.hint_idx[:, :-1]).all()      # ascending and distinct
    assert torch.equal(sup.seen ^ sup.masked, torch.ones(B, N, dtype=torch.bool))
    gam = gamma.tolist() if per_sample else [gamma] * B
    for b in range(B):
        assert int(sup.masked[b].sum()) == math.floor(gam[b] * N * (1 + 1e-6))
        if sup.seen[b].any() and sup.masked[b].any():                  # bottom-seen: seen ≤ masked
            assert m_tilde[b][sup.seen[b]].max() <= m_tilde[b][sup.masked[b]].min()
        if H:
            top = m_tilde[b][sup.hint_idx[b]]
            rest = torch.ones(N, dtype=torch.bool)
            rest[sup.hint_idx[b]] = False
            if rest.any():
                assert top.min() >= m_tilde[b][rest].max()
    assert ((sup.loss_weight > 0) <= sup.masked).all()
    if loss_on == "masked":
        assert torch.equal(sup.loss_weight > 0, sup.masked)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 4), N=st.integers(1, 64), gamma=st.floats(0, 1),
       eta=st.sampled_from([0.0, 0.3, 1.0]))
def test_random_supervision_counts_and_seeding(seed, B, N, gamma, eta):
    a = random_supervision(B, N, gamma, eta=eta, generator=gen(seed))
    b = random_supervision(B, N, gamma, eta=eta, generator=gen(seed))
    assert all(torch.equal(x, y) for x, y in zip((a.hint_idx, a.seen, a.masked, a.loss_weight),
                                                  (b.hint_idx, b.seen, b.masked, b.loss_weight)))
    K = math.floor(gamma * N * (1 + 1e-6))
    assert (a.masked.sum(dim=1) == K).all()
    assert torch.equal(a.seen, ~a.masked)
    assert a.hint_idx.shape == (B, math.floor(eta * N * (1 + 1e-6)))


def test_seeded_build_pipeline_repeats():
    m_bar = rand_map(3, 50, 4)
    runs = []
    for _ in range(2):
        g = gen(99)
        gamma = sample_gamma("truncnorm", B=3, per="sample", generator=g)
        runs.append(build_supervision(perturb(m_bar, 0.5, g), eta=0.3, gamma=gamma))
    assert torch.equal(runs[0].hint_idx, runs[1].hint_idx) and torch.equal(runs[0].seen, runs[1].seen)


# ----------------------------------------------------------------------------------------------
# baselines

def test_sft_and_reca_baselines():
    sft = random_supervision(3, 20, 0.75, eta=0.0, generator=gen(0))
    assert sft.hint_idx.shape == (3, 0) and sft.hint_idx.dtype == torch.long
    assert (sft.masked.sum(1) == 15).all() and torch.equal(sft.loss_weight, sft.masked.float())
    reca = random_supervision(3, 20, 0.75, eta=1.0, generator=gen(0))
    assert torch.equal(reca.hint_idx, torch.arange(20).expand(3, 20))
    assert torch.equal(reca.masked, sft.masked)  # the mask stream does not depend on η = 0 or 1
    hint_map = rand_map(3, 36, 5)
    filt = random_supervision(3, 20, 0.75, eta=0.3, generator=gen(0), hint_map=hint_map)
    for b in range(3):
        assert filt.hint_idx[b].tolist() == ref.top_k_positions(hint_map[b].tolist(), 10)
    assert not torch.equal(random_supervision(3, 20, 0.75, generator=gen(1)).masked, sft.masked)


def test_random_mask_is_uniform_over_positions():
    sup = random_supervision(4000, 10, 0.7, generator=gen(3))
    freq = sup.masked.double().mean(0)
    assert torch.allclose(freq, torch.full((10,), 0.7, dtype=torch.float64), atol=0.03)


def test_random_supervision_errors():
    with pytest.raises(ValueError, match="gamma"):
        random_supervision(2, 10, 1.2)
    with pytest.raises(ValueError, match="eta"):
        random_supervision(2, 10, 0.7, eta=-0.5)
    with pytest.raises(ValueError, match="hint_map batch"):
        random_supervision(2, 10, 0.7, eta=0.3, hint_map=rand_map(3, 10, 0))
    with pytest.raises(ValueError, match="N"):
        random_supervision(2, 0, 0.7)


# ----------------------------------------------------------------------------------------------
# degenerate inputs and errors

def test_eta_zero_and_one():
    m = rand_map(2, 12, 6)
    assert build_supervision(m, eta=0.0, gamma=0.7).hint_idx.shape == (2, 0)
    assert torch.equal(build_supervision(m, eta=1.0, gamma=0.7).hint_idx, torch.arange(12).expand(2, 12))


def test_gamma_one_masks_everything_and_zero_masks_nothing():
    m = rand_map(2, 12, 7)
    full = build_supervision(m, eta=0.3, gamma=1.0)
    assert not full.seen.any() and full.masked.all() and (full.loss_weight == 1).all()
    assert full.seen_idx.shape == (2, 0)
    none = build_supervision(m, eta=0.3, gamma=0.0)
    assert none.seen.all() and not none.masked.any() and (none.loss_weight == 0).all()


def test_seen_idx_needs_one_count_per_batch():
    m = rand_map(2, 10, 8)
    same = build_supervision(m, eta=0.3, gamma=0.7)
    assert same.seen_idx.tolist() == [torch.nonzero(same.seen[b]).flatten().tolist() for b in range(2)]
    diff = build_supervision(m, eta=0.3, gamma=torch.tensor([0.7, 0.9]))
    with pytest.raises(ValueError, match="one visible count"):
        diff.seen_idx


@pytest.mark.parametrize("kwargs,match", [
    ({"eta": 1.5, "gamma": 0.7}, "eta"),
    ({"eta": -0.1, "gamma": 0.7}, "eta"),
    ({"eta": 0.3, "gamma": 1.01}, "gamma"),
    ({"eta": 0.3, "gamma": -0.01}, "gamma"),
    ({"eta": 0.3, "gamma": torch.tensor([0.7, 1.2, 0.8])}, "gamma.*sample 1"),
    ({"eta": 0.3, "gamma": torch.tensor([0.7, 0.8])}, "gamma"),
    ({"eta": 0.3}, "gamma"),
    ({"eta": 0.3, "gamma": 0.7, "loss_top": 2.0}, "loss_top"),
    ({"eta": 0.3, "gamma": 0.7, "hint_from": "middle"}, "hint_from"),
    ({"eta": 0.3, "gamma": 0.7, "seen_from": "all"}, "seen_from"),
    ({"eta": 0.3, "gamma": 0.7, "loss_on": "all"}, "loss_on"),
])
def test_build_supervision_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_supervision(rand_map(3, 10, 9), **kwargs)


def test_map_errors_name_the_argument():
    m = rand_map(3, 10, 9)
    bad = m.clone()
    bad[2, 0] = float("inf")
    with pytest.raises(ValueError, match="m_tilde.*sample 2"):
        build_supervision(bad, gamma=0.7)
    with pytest.raises(ValueError, match="target_map batch"):
        build_supervision(m, gamma=0.7, target_map=m[:2])
    with pytest.raises(ValueError, match="m_tilde"):
        build_supervision(m[0], gamma=0.7)


# ----------------------------------------------------------------------------------------------
# masking-ratio schedules

def test_sample_gamma_types_and_seeding():
    assert isinstance(sample_gamma("uniform", 4, "batch", gen(0)), float)
    g = sample_gamma("cosine", 5, "sample", gen(0))
    assert g.shape == (5,) and g.dtype == torch.float64
    assert torch.equal(g, sample_gamma("cosine", 5, "sample", gen(0)))
    for kwargs, match in (({"schedule": "linear"}, "schedule"), ({"per": "token"}, "per"), ({"B": 0}, "B")):
        with pytest.raises(ValueError, match=match):
            sample_gamma(**{"schedule": "uniform", "B": 2, "per": "sample", **kwargs})


def test_uniform_schedule_distribution():
    g = sample_gamma("uniform", 20000, "sample", gen(1))
    assert g.min() >= 0.7 and g.max() < 1.0
    assert stats.kstest(g.numpy(), stats.uniform(loc=0.7, scale=0.3).cdf).pvalue > 0.01


def test_truncnorm_schedule_matches_scipy():
    g = sample_gamma("truncnorm", 20000, "sample", gen(2))
    assert g.min() >= 0.7 and g.max() < 1.0
    dist = stats.truncnorm((0.7 - 1.0) / 0.25, 0.0, loc=1.0, scale=0.25)
    assert stats.kstest(g.numpy(), dist.cdf).pvalue > 0.01
    assert float(g.mean()) == pytest.approx(dist.mean(), abs=0.003)


def test_cosine_schedule_distribution():
    g = sample_gamma("cosine", 20000, "sample", gen(3))
    assert g.min() > 0 and g.max() <= 1.0
    cdf = lambda x: 1 - 2 * torch.arccos(torch.as_tensor(x)).numpy() / math.pi  # P(cos(πr/2) ≤ x)
    assert stats.kstest(g.numpy(), cdf).pvalue > 0.01


# ----------------------------------------------------------------------------------------------
# grids

def test_resample_down_is_area_average():
    m = rand_map(2, 576, 13)
    out = resample_map(m, (24, 24), (16, 16))
    assert out.shape == (2, 256)
    for b in range(2):
        grid = m[b].reshape(24, 24).tolist()
        assert out[b].tolist() == pytest.approx(ref.adaptive_avg_pool(grid, 16, 16), abs=1e-12)


def test_resample_up_keeps_range_and_location():
    m = torch.zeros(1, 576, dtype=torch.float64)
    m[0, 24 * 3 + 20] = 1.0  # a hot cell at row 3, column 20
    out = resample_map(m, (24, 24), (32, 32))
    assert out.shape == (1, 1024) and out.min() >= 0 and out.max() <= 1
    r, c = divmod(int(out.argmax()), 32)
    assert abs(r - 3 * 32 / 24) <= 1.5 and abs(c - 20 * 32 / 24) <= 1.5
    same = rand_map(1, 16, 0)
    assert resample_map(same, (4, 4), (4, 4)) is same
    const = torch.full((2, 576), 0.3)
    torch.testing.assert_close(resample_map(const, (24, 24), (16, 16)), torch.full((2, 256), 0.3))


def test_resample_errors():
    with pytest.raises(ValueError, match="from_hw"):
        resample_map(rand_map(1, 10, 0), (3, 3), (2, 2))
    with pytest.raises(ValueError, match="to_hw"):
        resample_map(rand_map(1, 9, 0), (3, 3), (0, 2))


def test_supervision_type_fields():
    sup = build_supervision(rand_map(1, 10, 1), gamma=0.7)
    assert isinstance(sup, Supervision) and sup.n_hint == 3
    assert sup.hint_idx.dtype == torch.long and sup.seen.dtype == torch.bool
    assert sup.loss_weight.dtype == torch.float32
