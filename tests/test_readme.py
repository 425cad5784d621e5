"""The README's API example runs and means what it says; its training commands run as written."""

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

from segros import pipeline
from segros.train.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_example_runs():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    sup, mask = scope["sup"], scope["mask"]
    n = scope["N"]
    assert sup.hint_idx.shape == (2, int(0.3 * n))
    assert (sup.seen ^ sup.masked).all()
    assert mask.shape[-1] == sup.hint_idx.shape[1] + scope["L"] + n


def training_commands():
    """Every ``python -m segros.train ...`` command of the README's bash blocks, as argv lists."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("python -m segros.train"):
                out.append(shlex.split(line)[3:])
    return out


COMMANDS = training_commands()
SMALL = [c for c in COMMANDS if "paper-" not in " ".join(c)]
PAPER = [c for c in COMMANDS if "paper-" in " ".join(c)]


def test_the_readme_has_training_commands():
    assert len(SMALL) >= 2 and any(c[:1] == ["pretrain"] for c in SMALL) and len(PAPER) == 3


@pytest.fixture
def committed_bases(tmp_path, monkeypatch):
    """A working folder whose ``runs/base`` is a copy of the committed bases; a fine-tune that would
    pretrain a new base fails instead."""
    shutil.copytree(ROOT / "runs" / "base", tmp_path / "runs" / "base")
    monkeypatch.chdir(tmp_path)

    def no_new_base(config, out, **kw):
        raise AssertionError(f"pretrained a new base in {out} instead of reusing the committed one")
    monkeypatch.setattr(pipeline, "pretrain", no_new_base)
    return sorted(os.listdir(tmp_path / "runs" / "base"))


@pytest.mark.slow
@pytest.mark.parametrize("argv", SMALL, ids=[" ".join(c) for c in SMALL])
def test_readme_small_commands_run_as_written_and_reuse_the_committed_base(argv, committed_bases, tmp_path):
    assert main([*argv, "--max-steps", "2", "--quiet"]) == 0
    out = Path(argv[argv.index("--out") + 1])
    assert (tmp_path / out / "model.safetensors").is_file()
    assert sorted(os.listdir(tmp_path / "runs" / "base")) == committed_bases  # no new base in the store
    assert not (tmp_path / "base").exists()  # nor one derived from --out


@pytest.mark.parametrize("argv", PAPER, ids=[c[c.index("--preset") + 1] for c in PAPER])
def test_readme_paper_commands_stop_with_a_clear_error_without_the_checkpoints(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # without the data: stopped before anything is built (exit 2), naming the missing path
    assert main([*argv, "--max-steps", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "t2i_data='/data/midjourney-v6-llava': no such file or folder" in err and "Traceback" not in err
    # with data (the shapes world asked for) but without the checkpoints: the backbone names them (exit 1)
    assert main([*argv, "--max-steps", "1", "--quiet", "--set", "t2i_data=shapes", "--set", "i2t_data=shapes",
                 "--set", "i2t_image_root=null"]) == 1
    err = capsys.readouterr().err
    assert "cannot build backbone" in err and "/ckpt/" in err and "Traceback" not in err
