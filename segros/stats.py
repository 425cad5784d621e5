"""Statistics over seeds: mean ± sd per row, and how a small-scale comparison reads.

A *long* table has one line per run (columns ``row``, ``seed`` and the metrics). :func:`summarize`
gives mean, sample standard deviation and run count per row; :func:`row_stats` the same as plain
numbers; :func:`difference` a difference of two means with its standard error; :func:`interval`
and :func:`format_difference` that difference with its interval of ``k`` standard errors;
:func:`verdict` the label of a claim from those differences, :func:`aa_verdict` the label of an
A/A control (the same config on two disjoint seed sets, which must show no difference).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def summarize(long: pd.DataFrame, value_columns: Sequence[str], by: str = "row",
              order: Sequence[str] | None = None, decimals: int = 1) -> pd.DataFrame:
    """Mean and sample standard deviation over seeds of each value column, one line per row.

    Returns columns ``<col>`` (mean), ``<col> sd`` and ``n`` (runs), rounded so printed tables
    compare exactly.
    """
    if long.empty:
        return pd.DataFrame(columns=[*value_columns, *(f"{c} sd" for c in value_columns), "n"])
    g = long.groupby(by, sort=False)
    out = pd.DataFrame({c: g[c].mean() for c in value_columns})
    for c in value_columns:
        out[f"{c} sd"] = g[c].std(ddof=1) if g.size().max() > 1 else np.nan
    out["n"] = g.size()
    if order is not None:
        out = out.reindex([o for o in order if o in out.index])
    out.index.name = by
    return out.round(decimals)


def row_stats(long: pd.DataFrame, metric: str, by: str = "row") -> dict[str, tuple[float, float, int]]:
    """{row: (mean, sd, n)} of ``metric``; sd is 0 for a row with one run."""
    if long.empty:
        return {}
    g = long.groupby(by)[metric]
    mean, sd, size = g.mean(), g.std(ddof=1), g.size()
    return {r: (mean[r], sd[r] if size[r] > 1 else 0.0, int(size[r])) for r in size.index}


def difference(a: tuple[float, float, int], b: tuple[float, float, int]) -> tuple[float, float]:
    """(mean_a − mean_b, its standard error sqrt(sd_a²/n_a + sd_b²/n_b)) from two (mean, sd, n)."""
    (m, sd, n), (mo, sdo, no) = a, b
    return m - mo, float(np.sqrt(sd ** 2 / n + sdo ** 2 / no))


def verdict(diffs: Sequence[tuple[float, float]], k: float = 2.0) -> str:
    """How a small-scale comparison reads, from (mean difference, its standard error) pairs.

    "reproduces" needs every difference above ``k`` standard errors (k = 2: roughly a 95% one-sided
    normal test, generous with 3 seeds); "contradicted" needs one below −k SE. Otherwise the
    numbers are noise, and the label says whether they at least point the paper's way.
    """
    if not diffs:
        return "not run"
    if all(d > k * se for d, se in diffs):
        return "reproduces"
    if any(d < -k * se for d, se in diffs):
        return "contradicted"
    if all(d > 0 for d, _ in diffs):
        return "same direction, within noise"
    return "within noise"


def interval(diff: tuple[float, float], k: float = 2.0) -> tuple[float, float]:
    """The interval d ± k·SE of a (difference, standard error) pair: with k = 2 roughly a 95% normal
    interval, the same k as :func:`verdict` (a claim reproduces when its lower end is above 0)."""
    d, se = diff
    return d - k * se, d + k * se


def format_difference(diff: tuple[float, float], k: float = 2.0, decimals: int = 1) -> str:
    """``"+2.2 [-1.0, +5.4]"``: the difference of means and its interval (:func:`interval`)."""
    lo, hi = interval(diff, k)
    f = f"{{:+.{decimals}f}}"
    return f"{f.format(diff[0])} [{f.format(lo)}, {f.format(hi)}]"


def aa_verdict(diff: tuple[float, float] | None, k: float = 2.0) -> str:
    """How an A/A control reads: the same config on two disjoint seed sets must show no difference.

    "no difference (passes)" when |d| ≤ k·SE; otherwise the spread of the seeds understates the
    noise (or the runs are not what the config says) and every verdict at this k is suspect:
    "differs (fails)". ``None``: "not run".
    """
    if diff is None:
        return "not run"
    d, se = diff
    return "no difference (passes)" if abs(d) <= k * se else "differs (fails)"
