"""The notebooks' shared cells, and keeping the committed notebooks reviewable.

Every notebook opens with a ``parameters`` cell of annotated names (``preset: str = "small"``);
the cell after it calls :func:`check_parameters`, which stops a run whose ``-p`` names a parameter
the notebook does not declare (papermill itself only warns) and lists the valid ones. The table
notebooks are :class:`TableNotebook` cells: select the rows, reproduce them through the run store,
show the table beside the paper's numbers (with a note when the store is damaged), check ranges,
plot. :func:`check_seeds` is their seed check.

``python -m segros.notebooks notebooks/*.ipynb`` runs each notebook at its defaults with
papermill (in its own folder, kernel ``python3``) and keeps what nbval needs — outputs,
execution counts, cell tags, the kernelspec — while dropping what changes on every run
(papermill timings, execution timestamps, language_info, stderr streams such as tqdm bars).
``make notebooks`` does this for every notebook.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import nbformat
import numpy as np
import pandas as pd
import papermill
from IPython.display import Image

from segros import inference, paper_eval, tables, viz
from segros.presets import get_preset
from segros.vocab import TAGS


def project_root(start: str | Path | None = None) -> Path:
    """The checkout the notebooks belong to: the nearest folder at or above ``start`` (default:
    the working directory) holding ``pyproject.toml`` and ``notebooks/``; else the folder above
    the installed package."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
            return folder
    return Path(__file__).resolve().parents[1]


def project_path(path: str | Path) -> str:
    """A notebook's ``runs_dir`` / ``figures_dir``: absolute paths stay, relative ones are taken
    from the project root, so ``papermill notebooks/ablation_eta.ipynb ...`` works from any folder."""
    path = Path(path)
    return str(path if path.is_absolute() else project_root() / path)


# -----------------------------------------------------------------------------
# parameters

INJECTED_HEADER = "# Parameters"  # the first line of the cell papermill injects after the parameters cell


def injected_parameters(namespace: Mapping[str, Any]) -> list[str]:
    """The names papermill injected into this kernel (read from its last injected cell in the input
    history ``In``); empty when the notebook runs at its defaults."""
    for source in reversed(namespace.get("In") or []):
        if source.lstrip().startswith(INJECTED_HEADER):
            tree = ast.parse(source)
            return [t.id for node in tree.body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)]
    return []


