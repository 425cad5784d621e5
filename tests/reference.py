"""Float64 loop references for Eqs. 3–12 and the §3.4 selections, one sample at a time.

Every sum is an explicit Python loop over plain floats, on the valid text tokens only, so that the
batched, masked, vectorised code in :mod:`segros.grounding` / :mod:`segros.supervision` can be
checked against a transcription of the paper's equations. Slow on purpose; use small shapes.
"""

from __future__ import annotations

import math


def normalize(vectors):
    """ℓ2-normalise a list of vectors (zero vectors stay zero), §3.2.1."""
    out = []
    for v in vectors:
        norm = math.sqrt(sum(x * x for x in v))
        out.append([x / max(norm, 1e-12) for x in v])
    return out


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def valid_tokens(z_text_b, valid_b):
    """(positions, normalised embeddings) of the valid text tokens of one sample."""
    pos = [j for j, ok in enumerate(valid_b) if ok]
    return pos, normalize([z_text_b[j] for j in pos])


def intra(z_text_b, valid_b, tau):
    """Eqs. 3–4 for one sample → list of length L (0 on invalid positions)."""
    pos, zt = valid_tokens(z_text_b, valid_b)
    L_T = len(pos)
    s = [0.0] * len(valid_b)
    for j in range(L_T):
        total = 0.0
        for k in range(L_T):
            denom = 0.0
            for m in range(L_T):
                denom += math.exp(dot(zt[k], zt[m]) / tau)
            total += math.exp(dot(zt[k], zt[j]) / tau) / denom
        s[pos[j]] = total
    return s


def inter(z_text_b, z_image_b, valid_b, tau):
    """Eqs. 5–6 for one sample → list of length L (0 on invalid positions)."""
    pos, zt = valid_tokens(z_text_b, valid_b)
    zi = normalize(z_image_b)
    s = [0.0] * len(valid_b)
    for j in range(len(pos)):
        total = 0.0
        for i in range(len(zi)):
            denom = 0.0
            for k in range(len(pos)):
                denom += math.exp(dot(zi[i], zt[k]) / tau)
            total += math.exp(dot(zi[i], zt[j]) / tau) / denom
        s[pos[j]] = total
    return s


def minmax(values):
    """s̃ = (s − min) / (max − min); a constant list gives zeros."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    if hi - lo <= 1e-5 * max(abs(lo), abs(hi)):  # constant up to rounding (the package's MINMAX_RTOL)
        return [0.0] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


def floor_count(ratio, n):
    """⌊ratio·n⌋ with the package's documented 1e-6 relative tolerance."""
    return max(0, min(n, math.floor(ratio * n * (1.0 + 1e-6))))


def top_k_positions(scores, k, largest=True):
    """Indices of the k largest (smallest) scores; ties → lower index, by a plain selection loop."""
    chosen = []
    remaining = list(range(len(scores)))
    for _ in range(k):
        best = remaining[0]
        for i in remaining[1:]:
            better = scores[i] > scores[best] if largest else scores[i] < scores[best]
            if better:  # strict: an equal score keeps the lower index
                best = i
        chosen.append(best)
        remaining.remove(best)
    return sorted(chosen)


def discriminative(s_intra_b, s_inter_b, valid_b, rho, use_intra=True, use_inter=True):
    """Eqs. 7–9 for one sample → list of bools of length L."""
    pos = [j for j, ok in enumerate(valid_b) if ok]
    w = [False] * len(valid_b)
    if not pos:
        return w
    if not (use_intra or use_inter):
        for j in pos:
            w[j] = True
        return w
    omega = [0.0] * len(pos)
    if use_intra:
        for t, v in enumerate(minmax([s_intra_b[j] for j in pos])):
            omega[t] += v
    if use_inter:
        for t, v in enumerate(minmax([s_inter_b[j] for j in pos])):
            omega[t] += v
    k = max(1, floor_count(rho, len(pos)))
    for t in top_k_positions(omega, k):
        w[pos[t]] = True
    return w


def grounding_map(z_text_b, z_image_b, w_b, tau):
    """Eqs. 10–11 and the min–max for one sample → list of length N in [0, 1]."""
    pos = [j for j, ok in enumerate(w_b) if ok]
    zt = normalize([z_text_b[j] for j in pos])
    zi = normalize(z_image_b)
    m = [0.0] * len(zi)
    for i in range(len(zi)):
        total = 0.0
        for j in range(len(pos)):
            denom = 0.0
            for k in range(len(zi)):
                denom += math.exp(dot(zt[j], zi[k]) / tau)
            total += 1.0 * math.exp(dot(zt[j], zi[i]) / tau) / denom  # w_j = 1 on the kept tokens
        m[i] = total
    return minmax(m)


def ground(z_text_b, z_image_b, valid_b, rho, tau, text_filter="both"):
    """All of §3.2–3.3 for one sample → (w, m_bar, s_intra, s_inter) as lists."""
    si = intra(z_text_b, valid_b, tau)
    se = inter(z_text_b, z_image_b, valid_b, tau)
    w = discriminative(si, se, valid_b, rho, text_filter in ("both", "intra"), text_filter in ("both", "inter"))
    return w, grounding_map(z_text_b, z_image_b, w, tau), si, se


def perturb(m_bar_b, xi_unit_b, alpha):
    """Eq. 12 for one sample, given the unit uniforms u (ξ = α·u)."""
    return [m + alpha * u for m, u in zip(m_bar_b, xi_unit_b)]


def supervision(m_tilde_b, target_b, eta, gamma, hint_from="top", seen_from="bottom",
                loss_on="masked", loss_top=0.3):
    """§3.4 for one sample → (hint_idx, seen, masked, loss_weight) as lists."""
    N_h, N = len(m_tilde_b), len(target_b)
    hints = top_k_positions(m_tilde_b, floor_count(eta, N_h), largest=hint_from == "top")
    k_seen = N - floor_count(gamma, N)
    seen_pos = top_k_positions(target_b, k_seen, largest=seen_from == "top")
    seen = [i in seen_pos for i in range(N)]
    masked = [not s for s in seen]
    if loss_on == "masked":
        weight = [1.0 if mk else 0.0 for mk in masked]
    else:
        top = top_k_positions(target_b, floor_count(loss_top, N), largest=True)
        weight = [1.0 if (masked[i] and i in top) else 0.0 for i in range(N)]
    return hints, seen, masked, weight


def adaptive_avg_pool(grid, out_h, out_w):
    """resample_map's downsampling, by loops: cell (i, j) averages rows ⌊iH/h⌋..⌈(i+1)H/h⌉−1, same for columns."""
    H, W = len(grid), len(grid[0])
    out = []
    for i in range(out_h):
        r0, r1 = (i * H) // out_h, -((-(i + 1) * H) // out_h)
        for j in range(out_w):
            c0, c1 = (j * W) // out_w, -((-(j + 1) * W) // out_w)
            cells = [grid[r][c] for r in range(r0, r1) for c in range(c0, c1)]
            out.append(sum(cells) / len(cells))
    return out
