import numpy as np
import pandas as pd
import pytest
import matplotlib.pyplot as plt

from segros import viz


def test_beside_paper_interleaves_and_deltas():
    paper = pd.DataFrame({"GenEval": [72.1, 81.5], "DPG": [82.5, 85.4]}, index=["SFT", "Ours"])
    ours = pd.DataFrame({"GenEval": [50.0, 55.0]}, index=["SFT", "Ours"])
    out = viz.beside_paper(ours, paper, columns=["GenEval"])
    assert list(out.columns) == ["GenEval (paper)", "GenEval (small)", "GenEval (Δ)"]
    assert out.loc["Ours", "GenEval (Δ)"] == pytest.approx(55.0 - 81.5)
    with pytest.raises(ValueError, match="DPG"):
        viz.beside_paper(ours, paper, columns=["DPG"])


def test_markdown_table():
    df = pd.DataFrame({"a": [1.234, np.nan]}, index=pd.Index(["x", "y"], name="row"))
    md = viz.to_markdown(df, "{:.2f}")
    assert md.splitlines()[0] == "| row | a |"
    assert "| x | 1.23 |" in md and "| y |  |" in md


def _figure():
    fig, ax = plt.subplots(figsize=(2, 2))
    allowed = np.tril(np.ones((6, 6), dtype=bool))
    viz.plot_attention_mask(allowed, 2, 2, 2, ax=ax)
    return fig


def test_saved_figures_are_byte_stable(tmp_path):
    a = viz.save_figure(_figure(), tmp_path / "a" / "fig")
    b = viz.save_figure(_figure(), tmp_path / "b" / "fig")
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes(), pa.suffix


def test_attention_mask_plot_checks_shape():
    with pytest.raises(ValueError, match="allowed"):
        viz.plot_attention_mask(np.ones((3, 3), bool), 1, 1, 2)


def test_grounding_overlay_upsamples_grid():
    img = np.zeros((8, 8, 3), np.uint8)
    up = viz._grid_overlay(img, np.arange(4.0), (2, 2))
    assert up.shape == (8, 8) and up[0, 0] == 0 and up[0, 7] == 1 and up[7, 0] == 2 and up[7, 7] == 3
