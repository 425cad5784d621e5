"""segros.tables and segros.stats: which runs make each table, how the store is read back (damage
included), the claim verdicts."""

import os

import numpy as np
import pytest

from segros import paper, stats, store, tables

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def test_rows_match_the_papers_row_keys():
    assert set(tables.TABLES) == set(tables.PAPER_TABLES) | {"controls"}
    for name in tables.PAPER_TABLES:
        spec = tables.TABLES[name]
        if name in ("table1", "table2"):
            assert [r.label for r in spec.rows] == ["w/o SFT", "SFT", "Reca", "Ours"]
        else:
            assert [r.label for r in spec.rows if not r.beyond_paper] == list(paper.rows(name)), name
        for r in spec.rows:  # a row the paper does not print says so in its label
            assert r.beyond_paper == ("beyond the paper" in r.label), r.label


def test_table3_zero_row_is_sft_and_the_grounded_mask_row_is_extra():
    """The paper's η = 0 row (72.1) equals its SFT row (Tables 1, 6, 9: 72.08): the 0% row is the SFT
    run of Table 1 (one config hash, one run); SeGroS with η = 0 is an extra row."""
    t1, t3 = tables.get_table("table1"), tables.get_table("table3")
    assert paper.table("table3").loc["0%", "GenEval"] == pytest.approx(paper.table("table9").loc["Standard T2I", "GenEval"], abs=0.05)
    for seed in (0, 1, 2):
        zero = tables.row_config(t3, t3.row("0%"), seed=seed)
        assert zero.method == "sft"
        assert store.config_hash(zero) == store.config_hash(tables.row_config(t1, t1.row("SFT"), seed=seed))
    extra = t3.row(tables.ETA0_GROUNDED)
    assert extra.beyond_paper and tables.row_config(t3, extra).method == "segros"
    assert tables.row_config(t3, extra).eta == 0.0


def test_table4_has_a_stopwords_kept_row():
    t4 = tables.get_table("table4")
    both, kept = (tables.row_config(t4, t4.row(label)) for label in ("intra+inter", tables.STOPWORDS_KEPT))
    assert both.stopwords is True and kept.stopwords is False and kept.text_filter == "both"
    assert store.config_hash(both) != store.config_hash(kept)
    assert [r.label for r in t4.select("both+stopwords")] == [tables.STOPWORDS_KEPT]


def test_row_configs_carry_the_switches():
    t3, t4, t5 = (tables.get_table(n) for n in ("table3", "table4", "table5"))
    assert tables.row_config(t3, t3.row("10%"), seed=2).eta == pytest.approx(0.1)
    assert tables.row_config(t3, t3.row("10%"), seed=2).seed == 2
    assert tables.row_config(t4, t4.row("intra"), seed=0).text_filter == "intra"
    c = tables.row_config(t5, t5.row("hint=bottom, seen=top"))
    assert (c.hint_from, c.seen_from) == ("bottom", "top")
    wo = tables.row_config(tables.get_table("table1"), tables.get_table("table1").row("w/o SFT"), seed=5)
    assert wo.method == "none" and wo.seed == 0  # the start checkpoint does not depend on the seed
    # Table 3's η = 0.3 row is Table 1's SeGroS row: the same config, so the same run
    t1 = tables.get_table("table1")
    assert store.config_hash(tables.row_config(t3, t3.row("30%"), seed=1)) == \
        store.config_hash(tables.row_config(t1, t1.row("Ours"), seed=1))


def test_select_validates_and_keeps_reference_rows():
    t3, t8 = tables.get_table("table3"), tables.get_table("table8")
    assert [r.label for r in t3.select(0.3)] == ["30%"]
    assert [r.label for r in t3.select([0.0, 1.0])] == ["0%", "100%", tables.ETA0_GROUNDED]
    assert [r.label for r in t8.select([0.5])] == ["w/o SFT", "SFT", "Ours (alpha=0.5)"]
    with pytest.raises(ValueError, match="eta"):
        t3.select(0.25)
    with pytest.raises(ValueError, match="no swept parameter"):
        tables.get_table("table6").select([1])
    with pytest.raises(ValueError, match="table"):
        tables.get_table("table11")


