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
