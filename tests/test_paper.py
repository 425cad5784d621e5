"""segros.paper against the paper text, and the paper's own internal consistency.

The text checks read the paper's extracted text from the file named by the environment variable
``SEGROS_PAPER_TEXT`` (the paper's text is not part of this repository); they skip without it.
The consistency checks need nothing but the module.
"""

import math
import os
import re
from pathlib import Path

import pytest

from segros import paper

PAPER_TXT = Path(os.environ.get("SEGROS_PAPER_TEXT", "")).expanduser()
needs_text = pytest.mark.skipif(not PAPER_TXT.is_file(),
                                reason="set SEGROS_PAPER_TEXT to the paper's extracted text to run")

# Per table: how each row's line starts in the extracted text, in order. The walk goes forward
# from the table caption, so repeated prefixes ("Reca", "SFT*") resolve to the right block.
# '' matches the next line that holds numbers (Tables 4 and 5 lost their row labels).
ROW_PREFIXES = {
    "table1": [
        ("Show-o-256 / w/o SFT", "Show-o-256 [44] w/o SFT"), ("Show-o-256 / SFT", "SFT*"),
        ("Show-o-256 / Reca", "Reca"), ("Show-o-256 / Ours", "Ours"),
        ("Show-o-512 / w/o SFT", "Show-o-512 [44] w/o SFT"), ("Show-o-512 / SFT", "SFT*"),
        ("Show-o-512 / Reca", "Reca"), ("Show-o-512 / Ours", "Ours"),
        ("OpenUni-1.6B / w/o SFT", "OpenUni-1.6B [38] w/o SFT"), ("OpenUni-1.6B / SFT", "SFT*"),
        ("OpenUni-1.6B / Reca", "Reca"), ("OpenUni-1.6B / Ours", "Ours"),
        ("OpenUni-3.6B / w/o SFT", "OpenUni-3.6B [38] w/o SFT"), ("OpenUni-3.6B / SFT", "SFT*"),
        ("OpenUni-3.6B / Reca", "Reca"), ("OpenUni-3.6B / Ours", "Ours"),
        ("Harmon-0.5B / w/o SFT", "Harmon-0.5B [39] w/o SFT"), ("Harmon-0.5B / SFT", "SFT*"),
        ("Harmon-0.5B / Reca", "Reca"), ("Harmon-0.5B / Ours", "Ours"),
        ("Harmon-1.5B / w/o SFT", "w/o SFT"), ("Harmon-1.5B / SFT", "SFT*"),
        ("Harmon-1.5B / Reca", "Reca"), ("Harmon-1.5B / Ours", "Harmon-1.5B [39] Ours"),
    ],
    "table2": [("w/o SFT", "w/o SFT"), ("SFT", "SFT"), ("Reca", "Reca"), ("Ours", "Ours")],
    "table3": [("0%", "0%"), ("10%", "10%"), ("30%", "30%"), ("50%", "50%"),
               ("80%", "80%"), ("100%", "100%")],
    "table4": [("none", ""), ("intra", ""), ("inter", ""), ("intra+inter", "")],
    "table5": [("hint=bottom, seen=top", ""), ("hint=bottom, seen=bottom", ""),
               ("hint=top, seen=top", ""), ("hint=top, seen=bottom", "")],
    "table6": [("SFT", "SFT 0%"), ("Ours", "Ours 30%"), ("Ours (drop-loss)", "Ours (drop-loss)")],
    "table8": [("w/o SFT", "w/o SFT None"), ("SFT", "SFT None"),
               ("Ours (alpha=0)", "Ours 0 (None)"), ("Ours (alpha=0.5)", "Ours 0.5"),
               ("Ours (alpha=1.0)", "Ours 1.0")],
    "table9": [("Standard T2I", "Standard T2I"), ("Reca", "Reca [43]"),
               ("Reca + SeGroS hint filtering", "Reca + SeGroS hint filtering"),
               ("Ours (SeGroS)", "Ours (SeGroS)")],
    "table10": [(r, r) for r in ("Color", "Shape", "Texture", "Spatial", "Non-spatial",
                                 "Numeracy", "3D Spatial", "Complex", "Overall")],
}

