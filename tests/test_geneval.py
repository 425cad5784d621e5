"""GenEval rule engine (segros.eval.geneval) on hand-made detections, and the on-disk layout."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from segros.eval.geneval import (
    Detection, evaluate_image, read_layout, read_metadata_jsonl, relative_position, score_layout,
    summarize, write_layout, write_metadata_jsonl,
)


def det(x, y, s=10, score=0.95, color=None):
    return Detection(box=(x, y, x + s, y + s), score=score, color=color)


POSITION = {"tag": "position", "include": [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["left of", 0]}],
            "prompt": "a photo of a circle left of a square"}


# -- relative_position ------------------------------------------------------------------

@pytest.mark.parametrize("a, b, expected", [
    ((0, 20, 10, 30), (30, 20, 40, 30), {"left of"}),
    ((30, 20, 40, 30), (0, 20, 10, 30), {"right of"}),
    ((20, 0, 30, 10), (20, 30, 30, 40), {"above"}),  # y points down
    ((20, 30, 30, 40), (20, 0, 30, 10), {"below"}),
    ((0, 0, 10, 10), (0, 0, 10, 10), set()),          # equal centres
    ((0, 0, 10, 10), (1, 0, 11, 10), set()),          # offset 1 < margin 0.1*(10+10)=2
    ((0, 0, 40, 40), (5, 5, 30, 30), set()),          # overlap, nearly concentric
    ((10, 10, 20, 20), (0, 0, 10, 10), {"right of", "below"}),  # diagonal: revised (8, 8)/|(10, 10)| = 0.57 on both axes
    ((20, 20, 40, 40), (0, 0, 20, 20), {"right of", "below"}),  # margin 4: revised (16, 16)/28.3 = 0.566
])
def test_relative_position_cases(a, b, expected):
    assert relative_position(a, b) == expected


def test_relative_position_nonzero_revised_but_no_relation():
    # offset (10, 10), dims 30+30 -> margin 6 per axis -> revised (4, 4)/14.1 = 0.28 on both axes
    assert relative_position((10, 10, 40, 40), (0, 0, 30, 30)) == set()


def test_relative_position_margin_matters():
    # centre offset -6 in x; margin 0.1*(10+10)=2 -> revised -4 / 6 = -0.67 -> left of
    assert relative_position((0, 0, 10, 10), (6, 0, 16, 10)) == {"left of"}
    # bigger boxes, same offset: margin 0.1*(40+40)=8 > 6 -> no relation
    assert relative_position((0, 0, 40, 40), (6, 0, 46, 40)) == set()


# -- include / colour / position / exclude ---------------------------------------------------

def test_single_object_threshold_is_strict():
    meta = {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}
    assert evaluate_image(meta, {"circle": [det(0, 0, score=0.31)]})[0]
    ok, reason = evaluate_image(meta, {"circle": [det(0, 0, score=0.3)]})
    assert not ok and reason == "expected circle>=1, found 0"
    assert not evaluate_image(meta, {"square": [det(0, 0)]})[0]
    assert not evaluate_image(meta, {})[0]


def test_counting_uses_higher_threshold_and_exclude():
    meta = {"tag": "counting", "include": [{"class": "star", "count": 2}], "exclude": [{"class": "star", "count": 3}],
            "prompt": "a photo of two stars"}
    two = [det(0, 0), det(20, 0)]
    assert evaluate_image(meta, {"star": two}) == (True, "")
    ok, reason = evaluate_image(meta, {"star": two + [det(40, 0)]})
    assert not ok and reason == "expected star<3, found 3"
    # a third star below the counting threshold does not count ...
    assert evaluate_image(meta, {"star": two + [det(40, 0, score=0.89)]})[0]
    # ... and a star at 0.85 is not enough for the include either
    ok, reason = evaluate_image(meta, {"star": [det(0, 0), det(20, 0, score=0.85)]})
    assert not ok and reason == "expected star>=2, found 1"
    # the same 0.85 detection passes the 0.3 threshold of other tags
    two_obj = {"tag": "two_object", "include": [{"class": "star", "count": 1}, {"class": "cross", "count": 1}], "prompt": "p"}
    assert evaluate_image(two_obj, {"star": [det(0, 0, score=0.85)], "cross": [det(30, 0, score=0.85)]})[0]


def test_at_most_16_per_class():
    meta = {"tag": "counting", "include": [{"class": "star", "count": 2}], "exclude": [{"class": "star", "count": 17}], "prompt": "p"}
    many = [det(i, 0, score=0.95) for i in range(20)]
    assert evaluate_image(meta, {"star": many})[0]  # capped at 16 < 17
    meta["exclude"][0]["count"] = 16
    ok, reason = evaluate_image(meta, {"star": many})
    assert not ok and reason == "expected star<16, found 16"


def test_colour_checks_top_count_by_score():
    meta = {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}], "prompt": "a photo of a red circle"}
    # given out of score order: the top-scoring circle is blue
    dets = {"circle": [det(0, 0, score=0.5, color="red"), det(20, 0, score=0.9, color="blue")]}
    ok, reason = evaluate_image(meta, dets)
    assert not ok and reason == "expected red circle>=1, found 0 red; and 1 blue"
    dets = {"circle": [det(0, 0, score=0.95, color="red"), det(20, 0, score=0.9, color="blue")]}
    assert evaluate_image(meta, dets)[0]


def test_colour_count_must_reach_count():
    meta = {"tag": "colors", "include": [{"class": "circle", "count": 2, "color": "red"}], "prompt": "p"}
    ok, reason = evaluate_image(meta, {"circle": [det(0, 0, color="red"), det(20, 0, color="blue")]})
    assert not ok and reason == "expected red circle>=2, found 1 red; and 1 red, 1 blue"
    assert evaluate_image(meta, {"circle": [det(0, 0, color="red"), det(20, 0, color="red")]})[0]


def test_color_attr_both_clauses():
    meta = {"tag": "color_attr", "include": [{"class": "circle", "count": 1, "color": "red"}, {"class": "square", "count": 1, "color": "blue"}],
            "prompt": "a photo of a red circle and a blue square"}
    assert evaluate_image(meta, {"circle": [det(0, 0, color="red")], "square": [det(30, 0, color="blue")]})[0]
    ok, reason = evaluate_image(meta, {"circle": [det(0, 0, color="blue")], "square": [det(30, 0, color="red")]})
    assert not ok and reason.count("\n") == 1  # both clauses reported


def test_position_pass_fail_and_reason():
    good = {"square": [det(40, 20)], "circle": [det(0, 20)]}
    assert evaluate_image(POSITION, good) == (True, "")
    bad = {"square": [det(0, 20)], "circle": [det(40, 20)]}
    ok, reason = evaluate_image(POSITION, bad)
    assert not ok and reason == "expected circle left of target, found right of target"
    overlap = {"square": [det(0, 0)], "circle": [det(0, 0)]}
    ok, reason = evaluate_image(POSITION, overlap)
    assert not ok and reason == "expected circle left of target, found  target"  # empty relation set, as official


def test_position_without_target():
    ok, reason = evaluate_image(POSITION, {"circle": [det(0, 20)]})
    assert not ok
    assert reason.split("\n") == ["expected square>=1, found 0", "no target for circle to be left of"]


def test_position_diagonal_counts_as_left():
    # circle up-left of the square at 30 degrees from horizontal: revised dx clearly < -0.5
    dets = {"square": [det(40, 30)], "circle": [det(0, 10)]}
    assert evaluate_image(POSITION, dets)[0]
    # 45 degrees with margin: still both left of and above
    dets = {"square": [det(30, 30)], "circle": [det(0, 0)]}
    assert evaluate_image(POSITION, dets)[0]


def test_bad_metadata_raises():
    with pytest.raises(ValueError, match="tag"):
        evaluate_image({"tag": "nope", "include": [], "prompt": "x"}, {})
    with pytest.raises(ValueError, match="prompt"):
        evaluate_image({"tag": "colors", "include": []}, {})
    with pytest.raises(ValueError, match=r"include'\]\[0\]\['color'\]"):
        evaluate_image({"tag": "colors", "include": [{"class": "a", "count": 1, "color": "teal"}], "prompt": "x"}, {})
    with pytest.raises(ValueError, match="detections"):
        evaluate_image(POSITION, [det(0, 0)])


# -- summarize --------------------------------------------------------------------------

def test_summarize_by_image_and_tag():
    rows = [
        {"tag": "single_object", "correct": True, "metadata": "m1"},
        {"tag": "single_object", "correct": False, "metadata": "m1"},
        {"tag": "single_object", "correct": True, "metadata": "m2"},
        {"tag": "counting", "correct": False, "metadata": "m3"},
    ]
    s = summarize(rows)
    assert s["tags"] == {"single_object": pytest.approx(2 / 3), "counting": 0.0}
    assert s["overall"] == pytest.approx(1 / 3)  # unweighted over tags, not 2/4 over images
    assert s["n_images"] == 4 and s["n_prompts"] == 3
    assert s["image_accuracy"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        summarize([])


# -- files -----------------------------------------------------------------------------

def test_metadata_jsonl_roundtrip(tmp_path):
    rows = [POSITION, {"tag": "counting", "include": [{"class": "star", "count": 3}], "exclude": [{"class": "star", "count": 4}], "prompt": "a photo of three stars"}]
    write_metadata_jsonl(rows, tmp_path / "evaluation_metadata.jsonl")
    lines = (tmp_path / "evaluation_metadata.jsonl").read_text().splitlines()
    assert len(lines) == 2 and list(json.loads(lines[1])) == ["tag", "include", "exclude", "prompt"]
    assert read_metadata_jsonl(tmp_path / "evaluation_metadata.jsonl") == rows


def _fake_detector(image):
    """Class 'square' for every bright-red pixel blob's box; enough to test the plumbing."""
    ys, xs = np.nonzero((image[..., 0] > 200) & (image[..., 1] < 50))
    if len(ys) == 0:
        return {}
    return {"square": [Detection((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), 0.99, "red")]}


