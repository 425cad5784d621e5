"""Tests of segros.objectives (§11, Eqs. 2, 13–17) against float64 loop references."""

import math

import pytest
import torch

from segros.objectives import (
    DiffusionSchedule,
    diffusion_mse,
    flow_matching_mse,
    i2t_nll,
    masked_token_nll,
    total_loss,
)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def example_weights():
    # zeros, ones and a fractional weight, over 2 samples x 5 tokens
    return torch.tensor([[0.0, 1.0, 0.5, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0, 0.0]])


# ---- masked_token_nll (Eq. 15) ----------------------------------------------------------------

def nll_reference(logits, targets, w):
    num, den = 0.0, 0.0
    for b in range(logits.shape[0]):
        for i in range(logits.shape[1]):
            wi = float(w[b, i])
            if wi == 0:
                continue
            row = [float(v) for v in logits[b, i].double()]
            lse = math.log(sum(math.exp(v) for v in row))
            num += wi * (lse - row[int(targets[b, i])])
            den += wi
    return num / den


def test_masked_token_nll_matches_loop():
    logits = torch.randn(2, 5, 7, generator=gen(0))
    targets = torch.randint(0, 7, (2, 5), generator=gen(1))
    w = example_weights()
    got = masked_token_nll(logits, targets, w)
    assert got.dtype == torch.float32 and got.ndim == 0
    assert abs(got.item() - nll_reference(logits, targets, w)) < 1e-5


def test_masked_token_nll_bf16_is_computed_in_fp32():
    logits = torch.randn(2, 5, 7, generator=gen(0)).bfloat16()
    targets = torch.randint(0, 7, (2, 5), generator=gen(1))
    got = masked_token_nll(logits, targets, example_weights())
    assert got.dtype == torch.float32
    assert abs(got.item() - nll_reference(logits.float(), targets, example_weights())) < 1e-5


def test_masked_token_nll_ignores_zero_weight_tokens():
    logits = torch.randn(2, 5, 7, generator=gen(0), requires_grad=True)
    targets = torch.randint(0, 7, (2, 5), generator=gen(1))
    w = example_weights()
    loss = masked_token_nll(logits, targets, w)
    loss.backward()
    zero = w == 0
    assert torch.all(logits.grad[zero] == 0)
    assert torch.all(logits.grad[~zero].abs().sum(-1) > 0)
    other_logits = logits.detach().clone()
    other_logits[zero] = torch.randn(int(zero.sum()), 7, generator=gen(5)) * 10
    other_targets = targets.clone()
    other_targets[zero] = -100  # anything is allowed where w = 0
    assert masked_token_nll(other_logits, other_targets, w).item() == loss.item()
    changed = logits.detach().clone()
    changed[0, 1] += torch.randn(7, generator=gen(6))
    assert masked_token_nll(changed, targets, w).item() != loss.item()


def test_masked_token_nll_weight_scale_invariant():
    logits = torch.randn(2, 5, 7, generator=gen(0))
    targets = torch.randint(0, 7, (2, 5), generator=gen(1))
    w = example_weights()
    assert torch.allclose(masked_token_nll(logits, targets, w), masked_token_nll(logits, targets, 3 * w))