NUMBER = re.compile(r"(\d+(?:\.\d+)?)%?(\*?)")


def numbers(text):
    """(value, starred) for every whitespace token of ``text`` that is a plain number."""
    out = []
    for token in text.split():
        m = NUMBER.fullmatch(token)
        if m:
            out.append((float(m.group(1)), m.group(2) == "*"))
    return out


@pytest.fixture(scope="module")
def lines():
    # the extraction uses non-breaking spaces ("Show-o-256\xa0[44]"); read them as spaces
    return PAPER_TXT.read_text(encoding="utf-8").replace("\xa0", " ").splitlines()


def caption_index(lines, name):
    """Index of the line that starts the caption 'Table N:'."""
    label = f"Table {name.removeprefix('table')}:"
    hits = [i for i, line in enumerate(lines) if line.startswith(label)]
    assert len(hits) == 1, f"{label} found {len(hits)} times"
    return hits[0]


def locate_rows(lines, name):
    """row key -> (line text after the prefix, the prefix) for every row of a table."""
    i = caption_index(lines, name) + 1
    found = {}
    for row, prefix in ROW_PREFIXES[name]:
        while not (lines[i].startswith(prefix) and numbers(lines[i][len(prefix):])):
            i += 1
            assert not lines[i].startswith("Table "), f"{name}: row {row!r} not found"
        found[row] = (lines[i][len(prefix):], prefix)
        i += 1
    return found


@needs_text
@pytest.mark.parametrize("name", sorted(ROW_PREFIXES))
def test_cells_match_paper_text(lines, name):
    assert [r for r, _ in ROW_PREFIXES[name]] == list(paper.rows(name))
    located = locate_rows(lines, name)
    for row in paper.rows(name):
        text, prefix = located[row]
        printed = numbers(text)
        cells = [paper.get_cell(name, row, col) for col in paper.columns(name)]
        reported = [c for c in cells if c.value is not None]
        assert reported, f"{name} {row!r}: no values"
        tail = printed[-len(reported):]
        assert [v for v, _ in tail] == [c.value for c in reported], (name, row, text)
        row_star = prefix.rstrip().endswith("*")
        assert [s or row_star for _, s in tail] == [c.reproduced for c in reported], (name, row)
        if name in ("table1", "table2", "table4", "table5", "table10"):
            # every number on these lines is a data cell: none left over
            assert len(printed) == len(reported), (name, row, text)


@needs_text
def test_enough_cells_checked_and_every_star_kept(lines):
    checked = [c for c in paper.CELLS if c.table in ROW_PREFIXES and c.value is not None]
    assert len(checked) >= 40
    assert {c.table for c in checked} == set(ROW_PREFIXES)
    start, end = caption_index(lines, "table1"), caption_index(lines, "table2")
    block = "\n".join(lines[start + 1:end])
    starred_numbers = len(re.findall(r"\d\*", block))
    starred_rows = len(re.findall(r"^SFT\*", block, flags=re.M))
    cells = [c for c in paper.CELLS if c.table == "table1"]
    assert sum(c.reproduced and "row marked" not in c.note for c in cells) == starred_numbers
    assert sum(c.reproduced and "row marked" in c.note for c in cells) == starred_rows * 9


@needs_text
def test_odd_harmon15_reca_row(lines):
    located = locate_rows(lines, "table1")
    text, _ = located["Harmon-1.5B / Reca"]
    assert len(numbers(text)) == 3
    for col in ("Single", "Two", "Count", "Color", "Position", "Attr."):
        c = paper.get_cell("table1", "Harmon-1.5B / Reca", col)
        assert c.value is None and "not reported" in c.note
        with pytest.raises(ValueError, match="not reported"):
            paper.cell("table1", "Harmon-1.5B / Reca", col)
    assert paper.get_cell("table1", "Harmon-1.5B / Reca", "CompBench").reproduced
    assert math.isnan(paper.table("table1").loc["Harmon-1.5B / Reca", "Single"])


