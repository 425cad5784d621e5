"""Keep the committed notebooks reviewable: execute them in place, then strip volatile metadata.

``python -m segros.notebooks notebooks/*.ipynb`` runs each notebook at its defaults with
papermill (in its own folder, kernel ``python3``) and keeps what nbval needs — outputs,
execution counts, cell tags, the kernelspec — while dropping what changes on every run
(papermill timings, execution timestamps, language_info, stderr streams such as tqdm bars).
``make notebooks`` does this for every notebook.
"""

from __future__ import annotations

import sys
from pathlib import Path

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
    from the project root, so ``papermill notebooks/x.ipynb ...`` works from any folder."""
    path = Path(path)
    return str(path if path.is_absolute() else project_root() / path)


VOLATILE_NOTEBOOK_KEYS = ("papermill", "language_info", "widgets")
VOLATILE_CELL_KEYS = ("papermill", "execution")
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def strip(path: str | Path) -> None:
    """Remove volatile metadata and stderr outputs from the notebook at ``path`` (in place)."""
    import nbformat

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
    import papermill

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