def _img(red):
    im = np.full((32, 32, 3), 128, np.uint8)
    if red:
        im[8:20, 8:20] = (230, 10, 10)
    return im


def test_write_read_score_layout(tmp_path):
    meta = [{"tag": "single_object", "include": [{"class": "square", "count": 1}], "prompt": "a photo of a square"},
            {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "red"}], "prompt": "a photo of a red square"}]
    write_layout(tmp_path, meta, [[_img(True), _img(False)], [Image.fromarray(_img(True))] * 3], grid=True)
    assert json.load(open(tmp_path / "00001" / "metadata.jsonl")) == meta[1]
    assert sorted(os.listdir(tmp_path / "00001" / "samples")) == ["00000.png", "00001.png", "00002.png"]
    assert (tmp_path / "00000" / "grid.png").exists()
    back = read_layout(tmp_path, expected_n=2)
    assert [m for m, _ in back] == meta and [len(ims) for _, ims in back] == [2, 3]
    assert np.array_equal(back[0][1][0][1], _img(True))
    summary = score_layout(tmp_path, _fake_detector, expected_n=2)
    assert summary["tags"] == {"single_object": 0.5, "colors": 1.0} and summary["n_images"] == 5
    rows = [json.loads(line) for line in open(tmp_path / "results.jsonl")]
    assert list(rows[0]) == ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]
    assert [r["correct"] for r in rows] == [True, False, True, True, True]
    assert json.loads(rows[0]["details"]) == {"square": [[8.0, 8.0, 20.0, 20.0, 0.99]]}


