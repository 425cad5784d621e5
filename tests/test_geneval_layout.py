"""GenEval at paper scale: official metadata, the layout generator, completeness, the scorer interface
and the summary (segros.eval.geneval_layout, segros.eval.geneval_scoring)."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from geneval_tiny import draw, prompts
from segros.eval.geneval import result_row, summarize, Detection
from segros.eval.geneval_layout import (
    IncompleteLayoutError, check_layout, generate_layout, official_metadata_path, read_official_metadata,
)
from segros.eval.geneval_scoring import GenEvalScorer, as_percentages, read_results, summarize_results_file


def official_rows(n=553):
    """n valid records cycling through the test prompts, each prompt text made unique."""
    base = prompts()
    return [dict(base[i % len(base)], prompt=f"{base[i % len(base)]['prompt']} #{i}") for i in range(n)]


def write_checkout(root, rows):
    os.makedirs(os.path.join(root, "prompts"), exist_ok=True)
    with open(os.path.join(root, "prompts", "evaluation_metadata.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return root


class Recorder:
    """generate(prompts, seed) that records its calls and draws test images."""

    def __init__(self):
        self.calls = []

    def __call__(self, batch, seed):
        self.calls.append((list(batch), seed))
        return [draw(p, seed + k) for k, p in enumerate(batch)]


# -- official metadata ----------------------------------------------------------------------

def test_read_official_metadata_from_checkout_or_file(tmp_path):
    rows = official_rows()
    root = write_checkout(str(tmp_path / "geneval"), rows)
    assert read_official_metadata(root) == rows
    assert read_official_metadata(official_metadata_path(root)) == rows
    write_checkout(root, rows[:544])
    with pytest.raises(ValueError, match="544 prompts, expected 553"):
        read_official_metadata(root)
    assert len(read_official_metadata(root, expected_n=None)) == 544
    with pytest.raises(FileNotFoundError, match="evaluation_metadata.jsonl"):
        read_official_metadata(str(tmp_path / "nowhere"))
    bad = rows[:3] + [{"tag": "colors", "include": [{"class": "apple", "count": 1, "color": "teal"}], "prompt": "p"}]
    write_checkout(root, bad)
    with pytest.raises(ValueError, match="line 4"):
        read_official_metadata(root, expected_n=None)


# -- generation ------------------------------------------------------------------------------

def test_generate_layout_official_names_and_seeds(tmp_path):
    meta = prompts()[:3]
    gen = Recorder()
    out = generate_layout(tmp_path, meta, gen, seed=7, progress=False)
    assert out == {"written": [0, 1, 2], "skipped": []}
    # the official scripts: one call per prompt, the prompt four times, the same seed every time
    assert gen.calls == [([m["prompt"]] * 4, 7) for m in meta]
    for i, m in enumerate(meta):
        folder = tmp_path / f"{i:05d}"
        assert json.load(open(folder / "metadata.jsonl")) == m
        assert sorted(os.listdir(folder / "samples")) == ["00000.png", "00001.png", "00002.png", "00003.png"]
        assert np.array_equal(np.asarray(Image.open(folder / "samples" / "00002.png")), draw(m["prompt"], 7 + 2))
    assert not [n for n in os.listdir(tmp_path / "00000" / "samples") if n.startswith(".")]  # no temporary left
    assert check_layout(tmp_path, meta).complete


def test_generate_layout_subset_resume_and_repair(tmp_path):
    meta = prompts()
    gen = Recorder()
    assert generate_layout(tmp_path, meta, gen, indices=[5, 2], progress=False)["written"] == [2, 5]
    assert sorted(os.listdir(tmp_path)) == ["00002", "00005"]  # global indices name the folders
    report = check_layout(tmp_path, meta, indices=[2, 5])
    assert report.complete and len(report.entries) == 8
    assert not check_layout(tmp_path, meta).complete  # the full set is not
    # resume: complete folders are kept; a truncated image and a stale extra image are repaired
    png = tmp_path / "00005" / "samples" / "00001.png"
    png.write_bytes(png.read_bytes()[:60])
    shutil.copy(tmp_path / "00002" / "samples" / "00000.png", tmp_path / "00002" / "samples" / "00004.png")
    gen.calls.clear()
    out = generate_layout(tmp_path, meta, gen, progress=False)
    assert out["skipped"] == [] and out["written"] == list(range(7))
    gen.calls.clear()
    out = generate_layout(tmp_path, meta, gen, progress=False)
    assert out == {"written": [], "skipped": list(range(7))} and gen.calls == []
    assert sorted(os.listdir(tmp_path / "00002" / "samples")) == [f"{k:05d}.png" for k in range(4)]
    assert check_layout(tmp_path, meta).complete
    # a folder holding another prompt's metadata is regenerated
    json.dump(meta[0], open(tmp_path / "00003" / "metadata.jsonl", "w"))
    assert generate_layout(tmp_path, meta, gen, progress=False)["written"] == [3]


def test_generate_layout_image_mode_batches_prompts(tmp_path):
    meta = prompts()[:5]
    gen = Recorder()
    generate_layout(tmp_path, meta, gen, seed_mode="image", batch_size=2, images_per_prompt=3, seed=10, progress=False)
    names = [m["prompt"] for m in meta]
    assert gen.calls == [(names[0:2], 10), (names[0:2], 11), (names[0:2], 12),
                         (names[2:4], 10), (names[2:4], 11), (names[2:4], 12), (names[4:5], 10), (names[4:5], 11), (names[4:5], 12)]
    # image k of prompt 3 is the second image of the call with seed 10 + k
    assert np.array_equal(np.asarray(Image.open(tmp_path / "00003" / "samples" / "00002.png")), draw(names[3], 12 + 1))
    assert check_layout(tmp_path, meta, images_per_prompt=3).complete


def test_generate_layout_prompt_mode_small_batches_and_errors(tmp_path):
    meta = prompts()[:1]
    gen = Recorder()
    generate_layout(tmp_path, meta, gen, batch_size=3, seed=0, progress=False)
    assert gen.calls == [([meta[0]["prompt"]] * 3, 0), ([meta[0]["prompt"]], 1)]
    with pytest.raises(ValueError, match="seed_mode"):
        generate_layout(tmp_path, meta, gen, seed_mode="per_image", progress=False)
    with pytest.raises(ValueError, match="outside"):
        generate_layout(tmp_path, meta, gen, indices=[1], progress=False)
    with pytest.raises(ValueError, match="returned 1 images for 4 prompts"):
        generate_layout(tmp_path / "x", meta, lambda batch, seed: [draw("p", 0)], progress=False)


# -- completeness ----------------------------------------------------------------------------

def small_png(folder, k, value=100):
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(folder / f"{k:05d}.png")


def write_fast_layout(root, meta, n=4):
    for i, m in enumerate(meta):
        folder = root / f"{i:05d}"
        (folder / "samples").mkdir(parents=True)
        (folder / "metadata.jsonl").write_text(json.dumps(m))
        for k in range(n):
            small_png(folder / "samples", k, value=200 if (i + k) % 2 else 50)


def test_544_of_553_and_a_truncated_png_are_reported_by_path(tmp_path):
    meta = official_rows()
    write_fast_layout(tmp_path, meta)
    assert check_layout(tmp_path, meta).complete
    removed = [3, 100, 200, 300, 400, 500, 510, 520, 552]
    for i in removed:
        shutil.rmtree(tmp_path / f"{i:05d}")
    png = tmp_path / "00007" / "samples" / "00001.png"
    png.write_bytes(png.read_bytes()[:50])
    (tmp_path / "00008" / "samples" / "00003.png").unlink()
    (tmp_path / "00009" / "metadata.jsonl").write_text(json.dumps(meta[10]))
    report = check_layout(tmp_path, meta)
    assert not report.complete
    problems = dict(report.problems)
    assert all(problems[str(tmp_path / f"{i:05d}")] == "prompt folder missing" for i in removed)
    assert problems[str(png)].startswith("unreadable image")
    assert problems[str(tmp_path / "00008" / "samples")] == "3 images, expected 4"
    assert "differs from prompt 9" in problems[str(tmp_path / "00009" / "metadata.jsonl")]
    assert len(report.problems) == len(removed) + 3
    # readable images of good folders only: 553 - 9 removed - 1 wrong metadata = 543 prompts
    assert len(report.prompts_scored) == 543 and len(report.entries) == 543 * 4 - 2
    text = report.describe(max_lines=5)
    assert "00003" in text and "... and 7 more problems" in text


def test_extra_folder_and_ignored_files(tmp_path):
    meta = prompts()[:2]
    write_fast_layout(tmp_path, meta)
    (tmp_path / "00000" / "grid.png").write_bytes(b"whatever")
    (tmp_path / "00000" / "samples" / "note.jpg").write_bytes(b"x")
    (tmp_path / "00000" / "samples" / ".00004.png.tmp").write_bytes(b"x")
    (tmp_path / "logs").mkdir()
    assert check_layout(tmp_path, meta).complete
    write_fast_layout(tmp_path / "more", prompts()[:3])
    shutil.move(tmp_path / "more" / "00002", tmp_path / "00002")
    assert check_layout(tmp_path, meta).problems == [(str(tmp_path / "00002"), "prompt folder not in the metadata")]
    assert check_layout(tmp_path, meta, images_per_prompt=None).problems  # count unchecked, extra folder still wrong


# -- the scorer interface --------------------------------------------------------------------

class BrightScorer(GenEvalScorer):
    """An image is correct when its mean is above 128 (enough to test the plumbing)."""

    name = "bright"

    def __init__(self, drop=0):
        self.drop, self.seen = drop, []

    def labels(self):
        return {"scorer": self.name, "detector": "mean brightness", "color_model": "none"}

    def score_entries(self, entries, *, progress=True, outfile=None):
        self.seen = [e.path for e in entries]
        rows = []
        for e in entries[self.drop:]:
            bright = float(np.asarray(Image.open(e.path)).mean()) > 128
            rows.append(result_row(e.path, e.metadata, {c["class"]: [Detection((0, 0, 1, 1), 0.99)] for c in e.metadata["include"]} if bright else {}))
        return rows


def test_score_complete_partial_and_refused(tmp_path):
    meta = official_rows(20)
    write_fast_layout(tmp_path, meta)
    results = BrightScorer().score(tmp_path, meta, progress=False)
    assert results["scorer"] == "bright" and results["detector"] == "mean brightness"
    assert results["partial"] is False and results["label"] == "complete: 80 images of 20 prompts"
    rows = read_results(results["results_file"])
    assert results["results_file"] == str(tmp_path / "results_bright.jsonl")
    assert [r["filename"] for r in rows] == [str(tmp_path / f"{i:05d}" / "samples" / f"{k:05d}.png") for i in range(20) for k in range(4)]
    assert results["summary"] == summarize(rows)
    # "single_object" and "two_object" have no colour or position clause: brightness decides
    assert results["summary"]["image_accuracy"] > 0 and as_percentages(results)["n_images"] == 80

    shutil.rmtree(tmp_path / "00004")
    png = tmp_path / "00011" / "samples" / "00000.png"
    png.write_bytes(png.read_bytes()[:40])
    scorer = BrightScorer()
    with pytest.raises(IncompleteLayoutError, match="00004") as err:
        scorer.score(tmp_path, meta, progress=False)
    assert str(png) in str(err.value) and "allow_partial=True" in str(err.value)
    assert scorer.seen == []  # refused before any scoring
    partial = scorer.score(tmp_path, meta, allow_partial=True, outfile=tmp_path / "p.jsonl", progress=False)
    assert partial["partial"] is True and partial["label"].startswith("PARTIAL: 75 of 80 images, 19 of 20 prompts")
    assert partial["n_images_scored"] == 75 and len(partial["problems"]) == 2
    assert as_percentages(partial)["partial"] is True
    assert len(read_results(tmp_path / "p.jsonl")) == 75


def test_rows_must_cover_every_image(tmp_path):
    meta = official_rows(3)
    write_fast_layout(tmp_path, meta)
    with pytest.raises(ValueError, match="returned 11 rows for 12 images"):
        BrightScorer(drop=1).score(tmp_path, meta, progress=False)


# -- the summary, as summary_scores.py -------------------------------------------------------

def test_summary_matches_official_averaging_on_a_results_file(tmp_path):
    """Tags out of order and unequal in size, prompts repeated: the numbers summary_scores.py prints."""
    m = {t: json.dumps({"tag": t, "include": [], "prompt": t + str(k)}) for k, t in enumerate(["a", "b", "c", "d"])}
    spec = [  # (tag, prompt metadata, correct)
        ("counting", m["a"], True), ("single_object", m["b"], True), ("counting", m["a"], False),
        ("counting", m["c"], False), ("single_object", m["b"], True), ("single_object", m["b"], False),
        ("position", m["d"], False), ("counting", m["c"], False), ("position", m["d"], False),
    ]
    rows = [{"filename": f"{i}.png", "tag": t, "prompt": "p", "correct": c, "reason": "", "metadata": meta, "details": "{}"}
            for i, (t, meta, c) in enumerate(spec)]
    path = tmp_path / "results.jsonl"
    with open(path, "w") as f:  # as GenEval writes it
        pd.DataFrame(rows).to_json(f, orient="records", lines=True)
    s = summarize_results_file(path)
    assert s["tags"] == {"counting": 0.25, "single_object": pytest.approx(2 / 3), "position": 0.0}
    assert list(s["tags"]) == ["counting", "single_object", "position"]  # groupby(sort=False): first appearance
    assert s["overall"] == pytest.approx((0.25 + 2 / 3 + 0.0) / 3)  # mean over tags, not over the 9 images
    assert s["image_accuracy"] == pytest.approx(3 / 9)
    assert s["n_images"] == 9 and s["n_prompts"] == 4
    assert s["prompt_accuracy"] == pytest.approx(2 / 4)  # prompts a and b have a correct image
