"""§11 of the paper (Eqs. 2, 13–17): the objectives SeGroS keeps from each backbone.

SeGroS changes *which* tokens are supervised, never the objective itself (§11: "SeGroS does not
replace Harmon's native denoising loss"). Every T2I loss here therefore takes the per-token
``loss_weight`` [B, N] of :class:`segros.supervision.Supervision` (> 0 only on the masked set M).

Normalisation, a convention the paper leaves open (``docs/conventions.md``, "Objectives"): Eqs. 15
and 17 write a *sum* over i ∈ M; like Show-o and MAR/Harmon we take the weighted mean over the
batch, Σ_{b,i} w_{b,i} ℓ_{b,i} / Σ_{b,i} w_{b,i}. A batch whose total weight is 0 gives exactly 0
with a graph (:func:`zero_loss`). Weights must be finite and ≥ 0; losses are float32.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F

from segros import shard


# ---- checks and the empty loss ------------------------------------------------------------------

def zero_loss(*anchors: torch.Tensor) -> torch.Tensor:
    """A float32 scalar 0 that keeps the graph of every ``anchor`` (backward gives zero gradients,
    never NaN): the loss of a batch with nothing to supervise."""
    out = anchors[0].sum().float() * 0.0
    for anchor in anchors[1:]:
        out = out + anchor.sum().float() * 0.0
    return out


def _check_weight(loss_weight: torch.Tensor, shape, name: str = "loss_weight") -> None:
    if not isinstance(loss_weight, torch.Tensor) or not loss_weight.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating tensor")
    if tuple(loss_weight.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(loss_weight.shape)}")
    bad = ~torch.isfinite(loss_weight) | (loss_weight < 0)
    if bool(bad.any()):
        where = bad.nonzero()[0].tolist()
        raise ValueError(f"{name} must be finite and >= 0; sample {where[0]} has {name}{where} = "
                         f"{loss_weight[tuple(where)].item()}")


def _weighted_mean(per_token: torch.Tensor, weight: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Σ w ℓ / Σ w; 0 with a graph (through ``anchor``) when Σ w = 0. With several processes the sums
    run over the global batch (:func:`segros.shard.weighted_mean`)."""
    if shard.active():
        total = shard.all_sum(weight.sum().detach().float())
        if float(total) == 0.0:
            return zero_loss(anchor)
        return ((per_token * weight).sum() + zero_loss(anchor)) * shard.world_size() / total
    total = weight.sum()
    if per_token.numel() == 0 or float(total) == 0.0:
        return zero_loss(anchor)
    return (per_token * weight).sum() / total


# ---- Show-o: masked-token NLL (Eq. 15) --------------------------------------------------------

def masked_token_nll(logits: torch.Tensor, targets: torch.Tensor, loss_weight: torch.Tensor) -> torch.Tensor:
    """Eq. 15: −log p(v_i | Z_T, Z_hint, Z̃) over masked image codes, weighted by ``loss_weight``.

    logits [B, N, V] (any float dtype), targets [B, N] long in [0, V) where the weight is > 0
    (anything, e.g. −100, elsewhere), loss_weight [B, N]. Only weighted tokens are gathered before
    the log-softmax, so zero-weight tokens cost nothing and get exactly zero gradient.
    """
    if logits.ndim != 3 or not logits.dtype.is_floating_point:
        raise ValueError(f"logits must be a float tensor [B, N, V], got {logits.dtype} {tuple(logits.shape)}")
    if targets.shape != logits.shape[:2] or targets.dtype != torch.long:
        raise ValueError(f"targets must be long [B, N] = {tuple(logits.shape[:2])}, "
                         f"got {targets.dtype} {tuple(targets.shape)}")
    _check_weight(loss_weight, logits.shape[:2])
    sel = loss_weight > 0
    t = targets[sel]
    bad = (t < 0) | (t >= logits.shape[-1])
    if bool(bad.any()):
        b, i = sel.nonzero()[bad.nonzero()[0, 0]].tolist()
        raise ValueError(f"targets[{b}, {i}] = {targets[b, i].item()} is outside [0, {logits.shape[-1]}) "
                         "at a token with loss_weight > 0")
    nll = F.cross_entropy(logits[sel].float(), t, reduction="none")
    return _weighted_mean(nll, loss_weight[sel].float(), logits)


