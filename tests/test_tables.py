"""segros.tables: which runs make each table, how the store is read back, the claim verdicts."""

import os

import pytest

from segros import paper, runs, tables

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def test_rows_match_the_papers_row_keys():
    for name, spec in tables.TABLES.items():
        if name in ("table1", "table2"):
            assert [r.label for r in spec.rows] == ["w/o SFT", "SFT", "Reca", "Ours"]
        else:
            assert [r.label for r in spec.rows] == list(paper.rows(name)), name


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
    assert runs.config_hash(tables.row_config(t3, t3.row("30%"), seed=1)) == \
        runs.config_hash(tables.row_config(t1, t1.row("Ours"), seed=1))


def test_select_validates_and_keeps_reference_rows():
    t3, t8 = tables.get_table("table3"), tables.get_table("table8")
    assert [r.label for r in t3.select(0.3)] == ["30%"]
    assert [r.label for r in t3.select([0.0, 1.0])] == ["0%", "100%"]
    assert [r.label for r in t8.select([0.5])] == ["w/o SFT", "SFT", "Ours (alpha=0.5)"]
    with pytest.raises(ValueError, match="eta"):
        t3.select(0.25)
    with pytest.raises(ValueError, match="no swept parameter"):
        tables.get_table("table6").select([1])
    with pytest.raises(ValueError, match="table"):
        tables.get_table("table11")


def _fake_run(store, table, config, overall):
    """A finished run as the store keeps it (config.json + results.json), without training."""
    run_dir = os.path.join(store, table, runs.run_name(config))
    runs.prepare(run_dir, config)
    g = {t: overall for t in TAGS}
    g["overall"] = overall
    runs.atomic_write_json(os.path.join(run_dir, "results.json"),
                           {"hash": runs.config_hash(config), "geneval": g, "qa": {"overall": 50.0}})


def test_reproduce_reads_every_row_the_store_holds_across_tables(tmp_path):
    store = str(tmp_path)
    t1, t3 = tables.get_table("table1"), tables.get_table("table3")
    for seed, v in ((0, 10.0), (1, 14.0)):
        _fake_run(store, "table1", tables.row_config(t1, t1.row("Ours"), seed=seed), v)  # = Table 3's 30%
        _fake_run(store, "table3", tables.row_config(t3, t3.row("0%"), seed=seed), v - 4)
    long = tables.reproduce("table3", seeds=(0, 1), runs_dir=store, run_missing=False)
    assert sorted(long["row"].unique()) == ["0%", "30%"]
    out = tables.paper_vs_small("table3", long)
    assert out.loc["30%", "small mean"] == 12.0 and out.loc["30%", "runs"] == 2
    assert out.loc["0%", "small mean"] == 8.0 and out.loc["10%", "runs"] == 0
    assert out.loc["30%", "paper GenEval"] == paper.cell("table3", "30%", "GenEval")
    assert out.loc["30%", "small sd"] == pytest.approx(2.8, abs=0.05)


def test_claim_verdicts(tmp_path):
    assert tables.verdict([(2.5, 1.0), (3.0, 0.5)]) == "reproduces"
    assert tables.verdict([(2.5, 1.0), (-3.0, 0.5)]) == "contradicted"
    assert tables.verdict([(1.5, 1.0), (3.0, 0.5)]) == "same direction, within noise"
    assert tables.verdict([(0.5, 1.0), (-0.1, 0.5)]) == "within noise"
    assert tables.verdict([]) == "not run"
    store = str(tmp_path)
    t1 = tables.get_table("table1")
    for seed in (0, 1, 2):
        _fake_run(store, "table1", tables.row_config(t1, t1.row("Ours"), seed=seed), 20.0 + seed)
        _fake_run(store, "table1", tables.row_config(t1, t1.row("SFT"), seed=seed), 10.0 + seed)
    claims = tables.claims_table(runs_dir=store)
    row = claims.loc["SeGroS beats SFT (Table 1, Harmon-0.5B)"]
    assert row["at small scale"] == "reproduces" and row["seeds"] == 3
    assert row["paper GenEval"] == "81.5 vs 72.1"
    assert claims.loc["SeGroS beats Reca (Table 1, Harmon-0.5B)", "at small scale"] == "not run"


def test_committed_store_holds_every_run_the_notebooks_need():
    """nbval runs the table notebooks at their defaults and must never train: every default run
    is in the committed store. A changed TrainConfig default changes the config hashes; then
    `make reproduce RUNS=runs` (or `python -m segros.notebooks ...`) refills the store."""
    store = os.path.join(os.path.dirname(__file__), "..", "runs")
    for table, preset in (("table1", "small"), ("table1", "small-showo"), ("table2", "small"), ("table3", "small"),
                          ("table4", "small"), ("table5", "small"), ("table6", "small"), ("table8", "small"),
                          ("table9", "small")):
        long = tables.reproduce(table, preset=preset, seeds=(0, 1, 2), runs_dir=store, run_missing=False)
        spec = tables.get_table(table)
        for row in spec.rows:
            n = len(long[long["row"] == row.label])
            want = 3 if row.overrides.get("method") else 1
            assert n == want, f"{table} ({preset}) row {row.label!r}: {n} of {want} runs in the store"
