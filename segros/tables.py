"""Which runs make up each of the paper's tables, at small scale and at paper scale, and the claims.

A table is a list of rows; a row is a label (the paper's row key in :mod:`segros.paper`) and the
training-config overrides that produce it; ``method="none"`` is the "w/o SFT" row: the start
checkpoint evaluated without fine-tuning. The notebooks call :func:`reproduce` with their
parameters; every run goes through the run store (:mod:`segros.store`, :mod:`segros.pipeline`), so
a run one table needs and another table already made is reused, and ``papermill ... -p eta 0.3``
adds one row to Table 3. A table built over damaged store entries carries them in
``.attrs["damaged"]``; :func:`damage_note` says so beside the table.

The paper runs every ablation (Tables 3–6, 9) on Harmon-0.5B and Table 8 on Harmon-1.5B (§4.4,
Table 8 caption); at small scale they run on ``tiny-harmon``. Table 1 runs on every backbone of
the preset (:func:`table1_presets`: ``tiny-harmon`` and ``tiny-showo`` for ``small``).
``python -m segros.tables`` prints the claims table (:func:`claims_table`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from segros import paper, pipeline, store
from segros.presets import get_preset
from segros.stats import aa_verdict, difference, format_difference, row_stats, summarize, verdict


@dataclass(frozen=True)
class Row:
    label: str                         # the paper's row key (segros.paper.rows(table)), or a swept value's label
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields; method "none" = w/o SFT
    sweep_value: Any = None            # the swept parameter's value, for notebooks that take -p
    beyond_paper: bool = False         # an extra row the paper does not print (its label says so)
    seed_set: str = "table"            # "table": the table's seeds; "disjoint": as many seeds after them (A/A)


@dataclass(frozen=True)
class TableSpec:
    name: str                          # "table3"
    title: str
    rows: tuple[Row, ...]
    metric: str = "geneval"            # "geneval" (T2I) or "qa" (understanding, Table 2)
    sweep: str | None = None           # the parameter a notebook may restrict with -p (e.g. "eta")
    paper_columns: tuple[str, ...] = ("GenEval",)
    # the row of a swept value that is not one of the paper's rows (``-p eta 0.7``); None: rows only
    make_row: Callable[[Any], Row] | None = field(default=None, compare=False, repr=False)

    def row(self, label: str) -> Row:
        for r in self.rows:
            if r.label == label:
                return r
        raise ValueError(f"{self.name}: no row {label!r}; rows are {[r.label for r in self.rows]}")

    def select(self, values: Sequence[Any] | Any | None) -> tuple[Row, ...]:
        """Rows whose sweep value is in ``values`` (all rows when ``values`` is None)."""
        if values is None:
            return self.rows
        if self.sweep is None:
            raise ValueError(f"{self.name} has no swept parameter")
        values = _as_list(values)
        known = [r.sweep_value for r in self.rows if r.sweep_value is not None]
        unknown = [v for v in values if not any(_same(v, k) for k in known)]
        if unknown:
            beyond = " (with_values adds a value beyond the paper's rows)" if self.make_row else ""
            raise ValueError(f"{self.sweep}: {unknown} not a row of {self.name}; choose from {known}{beyond}")
        # rows without a sweep value (w/o SFT, SFT) are reference rows and always belong
        return tuple(r for r in self.rows
                     if r.sweep_value is None or any(_same(v, r.sweep_value) for v in values))

    def with_values(self, values: Sequence[Any] | Any | None, preset: str | None = None) -> "TableSpec":
        """This table with a row for every swept value in ``values`` that is not already a row
        (``-p eta 0.7``: a row "70%" with no paper number), placed in order among the paper's rows:
        after the last swept row whose value is smaller (numbers), at the end otherwise. The paper's
        rows keep their order. With ``preset`` every new row's config is built, so an invalid value
        (η = 1.5, an unknown text filter) stops here with the config's own message.
        """
        if values is None:
            return self
        if self.sweep is None:
            raise ValueError(f"{self.name} has no swept parameter")
        rows = list(self.rows)
        for v in _as_list(values):
            if any(r.sweep_value is not None and _same(v, r.sweep_value) for r in rows):
                continue
            if self.make_row is None:
                known = [r.sweep_value for r in rows if r.sweep_value is not None]
                raise ValueError(f"{self.sweep}: {v!r} not a row of {self.name}; choose from {known}")
            new = self.make_row(v)
            if any(r.label == new.label for r in rows):
                raise ValueError(f"{self.sweep}={v!r}: its row label {new.label!r} is already a row of {self.name}")
            if preset is not None:
                row_config(self, new, preset)  # the config's validation names what is wrong
            rows.insert(_insert_at(rows, v), new)
        return self if len(rows) == len(self.rows) else replace(self, rows=tuple(rows))


def _as_list(values: Any) -> list:
    return list(values) if isinstance(values, (list, tuple)) else [values]


def _insert_at(rows: Sequence[Row], value: Any) -> int:
    """Where a new swept value goes: after the last swept row with a smaller number, else before the
    first swept row (all larger), else at the end (values that are not numbers, or no swept row)."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    # the extra rows printed after the paper's (beyond_paper) do not set the order
    swept = [(i, r.sweep_value) for i, r in enumerate(rows) if not r.beyond_paper
             and isinstance(r.sweep_value, (int, float)) and not isinstance(r.sweep_value, bool)]
    if not numeric or not swept:
        return len(rows)
    smaller = [i for i, v in swept if v < value]
    return smaller[-1] + 1 if smaller else swept[0][0]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) < 1e-9
    return a == b