def check_parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The notebook's parameters (the annotated names of its parameters cell, with their values).

    Raises ValueError naming every injected parameter the cell does not declare, and the valid
    ones: ``papermill nb.ipynb out.ipynb -p etta 0.3`` stops here instead of running with the
    default η. Call it with ``globals()`` in the cell after the parameters cell.
    """
    declared = list(namespace.get("__annotations__", {}))
    unknown = [name for name in injected_parameters(namespace) if name not in declared]
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; valid parameters: {', '.join(declared)}")
    return {name: namespace[name] for name in declared}


def check_seeds(seeds) -> list[int]:
    """The ``seeds`` parameter as a list (``-p seeds 0`` gives an int); a clear error for anything else."""
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of non-negative integers, got {seeds!r}")
    return seeds


def display_options() -> None:
    """How the notebooks print DataFrames: one decimal, 120 characters wide."""
    pd.set_option("display.precision", 1)
    pd.set_option("display.width", 120)


# -----------------------------------------------------------------------------
# a table notebook (Tables 3-6, 8, 9)

class TableNotebook:
    """The cells every ablation notebook shares: ``from_parameters`` (check the parameters, select the
    rows), :meth:`reproduce`, :meth:`table`, :meth:`check`, :meth:`plot`."""

    def __init__(self, table: str, preset: str = "small", values: Any = None, seeds: Sequence[int] = (0, 1, 2),
                 runs_dir: str = "runs", figures_dir: str = "figures", run_missing: bool = True,
                 overrides: Mapping[str, Any] | None = None, settings: paper_eval.EvalSettings | None = None):
        get_preset(preset)  # raises on an unknown preset
        # a swept value beyond the paper's rows (-p eta 0.7) becomes a row of its own, in order;
        # an invalid one (-p eta 1.5) stops here with the config's message
        self.spec = tables.get_table(table).with_values(values, preset)
        self.preset = preset
        self.values = values
        self.selected = self.spec.select(values)
        self.seeds = check_seeds(seeds)
        self.runs_dir, self.figures_dir = project_path(runs_dir), project_path(figures_dir)
        self.run_missing = run_missing
        self.overrides = dict(overrides or {})
        self.settings = settings or paper_eval.EvalSettings()
        # paper scale: every file, weight and evaluator is checked here, before any training
        self.plan = paper_eval.preflight(table, preset, self.settings, self.overrides,
                                         methods=[r.overrides.get("method", "segros") for r in self.selected])
        self.long: pd.DataFrame | None = None

    @classmethod
    def from_parameters(cls, table: str, namespace: Mapping[str, Any]) -> "TableNotebook":
        """Check the notebook's parameters (:func:`check_parameters`), then build; the table's swept
        parameter (``eta``, ``text_filter``, ...) selects the rows; the evaluation parameters
        (:class:`segros.paper_eval.EvalSettings`) are checked by :func:`segros.paper_eval.preflight` at
        paper scale. Prints the title and the rows (and, at paper scale, the benchmarks scored)."""
        settings, params = paper_eval.split_settings(check_parameters(namespace))
        sweep = tables.get_table(table).sweep
        values = params.pop(sweep) if sweep else None
        display_options()
        nb = cls(table, values=values, settings=settings, **params)
        print(nb.spec.title)
        print("rows selected:", [r.label for r in nb.selected])
        if nb.plan is not None:
            print(nb.plan.describe())
        return nb

    def reproduce(self) -> pd.DataFrame:
        """Train the selected rows the store lacks (``run_missing``); every run the store holds. At paper
        scale each run is then scored on the table's benchmarks (:func:`segros.paper_eval.score_runs`)."""
        self.long = tables.reproduce(self.spec, preset=self.preset, seeds=self.seeds, runs_dir=self.runs_dir,
                                     values=self.values, run_missing=self.run_missing, **self.overrides)
        if self.plan is not None:
            self.long = paper_eval.score_runs(self.spec.name, self.long, self.settings, self.plan)
        print(f"{len(self.long)} runs in the store for this table")
        return self.long

    def table(self) -> pd.DataFrame:
        """The paper's GenEval beside the small-scale mean ± sd, written to ``figures_dir``; a note
        above it names every damaged store entry."""
        note = tables.damage_note(self.long)
        if note:
            print(note)
        if self.plan is not None:
            result = paper_eval.beside_paper(self.spec.name, self.long)
            viz.write_table(result, f"{self.figures_dir}/{self.spec.name}_paper_scale")
            return result
        result = tables.paper_vs_small(self.spec, self.long)
        viz.write_table(result, f"{self.figures_dir}/{self.spec.name}")
        return result

    def check(self) -> None:
        """Range checks: known rows only, every selected row present, scores in [0, 100]."""
        long, labels = self.long, [r.label for r in self.spec.rows]
        assert set(long["row"]) <= set(labels), "unexpected rows"
        selected = {r.label for r in self.selected}
        assert selected <= set(long["row"]) or not self.run_missing, "a selected row is missing"
        if self.plan is not None:  # paper scale: every benchmark column is a percentage
            scored = [c for c in long.columns if c not in ("row", "seed", "run")]
            assert scored, "no benchmark column"
            for col in scored:
                assert np.isfinite(long[col]).all() and long[col].between(0, 100).all(), col
            print("checks passed:", sorted(set(long["row"]), key=labels.index))
            return
        assert np.isfinite(long["overall"]).all() and long["overall"].between(0, 100).all()
        for tag in TAGS:
            assert long[tag].between(0, 100).all(), tag
        print("checks passed:", sorted(set(long["row"]), key=labels.index))

    def plot(self) -> Image | None:
        """The paper's column beside the small-scale runs (:func:`segros.viz.plot_beside_paper`), saved
        (at paper scale: GenEval as scored, when scored); a row beyond the paper's has no paper point."""
        order = [r.label for r in self.spec.rows if r.label in set(self.long["row"])]
        paper = tables.paper_frame(self.spec.name)["GenEval"].reindex(order)
        if self.plan is not None:
            if "overall" not in self.long:
                return None
            fig = viz.plot_beside_paper(self.long, order, paper.values, self.spec.title,
                                        ylabel=f"GenEval overall ({self.settings.geneval_scorer} scorer)")
            return Image(filename=str(viz.save_figure(fig, f"{self.figures_dir}/{self.spec.name}_paper_scale")[0]))
        fig = viz.plot_beside_paper(self.long, order, paper.values, self.spec.title)
        return Image(filename=str(viz.save_figure(fig, f"{self.figures_dir}/{self.spec.name}")[0]))


# -----------------------------------------------------------------------------
# the qualitative figure (main_results.ipynb)

def run_samples(long: pd.DataFrame, order: Sequence[str], seed: int) -> dict[str, Any]:
    """{row: the samples its run of ``seed`` keeps} for :func:`segros.viz.plot_samples`, in ``order``;
    None for a row whose run keeps none (or that the store lacks). "w/o SFT" has one run (seed 0)."""
    out = {}
    for label in order:
        runs = long[long["row"] == label]
        run = runs[runs["seed"] == seed]
        if run.empty and len(runs) == 1:  # "w/o SFT": one run whatever the seeds
            run = runs
        out[label] = inference.read_samples(run["run"].iloc[0]) if len(run) else None
    return out


# -----------------------------------------------------------------------------
# keeping the committed notebooks clean

VOLATILE_NOTEBOOK_KEYS = ("papermill", "language_info", "widgets")
VOLATILE_CELL_KEYS = ("papermill", "execution")
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def strip(path: str | Path) -> None:
    """Remove volatile metadata and stderr outputs from the notebook at ``path`` (in place)."""
    nb = nbformat.read(str(path), as_version=4)
    for key in VOLATILE_NOTEBOOK_KEYS:
        nb.metadata.pop(key, None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    for cell in nb.cells:
        for key in VOLATILE_CELL_KEYS:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
    nbformat.write(nb, str(path))


def execute(path: str | Path, **parameters) -> None:
    """Run the notebook in place with papermill from its own folder, then :func:`strip` it."""
    path = Path(path).resolve()
    papermill.execute_notebook(str(path), str(path), parameters=parameters, kernel_name="python3",
                               cwd=str(path.parent), progress_bar=False)
    strip(path)


def main(argv: list[str] | None = None) -> None:
    paths = (argv if argv is not None else sys.argv[1:])
    if not paths:
        raise SystemExit("usage: python -m segros.notebooks NOTEBOOK.ipynb [...]")
    for p in paths:
        print(f"executing {p}", flush=True)
        execute(p)


if __name__ == "__main__":
    main()
