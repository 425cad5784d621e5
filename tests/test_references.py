"""Every reference in the repository opens onto something in the repository.

Docstrings, comments and code (segros/, tests/, benchmarks/), notebook cells, README.md, Makefile
and docs/ are read as text. A path into this repository (``docs/conventions.md``,
``tests/parity/test_harmon_parity.py``, ...) must exist; a markdown link of docs/ must resolve from
its file; a dotted ``segros.*`` name must import (a module, or a name in one). Nothing may point
outside: no aid files of the authors' set-up, no sibling folders, no issue numbers.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve()

# what a clone has and a reference may not name (spelt in pieces, so this file does not match itself)
FORBIDDEN = [re.compile(p, re.I) for p in (
    r"\b" + "DESIGN" + r"\.md\b", r"\b" + "REFERENCES" + r"\.md\b", r"\b" + "NOTEBOOKS" + r"\.md\b",
    r"\.\./" + "shared", r"/work/" + "shared", r"\b" + "issue" + r"s?\s*#?\d+")]
# a path into the repository; one that runs into a placeholder (``setup_${fam}_env.sh``, ``<table>``) is a pattern
REPO_PATH = re.compile(r"(?<![\w/.'{-])((?:segros|tests|benchmarks|notebooks|docs|figures|\.ci)/[\w./-]*)(?![\w$<{*\[])")
MD_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DOTTED = re.compile(r"(?<![\w.])segros(?:\.\w+)+")


def sources() -> dict[Path, str]:
    """The text of every file that may cite something (notebooks: the sources of their cells)."""
    files = [*ROOT.glob("segros/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("benchmarks/*.py"),
             *ROOT.glob("docs/**/*.md"), ROOT / "README.md", ROOT / "Makefile", *ROOT.glob("notebooks/*.ipynb")]
    out = {}
    for path in files:
        if path.resolve() == SELF:
            continue
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb":
            text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"])
        out[path] = text
    return out


SOURCES = sources()


def _resolves(dotted: str) -> bool:
    """True when ``dotted`` is a module of this checkout, or a name in one."""
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        if not Path(obj.__file__).resolve().is_relative_to(ROOT):  # another install of segros
            return False
        for attr in parts[k:]:
            try:
                obj = getattr(obj, attr)
            except AttributeError:
                return False
            except ImportError:  # a name behind an optional dependency (segros.lmms_model.SegrosLMMS)
                return True
        return True
    return False


def test_nothing_points_outside_the_repository():
    bad = [f"{path.relative_to(ROOT)}: {m.group(0)!r}" for path, text in SOURCES.items()
           for pattern in FORBIDDEN for m in pattern.finditer(text)]
    assert not bad, "\n".join(bad)


def test_every_cited_repository_file_exists():
    bad = []
    for path, text in SOURCES.items():
        for m in REPO_PATH.finditer(text):
            ref = m.group(1).rstrip(".,:;")
            if not (ROOT / ref).exists():
                bad.append(f"{path.relative_to(ROOT)}: {ref}")
    assert not bad, "\n".join(sorted(set(bad)))


def test_every_markdown_link_resolves():
    bad = []
    for path, text in SOURCES.items():
        if path.suffix != ".md":
            continue
        for m in MD_LINK.finditer(text):
            target = m.group(1).split("#")[0]
            if target and "://" not in target and not (path.parent / target).exists():
                bad.append(f"{path.relative_to(ROOT)}: {m.group(1)}")
    assert not bad, "\n".join(bad)


def test_every_dotted_segros_name_exists():
    names = {m.group(0) for text in SOURCES.values() for m in DOTTED.finditer(text)}
    bad = sorted(n for n in names if not _resolves(n))
    assert not bad, "\n".join(f"{n} (in {[str(p.relative_to(ROOT)) for p, t in SOURCES.items() if n in t][:3]})"
                              for n in bad)


@pytest.mark.parametrize("text,found", [
    ("see " + "DESIGN" + ".md", True), ("(" + "issue" + " 4 item 3)", True), ("../" + "shared/x", True),
    ("an issue with the tokenizer", False),
])
def test_the_forbidden_patterns_match(text, found):
    assert any(p.search(text) for p in FORBIDDEN) == found


def test_the_checks_can_fail():
    assert not (ROOT / "docs/nothing-here.md").exists()
    assert REPO_PATH.search("see docs/nothing-here.md").group(1) == "docs/nothing-here.md"
    assert not _resolves("segros.runs") and not _resolves("segros.train.no_such_name")
    assert _resolves("segros.train.t2i_step") and _resolves("segros.backbones.harmon.Harmon.t2i_loss")