@needs_text
def test_table5_reconstruction_follows_prose(lines):
    prose = next(line for line in lines if line.startswith("Tab. 5 ablates"))
    assert "(Rows 1, 3)" in prose and "(Rows 2, 4)" in prose and "(Row 4 vs. Row 2)" in prose
    switches = [paper.TABLE5_SWITCHES[r] for r in paper.rows("table5")]
    assert [seen for _, seen in switches] == ["top", "bottom", "top", "bottom"]
    assert switches[3] == ("top", "bottom") and switches[1] == ("bottom", "bottom")
    assert paper.cell("table5", "hint=top, seen=bottom", "GenEval") == max(
        paper.table("table5")["GenEval"])


@needs_text
def test_table4_reconstruction_follows_prose(lines):
    prose = next(line for line in lines if "Employing only the intra-modal score" in line)
    assert "(79.8% / 84.8%)" in prose and "boosting GenEval to 81.5%" in prose
    assert "(81.5% / 85.4%)" in prose
    assert paper.TABLE4_SWITCHES["intra"] == (True, False)
    assert paper.TABLE4_SWITCHES["inter"] == (False, True)
    assert paper.cell("table4", "intra", "GenEval") == 79.8
    assert paper.cell("table4", "inter", "GenEval") == 81.5
    assert paper.cell("table4", "intra+inter", "DPGBench") == 85.4


# Table 7 in the text: label -> (field, how each printed token converts); 'span' rows print one
# token per model family (Show-o, Harmon, OpenUni), each covering two columns.
TABLE7_ROWS = {
    "Optimizer": ("optimizer", str),
    "Learning Rate": ("learning_rate", float),
    "Weight Decay": ("weight_decay", float),
    "Training Steps": ("train_steps", lambda t: int(float(t.rstrip("K")) * 1000)),
    "Warmup Steps": ("warmup_steps", int),
    "Batch Size": ("batch_size", int),
    "Gradient Accumulation": ("grad_accum", int),
    "Training Time (h)": ("train_hours", float),
    "Visual Hint Ratio": ("eta", lambda t: float(t.rstrip("%")) / 100),
    "Text Filtering Ratio": ("rho", lambda t: float(t.rstrip("%")) / 100),
    "Loss Weight": ("lambda_i2t", float),
}
TABLE7_ORDER = ("showo-256", "showo-512", "harmon-0.5b", "harmon-1.5b",
                "openuni-1.6b", "openuni-3.6b")


@needs_text
def test_table7_matches_text(lines):
    assert tuple(paper.HYPERPARAMS) == TABLE7_ORDER
    start = caption_index(lines, "table7")
    block = [line.strip() for line in lines[start + 1:start + 30]]
    for label, (field, convert) in TABLE7_ROWS.items():
        line = next(b for b in block if b.startswith(label))
        tokens = line.split()[-6:]
        expected = [convert(t) for t in tokens]
        assert [getattr(paper.HYPERPARAMS[k], field) for k in TABLE7_ORDER] == expected, label
    betas_line = next(b for b in block if b.startswith("Optimizer Momentum"))
    spans = re.findall(r"\((\d\.\d+), (\d\.\d+)\)", betas_line)
    assert len(spans) == 3
    for family, (b1, b2) in zip(("showo", "harmon", "openuni"), spans):
        for key in TABLE7_ORDER:
            if key.startswith(family):
                assert paper.HYPERPARAMS[key].betas == (float(b1), float(b2))
    frozen = next(b for b in block if b.startswith("Frozen Modules")).split()[-3:]
    for family, token in zip(("showo", "harmon", "openuni"), frozen):
        for key in TABLE7_ORDER:
            if key.startswith(family):
                assert paper.HYPERPARAMS[key].frozen_modules == (None if token == "-" else token)


@needs_text
def test_section41_hyperparameters_match_text(lines):
    line = next(line for line in lines if line.startswith("Hyperparameter. We set"))
    assert "τ=1.0" in line and "ρ=0.4" in line and "λ=1.0" in line
    assert "η=0.3" in line and "0.4 for Show-o 512" in line
    assert (paper.TAU, paper.RHO, paper.LAMBDA_I2T) == (1.0, 0.4, 1.0)
    assert (paper.ETA, paper.ETA_SHOWO_512) == (0.3, 0.4)
    assert any("𝒰([0,0.5]" in line for line in lines) and paper.ALPHA == 0.5


# ----------------------------------------------------------------------------- no text needed


