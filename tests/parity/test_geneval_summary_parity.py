"""Our GenEval summary against GenEval's own ``evaluation/summary_scores.py`` on the same results.jsonl.

Skipped unless ``SEGROS_PARITY_GENEVAL_REPO`` names a GenEval checkout; the script needs only numpy
and pandas, so it runs with ``SEGROS_PARITY_GENEVAL_PYTHON`` or, by default, this interpreter.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from segros.eval.geneval import TAGS
from segros.eval.geneval_scoring import summarize_results_file

pytestmark = pytest.mark.parity


def test_summary_equals_summary_scores_py(tmp_path):
    repo = os.environ.get("SEGROS_PARITY_GENEVAL_REPO")
    if not repo:
        pytest.skip("set SEGROS_PARITY_GENEVAL_REPO to a GenEval checkout to run")
    script = os.path.join(repo, "evaluation", "summary_scores.py")
    if not os.path.isfile(script):
        pytest.fail(f"{script} not found")
    python = os.environ.get("SEGROS_PARITY_GENEVAL_PYTHON", sys.executable)
    rng = np.random.default_rng(0)
    rows = []
    # 553 prompts x 4 images with tags in a shuffled order, unequal tag sizes and per-tag success rates,
    # 10 prompts with two images only (a partial run), as GenEval writes results (pandas, JSON lines)
    prompt_tags = rng.permutation(np.repeat(TAGS, [80, 99, 80, 94, 100, 100]))
    rate = dict(zip(TAGS, [0.97, 0.6, 0.5, 0.8, 0.2, 0.3]))
    for p, tag in enumerate(prompt_tags):
        meta = json.dumps({"tag": tag, "include": [{"class": "cup", "count": 1}], "prompt": f"prompt {p}"})
        for k in range(4 if p % 61 else 2):
            rows.append({"filename": f"{p:05d}/samples/{k:05d}.png", "tag": tag, "prompt": f"prompt {p}",
                         "correct": bool(rng.random() < rate[tag]), "reason": "", "metadata": meta, "details": "{}"})
    path = tmp_path / "results.jsonl"
    with open(path, "w") as f:
        pd.DataFrame(rows).to_json(f, orient="records", lines=True)
    out = subprocess.run([python, script, str(path)], capture_output=True, text=True, check=True).stdout
    ours = summarize_results_file(path)

    assert f"Total images: {ours['n_images']}" in out
    assert f"Total prompts: {ours['n_prompts']}" in out
    assert f"% correct images: {ours['image_accuracy']:.2%}" in out
    assert f"% correct prompts: {ours['prompt_accuracy']:.2%}" in out
    printed = re.findall(r"^(\w+)\s+= ([\d.]+)% \((\d+) / (\d+)\)$", out, flags=re.M)
    assert [t for t, *_ in printed] == list(ours["tags"])  # same tags in the same (first-appearance) order
    for tag, pct, k, n in printed:
        assert f"{ours['tags'][tag]:.2%}" == f"{pct}%"
        assert int(k) / int(n) == pytest.approx(ours["tags"][tag], abs=1e-12)
    overall = float(re.search(r"Overall score \(avg\. over tasks\): ([\d.]+)", out).group(1))
    assert f"{ours['overall']:.5f}" == f"{overall:.5f}"
