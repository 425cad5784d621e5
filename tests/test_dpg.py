"""DPG-Bench (segros.eval.dpg): ELLA's rule on scripted answers, the grid layout, and the VQA backends.

Every expected number below is worked out by hand in the comment next to it.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from segros.eval.dpg import (
    CSV_COLUMNS, MissingParentError, categories, crop_boxes, grids_from_split_files, item_score,
    load_benchmark, make_grid, read_questions, score_layout, shard_items, split_grid, summarize,
    generate_layout, score_items,
)

# -- item_score: the pure rule ------------------------------------------------------------------

Y, N = "yes", "no"


def test_parent_zero_means_no_parent():
    # 1 yes, 2 no, both with parent 0 -> (1 + 0) / 2
    assert item_score({1: [0], 2: [0]}, [{1: Y, 2: N}]) == 0.5


def test_parent_answered_no_zeroes_child():
    # 1 no -> 2 (parent 1) zeroed although answered yes; 3 (parent 0) stays -> 1/3
    assert item_score({1: [0], 2: [1], 3: [0]}, [{1: N, 2: Y, 3: Y}]) == pytest.approx(1 / 3)
    # parent yes: child kept -> 3/3
    assert item_score({1: [0], 2: [1], 3: [0]}, [{1: Y, 2: Y, 3: Y}]) == 1.0


def test_two_level_chain_in_csv_order():
    # 1 <- 2 <- 3 listed parent first; 1 no: 2 zeroed, then 3 sees its parent 2 at 0 -> 0/3
    assert item_score({1: [0], 2: [1], 3: [2]}, [{1: N, 2: Y, 3: Y}]) == 0.0
    # only 2 no: 3 zeroed -> 1/3
    assert item_score({1: [0], 2: [1], 3: [2]}, [{1: Y, 2: N, 3: Y}]) == pytest.approx(1 / 3)


def test_zeroing_is_one_pass_in_csv_order():
    # same chain listed child first (3, 2, 1): 3 is checked while 2 still scores 1 -> kept;
    # then 2 is zeroed by 1 -> scores {3: 1, 2: 0, 1: 0} -> 1/3 (ELLA's single in-place pass)
    assert item_score({3: [2], 2: [1], 1: [0]}, [{1: N, 2: Y, 3: Y}]) == pytest.approx(1 / 3)


def test_several_parents_any_zero():
    # 4 depends on 1 and 3; 3 no -> 4 zeroed: {1: 1, 3: 0, 4: 0} -> 1/3
    assert item_score({1: [0], 3: [0], 4: [1, 3]}, [{1: Y, 3: N, 4: Y}]) == pytest.approx(1 / 3)


def test_only_exact_yes_counts():
    # "Yes", "yes." and " yes" are not "yes" in ELLA's comparison -> 1/4
    assert item_score({1: [0], 2: [0], 3: [0], 4: [0]}, [{1: "yes", 2: "Yes", 3: "yes.", 4: " yes"}]) == 0.25


def test_crops_are_averaged():
    # crop A: {1: 1, 2: 1} -> 1; crop B: 1 no -> 2 zeroed -> 0; crop C: 2 no -> 0.5 -> (1 + 0 + 0.5) / 3
    deps = {1: [0], 2: [1]}
    assert item_score(deps, [{1: Y, 2: Y}, {1: N, 2: Y}, {1: Y, 2: N}]) == pytest.approx(0.5)


def test_missing_parent_raises_when_reached():
    with pytest.raises(MissingParentError, match="depends on 5"):
        item_score({1: [0], 2: [5]}, [{1: Y, 2: Y}])
    # ELLA's parent loop stops at the first parent scoring 0: parent 5 is never looked up
    assert item_score({1: [0], 2: [1, 5]}, [{1: N, 2: Y}]) == 0.0
    # ... but it is when parent 1 scores 1
    with pytest.raises(KeyError):
        item_score({1: [0], 2: [1, 5]}, [{1: Y, 2: Y}])
    # a later crop reaching it fails the whole item
    with pytest.raises(MissingParentError):
        item_score({1: [0], 2: [1, 5]}, [{1: N, 2: Y}, {1: Y, 2: Y}])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="no answer for questions \\[2\\]"):
        item_score({1: [0], 2: [0]}, [{1: Y}])
    with pytest.raises(ValueError, match="answers is empty"):
        item_score({1: [0]}, [])


def ella_loop(qid2dependency, answers):
    """ELLA's per-image loop, re-expressed: one score dict shared by the crops, answers written per
    crop, one in-place zeroing pass, a plain dict lookup (KeyError) for a parent that is not there."""
    qid2scores, crop_scores = {}, []
    for crop in answers:
        for qid in qid2dependency:
            qid2scores[qid] = float(crop[qid] == "yes")
        for qid, parents in qid2dependency.items():
            zero = False
            for parent in parents:
                if parent == 0:
                    continue
                if qid2scores[parent] == 0:
                    zero = True
                    break
            if zero:
                qid2scores[qid] = 0
        crop_scores.append(sum(qid2scores.values()) / len(qid2scores))
    return sum(crop_scores) / len(crop_scores)


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_item_score_equals_ellas_loop(data):
    qids = data.draw(st.lists(st.integers(1, 8), min_size=1, max_size=6, unique=True))   # any CSV order
    deps = {q: data.draw(st.lists(st.integers(0, 9), min_size=1, max_size=3)) for q in qids}
    n_crops = data.draw(st.integers(1, 4))
    answers = [{q: data.draw(st.sampled_from(["yes", "no", "Yes"])) for q in qids} for _ in range(n_crops)]
    try:
        expected = ella_loop(deps, answers)
    except KeyError:
        with pytest.raises(MissingParentError):
            item_score(deps, answers)
        return
    assert item_score(deps, answers) == expected      # same operations in the same order: equal floats


def test_categories_as_ella_names_them():
    assert categories("entity - whole (cat)") == ("entity", "entity - whole")
    assert categories("global - (photo)") == ("global", "global -")
    assert categories("relation - non-spatial (cat, dog, chase)") == ("relation", "relation - non-spatial")


# -- a CSV in the official columns, scored through the layout -----------------------------------

# item, proposition id, dependency, tuple, question
ROWS = [
    ("alpha", 1, "0", "entity - whole (cat)", "Is there a cat?"),
    ("alpha", 2, "1", "attribute - color (cat, black)", "Is the cat black?"),
    ("alpha", 3, "0", "entity - whole (mat)", "Is there a mat?"),
    ("alpha", 4, "1,3", "relation - spatial (cat, mat, on)", "Is the cat on the mat?"),
    ("beta", 1, "0", "entity - whole (dog)", "Is there a dog?"),
    ("beta", 2, "1", "attribute - color (dog, brown)", "Is the dog brown?"),
    ("beta", 3, "2", "attribute - texture (dog, fluffy)", "Is the brown dog fluffy?"),
    ("beta", 4, "0", "global - (photo)", "Is this a photo?"),
    ("gamma", 1, "0", "global - (night)", "Is it night?"),
]
PROMPTS = {"alpha": "a black cat on a mat", "beta": "a photo of a fluffy brown dog", "gamma": "a night sky"}

# four tiles of solid colours, in generation order: 0 top-left ... 3 bottom-right
TILE_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
COLOUR_NAMES = ["red", "green", "blue", "white"]
# the scripted VQA says "no" to these (tile, question) pairs and "yes" to everything else
NO = {
    ("green", "Is there a cat?"), ("blue", "Is there a mat?"), ("white", "Is the cat black?"),
    ("green", "Is there a dog?"), ("blue", "Is the dog brown?"),
    ("green", "Is it night?"), ("blue", "Is it night?"), ("white", "Is it night?"),
}


def write_csv(path, rows=ROWS):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for item, qid, dep, tup, question in rows:
            broad, detailed = tup.split("(")[0].split("-", 1)
            w.writerow([item, PROMPTS.get(item, item), "kw", qid, dep, broad.strip(), detailed.strip(), tup, question])


def write_ella(root, rows=ROWS):
    os.makedirs(os.path.join(root, "dpg_bench", "prompts"))
    write_csv(os.path.join(root, "dpg_bench", "dpg_bench.csv"), rows)
    for item, prompt in PROMPTS.items():
        with open(os.path.join(root, "dpg_bench", "prompts", f"{item}.txt"), "w") as f:
            f.write(prompt + "\n")
    return str(root)


class ScriptedVQA:
    """Answers from the table NO, by the colour of the crop (so it also checks which tile is which)."""

    name = "scripted"

    def __init__(self):
        self.calls = []

    def answer(self, image, questions):
        mean = np.asarray(image).reshape(-1, 3).mean(0)
        colour = COLOUR_NAMES[int(np.argmin([np.abs(mean - c).sum() for c in TILE_COLOURS]))]
        self.calls.append((colour, list(questions)))
        return [N if (colour, q) in NO else Y for q in questions]


def solid_generate(prompts, seed):
    return [np.full((8, 8, 3), c, dtype=np.uint8) for c in TILE_COLOURS[: len(prompts)]]


@pytest.fixture()
def ella(tmp_path):
    return write_ella(tmp_path / "ELLA")


@pytest.fixture()
def layout(tmp_path, ella):
    bench = load_benchmark(ella, skip_first_row=False)
    out = tmp_path / "layout"
    assert generate_layout(str(out), bench, solid_generate, progress=False) == ["alpha", "beta", "gamma"]
    return str(out)


def test_read_questions_groups_rows_in_csv_order(ella):
    bench = load_benchmark(ella, skip_first_row=False)
    assert list(bench.items) == ["alpha", "beta", "gamma"]
    alpha = bench.items["alpha"]
    assert alpha.qid2dependency == {1: [0], 2: [1], 3: [0], 4: [1, 3]}
    assert alpha.qid2question[4] == "Is the cat on the mat?"
    assert alpha.prompt == "a black cat on a mat"      # from prompts/alpha.txt, stripped
    assert bench.notes == []


def test_first_row_quirk(ella):
    skipped = load_benchmark(ella)                     # ELLA's default: the first data row is dropped
    assert list(skipped.items["alpha"].qid2dependency) == [2, 3, 4]
    assert skipped.items["beta"].qid2dependency == load_benchmark(ella, skip_first_row=False).items["beta"].qid2dependency


def test_scores_match_hand_computation(layout, ella):
    # Per tile (red, green, blue, white), after zeroing:
    # alpha: red all yes 4/4; green "cat?" no -> 2 and 4 zeroed -> 1/4; blue "mat?" no -> 4 zeroed
    #        -> 2/4; white "black?" no -> 3/4.  Item: (1 + .25 + .5 + .75) / 4 = 0.625
    # beta:  red 1; green "dog?" no -> 2 zeroed -> 3 zeroed (two-level chain) -> 1/4; blue "brown?"
    #        no -> 3 zeroed -> 2/4; white 4/4.  Item: (1 + .25 + .5 + 1) / 4 = 0.6875
    # gamma: yes on red only: (1 + 0 + 0 + 0) / 4 = 0.25
    # DPG = 100 * (0.625 + 0.6875 + 0.25) / 3 = 52.083...
    bench = load_benchmark(ella, skip_first_row=False)
    vqa = ScriptedVQA()
    results = score_layout(layout, bench, vqa, progress=False)
    by_item = {r["item_id"]: r for r in results["items"]}
    assert by_item["alpha"]["crop_scores"] == [1.0, 0.25, 0.5, 0.75]
    assert by_item["beta"]["crop_scores"] == [1.0, 0.25, 0.5, 1.0]
    assert by_item["alpha"]["score"] == 0.625 and by_item["beta"]["score"] == 0.6875 and by_item["gamma"]["score"] == 0.25
    assert results["dpg"] == pytest.approx(100 * (0.625 + 0.6875 + 0.25) / 3)
    assert results["n_scored"] == 3 and results["complete"] and results["failed"] == []
    # categories, ELLA's way: raw answers (no zeroing) of the LAST crop (white) only:
    # entity - whole: alpha 1 yes, alpha 3 yes, beta 1 yes -> 100; attribute - color: alpha 2 no,
    # beta 2 yes -> 50; attribute - texture 100; relation - spatial 100; global -: beta 4 yes,
    # gamma 1 no -> 50.  L1 attribute pools color + texture: 2 of 3 -> 66.67
    assert results["l2"] == pytest.approx({"attribute - color": 50.0, "attribute - texture": 100.0, "entity - whole": 100.0,
                                           "global -": 50.0, "relation - spatial": 100.0})
    assert results["l1"] == pytest.approx({"attribute": 200 / 3, "entity": 100.0, "global": 50.0, "relation": 100.0})
    # each crop got every question of its item in the CSV's order, tiles in row-major order
    assert [c for c, _ in vqa.calls[:4]] == COLOUR_NAMES
    assert vqa.calls[0][1] == ["Is there a cat?", "Is the cat black?", "Is there a mat?", "Is the cat on the mat?"]
    with open(os.path.join(layout, "dpg_results.json")) as f:
        on_disk = json.load(f)
    assert on_disk["dpg"] == results["dpg"] and on_disk["vqa_model"] == "scripted" and on_disk["l1"] == results["l1"]
    assert on_disk["settings"]["skip_first_row"] is False and on_disk["settings"]["pic_num"] == 4


def test_category_crops_all(layout, ella):
    # every crop's raw answers: entity - whole: alpha 1 [1,0,1,1] + alpha 3 [1,1,0,1] + beta 1 [1,0,1,1]
    # -> 9/12 = 75; attribute - color: [1,1,1,0] + [1,1,0,1] -> 6/8 = 75; global -: beta 4 [1,1,1,1]
    # + gamma [1,0,0,0] -> 5/8 = 62.5; L1 attribute: 6/8 color + 4/4 texture -> 10/12
    bench = load_benchmark(ella, skip_first_row=False)
    results = score_layout(layout, bench, ScriptedVQA(), category_crops="all", progress=False)
    assert results["l2"] == pytest.approx({"attribute - color": 75.0, "attribute - texture": 100.0, "entity - whole": 75.0,
                                           "global -": 62.5, "relation - spatial": 100.0})
    assert results["l1"]["attribute"] == pytest.approx(100 * 10 / 12)
    assert results["dpg"] == pytest.approx(100 * (0.625 + 0.6875 + 0.25) / 3)   # the score itself does not change


def test_first_row_quirk_drops_the_first_item(layout, ella):
    # ELLA skips alpha's proposition 1; alpha 2 depends on 1, which is now missing -> KeyError on the
    # first crop -> alpha is left out: DPG = 100 * (0.6875 + 0.25) / 2 = 46.875
    results = score_layout(layout, load_benchmark(ella), ScriptedVQA(), progress=False)
    assert results["dpg"] == pytest.approx(46.875)
    assert results["n_scored"] == 2 and [f["item_id"] for f in results["failed"]] == ["alpha"]
    assert "depends on 1" in results["failed"][0]["error"]
    # the categories leave alpha out too: entity - whole = beta 1 only, attribute - color = beta 2 (yes)
    assert results["l2"]["attribute - color"] == 100.0 and results["l2"]["global -"] == 50.0
    assert "relation - spatial" not in results["l2"]


def test_first_row_quirk_without_dependents(tmp_path):
    # when no question depends on the skipped one, the first item is scored on its other questions
    rows = [("beta", 1, "0", "global - (photo)", "Is this a photo?"), ("beta", 2, "0", "entity - whole (dog)", "Is there a dog?")]
    write_csv(tmp_path / "q.csv", rows)
    bench = read_questions(str(tmp_path / "q.csv"))
    assert bench.items["beta"].qid2dependency == {2: [0]}
    # skipped: only "dog?" is asked: red 1, green 0, blue 1, white 1 -> 0.75
    # kept: "photo?" is always yes: red 1, green 0.5, blue 1, white 1 -> 0.875
    out = tmp_path / "layout"
    generate_layout(str(out), bench, solid_generate, progress=False)
    assert score_layout(str(out), bench, ScriptedVQA(), progress=False)["dpg"] == pytest.approx(75.0)
    keep = read_questions(str(tmp_path / "q.csv"), skip_first_row=False)
    assert score_layout(str(out), keep, ScriptedVQA(), progress=False)["dpg"] == pytest.approx(87.5)


@pytest.mark.parametrize("pic_num, expected", [
    # red only: every item 1 -> 100
    (1, 100.0),
    # red + green: alpha (1 + .25)/2, beta (1 + .25)/2, gamma (1 + 0)/2 -> 100 * (0.625 + 0.625 + 0.5)/3
    (2, 100 * 1.75 / 3),
])
def test_pic_num_takes_the_first_tiles(layout, ella, pic_num, expected):
    results = score_layout(layout, load_benchmark(ella, skip_first_row=False), ScriptedVQA(), pic_num=pic_num, progress=False)
    assert results["dpg"] == pytest.approx(expected)


def test_subsets_and_gathering(layout, ella):
    bench = load_benchmark(ella, skip_first_row=False)
    shards = [shard_items(bench.item_ids(), 2, k) for k in range(2)]
    assert shards == [["alpha", "gamma"], ["beta"]]
    records = []
    for ids in shards:
        recs, missing = score_items(layout, bench, ScriptedVQA(), items=ids, progress=False)
        assert missing == []
        records += recs
    whole = score_layout(layout, bench, ScriptedVQA(), progress=False)
    gathered = summarize(records, bench)
    assert gathered["dpg"] == pytest.approx(whole["dpg"]) and gathered["l2"] == pytest.approx(whole["l2"])


def test_missing_grid_is_refused_or_reported(layout, ella):
    bench = load_benchmark(ella, skip_first_row=False)
    os.remove(os.path.join(layout, "beta.png"))
    with pytest.raises(FileNotFoundError, match="1 of 3 grids missing.*beta"):
        score_layout(layout, bench, ScriptedVQA(), progress=False)
    results = score_layout(layout, bench, ScriptedVQA(), allow_missing=True, progress=False)
    assert not results["complete"] and results["missing"] == [{"item_id": "beta", "reason": "no image"}]
    assert results["dpg"] == pytest.approx(100 * (0.625 + 0.25) / 2)


def test_unreadable_grid_is_refused(layout, ella):
    with open(os.path.join(layout, "gamma.png"), "wb") as f:
        f.write(b"\x89PNG truncated")
    with pytest.raises(ValueError, match="gamma.png: unreadable"):
        score_layout(layout, load_benchmark(ella, skip_first_row=False), ScriptedVQA(), progress=False)


def test_generation_keeps_existing_grids_and_checks_the_callable(tmp_path, ella):
    bench = load_benchmark(ella, skip_first_row=False)
    out = str(tmp_path / "g")
    seen = []

    def gen(prompts, seed):
        seen.append((tuple(prompts), seed))
        return solid_generate(prompts, seed)

    assert generate_layout(out, bench, gen, items=["beta"], seed=7, progress=False) == ["beta"]
    assert seen == [((PROMPTS["beta"],) * 4, 7)]
    assert generate_layout(out, bench, gen, items=["beta", "gamma"], seed=7, progress=False) == ["gamma"]
    with pytest.raises(ValueError, match="returned 3 images"):
        generate_layout(out, bench, lambda p, s: solid_generate(p, s)[:3], items=["alpha"], progress=False)
    with pytest.raises(KeyError, match="delta"):
        generate_layout(out, bench, gen, items=["delta"], progress=False)


def test_csv_errors_name_the_problem(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("item_id,text\nx,y\n")
    with pytest.raises(ValueError, match="missing columns.*proposition_id"):
        read_questions(str(path))
    path.write_text(",".join(CSV_COLUMNS) + "\nx,p,k,one,0,e,w,t,q\n")
    with pytest.raises(ValueError, match="data row 0: proposition_id 'one' is not an integer"):
        read_questions(str(path), skip_first_row=False)
    path.write_text(",".join(CSV_COLUMNS) + "\nx,p,k,1,0;2,e,w,t,q\n")
    with pytest.raises(ValueError, match="dependency '0;2' is not a comma-separated list"):
        read_questions(str(path), skip_first_row=False)
    with pytest.raises(FileNotFoundError, match="dpg_bench.csv"):
        load_benchmark(str(tmp_path / "nowhere"))
    write_csv(tmp_path / "dup.csv", ROWS[:2] + [("beta", 1, "0", "global - (x)", "x?"), ("alpha", 3, "0", "entity - whole (y)", "y?")])
    bench = read_questions(str(tmp_path / "dup.csv"), skip_first_row=False)
    assert any("reappears" in n for n in bench.notes)       # ELLA's reader would keep the later block only
    assert bench.items["alpha"].qid2dependency == {3: [0]}


# -- the grid -------------------------------------------------------------------------------------

def test_grid_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(4)]
    path = tmp_path / "x.png"
    make_grid(images).save(path)
    with Image.open(path) as im:
        grid = im.convert("RGB")
    assert grid.size == (32, 32)
    g = np.asarray(grid)
    assert (g[:16, :16] == images[0]).all() and (g[:16, 16:] == images[1]).all()
    assert (g[16:, :16] == images[2]).all() and (g[16:, 16:] == images[3]).all()
    crops = split_grid(grid)
    assert all((np.asarray(c) == im).all() for c, im in zip(crops, images))
    assert [np.asarray(c).tolist() for c in split_grid(grid, pic_num=2)] == [im.tolist() for im in images[:2]]
    assert (np.asarray(split_grid(grid, resolution=16)[3]) == images[3]).all()
    assert crop_boxes(512) == [(0, 0, 512, 512), (512, 0, 1024, 512), (0, 512, 512, 1024), (512, 512, 1024, 1024)]


def test_grid_errors(tmp_path):
    sq = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="holds 4 images"):
        make_grid([sq] * 3)
    with pytest.raises(ValueError, match="square"):
        make_grid([np.zeros((8, 6, 3), np.uint8)] * 4)
    with pytest.raises(ValueError, match="images\\[2\\] is 4x4"):
        make_grid([sq, sq, np.zeros((4, 4, 3), np.uint8), sq])
    grid = make_grid([sq] * 4)
    with pytest.raises(ValueError, match="tiles of 16 px need a grid of at least 32x32"):
        split_grid(grid, resolution=16)      # the grid's size instead of the tile size
    with pytest.raises(ValueError, match="pass resolution="):
        split_grid(Image.new("RGB", (16, 10)))
    with pytest.raises(ValueError, match="pic_num"):
        split_grid(grid, pic_num=5)


def test_grids_from_split_files(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "split"
    src.mkdir()
    images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(4)]
    for k, im in enumerate(images):
        Image.fromarray(im).save(src / f"alpha_{k}.png")
    assert grids_from_split_files(str(src), str(tmp_path / "grid"), ["alpha"], pattern="{item_id}_{k}.png") == ["alpha"]
    with Image.open(tmp_path / "grid" / "alpha.png") as im:
        crops = split_grid(im.convert("RGB"))
    assert all((np.asarray(c) == im).all() for c, im in zip(crops, images))
    with pytest.raises(FileNotFoundError, match="beta"):
        grids_from_split_files(str(src), str(tmp_path / "grid"), ["beta"])


# -- the VQA backends --------------------------------------------------------------------------

def test_mplug_backend_calls_modelscope_as_ella_does(monkeypatch):
    # a stand-in modelscope records how the pipeline is built and called (the real one cannot run here)
    made, asked = [], []

    def pipeline(task, model, device):
        made.append((task, model, device))
        return lambda inputs: asked.append(inputs) or {"text": "yes" if "cat" in inputs["question"] else "no"}

    fake = types.ModuleType("modelscope")
    pipelines = types.ModuleType("modelscope.pipelines")
    pipelines.pipeline = pipeline
    utils = types.ModuleType("modelscope.utils")
    constant = types.ModuleType("modelscope.utils.constant")
    constant.Tasks = types.SimpleNamespace(visual_question_answering="visual-question-answering")
    for name, mod in {"modelscope": fake, "modelscope.pipelines": pipelines, "modelscope.utils": utils,
                      "modelscope.utils.constant": constant}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    from segros.eval.dpg_vqa import MPLUG_MODEL, build_vqa

    vqa = build_vqa("mplug", device="cuda:0")
    image = Image.new("RGB", (4, 4))
    assert vqa.answer(image, ["Is there a cat?", "Is there a dog?"]) == ["yes", "no"]
    assert made == [("visual-question-answering", "damo/mplug_visual-question-answering_coco_large_en", "cuda:0")]
    assert MPLUG_MODEL in vqa.name
    assert [a["question"] for a in asked] == ["Is there a cat?", "Is there a dog?"] and asked[0]["image"] is image


def test_mplug_backend_for_real():
    pytest.importorskip("modelscope.pipelines", reason="modelscope is not installed here (its mPLUG pipeline needs "
                        "torchvision, timm and fairseq, which do not run beside this CPU torch)")
    from segros.eval.dpg_vqa import MPLUGVQA

    try:
        vqa = MPLUGVQA(device="cpu")
    except Exception as e:  # no network, no cached model
        pytest.skip(f"mPLUG-large cannot be loaded offline: {type(e).__name__}: {str(e)[:200]}")
    assert vqa.answer(Image.new("RGB", (64, 64), "white"), ["Is the image white?"])[0] in ("yes", "no")


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "yes", "no", "is", "there", "a", "the", "cat", "dog", "mat",
         "black", "brown", "fluffy", "on", "this", "photo", "it", "night", "?", "[DEC]"]


def tiny_blip(folder, yes_bias=None):
    """A tiny random BlipForQuestionAnswering + processor saved to ``folder`` (real file layout)."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(VOCAB) + "\n")
    tok = BertTokenizer(os.path.join(folder, "vocab.txt"), bos_token="[DEC]")   # BLIP's tokenizer names [DEC] its bos
    ids = {t: i for i, t in enumerate(VOCAB)}
    config = BlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8, initializer_range=0.2),
        text_config=dict(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         encoder_hidden_size=32, max_position_embeddings=64, initializer_range=0.2, pad_token_id=ids["[PAD]"], bos_token_id=ids["[DEC]"],
                         sep_token_id=ids["[SEP]"], eos_token_id=ids["[SEP]"]),
    )
    torch.manual_seed(0)
    model = BlipForQuestionAnswering(config).eval()
    if yes_bias is not None:
        with torch.no_grad():
            model.text_decoder.cls.predictions.bias[ids["yes"]] += yes_bias
    model.save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tok).save_pretrained(folder)
    return folder


