"""Figure and table helpers for the notebooks (Fig. 2, Fig. 3, Fig. 6 and the tables).

Everything written to ``figures/`` is byte-stable: PNG/PDF metadata that carries dates or
software versions is dropped, so a rerun that computes the same numbers writes the same files.
Tables are written as ``.csv`` (machine-readable) and ``.md`` (what a reader opens on GitHub).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from segros.tables import to_markdown  # noqa: E402

_STABLE_METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
    "svg": {"Date": None},
}

#: colours of the three roles a visual token can take (Fig. 2: yellow hints, green visible)
ROLE_COLORS = {"hint": "#f2c14e", "seen": "#4caf50", "masked": "#9e9e9e", "text": "#4f86c6"}


# ----------------------------------------------------------------------------- files
def save_figure(fig: plt.Figure, stem: str | Path, formats: Sequence[str] = ("png", "pdf"),
                dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``stem.<fmt>`` for each format, without volatile metadata; closes it."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if "svg" in formats:
        plt.rcParams["svg.hashsalt"] = "segros"
    paths = []
    for fmt in formats:
        if fmt not in _STABLE_METADATA:
            raise ValueError(f"formats: unsupported {fmt!r}; use png, pdf or svg")
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, format=fmt, dpi=dpi, bbox_inches="tight", metadata=_STABLE_METADATA[fmt])
        paths.append(path)
    plt.close(fig)
    return paths


def write_table(df: pd.DataFrame, stem: str | Path, floatfmt: str = "{:.1f}") -> tuple[Path, Path]:
    """Write ``stem.csv`` and ``stem.md``; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    df.to_csv(csv, float_format="%.4g")
    md.write_text(to_markdown(df, floatfmt))
    return csv, md


def beside_paper(ours: pd.DataFrame, paper: pd.DataFrame, columns: Iterable[str] | None = None,
                 ours_label: str = "small", paper_label: str = "paper") -> pd.DataFrame:
    """Interleave ``paper`` and ``ours`` column by column with a delta column (ours − paper).

    Rows are matched by index; a row present in only one of them keeps NaN in the other.
    """
    columns = list(columns) if columns is not None else [c for c in paper.columns if c in ours.columns]
    missing = [c for c in columns if c not in ours.columns or c not in paper.columns]
    if missing:
        raise ValueError(f"columns: {missing} not in both tables")
    index = list(dict.fromkeys(list(paper.index) + list(ours.index)))
    paper, ours = paper.reindex(index), ours.reindex(index)
    out = {}
    for c in columns:
        out[(c, paper_label)] = paper[c].astype(float)
        out[(c, ours_label)] = ours[c].astype(float)
        out[(c, "Δ")] = ours[c].astype(float) - paper[c].astype(float)
    df = pd.DataFrame(out, index=index)
    df.columns = [f"{c} ({k})" for c, k in df.columns]
    df.index.name = paper.index.name or ours.index.name
    return df