def test_masked_token_nll_zero_total_weight():
    logits = torch.randn(2, 5, 7, generator=gen(0), requires_grad=True)
    loss = masked_token_nll(logits, torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_masked_token_nll_bad_inputs():
    logits = torch.randn(2, 5, 7)
    targets = torch.zeros(2, 5, dtype=torch.long)
    w = example_weights()
    with pytest.raises(ValueError, match="logits"):
        masked_token_nll(logits[0], targets, w)
    with pytest.raises(ValueError, match="targets"):
        masked_token_nll(logits, targets.float(), w)
    with pytest.raises(ValueError, match="targets"):
        masked_token_nll(logits, targets[:, :4], w)
    with pytest.raises(ValueError, match="loss_weight"):
        masked_token_nll(logits, targets, w[:, :4])
    neg = w.clone()
    neg[1, 3] = -1.0
    with pytest.raises(ValueError, match="sample 1"):
        masked_token_nll(logits, targets, neg)
    bad_t = targets.clone()
    bad_t[1, 0] = 7
    with pytest.raises(ValueError, match=r"targets\[1, 0\]"):
        masked_token_nll(logits, bad_t, w)


# ---- DiffusionSchedule -------------------------------------------------------------------------

def test_cosine_schedule_closed_form():
    sch = DiffusionSchedule(1000)
    ab = sch.alphas_cumprod
    assert ab.shape == (1000,) and ab.dtype == torch.float64
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    # where beta is not clipped, the product telescopes to f((t+1)/T) / f(0)
    for t in [0, 1, 10, 250, 500, 900, 990]:
        assert abs(ab[t].item() - f((t + 1) / 1000) / f(0)) < 1e-9
    assert torch.all(ab[1:] < ab[:-1])
    assert ab[0] > 0.9999 and ab[-1] < 1e-6


def test_q_sample_closed_form():
    sch = DiffusionSchedule(1000)
    z0 = torch.randn(6, 4, generator=gen(0))
    noise = torch.randn(6, 4, generator=gen(1))
    t = torch.tensor([0, 1, 100, 500, 998, 999])
    got = sch.q_sample(z0, t, noise)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    abar = [1.0] + [0.0] * 1000
    for k in range(1000):  # loop product of (1 - beta), beta clipped at 0.999
        beta = min(1 - f((k + 1) / 1000) / f(k / 1000), 0.999)
        abar[k + 1] = abar[k] * (1 - beta)
    for m in range(6):
        a = abar[int(t[m]) + 1]
        ref = math.sqrt(a) * z0[m].double() + math.sqrt(1 - a) * noise[m].double()
        assert torch.allclose(got[m].double(), ref, atol=1e-6)
    with pytest.raises(ValueError, match="t must"):
        sch.q_sample(z0, torch.tensor([0, 1, 2, 3, 4, 1000]), noise)
    with pytest.raises(ValueError, match="noise"):
        sch.q_sample(z0, t, noise[:, :3])


def cheating_eps(sch):
    """A perfect ε-predictor: cond carries the clean latent, so ε = (x_t − √ᾱ z0)/√(1−ᾱ)."""
    ab = sch.alphas_cumprod

    def predictor(x_t, t, cond):
        a = ab[t].unsqueeze(-1)
        return ((x_t.double() - a.sqrt() * cond.double()) / (1 - a).sqrt()).to(x_t.dtype)

    return predictor


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_sampling_with_perfect_predictor_recovers_x0(eta):
    sch = DiffusionSchedule(1000)
    x0 = torch.randn(5, 3, generator=gen(0))
    out = sch.sample(cheating_eps(sch), x0, channels=3, num_inference_steps=8, eta=eta, generator=gen(1))
    assert torch.allclose(out, x0, atol=1e-4)
    assert sch.timesteps(4) == [999, 666, 333, 0]


# ---- diffusion_mse (Eqs. 16–17) ----------------------------------------------------------------

class Recorder:
    """A deterministic mock head ε̂ = tanh(x_t·A + c·B + t/1000) that records every call."""

    def __init__(self, c, dc):
        self.A = torch.randn(c, c, generator=gen(10))
        self.B = torch.randn(dc, c, generator=gen(11))
        self.calls = []

    def __call__(self, x_t, t, cond):
        self.calls.append((x_t.detach().clone(), t.clone(), cond.detach().clone()))
        return torch.tanh(x_t @ self.A + cond @ self.B + t[:, None].float() / 1000)


def test_diffusion_mse_matches_loop_and_runs_only_weighted_tokens():
    sch = DiffusionSchedule(1000)
    z0 = torch.randn(2, 5, 3, generator=gen(0))
    cond = torch.randn(2, 5, 4, generator=gen(1))
    w = example_weights()
    head = Recorder(3, 4)
    got = diffusion_mse(head, z0, cond, w, sch, num_samples=4, generator=gen(2))
    assert len(head.calls) == 1
    x_t, t, c = head.calls[0]
    n_w = int((w > 0).sum())
    assert x_t.shape == (4 * n_w, 3) and t.shape == (4 * n_w,)
    # each row's cond is one weighted token's cond; each weighted token appears num_samples times
    weighted = [(b, i) for b in range(2) for i in range(5) if w[b, i] > 0]
    count = {bi: 0 for bi in weighted}
    num, den = 0.0, 0.0
    ab = sch.alphas_cumprod
    for r in range(x_t.shape[0]):
        match = [bi for bi in weighted if torch.equal(cond[bi], c[r])]
        assert len(match) == 1
        bi = match[0]
        count[bi] += 1
        a = ab[int(t[r])].item()
        noise = (x_t[r].double() - math.sqrt(a) * z0[bi].double()) / math.sqrt(1 - a)
        pred = torch.tanh(x_t[r] @ head.A + c[r] @ head.B + t[r].float() / 1000).double()
        per = ((pred - noise) ** 2).mean().item()
        num += float(w[bi]) * per / 4
        den += float(w[bi]) / 4
    assert all(v == 4 for v in count.values())
    assert abs(got.item() - num / den) < 1e-4
    # own t per copy
    assert len(set(t.tolist())) > 1


def test_diffusion_mse_zero_weight_tokens_do_nothing():
    sch = DiffusionSchedule(1000)
    z0 = torch.randn(2, 5, 3, generator=gen(0))
    cond = torch.randn(2, 5, 4, generator=gen(1), requires_grad=True)
    w = example_weights()
    head = Recorder(3, 4)
    loss = diffusion_mse(head, z0, cond, w, sch, generator=gen(2))
    loss.backward()
    zero = w == 0
    assert torch.all(cond.grad[zero] == 0) and torch.all(cond.grad[~zero].abs().sum(-1) > 0)
    z_other, c_other = z0.clone(), cond.detach().clone()
    z_other[zero] = 99.0
    c_other[zero] = -99.0
    again = diffusion_mse(Recorder(3, 4), z_other, c_other, w, sch, generator=gen(2))
    assert again.item() == loss.item()


def test_diffusion_mse_seeded_and_perfect_predictor():
    sch = DiffusionSchedule(1000)
    z0 = torch.randn(2, 5, 3, generator=gen(0))
    cond = torch.randn(2, 5, 4, generator=gen(1))
    w = example_weights()
    a = diffusion_mse(Recorder(3, 4), z0, cond, w, sch, generator=gen(7))
    b = diffusion_mse(Recorder(3, 4), z0, cond, w, sch, generator=gen(7))
    c = diffusion_mse(Recorder(3, 4), z0, cond, w, sch, generator=gen(8))
    assert a.item() == b.item() and a.item() != c.item()
    perfect = diffusion_mse(cheating_eps(sch), z0, z0, w, sch, generator=gen(7))
    assert perfect.item() < 1e-8 and a.item() > 1e-2


def test_diffusion_mse_zero_total_weight_and_errors():
    sch = DiffusionSchedule(1000)
    z0 = torch.randn(2, 5, 3, generator=gen(0))
    cond = torch.randn(2, 5, 4, generator=gen(1), requires_grad=True)
    head = Recorder(3, 4)
    loss = diffusion_mse(head, z0, cond, torch.zeros(2, 5), sch)
    assert loss.item() == 0.0 and loss.requires_grad and head.calls == []
    loss.backward()
    assert torch.all(cond.grad == 0)
    with pytest.raises(ValueError, match="z0"):
        diffusion_mse(head, z0[0], cond, torch.ones(2, 5), sch)
    with pytest.raises(ValueError, match="cond"):
        diffusion_mse(head, z0, cond[:, :4], torch.ones(2, 5), sch)
    with pytest.raises(ValueError, match="num_samples"):
        diffusion_mse(head, z0, cond, torch.ones(2, 5), sch, num_samples=0)
    with pytest.raises(ValueError, match="predictor"):
        diffusion_mse(lambda x, t, c: x[:, :2], z0, cond, torch.ones(2, 5), sch)


# ---- flow_matching_mse ---------------------------------------------------------------------------

def test_flow_matching_matches_loop_and_conventions():
    x0 = torch.randn(3, 4, 2, generator=gen(0))
    seen = []

    def head(x_t, t, cond):
        seen.append((x_t.clone(), t.clone()))
        return torch.sin(x_t) * cond

    w = torch.tensor([[1.0, 0.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.5, 1.0, 1.0, 1.0]])
    got = flow_matching_mse(head, x0, 0.7, generator=gen(1), loss_weight=w)
    x_t, t = seen[0]
    assert t.shape == (3,) and t.dtype == torch.float32 and torch.all((t > 0) & (t < 1))
    num, den = 0.0, 0.0
    for b in range(3):
        tb = float(t[b])
        for n in range(4):
            noise = (x_t[b, n].double() - (1 - tb) * x0[b, n].double()) / tb
            target = noise - x0[b, n].double()
            per = ((torch.sin(x_t[b, n].double()) * 0.7 - target) ** 2).mean().item()
            num += float(w[b, n]) * per
            den += float(w[b, n])
    assert abs(got.item() - num / den) < 1e-4
    # default: per-sample mean over all elements, equal weights
    seen.clear()
    plain = flow_matching_mse(head, x0, 0.7, generator=gen(1))
    x_t, t = seen[0]
    tb = t[:, None, None].double()
    target = (x_t.double() - (1 - tb) * x0.double()) / tb - x0.double()
    assert abs(plain.item() - ((torch.sin(x_t.double()) * 0.7 - target) ** 2).mean().item()) < 1e-4


def test_flow_matching_perfect_predictor_and_seed():
    x0 = torch.randn(3, 4, 2, generator=gen(0))

    def perfect(x_t, t, cond):  # cond carries x0
        tb = t.reshape(-1, 1, 1)
        return (x_t - (1 - tb) * cond) / tb - cond

    assert flow_matching_mse(perfect, x0, x0, generator=gen(3)).item() < 1e-8
    bad = lambda x_t, t, cond: torch.zeros_like(x_t)
    a = flow_matching_mse(bad, x0, None, generator=gen(3))
    assert a.item() == flow_matching_mse(bad, x0, None, generator=gen(3)).item()
    assert a.item() != flow_matching_mse(bad, x0, None, generator=gen(4)).item()
    with pytest.raises(ValueError, match="loss_weight"):
        flow_matching_mse(bad, x0, None, loss_weight=torch.ones(4))
    with pytest.raises(ValueError, match="predictor"):
        flow_matching_mse(lambda x, t, c: x[:, :2], x0, None)


# ---- i2t_nll (Eq. 2) and total_loss (Eqs. 13–14) ----------------------------------------------

def test_i2t_nll_hand_made_shift():
    logits = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 1.0, 5.0]]])
    labels = torch.tensor([[-100, 2, 0]])  # position 0 predicts label 2, position 1 predicts label 0
    lse = lambda r: math.log(sum(math.exp(v) for v in r))
    expected = ((lse([2, 0, 1]) - 1.0) + (lse([0, 3, 0]) - 0.0)) / 2
    assert abs(i2t_nll(logits, labels).item() - expected) < 1e-6
    # the last position's logits predict nothing
    other = logits.clone()
    other[0, 2] = torch.tensor([9.0, -9.0, 0.0])
    assert i2t_nll(other, labels).item() == i2t_nll(logits, labels).item()
    # a label at position 0 is never predicted: only ignored labels after it -> 0 with a graph
    lg = logits.clone().requires_grad_(True)
    zero = i2t_nll(lg, torch.tensor([[1, -100, -100]]))
    assert zero.item() == 0.0
    zero.backward()
    assert torch.all(lg.grad == 0)


