"""The official GenEval scorer (segros.eval.geneval_official) against a stand-in checkout written here:
a script with evaluate_images.py's command line that walks the folder as GenEval does and writes a
results.jsonl with pandas, as GenEval does. Checks our command line, environment, view and summary."""

import json
import os
import sys
import textwrap

import numpy as np
import pytest

from geneval_tiny import prompts
from segros.eval.geneval import summarize
from segros.eval.geneval_layout import IncompleteLayoutError, generate_layout
from segros.eval.geneval_official import OFFICIAL_OPTIONS, OfficialScorer, rule_check
from segros.eval.geneval_scorers import build_scorer
from segros.eval.geneval_scoring import read_results

STAND_IN = textwrap.dedent('''
    """Stand-in for GenEval's evaluation/evaluate_images.py (same command line, same walk, same output)."""
    import argparse, json, os, re, sys
    import numpy as np
    import pandas as pd
    from PIL import Image
    
    parser = argparse.ArgumentParser()
    parser.add_argument("imagedir", type=str)
    parser.add_argument("--outfile", type=str, default="results.jsonl")
    parser.add_argument("--model-config", type=str, default=None)
    parser.add_argument("--model-path", type=str, default="./")
    parser.add_argument("--options", nargs="*", type=str, default=[])
    args = parser.parse_args()
    options = dict(opt.split("=", 1) for opt in args.options)
    with open(os.environ["STAND_IN_RECORD"], "w") as f:
        json.dump({"argv": sys.argv, "cwd": os.getcwd(), "options": options,
                   "env": {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "PYTHONPATH", "HF_HUB_OFFLINE")}}, f)
    if os.environ.get("STAND_IN_FAIL"):
        print("CUDA error: no kernel image is available", file=sys.stderr)
        sys.exit(3)
    rows = []
    for sub in os.listdir(args.imagedir):
        folder = os.path.join(args.imagedir, sub)
        if not os.path.isdir(folder) or not sub.isdigit():
            continue
        meta = json.load(open(os.path.join(folder, "metadata.jsonl")))
        for name in os.listdir(os.path.join(folder, "samples")):
            path = os.path.join(folder, "samples", name)
            if not os.path.isfile(path) or not re.match(r"\\d+\\.png", name):
                continue
            bright = np.asarray(Image.open(path)).mean() > 128
            # "detect" every included object, side by side left to right, when the image is bright
            details = {req["class"]: [[10.0 + 30 * k, 10.0, 30.0 + 30 * k, 30.0, 0.9]] for k, req in enumerate(meta["include"])} if bright else {}
            correct = bright and not any("color" in r or "position" in r for r in meta["include"]) and meta["tag"] != "counting"
            if os.environ.get("STAND_IN_LIE") and sub == "00000":
                correct = not correct
            rows.append({"filename": path, "tag": meta["tag"], "prompt": meta["prompt"], "correct": bool(correct),
                         "reason": "" if correct else "stand-in", "metadata": json.dumps(meta), "details": json.dumps(details)})
    if os.environ.get("STAND_IN_SKIP"):
        rows = rows[1:]
    if os.path.dirname(args.outfile):
        os.makedirs(os.path.dirname(args.outfile), exist_ok=True)
    with open(args.outfile, "w") as fp:
        pd.DataFrame(rows).to_json(fp, orient="records", lines=True)
''')


@pytest.fixture
def checkout(tmp_path):
    root = tmp_path / "geneval"
    (root / "evaluation").mkdir(parents=True)
    (root / "evaluation" / "evaluate_images.py").write_text(STAND_IN)
    detector = tmp_path / "detector"
    detector.mkdir()
    (detector / f"{OFFICIAL_OPTIONS['model']}.pth").write_bytes(b"")
    return root, detector


@pytest.fixture
def layout(tmp_path):
    meta = prompts()[:3]  # single_object, two_object, counting
    out = tmp_path / "layout"
    generate_layout(out, meta, lambda batch, seed: [np.full((16, 16, 3), 200 if k % 2 == 0 else 40, np.uint8) for k in range(len(batch))],
                    progress=False)
    return out, meta


