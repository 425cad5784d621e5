"""§2 and §3.4 of the paper (Eq. 12): visual hints, the grounded corrupted input, masking schedules.

Shapes: B batch, N visual tokens (raster order, row-major), H = ⌊ηN⌋ hint tokens.

Every function below follows the conventions the paper leaves open (counts and their floor, ties,
raster order of the hints, γ = 1, the schedules, resampling between grids, the drop-loss reading,
randomness only from the ``generator`` argument; bad values raise ``ValueError`` naming the
argument): ``docs/conventions.md``, "Hints and the corrupted input".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from segros import shard
from segros.grounding import check_ratio, floor_count, rank_descending
from segros.presets import GAMMA_PER, HINT_FROM, LOSS_ON, SCHEDULES, SEEN_FROM


@dataclass
class Supervision:
    """Which visual tokens are hints, which stay visible, which are reconstructed (§3.4).

    hint_idx:    [B, H] long, H = ⌊ηN⌋, indices on the *hint* grid, ascending (raster order).
    seen:        [B, N] bool on the *target* grid, the visible context Z_I^seen.
    masked:      [B, N] bool on the target grid, the mask set M (= ~seen).
    loss_weight: [B, N] float, > 0 only inside ``masked`` (Table 6's drop-loss zeroes part of M).
    """

    hint_idx: torch.Tensor
    seen: torch.Tensor
    masked: torch.Tensor
    loss_weight: torch.Tensor

    @property
    def n_hint(self) -> int:
        """H, the number of visual hints per sample."""
        return self.hint_idx.shape[1]

    @property
    def seen_idx(self) -> torch.Tensor:
        """[B, K_seen] ascending indices of the visible tokens (MAR needs one K_seen per batch).

        Raises ValueError when the samples of the batch have different visible counts.
        """
        counts = self.seen.sum(dim=1)
        if counts.numel() and bool((counts != counts[0]).any()):
            raise ValueError(f"seen_idx needs one visible count per batch, got counts {counts.tolist()}")
        k = int(counts[0]) if counts.numel() else 0
        order = torch.sort((~self.seen).to(torch.uint8), dim=1, stable=True).indices
        return order[:, :k]


# ----------------------------------------------------------------------------------------------
# helpers

def check_map(m, name):
    """ValueError unless m is a finite float [B, N] tensor (naming the bad sample)."""
    if m.ndim != 2:
        raise ValueError(f"{name} must be [B, N], got shape {tuple(m.shape)}")
    if not m.is_floating_point():
        raise ValueError(f"{name} must be a float tensor, got {m.dtype}")
    bad = (~torch.isfinite(m)).any(dim=1)
    if bool(bad.any()):
        raise ValueError(f"{name} has NaN/inf in sample {int(bad.nonzero()[0])}")


def gamma_per_sample(gamma, B, device):
    """γ as a float64 [B] tensor from a float (one γ per batch) or a [B] tensor (per sample)."""
    if gamma is None:
        raise ValueError("gamma is required: a float in [0, 1] or a [B] tensor")
    g = torch.as_tensor(gamma, dtype=torch.float64)
    if g.ndim == 0:
        g = g.expand(B)
    if g.shape != (B,):
        raise ValueError(f"gamma must be a float or a [B] = [{B}] tensor, got shape {tuple(g.shape)}")
    check_ratio(g, "gamma")
    return g.to(device)


def select_k(score, k, largest):
    """[B, N] bool: the k[b] highest (largest=True) or lowest entries per sample, ties → lower index."""
    B, N = score.shape
    valid = torch.ones(B, N, dtype=torch.bool, device=score.device)
    rank = rank_descending(score if largest else -score, valid)
    return rank < torch.as_tensor(k, device=score.device).reshape(-1, 1)


def select_hint_idx(score, H, largest=True):
    """[B, H] ascending indices of the top-H (or bottom-H) entries of score [B, N]."""
    chosen = select_k(score, H, largest)
    order = torch.sort((~chosen).to(torch.uint8), dim=1, stable=True).indices  # chosen first, raster order
    return order[:, :H]


def random_scores(B, N, generator, device):
    """U[0, 1) scores [B, N] on the generator's device, moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    draw = shard.draw(lambda s: torch.rand(s, generator=generator, device=gen_device, dtype=torch.float64), B, N)
    return draw.to(device)


# ----------------------------------------------------------------------------------------------
# Eq. 12 and §3.4

def perturb(m_bar, alpha=0.5, generator=None):
    """Eq. 12: m̃ = m̄ + ξ with ξ ~ U([0, α]^N) i.i.d. per token and sample (Table 8: α = 0.5).

    ξ is drawn as α·U[0, 1) (so ξ ∈ [0, α)), in m_bar's dtype (fp32 for bf16/fp16 maps).
    α = 0 returns ``m_bar`` itself unchanged (Table 8's "None" row), drawing no random numbers.
    """
    check_map(m_bar, "m_bar")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    if alpha == 0:
        return m_bar
    dtype = torch.float64 if m_bar.dtype == torch.float64 else torch.float32
    gen_device = generator.device if generator is not None else m_bar.device
    xi = shard.draw(lambda s: torch.rand(s, generator=generator, device=gen_device, dtype=dtype),
                    m_bar.shape[0], *m_bar.shape[1:]).to(m_bar.device)
    return m_bar.to(dtype) + alpha * xi


def build_supervision(m_tilde, eta=0.3, gamma=None, hint_from="top", seen_from="bottom",
                      loss_on="masked", loss_top=0.3, target_map=None):
    """Visual hints and the semantically grounded corrupted input from m̃ (§3.4).

    m_tilde [B, N_h]: the perturbed map (Eq. 12) on the hint grid.
    Hints: the top-⌊ηN_h⌋ tokens of m̃ (``hint_from="bottom"``: the lowest; Table 5 rows 1–2),
    returned in ascending raster order.
    Corrupted input on the target grid (``target_map`` [B, N] when the reconstruction grid
    differs from the hint grid, e.g. Show-o's 24×24 CLIP hints vs 16×16 codes: pass the *same*
    m̃ resampled with :func:`resample_map`; otherwise m̃ itself): K_mask = ⌊γN⌋, K_seen = N − K_mask;
    ``seen`` = BottomK(map, K_seen) (``seen_from="top"``: TopK; Table 5 rows 1 and 3);
    ``masked`` = the rest. ``gamma`` is a float (one γ per batch) or a [B] tensor (per sample).
    Loss weights (Table 6): ``loss_on="masked"`` puts 1 on every masked token, 0 elsewhere.
    ``loss_on="top_masked"`` ("drop-loss"): our reading of "restricted to the Top-30% grounded
    targets" is: weight 1 on the masked tokens that are among the top-⌊loss_top·N⌋ tokens of the
    target map (ranked over all N tokens, the same perturbed map that chose ``seen``), 0 on every
    other token. With the default bottom-seen rule and γ ≥ loss_top every one of those top tokens
    is masked, so exactly ⌊loss_top·N⌋ tokens carry loss. (The other reading, the top 30% *of the
    masked set*, would give ⌊0.3·K_mask⌋ tokens; the paper's wording "Top-30% grounded" ranks by
    groundedness over the image, so we take the image-wide top.)
    """
    check_map(m_tilde, "m_tilde")
    check_ratio(eta, "eta")
    check_ratio(loss_top, "loss_top")
    for name, value, choices in (("hint_from", hint_from, HINT_FROM), ("seen_from", seen_from, SEEN_FROM),
                                 ("loss_on", loss_on, LOSS_ON)):
        if value not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    B, N_h = m_tilde.shape
    if target_map is None:
        target_map = m_tilde
    else:
        check_map(target_map, "target_map")
        if target_map.shape[0] != B:
            raise ValueError(f"target_map batch size {target_map.shape[0]} differs from m_tilde batch size {B}")
    N = target_map.shape[1]
    g = gamma_per_sample(gamma, B, target_map.device)

    H = floor_count(eta, N_h)
    hint_idx = select_hint_idx(m_tilde, H, largest=hint_from == "top")

    k_seen = N - floor_count(g, N)
    seen = select_k(target_map, k_seen, largest=seen_from == "top")
    masked = ~seen

    weight = masked
    if loss_on == "top_masked":
        weight = masked & select_k(target_map, floor_count(loss_top, N), largest=True)
    return Supervision(hint_idx, seen, masked, weight.to(torch.float32))


def random_supervision(B, N, gamma, eta=0.0, generator=None, hint_map=None):
    """The baselines' corrupted input: a random mask with |M| = ⌊γN⌋ per sample (§2).

    - SFT (Table 6 row 1): ``eta=0`` → no hints (hint_idx is [B, 0]).
    - Reca (Table 9 row 1): ``eta=1`` → every token is a hint (hint_idx = 0..N−1).
    - "Reca + SeGroS hint filtering" (Table 9 row 2): ``hint_map`` [B, N_h] given → the
      top-⌊ηN_h⌋ tokens of hint_map (raster order), the mask still random.
    - 0 < η < 1 without ``hint_map``: ⌊ηN⌋ random hints (a random-hint control).
    Tensors are on CPU, or on hint_map's device when it is given.
    The visible set is a uniformly random K_seen-subset per sample (the first K_seen tokens of a
    random permutation: argsort of i.i.d. uniforms); loss_weight = 1 on every masked token.
    """
    if not (isinstance(B, int) and B >= 0 and isinstance(N, int) and N >= 1):
        raise ValueError(f"B must be an int >= 0 and N an int >= 1, got B={B}, N={N}")
    check_ratio(eta, "eta")
    device = hint_map.device if hint_map is not None else torch.device("cpu")
    g = gamma_per_sample(gamma, B, device)

    if hint_map is not None:
        check_map(hint_map, "hint_map")
        if hint_map.shape[0] != B:
            raise ValueError(f"hint_map batch size {hint_map.shape[0]} differs from B = {B}")
        hint_idx = select_hint_idx(hint_map, floor_count(eta, hint_map.shape[1]), largest=True)
    else:
        H = floor_count(eta, N)
        if H == N:
            hint_idx = torch.arange(N, device=device).expand(B, N).clone()
        elif H == 0:
            hint_idx = torch.zeros(B, 0, dtype=torch.long, device=device)
        else:
            hint_idx = select_hint_idx(random_scores(B, N, generator, device), H, largest=True)

    k_seen = N - floor_count(g, N)
    seen = select_k(random_scores(B, N, generator, device), k_seen, largest=True)
    masked = ~seen
    return Supervision(hint_idx, seen, masked, masked.to(torch.float32))


# ----------------------------------------------------------------------------------------------
# masking-ratio schedules

GAMMA_BELOW_ONE = 1.0 - 2.0 ** -53  # the largest float64 below 1


def _uniform(u):
    """§2 / Table 6: γ ~ U[0.7, 1.0)."""
    return torch.clamp(0.7 + 0.3 * u, max=GAMMA_BELOW_ONE)


def _truncnorm(u):
    """MAR / Harmon: normal(mean 1.0, std 0.25) truncated to [0.7, 1.0], by inverse CDF.

    MAR's truncation is [min, mean] = [0.7, 1.0]; we clip to the largest float below 1 so that
    the support matches the paper's γ ∈ [0.7, 1.0) and at least one token stays visible.
    """
    mean, std, lo, hi = 1.0, 0.25, 0.7, 1.0
    cdf_lo = torch.special.ndtr(torch.tensor((lo - mean) / std, dtype=torch.float64))
    cdf_hi = torch.special.ndtr(torch.tensor((hi - mean) / std, dtype=torch.float64))
    x = mean + std * torch.special.ndtri(cdf_lo + u * (cdf_hi - cdf_lo))
    return torch.clamp(x, min=lo, max=GAMMA_BELOW_ONE)


def _cosine(u):
    """MaskGIT / Show-o: r ~ U(0, 1), γ = cos(πr/2) ∈ (0, 1]; r = 0 gives γ = 1 (all masked)."""
    return torch.cos(math.pi * u / 2)


def sample_gamma(schedule="uniform", B=1, per="batch", generator=None):
    """Draw masking ratios γ(t) (§2: "we randomly choose a masking ratio γ(t) ∈ [0.7, 1.0)").

    schedule: "uniform" (U[0.7, 1.0), the paper's §2 and Table 6), "truncnorm" (MAR / Harmon:
    truncated normal, min 0.7, mean 1.0, std 0.25, support [0.7, 1.0)), "cosine" (MaskGIT /
    Show-o: γ = cos(πr/2), r ~ U[0, 1); γ = 1 at r = 0 masks every token, which is defined
    behaviour in :func:`build_supervision`).
    per="batch" → one Python float (Harmon's MAR encoder needs one visible count per batch);
    per="sample" → a float64 tensor [B]. Randomness: float64 uniforms from ``generator``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if per not in GAMMA_PER:
        raise ValueError(f"per must be one of {GAMMA_PER}, got {per!r}")
    if not (isinstance(B, int) and B >= 1):
        raise ValueError(f"B must be an int >= 1, got {B}")
    n = 1 if per == "batch" else B
    gen_device = generator.device if generator is not None else "cpu"
    if per == "batch":  # one γ for the whole global batch: every process draws the same
        u = torch.rand(n, generator=generator, device=gen_device, dtype=torch.float64)
    else:  # one per row of the global batch, this process's rows (segros.shard)
        u = shard.draw(lambda s: torch.rand(s, generator=generator, device=gen_device, dtype=torch.float64), n)
    u = u.cpu()
    gamma = {"uniform": _uniform, "truncnorm": _truncnorm, "cosine": _cosine}[schedule](u)
    return float(gamma[0]) if per == "batch" else gamma


# ----------------------------------------------------------------------------------------------
# grids

def resample_map(m, from_hw, to_hw):
    """Resample a map [B, h·w] (raster order) from grid ``from_hw`` to ``to_hw`` → [B, h'·w'].

    Used when the hint grid differs from the reconstruction grid (Show-o: 24×24 CLIP tokens vs
    16×16 or 32×32 MAGVIT codes), so that seen/masked come from the same m̃ as the hints (§3.4).
    Method: "area" (adaptive average pooling; each output cell is the mean of the input cells it
    covers, exact for non-integer ratios like 24→16) when neither side grows, bilinear
    (align_corners=False) otherwise. Both are convex combinations, so the output stays inside
    [min m, max m] of its sample (a map in [0, 1] stays in [0, 1]). Computed in fp32 (fp64 kept).
    """
    check_map(m, "m")
    for name, hw in (("from_hw", from_hw), ("to_hw", to_hw)):
        if len(hw) != 2 or not all(isinstance(v, int) and v >= 1 for v in hw):
            raise ValueError(f"{name} must be (h, w) with positive ints, got {hw}")
    h, w = from_hw
    if m.shape[1] != h * w:
        raise ValueError(f"m has {m.shape[1]} tokens but from_hw = {from_hw} needs {h * w}")
    if tuple(from_hw) == tuple(to_hw):
        return m
    dtype = torch.float64 if m.dtype == torch.float64 else torch.float32
    grid = m.to(dtype).reshape(m.shape[0], 1, h, w)
    if to_hw[0] <= h and to_hw[1] <= w:
        out = F.adaptive_avg_pool2d(grid, tuple(to_hw))
    else:
        out = F.interpolate(grid, size=tuple(to_hw), mode="bilinear", align_corners=False)
    return out.reshape(m.shape[0], -1)