def test_transformers_backend_batches_like_single_generate(tmp_path):
    # the backend encodes the image once and batches questions of equal length; each answer must be
    # transformers' own generate on that question alone. (Padding questions to one batch would not
    # be: transformers' BLIP text decoder ignores the cross-attention mask, so it attends to pads.)
    import torch
    from segros.eval.dpg_vqa import TransformersVQA

    folder = tiny_blip(str(tmp_path / "blip"))
    vqa = TransformersVQA(folder, max_new_tokens=3)
    questions = ["Is there a cat?", "Is the brown dog fluffy on the mat?", "Is it night?", "dog",
                 "Is this a photo of a black cat on the mat?"]
    for seed in range(2):
        image = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8))
        batched = vqa.answer(image, questions)
        single = []
        for q in questions:
            inputs = vqa.processor(images=image, text=q, return_tensors="pt")
            with torch.no_grad():
                out = vqa.model.generate(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"],
                                         attention_mask=inputs["attention_mask"], max_new_tokens=3)
            single.append(vqa.processor.tokenizer.decode(out[0], skip_special_tokens=True).strip())
        assert batched == single
        assert len(set(batched)) > 1      # the tiny model's answers depend on the question
    assert folder in vqa.name


def test_transformers_backend_end_to_end(tmp_path, layout, ella):
    from segros.eval.dpg_vqa import build_vqa

    bench = load_benchmark(ella, skip_first_row=False)
    # random tiny BLIP: answers are whatever it says; the results must be ELLA's rule applied to them
    vqa = build_vqa("transformers", model=tiny_blip(str(tmp_path / "blip")), device="cpu")
    out = str(tmp_path / "results.json")
    results = score_layout(layout, bench, vqa, results_path=out, progress=False)
    with open(out) as f:
        on_disk = json.load(f)
    assert on_disk["vqa_model"].startswith("transformers BlipForQuestionAnswering")
    assert set(on_disk["l1"]) == {"attribute", "entity", "global", "relation"}
    assert set(on_disk["l2"]) == {"attribute - color", "attribute - texture", "entity - whole", "global -", "relation - spatial"}
    expected = []
    for rec in on_disk["items"]:
        answers = [{int(q): a for q, a in crop.items()} for crop in rec["answers"]]
        assert len(answers) == 4 and set(answers[0]) == set(bench.items[rec["item_id"]].qid2dependency)
        expected.append(item_score(bench.items[rec["item_id"]].qid2dependency, answers))
    assert results["dpg"] == pytest.approx(100 * np.mean(expected))

    # a tiny BLIP biased to answer "yes" (one token) scores 100 everywhere; biased to "no", 0
    yes = build_vqa("transformers", model=tiny_blip(str(tmp_path / "yes"), yes_bias=1e4), device="cpu")
    yes.generate_kwargs["max_new_tokens"] = 1
    r = score_layout(layout, bench, yes, results_path=str(tmp_path / "r.json"), progress=False)
    assert r["dpg"] == 100.0 and set(r["l1"].values()) == {100.0}
    no = build_vqa("transformers", model=tiny_blip(str(tmp_path / "no"), yes_bias=-1e4), device="cpu")
    r = score_layout(layout, bench, no, results_path=str(tmp_path / "r.json"), progress=False)
    assert r["dpg"] == 0.0 and set(r["l2"].values()) == {0.0}


def test_build_vqa_errors():
    from segros.eval.dpg_vqa import build_vqa

    with pytest.raises(ValueError, match="choose 'mplug' or 'transformers'"):
        build_vqa("clip")
    with pytest.raises(ValueError, match="needs model="):
        build_vqa("transformers")


def test_command_line(tmp_path, layout, ella):
    from segros.eval.dpg import main

    folder = tiny_blip(str(tmp_path / "blip"), yes_bias=1e4)
    out = str(tmp_path / "shard1.json")
    results = main(["--layout", layout, "--ella", ella, "--vqa", "transformers", "--model", folder, "--device", "cpu",
                    "--keep-first-row", "--num-shards", "2", "--shard", "1", "--pic-num", "2", "--out", out])
    with open(out) as f:
        on_disk = json.load(f)
    assert on_disk["n_items"] == 1 and [r["item_id"] for r in on_disk["items"]] == ["beta"]
    assert on_disk["settings"]["skip_first_row"] is False and on_disk["settings"]["pic_num"] == 2
    assert len(on_disk["items"][0]["answers"]) == 2 and results["vqa_model"].endswith(folder)