def test_command_environment_and_summary(checkout, layout, tmp_path, monkeypatch):
    root, detector = checkout
    out, meta = layout
    record = tmp_path / "record.json"
    monkeypatch.setenv("PYTHONPATH", "/somewhere/segros")
    monkeypatch.setenv("STAND_IN_RECORD", str(record))
    config = tmp_path / "m2f.py"
    config.write_text("# mmdet config")
    scorer = OfficialScorer(root, sys.executable, detector, model_config=config, device="1",
                            options={"bgcolor": "#999", "max_objects": 16}, env={"HF_HUB_OFFLINE": "1"})
    results = scorer.score(out, meta, outfile=tmp_path / "res" / "results.jsonl", progress=False)
    seen = json.loads(record.read_text())
    view = seen["argv"][1]
    assert seen["argv"][0] == str(root / "evaluation" / "evaluate_images.py")
    assert seen["argv"][2:] == ["--outfile", os.path.join(os.path.dirname(view), "results.jsonl"), "--model-path", str(detector),
                                "--model-config", str(config), "--options", "bgcolor=#999", "max_objects=16"]
    assert not view.startswith(str(out)) and not os.path.exists(view)  # a temporary view, removed afterwards
    assert seen["cwd"] == str(root)
    assert seen["env"] == {"CUDA_VISIBLE_DEVICES": "1", "PYTHONPATH": None, "HF_HUB_OFFLINE": "1"}
    assert seen["options"] == {"bgcolor": "#999", "max_objects": "16"}
    rows = read_results(tmp_path / "res" / "results.jsonl")
    assert [r["filename"] for r in rows] == [str(out / f"{i:05d}" / "samples" / f"{k:05d}.png") for i in range(3) for k in range(4)]
    assert results["summary"] == summarize(rows)
    # two bright images of four per prompt; counting is always wrong in the stand-in
    assert results["summary"]["tags"] == {"single_object": 0.5, "two_object": 0.5, "counting": 0.0}
    assert results["scorer"] == "official" and "mmdet" in results["detector"] and results["color_model"] == "open_clip ViT-L-14 openai"
    assert results["partial"] is False and results["rule_check"] == {"rows": 12, "disagree": []}
    assert open(results["log_file"]).read().startswith("$ " + sys.executable)


def test_partial_layout_refused_then_scored_on_a_view(checkout, layout, tmp_path, monkeypatch):
    root, detector = checkout
    out, meta = layout
    record = tmp_path / "record.json"
    monkeypatch.setenv("STAND_IN_RECORD", str(record))
    broken = out / "00001" / "samples" / "00002.png"
    broken.write_bytes(broken.read_bytes()[:30])
    (out / "00002" / "samples" / "0007.png~").write_bytes(b"stray")  # GenEval's regex would match it
    scorer = OfficialScorer(root, sys.executable, detector)
    with pytest.raises(IncompleteLayoutError, match="00002.png"):
        scorer.score(out, meta, progress=False)
    assert not record.exists()  # never started
    results = scorer.score(out, meta, allow_partial=True, progress=False)
    assert results["partial"] and results["n_images_scored"] == 11
    assert [p[0] for p in results["problems"]] == [str(broken)]
    assert str(broken) not in [r["filename"] for r in read_results(results["results_file"])]
    assert results["results_file"] == str(out / "results_official.jsonl")


def test_silent_drops_failures_and_rule_disagreements_are_caught(checkout, layout, tmp_path, monkeypatch):
    root, detector = checkout
    out, meta = layout
    monkeypatch.setenv("STAND_IN_RECORD", str(tmp_path / "record.json"))
    scorer = OfficialScorer(root, sys.executable, detector)
    monkeypatch.setenv("STAND_IN_SKIP", "1")
    with pytest.raises(ValueError, match="returned 11 rows for 12 images"):
        scorer.score(out, meta, progress=False)
    monkeypatch.delenv("STAND_IN_SKIP")
    monkeypatch.setenv("STAND_IN_FAIL", "1")
    with pytest.raises(RuntimeError, match="(?s)exit 3.*no kernel image"):
        scorer.score(out, meta, progress=False)
    monkeypatch.delenv("STAND_IN_FAIL")
    monkeypatch.setenv("STAND_IN_LIE", "1")
    results = scorer.score(out, meta, progress=False)
    assert sorted(results["rule_check"]["disagree"]) == [str(out / "00000" / "samples" / f"{k:05d}.png") for k in range(4)]


def test_rule_check_reads_official_details():
    position = {"tag": "position", "include": [{"class": "cup", "count": 1}, {"class": "apple", "count": 1, "position": ["left of", 0]}],
                "prompt": "p"}
    row = {"filename": "a.png", "metadata": json.dumps(position), "correct": True,
           "details": json.dumps({"cup": [[60.0, 10.0, 80.0, 30.0, 0.9]], "apple": [[0.0, 10.0, 20.0, 30.0, 0.8]]})}
    assert rule_check([row]) == {"rows": 1, "disagree": []}
    assert rule_check([dict(row, correct=False)]) == {"rows": 1, "disagree": ["a.png"]}
    coloured = dict(row, metadata=json.dumps(prompts()[3]))
    assert rule_check([coloured]) == {"rows": 0, "disagree": []}  # colours are not in details: not checked


def test_settings_are_checked(checkout, tmp_path):
    root, detector = checkout
    with pytest.raises(FileNotFoundError, match="GenEval checkout"):
        OfficialScorer(tmp_path, sys.executable, detector)
    with pytest.raises(FileNotFoundError, match="interpreter"):
        OfficialScorer(root, str(tmp_path / "nopython"), detector)
    with pytest.raises(ValueError, match="unknown GenEval options.*valid"):
        OfficialScorer(root, sys.executable, detector, options={"treshold": 0.5})
    with pytest.raises(FileNotFoundError, match="other.pth"):
        OfficialScorer(root, sys.executable, detector, options={"model": "other"})
    scorer = build_scorer("official", geneval_dir=root, python=sys.executable, detector_dir=detector)
    assert isinstance(scorer, OfficialScorer)
    with pytest.raises(ValueError, match="valid: \\['official', 'transformers'\\]"):
        build_scorer("mmdet")