# ----------------------------------------------------------------------------- Fig. 3 (b–d)
def plot_token_scores(tokens: Sequence[str], scores: Mapping[str, Sequence[float]],
                      stopwords: Sequence[bool] | None = None, selected: Sequence[bool] | None = None,
                      ax: plt.Axes | None = None) -> plt.Axes:
    """Per-token bars of one or more score vectors (Fig. 3 b–d: intra, inter, combined).

    ``stopwords`` marks function words, drawn hatched and apart (Fig. 3's caption excludes them);
    ``selected`` marks the discriminative tokens (w = 1, Eq. 9) with a star.
    """
    ax = ax or plt.gca()
    names = list(scores)
    x = np.arange(len(tokens))
    width = 0.8 / max(1, len(names))
    palette = sns.color_palette("deep", len(names))
    for k, name in enumerate(names):
        vals = np.asarray(scores[name], dtype=float)
        bars = ax.bar(x + (k - (len(names) - 1) / 2) * width, vals, width, label=name, color=palette[k])
        if stopwords is not None:
            for bar, stop in zip(bars, stopwords):
                if stop:
                    bar.set_alpha(0.35)
                    bar.set_hatch("//")
    if selected is not None:
        top = ax.get_ylim()[1]
        for xi, sel in zip(x, selected):
            if sel:
                ax.text(xi, top * 0.98, "★", ha="center", va="top", fontsize=9)
    ax.set_xticks(x, tokens, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("min–max score")
    ax.legend(fontsize=7, frameon=False)
    return ax


# ----------------------------------------------------------------------------- Fig. 3 (e–h), Fig. 2
def _grid_overlay(image: np.ndarray, values: np.ndarray, grid_hw: tuple[int, int]) -> np.ndarray:
    h, w = grid_hw
    H, W = image.shape[:2]
    ys = (np.arange(H) * h // H)[:, None]
    xs = (np.arange(W) * w // W)[None, :]
    return values.reshape(h, w)[ys, xs]


def plot_grounding(image: np.ndarray, m_bar: np.ndarray, grid_hw: tuple[int, int],
                   hint_idx: Sequence[int] | None = None, ax: plt.Axes | None = None,
                   title: str | None = None, show_map: bool = True) -> plt.Axes:
    """The image with the grounding map as a heat overlay and the hint tokens outlined (Fig. 3 e–h).

    Tokens outside the hints are dimmed, so the picture shows what the model receives as the
    image prompt.
    """
    ax = ax or plt.gca()
    img = np.asarray(image, dtype=float) / (255.0 if np.asarray(image).dtype == np.uint8 else 1.0)
    h, w = grid_hw
    if hint_idx is not None:
        keep = np.zeros(h * w, dtype=float)
        keep[np.asarray(hint_idx, dtype=int)] = 1.0
        dim = _grid_overlay(img, keep, grid_hw)[..., None]
        img = img * (0.25 + 0.75 * dim)
    ax.imshow(img, interpolation="nearest")
    if show_map:
        ax.imshow(_grid_overlay(img, np.asarray(m_bar, dtype=float), grid_hw), cmap="magma",
                  alpha=0.45, vmin=0, vmax=1, interpolation="nearest")
    if hint_idx is not None:
        H, W = img.shape[:2]
        for i in np.asarray(hint_idx, dtype=int):
            r, c = divmod(int(i), w)
            ax.add_patch(plt.Rectangle((c * W / w - 0.5, r * H / h - 0.5), W / w, H / h, fill=False,
                                       edgecolor=ROLE_COLORS["hint"], linewidth=0.8))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_roles(image: np.ndarray, grid_hw: tuple[int, int], seen: np.ndarray, masked: np.ndarray,
               ax: plt.Axes | None = None, title: str | None = None) -> plt.Axes:
    """The corrupted input of Fig. 2: visible tokens shown, masked tokens greyed out."""
    ax = ax or plt.gca()
    img = np.asarray(image, dtype=float) / (255.0 if np.asarray(image).dtype == np.uint8 else 1.0)
    seen_px = _grid_overlay(img, np.asarray(seen, dtype=float).ravel(), grid_hw)[..., None]
    grey = np.full_like(img, 0.6)
    ax.imshow(img * seen_px + grey * (1 - seen_px), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


# ----------------------------------------------------------------------------- Fig. 6
def plot_attention_mask(allowed: np.ndarray, n_hint: int, text_len: int, n_image: int,
                        ax: plt.Axes | None = None, title: str | None = None) -> plt.Axes:
    """A boolean [S, S] mask (rows = queries, columns = keys) coloured by block, as Fig. 6."""
    ax = ax or plt.gca()
    allowed = np.asarray(allowed, dtype=bool)
    S = n_hint + text_len + n_image
    if allowed.shape != (S, S):
        raise ValueError(f"allowed: expected shape ({S}, {S}), got {allowed.shape}")
    role = np.array(["hint"] * n_hint + ["text"] * text_len + ["seen"] * n_image)
    rgb = np.zeros((S, S, 3))
    for q in range(S):
        colour = matplotlib.colors.to_rgb(ROLE_COLORS[role[q]])
        rgb[q, allowed[q]] = colour
    rgb[~allowed] = (0.15, 0.15, 0.2)
    ax.imshow(rgb, interpolation="nearest")
    for b in (n_hint, n_hint + text_len):
        ax.axhline(b - 0.5, color="white", lw=0.8)
        ax.axvline(b - 0.5, color="white", lw=0.8)
    ticks = [n_hint / 2 - 0.5, n_hint + text_len / 2 - 0.5, n_hint + text_len + n_image / 2 - 0.5]
    ax.set_xticks(ticks, ["hints", "text", "image"], fontsize=8)
    ax.set_yticks(ticks, ["hints", "text", "image"], fontsize=8)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title, fontsize=9)
    return ax


# ----------------------------------------------------------------------------- tables as plots
def plot_rows(df: pd.DataFrame, x: str, y: str, hue: str | None = None, paper: Mapping | None = None,
              ax: plt.Axes | None = None, ylabel: str | None = None) -> plt.Axes:
    """Mean ± sd over seeds of ``y`` per ``x`` (a long table, one row per run); paper values as ×."""
    ax = ax or plt.gca()
    sns.pointplot(data=df, x=x, y=y, hue=hue, errorbar="sd", ax=ax, capsize=0.15, linestyle="none"
                  if hue is None else "-", markers="o")
    if paper:
        order = [t.get_text() for t in ax.get_xticklabels()]
        for i, key in enumerate(order):
            if key in paper and paper[key] is not None:
                ax.scatter([i], [paper[key]], marker="x", color="black", zorder=5,
                           label="paper" if i == 0 else None)
    ax.set_ylabel(ylabel or y)
    return ax


def plot_beside_paper(long: pd.DataFrame, order: Sequence[str], paper_values: Sequence[float], title: str,
                      y: str = "overall", ylabel: str = "shapes-world GenEval overall") -> plt.Figure:
    """An ablation table as two panels: the paper's GenEval per row (left, Harmon) and the small-scale
    mean ± sd over seeds of ``y`` per row (right, :func:`plot_rows`), rows in ``order``."""
    fig, (ax_p, ax_s) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_p.plot(range(len(order)), np.asarray(paper_values), "o-", color="black")
    ax_p.set_xticks(range(len(order)), order, rotation=30, ha="right")
    ax_p.set_title("paper (Harmon)")
    ax_p.set_ylabel("GenEval overall")
    plot_rows(long, x="row", y=y, ax=ax_s, ylabel=ylabel)
    ax_s.set_xticks(range(len(order)), order, rotation=30, ha="right")
    ax_s.set_xlabel("")
    ax_s.set_title("small scale (mean ± sd over seeds)")
    fig.suptitle(title, fontsize=10)
    return fig


# ----------------------------------------------------------------------------- the qualitative figure
VERDICT_COLORS = {True: "#2e7d32", False: "#c62828"}


def plot_samples(samples: Mapping[str, tuple[Sequence[np.ndarray], Sequence[Mapping]] | None],
                 title: str | None = None, tile_inches: float = 1.15) -> plt.Figure:
    """The same prompts, one row per method (the paper's qualitative comparisons).

    ``samples``: {row label: (images, records, source)} as :func:`segros.inference.read_samples`
    returns, or None for a run that keeps no samples. Columns are the prompts of the first row that
    has samples (every run of a world keeps the same ones); each image is framed green or red by the
    detector's verdict under GenEval's rules, ✓/✗ under it. A held-out prompt is marked "(held out)";
    a row whose images come from a rerun of its config rather than the stored run says "(rerun)".
    """
    kept = [v for v in samples.values() if v is not None]
    if not kept:
        raise ValueError("samples: no row keeps samples; evaluate the runs again (segros.pipeline.backfill_samples)")
    columns = kept[0][1]
    ncols = len(columns)
    fig, axes = plt.subplots(len(samples), ncols, figsize=(tile_inches * ncols + 1.0, tile_inches * len(samples) + 0.9),
                             squeeze=False)
    for r, (label, value) in enumerate(samples.items()):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                rerun = value is not None and len(value) > 2 and value[2] == "rerun"
                ax.set_ylabel(label + ("\n(rerun)" if rerun else ""), fontsize=8)
            if r == 0:
                rec = columns[c]
                head = rec["prompt"].removeprefix("a photo of ")
                ax.set_title(f"{rec['tag']}\n{head}" + ("\n(held out)" if rec["held_out"] else ""), fontsize=6)
            if value is None:
                ax.text(0.5, 0.5, "no samples\nkept", ha="center", va="center", fontsize=6, transform=ax.transAxes)
                continue
            images, records = value[0], value[1]
            if [x["prompt"] for x in records] != [x["prompt"] for x in columns]:
                raise ValueError(f"samples[{label!r}]: its prompts differ from the first row's")
            ax.imshow(images[c], interpolation="nearest")
            ok = bool(records[c]["correct"])
            for spine in ax.spines.values():
                spine.set_edgecolor(VERDICT_COLORS[ok])
                spine.set_linewidth(2.0)
            ax.set_xlabel("✓" if ok else "✗", fontsize=8, color=VERDICT_COLORS[ok], labelpad=1)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