def test_table_shape_and_order():
    t1 = paper.table("table1")
    assert t1.shape == (24, 9)
    assert list(t1.columns) == ["Single", "Two", "Count", "Color", "Position", "Attr.",
                                "GenEval", "DPGBench", "CompBench"]
    assert list(t1.index[:4]) == ["Show-o-256 / w/o SFT", "Show-o-256 / SFT",
                                  "Show-o-256 / Reca", "Show-o-256 / Ours"]
    assert t1.index[-1] == "Harmon-1.5B / Ours"
    assert t1.loc["OpenUni-3.6B / Ours", "Position"] == 46.8
    assert paper.table("table2").shape == (4, 6)
    assert list(paper.table("table3").index) == ["0%", "10%", "30%", "50%", "80%", "100%"]
    assert paper.table("table10").shape == (9, 6)
    assert paper.table("table10").loc["3D Spatial", "OpenUni-3.6B / Ours"] == 85.18
    assert paper.table("table7").shape == (14, 6)
    assert paper.table("table7").loc["eta", "showo-512"] == 0.4
    stars = paper.reproduced("table1")
    assert stars.shape == t1.shape
    assert stars.loc["Show-o-512 / Reca", "GenEval"] and not stars.loc["Show-o-512 / Reca", "Two"]
    assert stars.loc["Harmon-0.5B / SFT"].all()


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="table"):
        paper.table("table11")
    with pytest.raises(ValueError, match="row"):
        paper.cell("table1", "Ours", "GenEval")
    with pytest.raises(ValueError, match="column"):
        paper.cell("table1", "Harmon-0.5B / Ours", "Overall")
    with pytest.raises(ValueError, match="Table 7"):
        paper.cell("table7", "eta", "showo-256")


def test_geneval_overall_vs_category_mean():
    """Paper's GenEval overall vs the mean of its six printed categories, within rounding.

    Categories print one decimal (mean error <= 0.05), overall one or two (<= 0.05), so more than
    0.1 apart is a disagreement in the paper itself; the module lists those rows, unchanged.
    """
    t1 = paper.table("table1")
    cats = ["Single", "Two", "Count", "Color", "Position", "Attr."]
    full = t1.dropna()
    assert len(full) == 23
    disagree = [row for row in full.index
                if abs(full.loc[row, cats].mean() - full.loc[row, "GenEval"]) > 0.1 + 1e-9]
    assert disagree == list(paper.TABLE1_OVERALL_DISAGREES)
    # the disagreements are real, not a parsing slip: 67.6 printed vs 67.43 from categories
    row = full.loc["Harmon-0.5B / w/o SFT"]
    assert row["GenEval"] == 67.6
    assert round(row[cats].mean(), 2) == 67.43


def test_compbench_overall_vs_category_mean():
    t10 = paper.table("table10")
    cats = t10.drop(index="Overall")
    disagree = [col for col in t10.columns
                if abs(cats[col].mean() - t10.loc["Overall", col]) > 0.01]
    assert disagree == list(paper.TABLE10_OVERALL_DISAGREES)


