"""pytest set-up shared by tests/ and the notebooks run with ``pytest --nbval``.

nbval compares every output of a re-run notebook with the committed one. stderr carries tqdm
bars and library warnings that differ between runs and machines, so it is never compared;
stdout and rich outputs are (after tests/nbval_sanitize.cfg).
"""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collectstart(collector):
    if getattr(collector, "fspath", None) is not None and str(collector.fspath).endswith(".ipynb"):
        collector.skip_compare += ("stderr",)
