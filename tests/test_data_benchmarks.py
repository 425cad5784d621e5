"""The data benchmarks run (tiny settings) and their arithmetic is the documented one."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_data_loading_runs_and_prints_the_table(tmp_path, capsys):
    bench = load("bench_data_loading")
    assert bench.main(["--n", "8", "--size", "64", "--target", "32", "--workers", "0,1", "--batch", "4",
                       "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (webdataset|parquet) \| (\d) \| ([\d.]+) \| [\d.]+ \| ([\d.]+) \|", out, re.M)
    assert sorted((f, w) for f, w, _, _ in rows) == [("parquet", "0"), ("parquet", "1"), ("webdataset", "0"),
                                                     ("webdataset", "1")]
    assert all(float(rate) > 0 and float(cpu) > 0 for _, _, rate, cpu in rows)
    assert "881 TFLOP per micro-step at an assumed 400 TFLOP/s sustained = 2.20 s" in out
    assert "192 images (96 T2I + 96 I2T) -> 87.2 images/s" in out
    with pytest.raises(SystemExit):
        bench.main(["--formats", "tfrecord"])


def test_demand_arithmetic():
    bench = load("bench_data_loading")
    step, images, rate = bench.demand(881.0, 400.0, 96, True)
    assert step == pytest.approx(2.2025) and images == 192 and rate == pytest.approx(192 / 2.2025)
    assert bench.demand(154.7, 400.0, 42, False)[1] == 42


def test_estimates_use_the_readme_flop_table():
    est = load("estimate_paper_runs")
    readme = (ROOT / "README.md").read_text()
    names = {"Show-o-256": "showo-256", "Show-o-512": "showo-512", "Harmon-0.5B": "harmon-0.5b",
             "Harmon-1.5B": "harmon-1.5b", "OpenUni-1.6B": "openuni-1.6b", "OpenUni-3.6B": "openuni-3.6b"}
    found = {}
    for row, sft, reca, segros in re.findall(r"^\| ([\w.-]+) \| \d+ × \d+ \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|",
                                             readme, re.M):
        found[names[row]] = {"sft": float(sft), "reca": float(reca), "segros": float(segros)}
    assert found == est.MICRO_TFLOP


def test_model_state_memory_formula():
    est = load("estimate_paper_runs")
    gib = est.state_gib(total=2 ** 30, trainable=2 ** 29, gpus=8)
    assert gib == {"1 GPU / DDP": 4 + 2 + 4, "ZeRO-2 ×8": 4 + (2 + 4) / 8, "FSDP ×8": (4 + 2 + 4) / 8}