def _fake_run(runs_dir, table, config, overall):
    """A finished run as the store keeps it (config.json + results.json), without training."""
    run_dir = os.path.join(runs_dir, table, store.run_name(config))
    store.prepare(run_dir, config)
    g = {t: overall for t in TAGS}
    g["overall"] = overall
    store.atomic_write_json(os.path.join(run_dir, "results.json"),
                           {"hash": store.config_hash(config), "geneval": g, "qa": {"overall": 50.0}})


def test_reproduce_reads_every_row_the_store_holds_across_tables(tmp_path):
    runs_dir = str(tmp_path)
    t1, t3 = tables.get_table("table1"), tables.get_table("table3")
    for seed, v in ((0, 10.0), (1, 14.0)):
        _fake_run(runs_dir, "table1", tables.row_config(t1, t1.row("Ours"), seed=seed), v)  # = Table 3's 30%
        _fake_run(runs_dir, "table3", tables.row_config(t3, t3.row("0%"), seed=seed), v - 4)
    long = tables.reproduce("table3", seeds=(0, 1), runs_dir=runs_dir, run_missing=False)
    assert sorted(long["row"].unique()) == ["0%", "30%"]
    out = tables.paper_vs_small("table3", long)
    assert out.loc["30%", "small mean"] == 12.0 and out.loc["30%", "runs"] == 2
    assert out.loc["0%", "small mean"] == 8.0 and out.loc["10%", "runs"] == 0
    assert out.loc["30%", "paper GenEval"] == paper.cell("table3", "30%", "GenEval")
    assert out.loc["30%", "small sd"] == pytest.approx(2.8, abs=0.05)


def test_claim_verdicts(tmp_path):
    assert stats.verdict([(2.5, 1.0), (3.0, 0.5)]) == "reproduces"
    assert stats.verdict([(2.5, 1.0), (-3.0, 0.5)]) == "contradicted"
    assert stats.verdict([(1.5, 1.0), (3.0, 0.5)]) == "same direction, within noise"
    assert stats.verdict([(0.5, 1.0), (-0.1, 0.5)]) == "within noise"
    assert stats.verdict([]) == "not run"
    runs_dir = str(tmp_path)
    t1 = tables.get_table("table1")
    for seed in (0, 1, 2):
        _fake_run(runs_dir, "table1", tables.row_config(t1, t1.row("Ours"), seed=seed), 20.0 + seed)
        _fake_run(runs_dir, "table1", tables.row_config(t1, t1.row("SFT"), seed=seed), 10.0 + seed)
    claims = tables.claims_table(runs_dir=runs_dir)
    row = claims.loc["SeGroS beats SFT (Table 1, Harmon-0.5B)"]
    assert row["at small scale"] == "reproduces" and row["runs"] == "3 vs 3"
    assert row["paper"] == "81.5 vs 72.1"
    assert row["difference [±2 SE]"] == "+10.0 [+8.4, +11.6]"  # 10 ± 2·sqrt(2/3)
    assert claims.loc["SeGroS beats Reca (Table 1, Harmon-0.5B)", "at small scale"] == "not run"


def test_committed_store_holds_every_run_the_notebooks_need():
    """nbval runs the table notebooks at their defaults and must never train: every default run
    is in the committed store. A changed TrainConfig default changes the config hashes; then
    `make reproduce RUNS=runs` (or `python -m segros.notebooks ...`) refills the store."""
    runs_dir = os.path.join(os.path.dirname(__file__), "..", "runs")
    for table, preset in (("table1", "small"), ("table1", "small-showo"), ("table2", "small"), ("table3", "small"),
                          ("table4", "small"), ("table5", "small"), ("table6", "small"), ("table8", "small"),
                          ("table9", "small"), ("controls", "small")):
        long = tables.reproduce(table, preset=preset, seeds=(0, 1, 2), runs_dir=runs_dir, run_missing=False)
        assert not long.attrs["damaged"], long.attrs["damaged"]
        spec = tables.get_table(table)
        for row in spec.rows:
            n = len(long[long["row"] == row.label])
            want = len(tables.row_seeds(row, (0, 1, 2)))
            assert n == want, f"{table} ({preset}) row {row.label!r}: {n} of {want} runs in the store"