def _number(name: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


# the rows of swept values beyond the paper's (``TableSpec.make_row``); the config checks the range
def _eta_row(eta: Any) -> Row:
    return Row(f"{100 * _number('eta', eta):g}%", {"method": "segros", "eta": float(eta)}, eta)


def _text_filter_row(text_filter: Any) -> Row:
    return Row(str(text_filter), {"method": "segros", "text_filter": text_filter}, text_filter)


def _hint_seen_row(hint_seen: Any) -> Row:
    parts = hint_seen.split("/") if isinstance(hint_seen, str) else []
    if len(parts) != 2:
        raise ValueError(f"hint_seen must be '<hint_from>/<seen_from>', e.g. 'top/bottom'; got {hint_seen!r}")
    h, s = parts
    return Row(f"hint={h}, seen={s}", {"method": "segros", "hint_from": h, "seen_from": s}, hint_seen)


def _alpha_row(alpha: Any) -> Row:
    return Row(f"Ours (alpha={_number('alpha', alpha):g})", {"method": "segros", "alpha": float(alpha)}, alpha)


_MAIN = (
    Row("w/o SFT", {"method": "none"}),
    Row("SFT", {"method": "sft"}),
    Row("Reca", {"method": "reca"}),
    Row("Ours", {"method": "segros"}),
)

# the labels of the rows beyond the paper
ETA0_GROUNDED = "0%: grounded mask, no hints (beyond the paper)"
STOPWORDS_KEPT = "intra+inter, stopwords kept (beyond the paper)"

TABLES: dict[str, TableSpec] = {
    "table1": TableSpec("table1", "Table 1: text-to-image generation across UMMs", _MAIN,
                        paper_columns=("Single", "Two", "Count", "Color", "Position", "Attr.", "GenEval")),
    "table2": TableSpec("table2", "Table 2: does SeGroS keep image-to-text ability?", _MAIN, metric="qa",
                        paper_columns=()),
    # the paper's 0% row is plain SFT (72.1 / 82.5 = Table 1's and Table 9's SFT row): the SFT run,
    # shared with Table 1; SeGroS's grounded mask without hints (η = 0) is an extra row
    "table3": TableSpec("table3", "Table 3: effect of the visual hint ratio η", (
        Row("0%", {"method": "sft"}, 0.0),
        *(Row(f"{round(100 * e)}%", {"method": "segros", "eta": e}, e) for e in (0.1, 0.3, 0.5, 0.8, 1.0)),
        Row(ETA0_GROUNDED, {"method": "segros", "eta": 0.0}, 0.0, beyond_paper=True),
    ), sweep="eta", paper_columns=("GenEval", "DPGBench"), make_row=_eta_row),
    # Fig. 3's caption leaves function words out of the text scores (the default); the extra row
    # grounds with them kept
    "table4": TableSpec("table4", "Table 4: text filtering affinity", (
        *(Row(label, {"method": "segros", "text_filter": f}, f) for label, f in
          (("none", "none"), ("intra", "intra"), ("inter", "inter"), ("intra+inter", "both"))),
        Row(STOPWORDS_KEPT, {"method": "segros", "text_filter": "both", "stopwords": False}, "both+stopwords",
            beyond_paper=True),
    ), sweep="text_filter", paper_columns=("GenEval", "DPGBench"), make_row=_text_filter_row),
    "table5": TableSpec("table5", "Table 5: visual hint and corrupted input", tuple(
        Row(f"hint={h}, seen={s}", {"method": "segros", "hint_from": h, "seen_from": s}, f"{h}/{s}")
        for h, s in (("bottom", "top"), ("bottom", "bottom"), ("top", "top"), ("top", "bottom"))),
        sweep="hint_seen", paper_columns=("GenEval", "DPGBench"), make_row=_hint_seen_row),
    "table6": TableSpec("table6", "Table 6: supervision allocation (drop-loss)", (
        # the backbone's own schedule: tiny-harmon's truncated normal has the support [0.7, 1.0)
        # of the paper's U[0.7, 1.0), and the rows share their runs with Table 1
        Row("SFT", {"method": "sft"}),
        Row("Ours", {"method": "segros"}),
        Row("Ours (drop-loss)", {"method": "segros", "loss_on": "top_masked"}),
    ), paper_columns=("GenEval", "DPGBench")),
    "table8": TableSpec("table8", "Table 8: noise scale α of the grounding map", (
        Row("w/o SFT", {"method": "none"}),
        Row("SFT", {"method": "sft"}),
        Row("Ours (alpha=0)", {"method": "segros", "alpha": 0.0}, 0.0),
        Row("Ours (alpha=0.5)", {"method": "segros", "alpha": 0.5}, 0.5),
        Row("Ours (alpha=1.0)", {"method": "segros", "alpha": 1.0}, 1.0),
    ), sweep="alpha", paper_columns=("GenEval", "DPGBench"), make_row=_alpha_row),
    "table9": TableSpec("table9", "Table 9: hint redundancy and transfer of the map to Reca", (
        Row("Standard T2I", {"method": "sft"}),
        Row("Reca", {"method": "reca"}),
        Row("Reca + SeGroS hint filtering", {"method": "reca_hint_filter", "eta": 0.3}),
        Row("Ours (SeGroS)", {"method": "segros", "eta": 0.3}),
    ), paper_columns=("GenEval", "DPG")),
    # not a paper table: the controls of the claims table (``claims_table``). "SFT (A/A)" is Table 1's
    # SFT config on as many seeds again, disjoint from the table's (seeds 0-2 -> 3-5), so SFT vs
    # SFT (A/A) must show no difference; SFT vs w/o SFT is the positive control
    "controls": TableSpec("controls", "Controls: the same SFT config on two disjoint seed sets (A/A), and SFT vs w/o SFT", (
        Row("w/o SFT", {"method": "none"}),
        Row("SFT", {"method": "sft"}),
        Row("SFT (A/A)", {"method": "sft"}, seed_set="disjoint"),
    ), paper_columns=()),
}
#: the tables of the paper (``TABLES`` also holds the controls, which have no paper numbers)
PAPER_TABLES = tuple(name for name in TABLES if name != "controls")

#: the shapes-world metric that stands in for the paper's column
SMALL_METRIC = {"GenEval": "overall", "Single": "single_object", "Two": "two_object", "Count": "counting",
                "Color": "colors", "Position": "position", "Attr.": "color_attr"}


# the paper backbone a small preset's tiny family stands in for (Table 1; README)
STAND_IN = {"tiny-harmon": "harmon-0.5b", "tiny-showo": "showo-256"}
# Table 1 runs every backbone of a preset; the other tables run the preset itself
TABLE1_PRESETS = {"small": ("small", "small-showo")}


def table1_presets(preset: str) -> tuple[str, ...]:
    """The presets Table 1 runs for ``preset``: ``small`` -> ``small`` (tiny-harmon) and ``small-showo``
    (tiny-showo); any other preset is itself."""
    get_preset(preset)  # raises on an unknown preset
    return TABLE1_PRESETS.get(preset, (preset,))


def paper_backbone(preset: str) -> str:
    """The backbone of the paper's Table 1 that ``preset`` is compared with, e.g. "Harmon-0.5B"."""
    key = get_preset(preset).backbone
    key = STAND_IN.get(key, key)
    if key not in paper.TABLE1_BACKBONE_OF:
        raise ValueError(f"preset {preset!r}: no paper backbone to compare its backbone {key!r} with; "
                         f"known: {sorted(paper.TABLE1_BACKBONE_OF) + sorted(STAND_IN)}")
    return paper.TABLE1_BACKBONE_OF[key]


def get_table(name: str | TableSpec) -> TableSpec:
    """The spec of a table by name; a spec is returned as is (one extended by ``with_values``)."""
    if isinstance(name, TableSpec):
        return name
    if name not in TABLES:
        raise ValueError(f"table: unknown {name!r}; choose from {sorted(TABLES)}")
    return TABLES[name]


def paper_frame(name: str, backbone: str | None = None) -> pd.DataFrame:
    """The paper's rows of a table, with Table 1's backbone prefix removed when one is given."""
    df = paper.table(name)
    if name == "table1":
        if backbone is None:
            raise ValueError("backbone: Table 1 needs the paper backbone to compare with, e.g. 'Harmon-0.5B'")
        prefix = f"{backbone} / "
        df = df[[i.startswith(prefix) for i in df.index]]
        df.index = [i[len(prefix):].replace("SFT*", "SFT") for i in df.index]
    df.index.name = "row"
    return df


# ----------------------------------------------------------------------------- running a table
def row_config(spec: TableSpec, row: Row, preset: str = "small", seed: int = 0, **overrides):
    """The TrainConfig of one cell: the preset, the notebook's overrides, then the row's switches."""
    fields = {**overrides, **row.overrides}
    if fields.get("method") == "none":
        seed = 0  # the start checkpoint does not depend on the fine-tuning seed
    return get_preset(preset).replace(**fields, seed=seed)


def _metrics(results: dict, metric: str) -> dict[str, float]:
    if metric == "qa":
        return {f"qa_{k}": float(v) for k, v in results.get("qa", {}).items() if isinstance(v, (int, float))}
    g = results.get("geneval", {})
    return {k: float(v) for k, v in g.items() if isinstance(v, (int, float)) and k != "n_images"}


def disjoint_seeds(seeds: Sequence[int]) -> list[int]:
    """As many seeds as ``seeds``, none of them: the next ones after the largest (0, 1, 2 -> 3, 4, 5)."""
    seeds = list(dict.fromkeys(seeds))
    start = max(seeds) + 1
    return list(range(start, start + len(seeds)))


def row_seeds(row: Row, seeds: Sequence[int]) -> list[int]:
    """The seeds a row runs: every fine-tuning seed, one run for "w/o SFT" (it does not train), and
    :func:`disjoint_seeds` for an A/A row (``seed_set="disjoint"``)."""
    if row.overrides.get("method") == "none":
        return list(seeds[:1])
    if row.seed_set == "disjoint":
        return disjoint_seeds(seeds)
    if row.seed_set != "table":
        raise ValueError(f"row {row.label!r}: seed_set must be 'table' or 'disjoint', got {row.seed_set!r}")
    return list(dict.fromkeys(seeds))


def reproduce(table: str | TableSpec, preset: str = "small", seeds: Sequence[int] = (0, 1, 2), runs_dir: str = "runs",
              values: Any = None, run_missing: bool = True, progress: bool = True,
              index: store.StoreIndex | None = None, **overrides) -> pd.DataFrame:
    """Train/evaluate the rows of ``table`` that are missing from the store; return every row it holds.

    ``values`` restricts the rows to run (a notebook's ``-p eta 0.3``); a value that is not a row
    of the paper's table adds one (:meth:`TableSpec.with_values`). The returned long table
    still holds every row of the table that the store has for this preset and these seeds, so
    one papermill call adds one row and the notebook shows the whole table so far. One line per
    run: ``row``, ``seed``, ``run`` (its folder) and the metrics (GenEval tags + ``overall`` in
    percent, or ``qa_*`` for Table 2). The store's damaged entries are in ``.attrs["damaged"]``
    (:func:`segros.store.scan`; pass ``index`` to reuse one scan for several tables).
    """
    spec = get_table(table).with_values(values, preset)
    wanted = {r.label for r in spec.select(values)}
    index = store.scan(runs_dir) if index is None else index  # one scan of the store for every row and seed
    records = []
    for row in spec.rows:
        for seed in row_seeds(row, seeds):
            config = row_config(spec, row, preset, seed, **overrides)
            run_dir = index.find(config)
            if run_dir is not None:
                results = store.read_entry(run_dir)[1]
            elif run_missing and row.label in wanted:
                results = pipeline.ensure_run(config, runs_dir, spec.name, progress=progress)
                run_dir = f"{runs_dir}/{spec.name}/{results['name']}"
            else:
                continue
            records.append({"row": row.label, "seed": seed, "run": run_dir, **_metrics(results, spec.metric)})
    if records:
        long = pd.DataFrame(records)
    else:  # an empty store still gives the table's columns
        cols = ["row", "seed", "run"] + (["qa_overall"] if spec.metric == "qa" else list(SMALL_METRIC.values()))
        long = pd.DataFrame({c: pd.Series(dtype=object if c in ("row", "run") else float) for c in cols})
    long.attrs["damaged"] = list(index.damaged)
    return long


def to_markdown(df: pd.DataFrame, floatfmt: str = "{:.1f}", index: bool = True) -> str:
    """A GitHub markdown table (no extra dependency); NaN prints as an empty cell."""

    def fmt(v) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else floatfmt.format(v)
        return str(v)

    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for key, row in df.iterrows():
        cells = ([str(key)] if index else []) + [fmt(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def damage_note(long: pd.DataFrame) -> str:
    """What to print beside a table built from ``long``: every damaged store entry, or ""."""
    damaged = long.attrs.get("damaged") or []
    if not damaged:
        return ""
    lines = [f"built over a damaged store: {len(damaged)} entr{'y' if len(damaged) == 1 else 'ies'} "
             "could not be read (a row may lack runs):"]
    return "\n".join(lines + [f"  {d}" for d in damaged])


def paper_vs_small(table: str | TableSpec, long: pd.DataFrame, backbone: str | None = None,
                   small_metric: str = "overall") -> pd.DataFrame:
    """The table as the notebooks print it: the paper's GenEval beside the small-scale mean ± sd.
    A row beyond the paper's (a spec from :meth:`TableSpec.with_values`) has no paper number."""
    spec = get_table(table)
    order = [r.label for r in spec.rows]
    ours = summarize(long, [small_metric], order=order) if not long.empty else pd.DataFrame()
    paper_df = paper_frame(spec.name, backbone)
    col = "GenEval"
    out = pd.DataFrame(index=pd.Index(order, name="row"))
    if col in paper_df.columns:
        out["paper GenEval"] = paper_df[col].reindex(order)
    out["small mean"] = ours[small_metric].reindex(order) if small_metric in ours else np.nan
    out["small sd"] = ours[f"{small_metric} sd"].reindex(order) if f"{small_metric} sd" in ours else np.nan
    out["runs"] = ours["n"].reindex(order) if "n" in ours else 0
    out["runs"] = out["runs"].fillna(0).astype(int)
    return out


# ----------------------------------------------------------------------------- the honest summary
@dataclass(frozen=True)
class SmallClaim:
    id: str
    sentence: str              # "{seeds}" / "{aa_seeds}" are filled with the seed sets of the table
    table: str
    row: str                   # the row the paper says wins
    others: tuple[str, ...]    # the rows it should beat
    paper_backbone: str | None = None  # Table 1 only
    metric: str = "overall"    # the shapes-world column compared ("position", "color_attr": per-tag lines)
    kind: str = "claim"        # "claim": the paper's direction must show; "aa": must show no difference


CLAIMS: tuple[SmallClaim, ...] = (
    SmallClaim("segros_beats_sft", "SeGroS beats SFT (Table 1, Harmon-0.5B)", "table1", "Ours", ("SFT",), "Harmon-0.5B"),
    SmallClaim("segros_beats_reca", "SeGroS beats Reca (Table 1, Harmon-0.5B)", "table1", "Ours", ("Reca",), "Harmon-0.5B"),
    SmallClaim("eta_0.3_beats_0_and_1", "η = 0.3 beats η = 0 and η = 1.0 (Table 3)", "table3", "30%", ("0%", "100%")),
    SmallClaim("top_hint_bottom_seen_best", "Top hints with bottom-visible is the best of Table 5", "table5",
               "hint=top, seen=bottom", ("hint=bottom, seen=top", "hint=bottom, seen=bottom", "hint=top, seen=top")),
    SmallClaim("both_filters_beat_one", "Both text filters beat either one (Table 4)", "table4", "intra+inter",
               ("intra", "inter")),
    SmallClaim("alpha_0.5_beats_0_and_1", "α = 0.5 beats α = 0 and α = 1.0 (Table 8)", "table8", "Ours (alpha=0.5)",
               ("Ours (alpha=0)", "Ours (alpha=1.0)")),
    SmallClaim("drop_loss_keeps_gain", "Drop-loss (loss on the top-30% only) still beats SFT (Table 6)", "table6",
               "Ours (drop-loss)", ("SFT",)),
)

#: the controls: what must come out "no difference" (A/A) and what must come out "reproduces" if
#: fine-tuning teaches anything (SFT over the base it starts from; the paper: 72.1 vs 67.6)
CONTROLS: tuple[SmallClaim, ...] = (
    SmallClaim("aa_control", "A/A control: SFT on seeds {seeds} vs the same config on seeds {aa_seeds} "
               "(must show no difference)", "controls", "SFT", ("SFT (A/A)",), kind="aa"),
    SmallClaim("sft_beats_base", "Positive control: SFT beats w/o SFT (Table 1, Harmon-0.5B)", "table1", "SFT",
               ("w/o SFT",), "Harmon-0.5B"),
)

#: the tags Table 1's claims are broken down by: where the paper's alignment gains sit (§4.2)
BREAKDOWN_TAGS = ("position", "color_attr")
TAG_NAMES = {"position": "position", "color_attr": "colour attribute"}
PAPER_COLUMN = {v: k for k, v in SMALL_METRIC.items()}  # shapes-world metric -> the paper's column


def all_claims() -> tuple[SmallClaim, ...]:
    """The lines of the claims table in order: the controls, then each claim; every Table 1 line is
    followed by its per-tag lines (:data:`BREAKDOWN_TAGS`)."""
    out = []
    for c in CONTROLS + CLAIMS:
        out.append(c)
        if c.table == "table1":
            out += [replace(c, id=f"{c.id}_{tag}", sentence=f"{c.sentence}: {TAG_NAMES[tag]}", metric=tag)
                    for tag in BREAKDOWN_TAGS]
    return tuple(out)


def _seed_text(seeds: Sequence[int]) -> str:
    seeds = sorted(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)


def claims_table(preset: str = "small", seeds: Sequence[int] = (0, 1, 2), runs_dir: str = "runs",
                 k: float = 2.0) -> pd.DataFrame:
    """Each headline claim and the two controls: the paper's numbers, the small-scale mean ± sd over
    seeds, each difference of means with its interval of ``k`` standard errors, a verdict.

    Reads the store only (nothing is trained). The standard error of a difference of two means is
    sqrt(sd_a²/n_a + sd_b²/n_b) (:func:`segros.stats.difference`); "w/o SFT" is one run (sd 0), so
    the positive control's interval carries SFT's seed spread only. A claim reproduces when every
    interval lies above 0 (:func:`segros.stats.verdict`); the A/A control passes when its interval
    holds 0 (:func:`segros.stats.aa_verdict`).
    """
    index = store.scan(runs_dir)
    longs: dict[str, pd.DataFrame] = {}
    lines = []
    for c in all_claims():
        if c.table not in longs:
            longs[c.table] = reproduce(c.table, preset=preset, seeds=seeds, runs_dir=runs_dir, run_missing=False,
                                       index=index)
        long = longs[c.table]
        stats = row_stats(long, c.metric) if c.metric in long else {}
        if c.kind == "aa":
            paper_txt = "– (not in the paper)"
        else:
            pf, pcol = paper_frame(c.table, c.paper_backbone), PAPER_COLUMN[c.metric]
            paper_txt = f"{pf.loc[c.row, pcol]:g} vs " + ", ".join(f"{pf.loc[o, pcol]:g}" for o in c.others)

        def fmt(r):
            if r not in stats:
                return "–"
            m, sd, n = stats[r]
            return f"{m:.1f} ± {sd:.1f}" if n > 1 else f"{m:.1f}"

        small_txt = f"{fmt(c.row)} vs " + ", ".join(fmt(o) for o in c.others)
        diffs = []
        if c.row in stats and all(o in stats for o in c.others):
            diffs = [difference(stats[c.row], stats[o]) for o in c.others]
        runs = " vs ".join(str(stats[r][2]) if r in stats else "0" for r in (c.row, *c.others))
        if c.kind == "aa":
            label = aa_verdict(diffs[0] if diffs else None, k)
        else:
            label = verdict(diffs, k)
        lines.append({"claim": c.sentence.format(seeds=_seed_text(seeds), aa_seeds=_seed_text(disjoint_seeds(seeds))),
                      "paper": paper_txt, "small (mean ± sd)": small_txt,
                      f"difference [±{k:g} SE]": "; ".join(format_difference(d, k) for d in diffs) or "–",
                      "runs": runs, "at small scale": label})
    out = pd.DataFrame(lines).set_index("claim")
    out.attrs["damaged"] = list(index.damaged)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m segros.tables [--runs-dir runs] [--preset small]``: the claims table as markdown, and
    every damaged store entry it could not read."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args(argv)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    claims = claims_table(args.preset, seeds, args.runs_dir)
    print(to_markdown(claims), end="")
    note = damage_note(claims)
    if note:
        print("\n" + note)


if __name__ == "__main__":
    main()
