"""The committed notebooks keep what papermill and nbval need, and nothing volatile."""

import json
from pathlib import Path

import pytest

from segros import notebooks

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_clean(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert not set(nb["metadata"]) & set(notebooks.VOLATILE_NOTEBOOK_KEYS)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    tagged = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert code.index(tagged[0]) == 0, "the parameters cell is the first code cell"
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown" and "§" in "".join(first["source"]), \
        "opens with a markdown cell naming the paper section it reproduces"
    for c in code:
        assert not set(c["metadata"]) & set(notebooks.VOLATILE_CELL_KEYS)
        assert c["execution_count"] is not None, "nbval skips cells whose execution_count is null"
        assert not any(o.get("name") == "stderr" for o in c["outputs"])
    assert any(c["outputs"] for c in code), "no outputs: nbval would compare nothing"


def test_strip_removes_volatile_metadata(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
    nb.metadata["papermill"] = {"duration": 1.0}
    nb.cells[0].metadata["execution"] = {"iopub.status.busy": "now"}
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stderr", text="100%|###|"),
                           nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    p = tmp_path / "x.ipynb"
    nbformat.write(nb, str(p))
    notebooks.strip(p)
    out = json.loads(p.read_text())
    assert "papermill" not in out["metadata"] and out["metadata"]["kernelspec"]["name"] == "python3"
    assert "execution" not in out["cells"][0]["metadata"]
    assert [o["name"] for o in out["cells"][0]["outputs"]] == ["stdout"]


def test_project_path_resolves_from_any_folder(tmp_path, monkeypatch):
    root = Path(__file__).resolve().parents[1]
    for cwd in (root, root / "notebooks", root / "segros" / "backbones"):
        monkeypatch.chdir(cwd)
        assert notebooks.project_path("runs") == str(root / "runs")
    assert notebooks.project_path(str(tmp_path)) == str(tmp_path)  # absolute paths stay