def _small_store(runs_dir):
    """Table 6's rows over three seeds, as finished runs."""
    t6 = tables.get_table("table6")
    for row, base in (("SFT", 5.0), ("Ours", 7.0), ("Ours (drop-loss)", 8.0)):
        for seed in (0, 1, 2):
            _fake_run(runs_dir, "table6", tables.row_config(t6, t6.row(row), seed=seed), base + seed)
    return t6


def test_a_table_over_a_damaged_store_names_every_damaged_entry(tmp_path, capsys):
    """A truncated results.json and a missing config.json are reported by path beside the table (the
    notebooks' note and `python -m segros.tables`); the rows they would have filled show fewer runs."""
    runs_dir = str(tmp_path)
    t6 = _small_store(runs_dir)
    truncated = os.path.join(runs_dir, "table6", store.run_name(tables.row_config(t6, t6.row("Ours (drop-loss)"), seed=1)))
    no_config = os.path.join(runs_dir, "table6", store.run_name(tables.row_config(t6, t6.row("SFT"), seed=2)))
    with open(os.path.join(truncated, "results.json")) as f:
        text = f.read()
    with open(os.path.join(truncated, "results.json"), "w") as f:
        f.write(text[:len(text) // 2])
    os.remove(os.path.join(no_config, "config.json"))

    long = tables.reproduce("table6", runs_dir=runs_dir, run_missing=False)
    truncated, no_config = os.path.join(truncated, "results.json"), os.path.join(no_config, "config.json")
    damaged = {d.path: d.error for d in long.attrs["damaged"]}
    assert damaged.keys() == {truncated, no_config}
    assert damaged[truncated].startswith("JSONDecodeError") and damaged[no_config] == "missing"
    assert long.groupby("row").size().to_dict() == {"SFT": 2, "Ours": 3, "Ours (drop-loss)": 2}
    note = tables.damage_note(long)
    assert truncated in note and no_config in note and "2 entries" in note
    assert truncated in capsys.readouterr().err  # the scan prints them too

    tables.main(["--runs-dir", runs_dir])
    out = capsys.readouterr().out
    assert truncated in out and no_config in out and "damaged" in out
    # the claims' verdicts still come out, over the runs that could be read
    assert "Drop-loss" in out
    # a run of the store that is damaged is not trained over: rebuilding it names the file
    with pytest.raises(store.StoreDamage, match="config.json: missing"):
        tables.reproduce("table6", runs_dir=runs_dir, values=None, run_missing=True, progress=False)


def test_an_intact_store_prints_no_damage(tmp_path, capsys):
    _small_store(str(tmp_path))
    long = tables.reproduce("table6", runs_dir=str(tmp_path), run_missing=False)
    assert long.attrs["damaged"] == [] and tables.damage_note(long) == ""
    tables.main(["--runs-dir", str(tmp_path)])
    assert "damaged" not in capsys.readouterr().out


def test_table1_runs_every_backbone_of_the_small_preset():
    assert tables.table1_presets("small") == ("small", "small-showo")
    assert tables.table1_presets("paper-harmon-0.5b") == ("paper-harmon-0.5b",)
    assert [tables.paper_backbone(p) for p in ("small", "small-showo", "paper-openuni-3.6b")] == \
        ["Harmon-0.5B", "Show-o-256", "OpenUni-3.6B"]
    with pytest.raises(ValueError, match="valid presets"):
        tables.table1_presets("presets")


# ----------------------------------------------------------------------------- sweeps beyond the paper's rows
def test_a_swept_value_beyond_the_paper_becomes_a_row_in_order():
    t3, t8 = tables.get_table("table3"), tables.get_table("table8")
    paper_rows = [r.label for r in t3.rows]
    ext = t3.with_values(0.7, preset="small")
    labels = [r.label for r in ext.rows]
    assert labels == paper_rows[:paper_rows.index("50%") + 1] + ["70%"] + paper_rows[paper_rows.index("50%") + 1:]
    assert [r.label for r in t3.rows] == paper_rows  # the paper's spec is unchanged
    assert [r.label for r in ext.select([0.7, 0.3])] == ["30%", "70%"]
    c = tables.row_config(ext, ext.row("70%"), seed=1)
    assert (c.method, c.eta, c.seed) == ("segros", pytest.approx(0.7), 1)
    # a paper value adds nothing; several values at once; reference rows of Table 8 stay first
    assert t3.with_values([0.3, 1.0]) is t3
    assert [r.label for r in t8.with_values([2.0, 0.25]).rows] == [
        "w/o SFT", "SFT", "Ours (alpha=0)", "Ours (alpha=0.25)", "Ours (alpha=0.5)", "Ours (alpha=1.0)", "Ours (alpha=2)"]
    t5 = tables.get_table("table5")
    assert t5.with_values("top/top") is t5


@pytest.mark.parametrize("table, value, message", [
    ("table3", 1.5, "eta must be in"),
    ("table3", "lots", "eta must be a number"),
    ("table8", -0.5, "alpha must be in"),
    ("table4", "both_ways", "text_filter must be one of"),
    ("table5", "top-bottom", "hint_seen must be '<hint_from>/<seen_from>'"),
    ("table5", "top/middle", "seen_from must be one of"),
])
def test_an_invalid_swept_value_stops_with_a_clear_error(table, value, message):
    with pytest.raises(ValueError, match=message):
        tables.get_table(table).with_values(value, preset="small")
    with pytest.raises(ValueError, match="no swept parameter"):
        tables.get_table("table6").with_values(0.5)


def test_reproduce_and_the_notebook_show_a_value_beyond_the_paper(tmp_path):
    from segros.notebooks import TableNotebook  # layer 10, the notebooks' cells

    runs_dir = str(tmp_path / "runs")
    t3 = tables.get_table("table3")
    ext = t3.with_values(0.7, preset="small")
    for seed in (0, 1):
        for label, v in (("50%", 8.0), ("70%", 9.0), ("80%", 7.0)):
            _fake_run(runs_dir, "table3", tables.row_config(ext, ext.row(label), seed=seed), v + seed)
    long = tables.reproduce("table3", seeds=(0, 1), runs_dir=runs_dir, values=0.7, run_missing=False)
    assert list(dict.fromkeys(long["row"])) == ["50%", "70%", "80%"]
    out = tables.paper_vs_small(ext, long)
    assert list(out.index) == [r.label for r in ext.rows]
    assert out.loc["70%", "small mean"] == 9.5 and out.loc["70%", "runs"] == 2
    assert np.isnan(out.loc["70%", "paper GenEval"])  # no paper number for it
    assert out.loc["80%", "paper GenEval"] == paper.cell("table3", "80%", "GenEval")
    # at the defaults the 70% runs are not part of the table
    assert "70%" not in set(tables.reproduce("table3", seeds=(0, 1), runs_dir=runs_dir, run_missing=False)["row"])

    nb = TableNotebook("table3", values=[0.5, 0.7], seeds=[0, 1], runs_dir=runs_dir,
                       figures_dir=str(tmp_path / "fig"), run_missing=False)
    nb.reproduce()
    table = nb.table()
    assert list(table.index[table["runs"] > 0]) == ["50%", "70%", "80%"]
    nb.check()
    nb.plot()
    assert (tmp_path / "fig" / "table3.png").is_file()
    assert "| 70% |  |" in (tmp_path / "fig" / "table3.md").read_text()  # the empty paper cell
    with pytest.raises(ValueError, match="eta must be in"):
        TableNotebook("table3", values=1.5, runs_dir=runs_dir, run_missing=False)


# ----------------------------------------------------------------------------- the controls of the claims table
def test_intervals_and_the_aa_verdict():
    assert stats.interval((1.0, 0.5)) == (0.0, 2.0)
    assert stats.interval((1.0, 0.5), k=3) == (-0.5, 2.5)
    assert stats.format_difference((2.25, 1.5)) == "+2.2 [-0.8, +5.2]"
    assert stats.aa_verdict((0.9, 0.5)) == "no difference (passes)"
    assert stats.aa_verdict((-1.1, 0.5)) == "differs (fails)"
    assert stats.aa_verdict(None) == "not run"


def test_aa_rows_run_a_disjoint_seed_set():
    controls = tables.get_table("controls")
    aa, sft = controls.row("SFT (A/A)"), controls.row("SFT")
    assert tables.row_seeds(aa, (0, 1, 2)) == [3, 4, 5] and tables.row_seeds(sft, (0, 1, 2)) == [0, 1, 2]
    assert tables.row_seeds(aa, (0, 1, 2, 3, 4)) == [5, 6, 7, 8, 9]
    assert tables.row_seeds(controls.row("w/o SFT"), (0, 1, 2)) == [0]
    # the same config as Table 1's SFT row: only the seeds differ
    t1 = tables.get_table("table1")
    assert store.config_hash(tables.row_config(controls, aa, seed=3)) == \
        store.config_hash(tables.row_config(t1, t1.row("SFT"), seed=3))


def _controls_store(runs_dir, aa_shift):
    t1, controls = tables.get_table("table1"), tables.get_table("controls")
    _fake_run(runs_dir, "table1", tables.row_config(t1, t1.row("w/o SFT")), 4.0)
    for seed, v in zip((0, 1, 2), (10.0, 12.0, 14.0)):
        _fake_run(runs_dir, "table1", tables.row_config(t1, t1.row("SFT"), seed=seed), v)
    for seed, v in zip((3, 4, 5), (11.0, 13.0, 15.0)):
        _fake_run(runs_dir, "controls", tables.row_config(controls, controls.row("SFT (A/A)"), seed=seed), v + aa_shift)


def test_claims_table_reports_the_controls_with_intervals(tmp_path):
    _controls_store(str(tmp_path / "a"), aa_shift=0.0)
    claims = tables.claims_table(runs_dir=str(tmp_path / "a"))
    aa = claims.loc["A/A control: SFT on seeds 0–2 vs the same config on seeds 3–5 (must show no difference)"]
    assert aa["at small scale"] == "no difference (passes)" and aa["runs"] == "3 vs 3"
    assert aa["difference [±2 SE]"] == "-1.0 [-4.3, +2.3]"  # seeds 0-2 minus 3-5: -1 ± 2·sqrt(4/3 + 4/3)
    assert aa["small (mean ± sd)"] == "12.0 ± 2.0 vs 13.0 ± 2.0"
    pos = claims.loc["Positive control: SFT beats w/o SFT (Table 1, Harmon-0.5B)"]
    assert pos["at small scale"] == "reproduces" and pos["runs"] == "3 vs 1"
    assert pos["paper"] == "72.1 vs 67.6" and pos["difference [±2 SE]"] == "+8.0 [+5.7, +10.3]"
    # per-tag lines of the Table 1 claims, with the paper's tag columns
    tag = claims.loc["Positive control: SFT beats w/o SFT (Table 1, Harmon-0.5B): position"]
    assert tag["paper"] == f"{paper.cell('table1', 'Harmon-0.5B / SFT', 'Position'):g} vs " \
                           f"{paper.cell('table1', 'Harmon-0.5B / w/o SFT', 'Position'):g}"
    assert tag["at small scale"] == "reproduces"
    assert "SeGroS beats SFT (Table 1, Harmon-0.5B): colour attribute" in claims.index
    assert list(claims.index[:2]) == [aa.name, pos.name]  # the controls come first
    # an A/A pair whose second seed set scores higher than its spread allows fails
    _controls_store(str(tmp_path / "b"), aa_shift=6.0)
    claims = tables.claims_table(runs_dir=str(tmp_path / "b"))
    assert claims.iloc[0]["at small scale"] == "differs (fails)"
