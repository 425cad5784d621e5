"""Parity against the official code, run in its own pinned environment (docs/adapters/).

Each family's tests are skipped unless both variables are set:

* ``SEGROS_PARITY_<FAMILY>_REPO``: a checkout of the official repository (HARMON: wusize/Harmon,
  SHOWO: showlab/Show-o, OPENUNI: wusize/OpenUni). It is put on ``PYTHONPATH`` of the subprocess.
* ``SEGROS_PARITY_<FAMILY>_PYTHON``: the interpreter of that environment (e.g. Harmon's pins:
  transformers 4.45.2, timm 0.9.12, torch 2.13.0 CPU).

The test saves tiny random weights and fixed inputs to a file, runs a driver script of ours
(``<family>_driver.py``, which imports the official modules) in the official environment, and
compares the tensors the driver writes back. Official code is never copied into this repository.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def official_env(family: str) -> tuple[str, str]:
    """(repo, python) for ``family`` or skip the test."""
    repo = os.environ.get(f"SEGROS_PARITY_{family.upper()}_REPO")
    python = os.environ.get(f"SEGROS_PARITY_{family.upper()}_PYTHON")
    if not repo or not python:
        pytest.skip(f"set SEGROS_PARITY_{family.upper()}_REPO and SEGROS_PARITY_{family.upper()}_PYTHON to run")
    if not Path(repo).is_dir():
        pytest.fail(f"SEGROS_PARITY_{family.upper()}_REPO={repo!r} is not a folder")
    return repo, python


def run_driver(family: str, inputs: Path, outputs: Path, timeout: int = 600) -> str:
    """Run ``<family>_driver.py inputs outputs`` with the official repo on PYTHONPATH; return its log."""
    repo, python = official_env(family)
    env = dict(os.environ, PYTHONPATH=repo, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([python, str(HERE / f"{family}_driver.py"), str(inputs), str(outputs)],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"official {family} driver failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


@pytest.fixture
def official():
    """``official(family)`` -> a runner ``run(inputs, outputs)`` for that family (skips when unset)."""
    def get(family: str):
        official_env(family)
        return lambda inputs, outputs: run_driver(family, inputs, outputs)
    return get


@pytest.fixture
def report_diffs(request):
    """Collect ``{piece: max abs diff}``; printed at the end of the test (run with ``-s``)."""
    diffs: dict[str, float] = {}
    yield diffs
    for k, v in diffs.items():
        print(f"[parity {request.node.name}] {k}: max |diff| = {v:.3e}")