def test_i2t_nll_matches_loop_over_batch():
    logits = torch.randn(2, 6, 5, generator=gen(0))
    labels = torch.randint(0, 5, (2, 6), generator=gen(1))
    labels[0, :3] = -100
    labels[1, 4:] = -100
    total, count = 0.0, 0
    for b in range(2):
        for k in range(1, 6):
            if labels[b, k] == -100:
                continue
            row = [float(v) for v in logits[b, k - 1].double()]
            total += math.log(sum(math.exp(v) for v in row)) - row[int(labels[b, k])]
            count += 1
    assert abs(i2t_nll(logits, labels).item() - total / count) < 1e-5
    with pytest.raises(ValueError, match="labels"):
        i2t_nll(logits, labels[:, :5])
    bad = labels.clone()
    bad[1, 2] = 5
    with pytest.raises(ValueError, match=r"labels\[1, 2\]"):
        i2t_nll(logits, bad)


def test_total_loss():
    a, b = torch.tensor(2.0), torch.tensor(3.0)
    assert total_loss(a, b).item() == 5.0
    assert total_loss(a, b, lam=0.5).item() == 3.5
    assert total_loss(a, b, lam=0.0).item() == 2.0
    assert total_loss(a).item() == 2.0
    with pytest.raises(ValueError, match="lam"):
        total_loss(a, b, lam=-1.0)
    with pytest.raises(ValueError, match="l_i2t"):
        total_loss(a, torch.ones(2))
