"""The set-up promises: environment.yml lists what pyproject.toml asks for, and the layout exists."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_requirements() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in ("notebooks", "dev"):
        reqs += meta["optional-dependencies"][extra]
    return {_name(r): r.replace(" ", "") for r in reqs}


def _environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {_name(r): r.replace(" ", "") for r in pip if not r.startswith("-e")}


def test_environment_matches_pyproject():
    py, env = _pyproject_requirements(), _environment_requirements()
    assert set(py) == set(env), f"only in pyproject: {set(py) - set(env)}; only in environment.yml: {set(env) - set(py)}"
    for name in py:
        assert py[name] == env[name], f"{name}: pyproject says {py[name]!r}, environment.yml says {env[name]!r}"


def test_required_packages_are_declared():
    required = {"torch", "transformers", "jupyterlab", "papermill", "nbval", "seaborn", "datasets", "accelerate"}
    assert required <= set(_pyproject_requirements())


def test_layout_and_commands():
    for path in ("notebooks", "segros", "tests", "figures", "environment.yml", "README.md", "Makefile", ".ci/run"):
        assert (ROOT / path).exists(), path
    readme = (ROOT / "README.md").read_text()
    assert "make reproduce" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci/run").read_text()
    make = (ROOT / "Makefile").read_text()
    for target in ("install:", "test:", "reproduce:", "lab:"):
        assert re.search(rf"^{target}", make, re.M), target
    assert "torch==2.13.0" in make  # the CPU build; overridable with `make install TORCH=...`
