"""The samples a run keeps for the qualitative figure (segros.inference.write_samples / read_samples)
and backfilling them into a run evaluated before (segros.pipeline.backfill_samples)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from fake_backbone import FakeBackbone
from segros import inference, pipeline, store
from segros.data.shapes import ShapesWorld
from segros.vocab import TAGS
from test_store import fake_config, fake_train_data


def _run(tmp_path, **kw):
    cfg = fake_config(max_steps=4, **kw)
    pipeline.ensure_run(cfg, str(tmp_path), "t", backbone=FakeBackbone(), data=fake_train_data(), progress=False)
    return cfg, tmp_path / "t" / store.run_name(cfg)


def test_sample_prompts_take_held_out_compositions_per_tag():
    world = ShapesWorld(image_size=64, seed=0)
    metadata = world.geneval_metadata(n_total=120, seed=0)
    chosen = inference.sample_prompts(world, metadata)
    assert [metadata[i]["tag"] for i in chosen] == list(TAGS)  # one per tag, in GenEval's order
    for i in chosen:
        tag = metadata[i]["tag"]
        first_held = next((j for j, m in enumerate(metadata) if m["tag"] == tag and inference.held_out(world, m)), None)
        first = next(j for j, m in enumerate(metadata) if m["tag"] == tag)
        assert i == (first_held if first_held is not None else first), tag
    # compositions: the tags that name one get a held-out prompt here
    assert all(inference.held_out(world, metadata[i]) for i in chosen
               if metadata[i]["tag"] in ("colors", "position", "color_attr"))
    assert not any(inference.held_out(world, metadata[i]) for i in chosen if metadata[i]["tag"] == "single_object")
    pair = next(iter(world.holdout_color_shape))
    rec = {"tag": "colors", "include": [{"class": pair[1], "count": 1, "color": pair[0]}], "prompt": "x"}
    assert inference.held_out(world, rec)
    assert not inference.held_out(world, {**rec, "include": [{"class": pair[1], "count": 1}]})


def test_a_run_keeps_its_samples_with_the_detectors_verdicts(tmp_path):
    cfg, folder = _run(tmp_path)
    images, records, source = inference.read_samples(str(folder))
    assert source == "evaluation"
    payload = json.loads((folder / "samples.json").read_text())
    assert payload["seed"] == cfg.eval_seeds[0] and len(images) == len(records) == len(payload["samples"])
    verdicts = {}
    for line in (folder / "geneval" / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        verdicts[os.path.relpath(row["filename"], folder / "geneval")] = (row["correct"], row["reason"])
    for image, rec in zip(images, records):
        # the strip holds the image the scores counted (first seed), and the verdict it got
        with Image.open(folder / "geneval" / f"{rec['index']:05d}" / "samples" / "00000.png") as im:
            np.testing.assert_array_equal(image, np.asarray(im.convert("RGB")))
        assert (rec["correct"], rec["reason"]) == verdicts[f"{rec['index']:05d}/samples/00000.png"]
    assert {r["tag"] for r in records} == set(TAGS)
    results = json.loads((folder / "results.json").read_text())
    assert "samples" not in results  # results.json keeps its keys


def test_backfill_adds_samples_only_when_the_rerun_scores_as_stored(tmp_path):
    cfg, folder = _run(tmp_path)
    original = {n: (folder / n).read_bytes() for n in ("samples.png", "samples.json")}
    results = (folder / "results.json").read_bytes()
    for n in original:
        os.remove(folder / n)
    assert inference.read_samples(str(folder)) is None
    kw = dict(backbone=FakeBackbone(), data=fake_train_data(), progress=False)
    assert pipeline.backfill_samples(str(folder), str(tmp_path), **kw) == "added"
    assert {n: (folder / n).read_bytes() for n in original} == original
    assert (folder / "results.json").read_bytes() == results  # the run itself is untouched
    assert pipeline.backfill_samples(str(folder), str(tmp_path), **kw) == "kept"
    # a stored score the rerun does not give: no samples, the difference named
    for n in original:
        os.remove(folder / n)
    stored = json.loads(results)
    stored["geneval"]["overall"] += 1.0
    store.atomic_write_json(str(folder / "results.json"), stored)
    with pytest.raises(ValueError, match="does not score as stored.*overall"):
        pipeline.backfill_samples(str(folder), str(tmp_path), backbone=FakeBackbone(), data=fake_train_data(),
                                  progress=False)
    assert not (folder / "samples.png").exists() and not (folder / "samples.json").exists()
    # exact=False keeps them, marked as a rerun's, with both score sets
    assert pipeline.backfill_samples(str(folder), str(tmp_path), exact=False, backbone=FakeBackbone(),
                                     data=fake_train_data(), progress=False) == "added from a rerun"
    assert (folder / "samples.png").read_bytes() == original["samples.png"]
    payload = json.loads((folder / "samples.json").read_text())
    assert payload["source"] == "rerun" and inference.read_samples(str(folder))[2] == "rerun"
    assert payload["stored_geneval"]["overall"] == payload["rerun_geneval"]["overall"] + 1.0


def test_plot_samples_frames_each_image_by_its_verdict():
    from segros import viz

    recs = [{"tag": t, "prompt": f"a photo of {t}", "held_out": i % 2 == 0, "correct": i % 3 == 0, "reason": ""}
            for i, t in enumerate(TAGS)]
    imgs = [np.full((8, 8, 3), 40 * i, np.uint8) for i in range(len(TAGS))]
    fig = viz.plot_samples({"w/o SFT": None, "SFT": (imgs, recs, "rerun"), "Ours": (imgs, recs, "evaluation")})
    axes = np.array(fig.axes).reshape(3, len(TAGS))
    assert axes[1, 0].get_ylabel() == "SFT\n(rerun)" and axes[2, 0].get_ylabel() == "Ours"
    assert [a.get_xlabel() for a in axes[2]] == ["✓" if r["correct"] else "✗" for r in recs]
    assert axes[2, 1].spines["top"].get_edgecolor()[:3] == pytest.approx((0xc6 / 255, 0x28 / 255, 0x28 / 255))
    assert "no samples" in axes[0, 0].texts[0].get_text()
    with pytest.raises(ValueError, match="prompts differ"):
        viz.plot_samples({"a": (imgs, recs, "evaluation"), "b": (imgs[::-1], recs[::-1], "evaluation")})
    with pytest.raises(ValueError, match="no row keeps samples"):
        viz.plot_samples({"a": None})