# ---- Harmon / MAR: per-token diffusion (Eqs. 16–17) -------------------------------------------

def cosine_alphas_cumprod(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved-DDPM cosine schedule (Nichol & Dhariwal 2021), as in MAR's / Harmon's diffusion head.

    ᾱ(u) = cos²((u + s)/(1 + s) · π/2); β_t = min(1 − ᾱ((t+1)/T) / ᾱ(t/T), max_beta) for t = 0..T−1;
    returns ᾱ_t = Π_{k ≤ t} (1 − β_k) in float64, [T]. Index t = 0 is the least noisy step.
    """
    def abar(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - abar((t + 1) / num_steps) / abar(t / num_steps), max_beta) for t in range(num_steps)]
    return torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), dim=0)


class DiffusionSchedule:
    """DDPM cosine schedule with ``num_steps`` = 1000 training steps (MAR diffloss / Harmon).

    Conventions: t is an integer in [0, T−1]; z_t = √ᾱ_t z0 + √(1−ᾱ_t) ε (ε-prediction);
    sampling uses DDIM steps on an evenly spaced subset of the T steps (``timesteps``), with
    ``eta`` = 0 deterministic and ``eta`` = 1 DDPM-like. MAR's learned-variance (vb) term and its
    sampling temperature are not modelled (``NoisePredictor`` returns ε̂ only).
    """

    def __init__(self, num_steps: int = 1000):
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        self.num_steps = num_steps
        self.alphas_cumprod = cosine_alphas_cumprod(num_steps)  # float64 [T]

    def _abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """ᾱ_t as float32 on like's device, shaped to broadcast over like's trailing dims; t = −1 → 1."""
        if t.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(f"t must be an integer tensor, got {t.dtype}")
        bad = (t < -1) | (t >= self.num_steps)
        if bool(bad.any()):
            raise ValueError(f"t must lie in [0, {self.num_steps - 1}] (or -1 for 'clean'), "
                             f"got t = {int(t[bad][0])} at index {bad.nonzero()[0].tolist()}")
        table = torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod])  # index t + 1
        a = table.to(like.device)[t.to(like.device) + 1].to(torch.float32)
        return a.reshape(a.shape + (1,) * (like.ndim - a.ndim))

    def q_sample(self, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """z_t = √ᾱ_t z0 + √(1−ᾱ_t) ε. z0, noise [M, ...]; t [M] long."""
        if noise.shape != z0.shape:
            raise ValueError(f"noise must have z0's shape {tuple(z0.shape)}, got {tuple(noise.shape)}")
        if t.ndim != 1 or t.shape[0] != z0.shape[0]:
            raise ValueError(f"t must be [M] = [{z0.shape[0]}], got {tuple(t.shape)}")
        a = self._abar(t, z0)
        return (a.sqrt() * z0.float() + (1 - a).sqrt() * noise.float()).to(z0.dtype)

    def timesteps(self, num_inference_steps: int) -> list[int]:
        """Evenly spaced steps from T−1 down to 0 (inclusive), ``num_inference_steps`` of them."""
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= self.num_steps:
            raise ValueError(f"num_inference_steps must be an int in [1, {self.num_steps}], got {num_inference_steps!r}")
        if num_inference_steps == 1:
            return [self.num_steps - 1]
        return torch.linspace(self.num_steps - 1, 0, num_inference_steps).round().long().tolist()

    def p_sample_step(self, x_t: torch.Tensor, eps_hat: torch.Tensor, t: int, t_prev: int,
                      eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """One DDIM step t → t_prev (t_prev = −1 gives the clean estimate x̂0).

        x̂0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t; σ = eta·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev);
        x_prev = √ᾱ_prev x̂0 + √(1−ᾱ_prev−σ²) ε̂ + σ z.
        """
        if eps_hat.shape != x_t.shape:
            raise ValueError(f"eps_hat must have x_t's shape {tuple(x_t.shape)}, got {tuple(eps_hat.shape)}")
        if not t_prev < t:
            raise ValueError(f"t_prev must be smaller than t, got t={t}, t_prev={t_prev}")
        a_t = float(self._abar(torch.tensor([t]), x_t.new_zeros(1)))
        a_prev = float(self._abar(torch.tensor([t_prev]), x_t.new_zeros(1)))
        x = x_t.float()
        eps = eps_hat.float()
        x0_hat = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(max(1 - a_t / a_prev, 0.0))
        out = math.sqrt(a_prev) * x0_hat + math.sqrt(max(1 - a_prev - sigma ** 2, 0.0)) * eps
        if sigma > 0:
            out = out + sigma * torch.randn(x.shape, generator=generator, device=x.device)
        return out.to(x_t.dtype)

    def eps_from_x0(self, x_t: torch.Tensor, x0_hat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε̂ = (x_t − √ᾱ_t x̂0)/√(1−ᾱ_t): the noise an x0-prediction implies (t [M] long)."""
        a = self._abar(t, x_t)
        return (x_t.float() - a.sqrt() * x0_hat.float()) / (1 - a).clamp_min(1e-8).sqrt()

    def sample(self, predictor, cond: torch.Tensor, channels: int, num_inference_steps: int = 50,
               eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw [M, channels] latents for conditions cond [M, Dc] with DDIM from pure noise."""
        m = cond.shape[0]
        x = torch.randn(m, channels, generator=generator, device=cond.device)
        steps = self.timesteps(num_inference_steps) + [-1]
        for t, t_prev in zip(steps[:-1], steps[1:]):
            tt = torch.full((m,), t, dtype=torch.long, device=cond.device)
            x = self.p_sample_step(x, predictor(x, tt, cond), t, t_prev, eta=eta, generator=generator)
        return x


class NoisePredictor(Protocol):
    """MAR's per-token diffusion head: ε̂ = ε_θ(x_t, t | c), x_t [M, C], t [M] long, cond [M, Dc]."""

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor: ...


def diffusion_mse(predictor: NoisePredictor, z0: torch.Tensor, cond: torch.Tensor, loss_weight: torch.Tensor,
                  schedule: DiffusionSchedule, num_samples: int = 4,
                  generator: torch.Generator | None = None, prediction: str = "epsilon") -> torch.Tensor:
    """Eqs. 16–17: per-token ε-prediction MSE of MAR/Harmon's diffusion head on weighted tokens.

    z0 [B, N, C] clean latents, cond [B, N, Dc] the transformer's output at each token,
    loss_weight [B, N]. Only tokens with weight > 0 are gathered and run through ``predictor``
    (Eq. 16's z̃: visible tokens stay clean and are not supervised, so they never reach the head).
    Each gathered token is repeated ``num_samples`` times (MAR's diffusion_batch_mul = 4), each copy
    with its own t ~ U{0..T−1} and ε ~ N(0, I) drawn from ``generator`` (the expectation of Eq. 17).

    Per-token loss ℓ_i = mean over the copies and over the C channels of (ε − ε̂)² (MAR's
    mean_flat; Eq. 17's squared L2 norm is C times this). Then Σ w_i ℓ_i / Σ w_i.

    ``prediction="x0"`` (a switch of the tiny family, not Harmon's choice): the predictor returns
    x̂0 and the per-token loss is the mean of (x0 − x̂0)²; :meth:`DiffusionSchedule.eps_from_x0`
    turns x̂0 into the ε̂ DDIM steps with.
    """
    if prediction not in ("epsilon", "x0"):
        raise ValueError(f"prediction must be 'epsilon' or 'x0', got {prediction!r}")
    if z0.ndim != 3 or not z0.dtype.is_floating_point:
        raise ValueError(f"z0 must be a float tensor [B, N, C], got {z0.dtype} {tuple(z0.shape)}")
    if cond.ndim != 3 or cond.shape[:2] != z0.shape[:2]:
        raise ValueError(f"cond must be [B, N, Dc] with [B, N] = {tuple(z0.shape[:2])}, got {tuple(cond.shape)}")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    _check_weight(loss_weight, z0.shape[:2])
    sel = loss_weight > 0
    if shard.active():
        return _diffusion_mse_sharded(predictor, z0, cond, loss_weight, schedule, num_samples, generator)
    if not bool(sel.any()):
        return zero_loss(cond, z0)
    x0 = z0[sel].repeat(num_samples, 1)          # [M*S, C], copy s of token j at row s*M + j
    c = cond[sel].repeat(num_samples, 1)
    w = loss_weight[sel].float().repeat(num_samples)
    rows = x0.shape[0]
    t = torch.randint(0, schedule.num_steps, (rows,), generator=generator, device=z0.device)
    noise = torch.randn(x0.shape, generator=generator, device=z0.device, dtype=torch.float32).to(x0.dtype)
    x_t = schedule.q_sample(x0, t, noise)
    eps_hat = predictor(x_t, t, c)
    if eps_hat.shape != x0.shape:
        raise ValueError(f"predictor must return [M, C] = {tuple(x0.shape)}, got {tuple(eps_hat.shape)}")
    target = noise if prediction == "epsilon" else x0
    per_row = (eps_hat.float() - target.float()).pow(2).mean(dim=-1)
    return (per_row * w).sum() / w.sum()


def _diffusion_mse_sharded(predictor, z0, cond, loss_weight, schedule, num_samples, generator):
    """:func:`diffusion_mse` on this process's rows of a global batch (:mod:`segros.shard`): t and ε
    drawn for every copy of every selected token of the global batch, in its layout (copy s of
    global token j at row s·M + j; this process's tokens are a contiguous run of j), and the
    weighted mean taken over the global batch."""
    sel = loss_weight > 0
    x0 = z0[sel].repeat(num_samples, 1)
    c = cond[sel].repeat(num_samples, 1)
    w = loss_weight[sel].float().repeat(num_samples)
    m = int(sel.sum())
    offset, m_global = shard.rows(m)
    if m_global == 0:
        return zero_loss(cond, z0)
    t = torch.randint(0, schedule.num_steps, (m_global * num_samples,), generator=generator, device=z0.device)
    noise = torch.randn((m_global * num_samples, z0.shape[-1]), generator=generator, device=z0.device,
                        dtype=torch.float32).to(x0.dtype)
    mine = (torch.arange(num_samples, device=z0.device)[:, None] * m_global + offset
            + torch.arange(m, device=z0.device)[None]).reshape(-1)
    t, noise = t[mine], noise[mine]
    if m == 0:
        return shard.weighted_mean(zero_loss(cond, z0), w.sum())  # takes part in the global sum
    x_t = schedule.q_sample(x0, t, noise)
    eps_hat = predictor(x_t, t, c)
    if eps_hat.shape != x0.shape:
        raise ValueError(f"predictor must return [M, C] = {tuple(x0.shape)}, got {tuple(eps_hat.shape)}")
    per_row = (eps_hat.float() - noise.float()).pow(2).mean(dim=-1)
    return shard.weighted_mean((per_row * w).sum(), w.sum())


# ---- OpenUni / SANA: rectified flow ------------------------------------------------------------

def flow_matching_mse(predictor, x0: torch.Tensor, cond, generator: torch.Generator | None = None,
                      loss_weight: torch.Tensor | None = None,
                      num_train_timesteps: int | None = None) -> torch.Tensor:
    """Rectified-flow velocity MSE (OpenUni's SANA objective; ``docs/adapters/openuni.md``).

    Convention: one t ~ U(0, 1) per sample (float32 [B]), x_t = (1 − t) x0 + t ε with ε ~ N(0, I)
    (t = 0 clean, t = 1 noise), target v = ε − x0, loss = mean of (v̂ − v)². ``predictor(x_t, t,
    cond)`` receives the continuous t in [0, 1] (scale it inside if the network expects 0..1000)
    and returns v̂ of x0's shape. ``cond`` is passed through untouched.

    ``loss_weight`` (optional) has a prefix of x0's shape, e.g. [B] per sample or [B, N] per token
    of x0 [B, N, C]; the element loss is averaged over the remaining dims, then Σ w ℓ / Σ w.

    ``num_train_timesteps`` T (optional) puts t on the grid of a diffusers
    ``FlowMatchEulerDiscreteScheduler`` with shift 1, as OpenUni's ``diff_loss`` samples it: with the
    same u ~ U(0, 1), t = (T − ⌊T u⌋) / T ∈ {1/T, ..., 1}.
    """
    if not isinstance(x0, torch.Tensor) or x0.ndim < 2 or not x0.dtype.is_floating_point:
        raise ValueError("x0 must be a float tensor [B, ...] with at least 2 dims")
    if loss_weight is None:
        loss_weight = torch.ones(x0.shape[0], device=x0.device)
    if loss_weight.ndim < 1 or loss_weight.ndim > x0.ndim:
        raise ValueError(f"loss_weight must have a prefix of x0's shape {tuple(x0.shape)}, got {tuple(loss_weight.shape)}")
    _check_weight(loss_weight, x0.shape[:loss_weight.ndim])
    b = x0.shape[0]
    t = shard.draw(lambda s: torch.rand(s, generator=generator, device=x0.device), b)
    if num_train_timesteps:
        t = (num_train_timesteps - (t * num_train_timesteps).long()).float() / num_train_timesteps
    noise = shard.draw(lambda s: torch.randn(s, generator=generator, device=x0.device), b, *x0.shape[1:])
    tb = t.reshape((b,) + (1,) * (x0.ndim - 1))
    x_t = ((1 - tb) * x0.float() + tb * noise).to(x0.dtype)
    v_hat = predictor(x_t, t, cond)
    if v_hat.shape != x0.shape:
        raise ValueError(f"predictor must return x0's shape {tuple(x0.shape)}, got {tuple(v_hat.shape)}")
    err = (v_hat.float() - (noise - x0.float())).pow(2)
    per_elem = err.flatten(loss_weight.ndim).mean(dim=-1) if err.ndim > loss_weight.ndim else err
    w = loss_weight.float()
    if shard.active():
        return _weighted_mean(per_elem, w, v_hat)
    if float(w.sum()) == 0.0:
        return zero_loss(v_hat)
    return (per_elem * w).sum() / w.sum()


# ---- I2T and the total (Eqs. 2, 13–14) ---------------------------------------------------------

def i2t_nll(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Eq. 2: autoregressive NLL of the answer tokens.

    Shifted by one: logits at position k predict labels at k + 1 (the labels are the input ids with
    ``ignore_index`` on the question/padding). Mean over all supervised tokens of the batch (token
    level, not per sample). No supervised token gives 0 with a graph.
    """
    if logits.ndim != 3 or not logits.dtype.is_floating_point:
        raise ValueError(f"logits must be a float tensor [B, L, V], got {logits.dtype} {tuple(logits.shape)}")
    if labels.shape != logits.shape[:2] or labels.dtype != torch.long:
        raise ValueError(f"labels must be long [B, L] = {tuple(logits.shape[:2])}, got {labels.dtype} {tuple(labels.shape)}")
    pred = logits[:, :-1]
    tgt = labels[:, 1:]
    sel = tgt != ignore_index
    t = tgt[sel]
    bad = (t < 0) | (t >= logits.shape[-1])
    if bool(bad.any()):
        b, k = sel.nonzero()[bad.nonzero()[0, 0]].tolist()
        raise ValueError(f"labels[{b}, {k + 1}] = {labels[b, k + 1].item()} is outside [0, {logits.shape[-1]})")
    if shard.active():  # the mean over the supervised tokens of the global batch
        nll = F.cross_entropy(pred[sel].float(), t, reduction="none")
        return _weighted_mean(nll, torch.ones_like(nll), logits)
    if t.numel() == 0:
        return zero_loss(logits)
    return F.cross_entropy(pred[sel].float(), t, reduction="mean")


def total_loss(l_t2i: torch.Tensor, l_i2t: torch.Tensor | None = None, lam: float = 1.0) -> torch.Tensor:
    """Eqs. 13–14: L_total = L_SeGroS + λ L_i2t (λ = 1 in the paper, §4.1). λ = 0 or no I2T → L_SeGroS."""
    if lam < 0 or not math.isfinite(lam):
        raise ValueError(f"lam must be finite and >= 0, got {lam}")
    if l_t2i.ndim != 0:
        raise ValueError(f"l_t2i must be a scalar, got shape {tuple(l_t2i.shape)}")
    if l_i2t is None or lam == 0:
        return l_t2i
    if l_i2t.ndim != 0:
        raise ValueError(f"l_i2t must be a scalar, got shape {tuple(l_i2t.shape)}")
    return l_t2i + lam * l_i2t
