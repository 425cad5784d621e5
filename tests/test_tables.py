"""segros.tables and segros.stats: which runs make each table, how the store is read back (damage
included), the claim verdicts."""

import os

import pytest

from segros import paper, stats, store, tables

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def test_rows_match_the_papers_row_keys():
    for name, spec in tables.TABLES.items():
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
    assert row["at small scale"] == "reproduces" and row["seeds"] == 3
    assert row["paper GenEval"] == "81.5 vs 72.1"
    assert claims.loc["SeGroS beats Reca (Table 1, Harmon-0.5B)", "at small scale"] == "not run"


def test_committed_store_holds_every_run_the_notebooks_need():
    """nbval runs the table notebooks at their defaults and must never train: every default run
    is in the committed store. A changed TrainConfig default changes the config hashes; then
    `make reproduce RUNS=runs` (or `python -m segros.notebooks ...`) refills the store."""
    runs_dir = os.path.join(os.path.dirname(__file__), "..", "runs")
    for table, preset in (("table1", "small"), ("table1", "small-showo"), ("table2", "small"), ("table3", "small"),
                          ("table4", "small"), ("table5", "small"), ("table6", "small"), ("table8", "small"),
                          ("table9", "small")):
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