# Numbers the paper prints twice, in different tables (rounded to the coarser print).
SAME_NUMBER = [
    (("table1", "Harmon-0.5B / Ours", "GenEval"), ("table3", "30%", "GenEval")),
    (("table1", "Harmon-0.5B / Ours", "DPGBench"), ("table3", "30%", "DPGBench")),
    (("table1", "Harmon-0.5B / SFT", "GenEval"), ("table3", "0%", "GenEval")),
    (("table1", "Harmon-0.5B / SFT", "DPGBench"), ("table6", "SFT", "DPGBench")),
    (("table3", "30%", "GenEval"), ("table4", "intra+inter", "GenEval")),
    (("table3", "30%", "DPGBench"), ("table5", "hint=top, seen=bottom", "DPGBench")),
    (("table3", "30%", "GenEval"), ("table6", "Ours", "GenEval")),
    (("table9", "Ours (SeGroS)", "DPG"), ("table6", "Ours", "DPGBench")),
    (("table9", "Standard T2I", "GenEval"), ("table3", "0%", "GenEval")),
    (("table9", "Standard T2I", "DPG"), ("table3", "0%", "DPGBench")),
    (("table9", "Reca", "GenEval"), ("table1", "Harmon-0.5B / Reca", "GenEval")),
    (("table9", "Reca", "DPG"), ("table1", "Harmon-0.5B / Reca", "DPGBench")),
    (("table8", "w/o SFT", "DPGBench"), ("table1", "Harmon-1.5B / w/o SFT", "DPGBench")),
    (("table8", "SFT", "GenEval"), ("table1", "Harmon-1.5B / SFT", "GenEval")),
    (("table8", "Ours (alpha=0.5)", "GenEval"), ("table1", "Harmon-1.5B / Ours", "GenEval")),
    (("table8", "Ours (alpha=0.5)", "DPGBench"), ("table1", "Harmon-1.5B / Ours", "DPGBench")),
    (("table10", "Overall", "Show-o-512 / Baseline"), ("table1", "Show-o-512 / w/o SFT", "CompBench")),
    (("table10", "Overall", "Show-o-512 / Ours"), ("table1", "Show-o-512 / Ours", "CompBench")),
    (("table10", "Overall", "Harmon-1.5B / Baseline"), ("table1", "Harmon-1.5B / w/o SFT", "CompBench")),
    (("table10", "Overall", "Harmon-1.5B / Ours"), ("table1", "Harmon-1.5B / Ours", "CompBench")),
    (("table10", "Overall", "OpenUni-3.6B / Baseline"), ("table1", "OpenUni-3.6B / w/o SFT", "CompBench")),
    (("table10", "Overall", "OpenUni-3.6B / Ours"), ("table1", "OpenUni-3.6B / Ours", "CompBench")),
]


@pytest.mark.parametrize("a, b", SAME_NUMBER)
def test_numbers_printed_twice_agree(a, b):
    assert abs(paper.cell(*a) - paper.cell(*b)) <= 0.05 + 1e-9, (a, b)


def test_claims_rest_on_the_tables():
    claims = paper.claims()
    ids = [c.id for c in claims]
    assert len(ids) == len(set(ids))
    for needed in ("segros_beats_sft", "segros_beats_reca_geneval", "eta_0.3_beats_0_and_1",
                   "top_hint_bottom_seen_best", "both_filters_beat_one",
                   "alpha_0.5_beats_0_and_1", "drop_loss_keeps_gain"):
        assert needed in ids
    for claim in claims:
        assert claim.comparisons and claim.sentence
        for comp in claim.comparisons:
            assert comp.table == claim.table
            assert comp.value == paper.cell(comp.table, comp.row, comp.column)
            assert comp.other_value == paper.cell(comp.table, comp.other_row, comp.other_column)
            assert (comp.row, comp.column) != (comp.other_row, comp.other_column)
        assert claim.holds, claim.id
    by_id = {c.id: c for c in claims}
    sft = by_id["segros_beats_sft"]
    assert len(sft.comparisons) == 18
    first = sft.comparisons[0]
    assert (first.value, first.other_value) == (62.22, 57.5)
    assert "Show-o-512" in by_id["segros_beats_reca_geneval"].note


def test_claim_exceptions_are_real():
    """The notes point at comparisons that fail in the paper's numbers; check they do fail."""
    show512 = paper.Comparison("table1", "Show-o-512 / Ours", "GenEval", "Show-o-512 / Reca",
                               "GenEval", paper.cell("table1", "Show-o-512 / Ours", "GenEval"),
                               paper.cell("table1", "Show-o-512 / Reca", "GenEval"))
    assert not show512.holds
    tie = paper.Comparison("table4", "intra+inter", "GenEval", "inter", "GenEval",
                           paper.cell("table4", "intra+inter", "GenEval"),
                           paper.cell("table4", "inter", "GenEval"))
    assert not tie.holds
    tie_ok = paper.Comparison(tie.table, tie.row, tie.column, tie.other_row, tie.other_column,
                              tie.value, tie.other_value, ">=")
    assert tie_ok.holds
    with pytest.raises(ValueError, match="relation"):
        paper.Comparison("t", "a", "c", "b", "c", 1.0, 0.0, "<").holds
    assert paper.cell("table6", "Ours (drop-loss)", "DPGBench") < paper.cell(
        "table6", "Ours", "DPGBench")