def test_official_style_folder_is_scored(tmp_path):
    """Built by hand as GenEval's generator writes it, plus files GenEval ignores."""
    meta = {"tag": "single_object", "include": [{"class": "square", "count": 1}], "prompt": "a photo of a square"}
    for p in range(3):
        folder = tmp_path / f"{p:05d}"
        (folder / "samples").mkdir(parents=True)
        (folder / "metadata.jsonl").write_text(json.dumps(meta))
        for k in range(4):
            Image.fromarray(_img(k % 2 == 0)).save(folder / "samples" / f"{k:04d}.png")
        Image.fromarray(_img(False)).save(folder / "samples" / "note.jpg")
        Image.fromarray(_img(False)).save(folder / "grid.png")
    (tmp_path / "logs").mkdir()
    summary = score_layout(tmp_path, _fake_detector, expected_n=3)
    assert summary["n_images"] == 12 and summary["tags"]["single_object"] == 0.5


def test_missing_prompt_folder_is_named(tmp_path):
    meta = [{"tag": "single_object", "include": [{"class": "square", "count": 1}], "prompt": "p"}] * 3
    write_layout(tmp_path, meta, [[_img(True)]] * 3)
    os.rename(tmp_path / "00001", tmp_path / "old")
    with pytest.raises(ValueError, match="00001"):
        read_layout(tmp_path, expected_n=3)
    with pytest.raises(ValueError, match="00003"):
        read_layout(tmp_path.parent / tmp_path.name, expected_n=4)


def test_unreadable_and_incomplete_files_are_named(tmp_path):
    meta = [{"tag": "single_object", "include": [{"class": "square", "count": 1}], "prompt": "p"}] * 2
    write_layout(tmp_path, meta, [[_img(True)]] * 2)
    (tmp_path / "00001" / "samples" / "00000.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"00001.samples.00000\.png"):
        read_layout(tmp_path, expected_n=2)
    os.remove(tmp_path / "00001" / "samples" / "00000.png")
    with pytest.raises(ValueError, match="00001.*no samples"):
        read_layout(tmp_path, expected_n=2)
    os.remove(tmp_path / "00000" / "metadata.jsonl")
    with pytest.raises(ValueError, match="00000.*metadata.jsonl"):
        read_layout(tmp_path, expected_n=2)
    with pytest.raises(ValueError, match="images_per_prompt"):
        write_layout(tmp_path / "x", meta, [[_img(True)]])


def test_bad_row_is_named_by_index(tmp_path):
    rows = [POSITION, {"tag": "position", "include": [{"class": "a", "count": 1, "position": ["near", 0]}], "prompt": "p"}]
    with pytest.raises(ValueError, match=r"rows\[1\]\['include'\]\[0\]\['position'\]"):
        write_metadata_jsonl(rows, tmp_path / "m.jsonl")
