"""The committed notebooks keep what papermill and nbval need, and nothing volatile; they share one
parameter vocabulary and refuse a parameter they do not declare."""

import json
import re
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


# ---- one parameter vocabulary, and a misspelt parameter stops the run -----------------------------

def _parameters(path):
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    return "".join(cell["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_takes_preset_and_runs_dir_and_checks_its_parameters(path):
    source = _parameters(path)
    for name in ("preset", "runs_dir"):
        assert re.search(rf"^{name}: \w+ = ", source, re.M), f"{path.name} has no parameter {name!r}"
    assert not re.search(r"^presets:", source, re.M)  # one name, one meaning: `preset` everywhere
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "check_parameters" in "".join(code[1]["source"]) or "from_parameters" in "".join(code[1]["source"]), \
        "the cell after the parameters checks them"


def _kernel_namespace(parameters_cell, injected=None):
    """What a kernel's globals hold after the parameters cell (and papermill's injected cell) ran."""
    ns: dict = {"In": ["", parameters_cell], "get_ipython": print}
    exec(compile(parameters_cell, "params", "exec"), ns)
    if injected is not None:
        src = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in injected.items())
        ns["In"].append(src)
        exec(src, ns)
    return ns


def test_check_parameters_names_the_misspelt_one_and_the_valid_ones():
    cell = _parameters(NOTEBOOKS[0])
    assert notebooks.check_parameters(_kernel_namespace(cell))["preset"] == "small"
    ok = notebooks.check_parameters(_kernel_namespace(cell, {"preset": "small-showo", "seeds": [0]}))
    assert ok["preset"] == "small-showo" and ok["seeds"] == [0]
    with pytest.raises(ValueError) as err:
        notebooks.check_parameters(_kernel_namespace(cell, {"presets": "small", "run_dir": "x"}))
    msg = str(err.value)
    assert "['presets', 'run_dir']" in msg and "valid parameters: preset" in msg and "runs_dir" in msg


def test_check_seeds():
    assert notebooks.check_seeds(0) == [0] and notebooks.check_seeds([1, 2]) == [1, 2]
    for bad in ([], [-1], ["0"], [True]):
        with pytest.raises(ValueError, match="seeds"):
            notebooks.check_seeds(bad)


@pytest.mark.slow
def test_papermill_with_a_misspelt_parameter_stops_with_the_valid_list(tmp_path):
    import papermill

    path = NOTEBOOKS[[p.stem for p in NOTEBOOKS].index("ablation_eta")]
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(path), str(tmp_path / "out.ipynb"), parameters={"etta": 0.3},
                                   kernel_name="python3", cwd=str(path.parent), progress_bar=False)
    assert "unknown parameter(s) ['etta']" in str(err.value) and "valid parameters: preset, eta, seeds" in str(err.value)
