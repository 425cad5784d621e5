"""§3.2–3.3 of the paper, Eqs. 3–11: discriminative text tokens and the visual grounding map.

Shapes: B batch, L text length (padded), N visual tokens, D the shared width.

Every function below follows the conventions the equations leave open (which tokens ground,
normalisation and dtypes, min–max of a constant, K_T and its floor, ties, empty captions, bad
values): ``docs/conventions.md``, "Grounding".
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from segros.presets import TEXT_FILTERS


class Grounding(NamedTuple):
    w: torch.Tensor        # [B, L] bool, Eq. 9
    m_bar: torch.Tensor    # [B, N] float in [0, 1], Eq. 11 + min–max
    s_intra: torch.Tensor  # [B, L] float, Eq. 4 (0 on invalid tokens)
    s_inter: torch.Tensor  # [B, L] float, Eq. 6 (0 on invalid tokens)


# relative tolerance of every ⌊ratio·n⌋ in this package: 0.29·100 and float32(0.7)·10 must
# floor to 29 and 7, not 28 and 6.
RATIO_RTOL = 1e-6


# ----------------------------------------------------------------------------------------------
# small helpers

def floor_count(ratio, n):
    """⌊ratio·n⌋ as used by Eq. 8 (K_T), §3.4 (⌊ηN⌋, ⌊γN⌋).

    ``ratio`` is a float or a tensor (float64 is used inside); ``n`` an int or a long tensor.
    The product is multiplied by (1 + 1e-6) before the floor so that a product that is an
    integer in exact arithmetic is not floored down by float rounding. The result is clamped to
    [0, n] and returned as a long tensor (or an int when both inputs are Python numbers).
    """
    if isinstance(ratio, torch.Tensor) or isinstance(n, torch.Tensor):
        r = torch.as_tensor(ratio, dtype=torch.float64)
        nn_ = torch.as_tensor(n, dtype=torch.float64, device=r.device)
        k = torch.floor(r * nn_ * (1.0 + RATIO_RTOL))
        return torch.minimum(torch.clamp(k, min=0), nn_).long()
    return max(0, min(int(n), math.floor(float(ratio) * n * (1.0 + RATIO_RTOL))))


def check_ratio(value, name, upper=1.0):
    """ValueError unless ``value`` (float or tensor) lies in [0, upper] (upper=None: [0, ∞))."""
    t = torch.as_tensor(value, dtype=torch.float64)
    bad = ~torch.isfinite(t) | (t < 0)
    if upper is not None:
        bad = bad | (t > upper)
    if bool(bad.any()):
        rng = f"[0, {upper}]" if upper is not None else "[0, inf)"
        where = ""
        if t.ndim > 0:
            where = f" (sample {int(bad.reshape(-1).nonzero()[0])})"
        raise ValueError(f"{name} must lie in {rng}, got {value}{where}")


def compute_dtype(*tensors):
    """fp32 for bf16/fp16/fp32 inputs, fp64 if any input is fp64."""
    if any(t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def first_bad_sample(norm, valid=None):
    """Index of the first sample whose token norms [B, K] hold NaN/inf (on ``valid``), or None.

    A NaN/inf anywhere in a token makes its ℓ2 norm NaN/inf, so the norms computed for the
    normalisation double as the finiteness check (no extra pass over the embeddings). A finite
    token whose norm overflows the dtype (|x| ≳ 1e19 in fp32) is reported the same way.
    """
    bad = ~torch.isfinite(norm)
    if valid is not None:
        bad = bad & valid
    bad = bad.any(dim=1)
    return int(bad.nonzero()[0]) if bool(bad.any()) else None


def normalize_text(z_text, valid, dtype):
    """Ẑ_T (§3.2.1) in ``dtype``: valid rows ℓ2-normalised, other rows zeroed (never read).

    An all-zero valid row stays zero. NaN/inf in a valid row raises ValueError naming the sample.
    """
    z = z_text.to(dtype)
    norm = torch.linalg.vector_norm(z, dim=-1)                            # [B, L]
    bad = first_bad_sample(norm, valid)
    if bad is not None:
        raise ValueError(f"z_text has NaN/inf in a valid token of sample {bad}")
    z_hat = z / norm.clamp_min(1e-12)[..., None]
    return torch.where(valid[..., None], z_hat, torch.zeros((), dtype=dtype, device=z.device))


#: relative span under which a score vector counts as constant (fp32 rounding is ~1e-7 relative)
MINMAX_RTOL = 1e-5


def minmax(s, valid):
    """Per-sample min–max over ``valid`` entries of s [B, K] (Eq. 7's s̃, Eq. 11's m̄).

    Constant vectors and samples with no valid entry give zeros; invalid entries are 0. "Constant"
    allows rounding: a span below ``MINMAX_RTOL`` × max(|min|, |max|) is rounding noise (e.g. the
    same scores summed in another order because padding moved them), and stretching it to [0, 1]
    would turn that noise into a ranking.
    """
    lo = s.masked_fill(~valid, float("inf")).amin(dim=1, keepdim=True)
    hi = s.masked_fill(~valid, float("-inf")).amax(dim=1, keepdim=True)
    span = hi - lo
    scale = torch.maximum(lo.abs(), hi.abs())
    ok = torch.isfinite(span) & (span > MINMAX_RTOL * scale)
    out = (s - torch.where(ok, lo, torch.zeros_like(lo))) / torch.where(ok, span, torch.ones_like(span))
    out = torch.where(ok, out, torch.zeros_like(out))
    return out.masked_fill(~valid, 0.0)


def rank_descending(score, valid):
    """Rank (0 = best) of every entry of score [B, K] in descending order, ties → lower index.

    Invalid entries rank after every valid one.
    """
    score = score.masked_fill(~valid, float("-inf"))
    order = torch.sort(score, dim=1, descending=True, stable=True).indices
    arange = torch.arange(score.shape[1], device=score.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, arange)


def check_grounding_inputs(z_text, z_image, text_valid, valid_name="text_valid"):
    """Shape checks shared by the public functions; returns text_valid as bool.

    NaN / inf are caught where the norms are computed (:func:`normalize_text`, :func:`_logits`).
    """
    if z_text.ndim != 3:
        raise ValueError(f"z_text must be [B, L, D], got shape {tuple(z_text.shape)}")
    if not z_text.is_floating_point():
        raise ValueError(f"z_text must be a float tensor, got {z_text.dtype}")
    B, L, D = z_text.shape
    if text_valid.shape != (B, L):
        raise ValueError(f"{valid_name} must be [B, L] = [{B}, {L}] like z_text, got {tuple(text_valid.shape)}")
    if text_valid.is_floating_point():
        raise ValueError(f"{valid_name} must be bool (or 0/1 integers), got {text_valid.dtype}")
    text_valid = text_valid.bool()
    if z_image is not None:
        if z_image.ndim != 3:
            raise ValueError(f"z_image must be [B, N, D], got shape {tuple(z_image.shape)}")
        if not z_image.is_floating_point():
            raise ValueError(f"z_image must be a float tensor, got {z_image.dtype}")
        if z_image.shape[0] != B:
            raise ValueError(f"z_image batch size {z_image.shape[0]} differs from z_text batch size {B}")
        if z_image.shape[2] != D:
            raise ValueError(f"z_image width {z_image.shape[2]} differs from z_text width {D}")
    return text_valid


def check_tau(tau):
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0, got {tau}")


# ----------------------------------------------------------------------------------------------
# Eqs. 3–6 on normalised inputs (shared by the public functions and ground())

def _intra(zt, valid, tau):
    """Eqs. 3–4 on ℓ2-normalised zt [B, L, D]: s_j = Σ_k softmax_j(S_k· / τ), valid k, j only."""
    S = zt @ zt.transpose(1, 2) / tau                                     # [B, L(k), L(j)]
    S = S.masked_fill(~valid[:, None, :], float("-inf"))                  # softmax over valid j
    P = torch.softmax(S, dim=2)
    P = P.masked_fill(~valid[:, :, None], 0.0)                            # sum over valid k (kills NaN rows)
    return P.sum(dim=1).masked_fill(~valid, 0.0)


def _inter(logits, valid):
    """Eqs. 5–6 on logits = Ẑ_I Ẑ_Tᵀ / τ [B, N, L]: s_j = Σ_i softmax_j(logits_i·) over valid j.

    Invalid columns are filled with the dtype's lowest finite value, not −inf, so that exp gives
    exactly 0 for them and a sample with L_T = 0 gives a finite (then zeroed) row instead of NaN.
    """
    logits = logits.masked_fill(~valid[:, None, :], torch.finfo(logits.dtype).min)
    P = torch.softmax(logits, dim=2)                                      # [B, N, L]
    return P.sum(dim=1).masked_fill(~valid, 0.0)


def _map(logits, w):
    """Eqs. 10–11 + min–max on logits [B, N, L]: m_i = Σ_j w_j softmax_i(logits_·j), then m̄."""
    P = torch.softmax(logits, dim=1)                                      # over the N visual tokens
    m = torch.bmm(P, w.to(P.dtype)[:, :, None])[:, :, 0]
    return minmax(m, torch.ones_like(m, dtype=torch.bool))


def _logits(z_text, z_image, valid, tau):
    """(Ẑ_T [B, L, D], A/τ = Ẑ_I Ẑ_Tᵀ/τ [B, N, L]) in the compute dtype (the A of Eqs. 5 and 10).

    Ẑ_I is never materialised: A = (Z_I Ẑ_Tᵀ) / ‖z_i‖, which divides [B, N, L] instead of
    [B, N, D] (the same numbers up to rounding). An all-zero visual token gives a zero row of A.
    """
    dt = compute_dtype(z_text, z_image)
    zt = normalize_text(z_text, valid, dt)
    zi = z_image.to(dt)
    norm = torch.linalg.vector_norm(zi, dim=-1)                           # [B, N]
    bad = first_bad_sample(norm)
    if bad is not None:
        raise ValueError(f"z_image has NaN/inf in sample {bad}")
    A = zi @ zt.transpose(1, 2)
    return zt, A * (1.0 / (tau * norm.clamp_min(1e-12)))[..., None]


# ----------------------------------------------------------------------------------------------
# public API

def text_intra_affinity(z_text, text_valid, tau=1.0):
    """Text intra-modal affinity, §3.2.1, Eqs. 3–4.

    S = Ẑ_T Ẑ_Tᵀ; P^self_kj = exp(S_kj/τ) / Σ_m exp(S_km/τ) (Eq. 3, m over valid tokens);
    s^intra_j = Σ_k P^self_kj (Eq. 4, k over valid tokens, k = j included: the equation sums
    over all k). z_text [B, L, D], text_valid [B, L] bool → s_intra [B, L] (0 where invalid).
    """
    check_tau(tau)
    valid = check_grounding_inputs(z_text, None, text_valid)
    zt = normalize_text(z_text, valid, compute_dtype(z_text))
    return _intra(zt, valid, tau)


def text_inter_affinity(z_text, z_image, text_valid, tau=1.0):
    """Image–text inter-modal affinity, §3.2.2, Eqs. 5–6.

    A = Ẑ_I Ẑ_Tᵀ [N, L_T]; P^cross(I→T)_ij = softmax over valid text tokens j of A_i·/τ (Eq. 5);
    s^inter_j = Σ_i P_ij over all N visual tokens (Eq. 6). → s_inter [B, L] (0 where invalid).
    """
    check_tau(tau)
    valid = check_grounding_inputs(z_text, z_image, text_valid)
    return _inter(_logits(z_text, z_image, valid, tau)[1], valid)


def discriminative_tokens(s_intra, s_inter, text_valid, rho=0.4, use_intra=True, use_inter=True):
    """Discriminative token selection, §3.2.3, Eqs. 7–9.

    s̃ = min–max of s over the valid tokens of each sample (constant → 0); Ω = s̃^intra + s̃^inter
    (Eq. 7; only the terms switched on: Table 4's single-affinity rows). K_T = ⌊ρ·L_T⌋, at least
    1 when L_T ≥ 1 (Eq. 8); w_j = 1 for the K_T valid tokens of highest Ω, ties → lower index
    (Eq. 9). With neither term used (Table 4 row 1, "no filtering"), w = text_valid.
    Returns w [B, L] bool (False on invalid tokens).
    """
    check_ratio(rho, "rho")
    if s_intra.ndim != 2 or s_intra.shape != s_inter.shape:
        raise ValueError(f"s_intra and s_inter must both be [B, L], got {tuple(s_intra.shape)} and {tuple(s_inter.shape)}")
    if text_valid.shape != s_intra.shape:
        raise ValueError(f"text_valid must be {tuple(s_intra.shape)} like s_intra, got {tuple(text_valid.shape)}")
    valid = text_valid.bool()
    if not (use_intra or use_inter):
        return valid.clone()
    omega = torch.zeros(s_intra.shape, dtype=torch.float64 if s_intra.dtype == torch.float64 else torch.float32,
                        device=s_intra.device)
    if use_intra:
        omega = omega + minmax(s_intra.to(omega.dtype), valid)
    if use_inter:
        omega = omega + minmax(s_inter.to(omega.dtype), valid)
    n_valid = valid.sum(dim=1)
    k = torch.where(n_valid > 0, torch.clamp(floor_count(rho, n_valid), min=1), torch.zeros_like(n_valid))
    rank = rank_descending(omega, valid)
    return (rank < k[:, None].to(rank.device)) & valid


def grounding_map(z_text, z_image, w, tau=1.0):
    """Visual grounding map, §3.3, Eqs. 10–11 and the min–max that follows Eq. 11.

    P^cross(T→I)_ji = softmax over the N visual tokens of A_j·ᵀ/τ (Eq. 10);
    m_i = Σ_j w_j P_ji (Eq. 11); m̄ = min–max of m over the N tokens (constant → 0).
    w [B, L] bool selects the text tokens (it must be False on padding / special tokens).
    Returns m_bar [B, N] in [0, 1].
    """
    check_tau(tau)
    w = check_grounding_inputs(z_text, z_image, w, valid_name="w")
    return _map(_logits(z_text, z_image, w, tau)[1], w)


def ground(z_text, z_image, text_valid, rho=0.4, tau=1.0, text_filter="both"):
    """All of §3.2–3.3 (Eqs. 3–11) in one pass: Grounding(w, m_bar, s_intra, s_inter).

    ``text_filter`` picks the affinities of Ω (Table 4): "both" (default, row 4), "intra" (row 2),
    "inter" (row 3), "none" (row 1: every valid token is kept, w = text_valid).
    The affinity matrix A is computed once and shared by Eqs. 5 and 10.
    """
    if text_filter not in TEXT_FILTERS:
        raise ValueError(f"text_filter must be one of {TEXT_FILTERS}, got {text_filter!r}")
    check_tau(tau)
    check_ratio(rho, "rho")
    valid = check_grounding_inputs(z_text, z_image, text_valid)
    zt, logits = _logits(z_text, z_image, valid, tau)                    # [B, N, L]
    s_intra = _intra(zt, valid, tau)
    s_inter = _inter(logits, valid)
    w = discriminative_tokens(s_intra, s_inter, valid, rho,
                              use_intra=text_filter in ("both", "intra"),
                              use_inter=text_filter in ("both", "inter"))
    m_bar = _map(logits, w)
    return Grounding(w, m_bar, s_intra, s_inter)
