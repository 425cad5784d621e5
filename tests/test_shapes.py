"""The shapes world (segros.data.shapes): rendering, splits, held-out compositions, text, GenEval prompts."""

import json
import re

import numpy as np
import pytest

from segros.data.shapes import COLORS, SHAPES, ShapesWorld, render, shape_mask
from segros.eval.geneval import TAGS, check_metadata, relative_position


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(image_size=64, seed=0)


@pytest.fixture(scope="module")
def train_scenes(world):
    return world.split("pretrain", 300) + world.split("finetune", 300)


def test_palette_and_classes():
    assert set(COLORS) == {"red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"}
    assert len(SHAPES) >= 5 and all(re.fullmatch(r"[a-z]+", s) for s in SHAPES)


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_mask_fills_its_box(shape):
    for n in range(12, 25):
        ys, xs = np.nonzero(shape_mask(shape, n, n))
        assert (ys.min(), xs.min(), ys.max(), xs.max()) == (0, 0, n - 1, n - 1)
    # shapes differ from each other
    masks = {s: shape_mask(s, 18, 18) for s in SHAPES}
    assert all(not np.array_equal(masks[shape], masks[o]) for o in SHAPES if o != shape)


def test_render_is_deterministic_and_seed_sensitive(world):
    a, b = world.split("pretrain", 5), world.split("pretrain", 5)
    assert all(np.array_equal(x.image, y.image) and x.caption == y.caption for x, y in zip(a, b))
    c = ShapesWorld(seed=1).split("pretrain", 5)
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(a, c))
    # an index does not depend on how many scenes were asked for; splits differ
    assert np.array_equal(world.split("pretrain", 12)[4].image, a[4].image)
    assert not np.array_equal(world.split("finetune", 5)[0].image, a[0].image)
    assert np.array_equal(world.split("pretrain", 3, seed=7)[2].image, ShapesWorld(seed=7).split("pretrain", 3)[2].image)


def test_render_given_objects():
    spec = [{"shape": "square", "color": "red", "box": (4, 10, 20, 26)}, {"shape": "circle", "color": "blue", "box": (40, 12, 56, 28)}]
    s1, s2 = render(spec, seed=3), render(spec, seed=3)
    assert np.array_equal(s1.image, s2.image)
    assert s1.objects[0].mask.sum() == 16 * 16 and s1.objects[0].box == (4, 10, 20, 26)
    assert np.abs(s1.image[18, 12].astype(int) - COLORS["red"]).max() <= 16
    assert s1.relation == ("left of", 0, 1)
    assert s1.geneval_caption == "a photo of a red square left of a blue circle"
    assert "a red square" in s1.caption and "a blue circle" in s1.caption
    with pytest.raises(ValueError, match=r"objects_spec\[1\]\['color'\]"):
        render([spec[0], {"shape": "circle", "color": "teal", "box": (0, 0, 9, 9)}])
    with pytest.raises(ValueError, match=r"objects_spec\[0\]\['box'\]"):
        render([{"shape": "circle", "color": "red", "box": (60, 0, 70, 9)}])
    with pytest.raises(ValueError, match=r"objects_spec\[0\]\['shape'\]"):
        render([{"shape": "blob", "color": "red", "box": (0, 0, 9, 9)}])


def test_scene_geometry(train_scenes):
    for scene in train_scenes:
        union = np.zeros((64, 64), int)
        for o in scene.objects:
            ys, xs = np.nonzero(o.mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == o.box
            assert 14 <= o.box[2] - o.box[0] <= 22
            union += o.mask
        assert union.max() <= 1  # no overlap
        if len(scene.objects) == 2:
            rel, i, j = scene.relation
            assert relative_position(scene.objects[i].box, scene.objects[j].box) == {rel}
        else:
            assert scene.relation is None
        if len(scene.objects) >= 3:
            assert len({(o.shape, o.color) for o in scene.objects}) == 1
        if len({(o.shape, o.color) for o in scene.objects}) == 1 and len(scene.objects) >= 2:
            number = ["two", "three", "four"][len(scene.objects) - 2]
            assert f"{number} {scene.objects[0].color} {scene.objects[0].shape}" in scene.caption
        elif scene.relation is not None:
            assert scene.objects[0].color + " " + scene.objects[0].shape in scene.caption
            assert scene.geneval_caption.endswith(f"{scene.relation[0]} a{'n' if scene.objects[1].color[0] in 'aeiou' else ''} {scene.objects[1].color} {scene.objects[1].shape}")


def test_background_is_low_salience(world):
    scene = world.split("pretrain", 1)[0]
    bg = scene.image[~scene.token_object_map((64, 64)).astype(bool)].astype(float)
    assert 100 < bg.mean() < 160 and bg.std() < 12
    assert np.abs(bg - bg.mean(axis=1, keepdims=True)).max() < 20  # near-neutral gray


def test_token_object_map():
    spec = [{"shape": "square", "color": "red", "box": (8, 8, 24, 24)}, {"shape": "square", "color": "blue", "box": (48, 48, 64, 64)}]
    scene = render(spec, seed=0)
    m = scene.token_object_map((4, 4))
    expected = np.zeros((4, 4))
    expected[:2, :2] = 0.25   # 8x8 of each 16x16 patch
    expected[3, 3] = 1.0
    assert np.allclose(m, expected)
    assert np.allclose(scene.token_object_map((4, 4), obj=1), np.where(np.arange(16).reshape(4, 4) == 15, 1.0, 0.0))
    assert scene.token_object_map((64, 64)).sum() == 16 * 16 * 2
    with pytest.raises(ValueError, match="grid_hw"):
        scene.token_object_map((5, 5))
    with pytest.raises(ValueError, match="obj"):
        scene.token_object_map((4, 4), obj=2)


def test_held_out_compositions_only_in_eval(world, train_scenes):
    held_pairs = world.holdout_color_shape
    held_triples = world.holdout_relation
    assert ("square", "right of", "circle") in held_triples  # converse of a held-out triple
    for scene in train_scenes:
        pairs, triples = world.compositions(scene)
        assert not pairs & held_pairs and not triples & held_triples
    eval_scenes = world.split("eval", 200)
    seen = set()
    for scene in eval_scenes:
        pairs, triples = world.compositions(scene)
        seen |= (pairs & held_pairs) | (triples & held_triples)
    assert len(seen) >= len(held_pairs) // 2 + 2
    assert 0.3 < np.mean([world.is_held_out(s) for s in eval_scenes]) < 0.8


def test_no_holdout_world():
    w = ShapesWorld(holdout={})
    assert not w.holdout_color_shape and not w.holdout_relation and len(w.split("eval", 5)) == 5
    with pytest.raises(ValueError, match="holdout"):
        ShapesWorld(holdout={"color_shape": [("teal", "circle")]})


def test_vocabulary_covers_all_text(world, train_scenes):
    vocab = set(world.vocabulary())
    assert len(vocab) < 150
    texts = [s.caption for s in train_scenes] + [s.geneval_caption for s in train_scenes]
    qa = world.qa(train_scenes[:200])
    texts += [q["question"] for q in qa] + [q["answer"] for q in qa]
    texts += [m["prompt"] for m in world.geneval_metadata(553)]
    for t in texts:
        assert set(t.split()) <= vocab, t
    assert max(len(s.caption.split()) for s in train_scenes) <= 24
    # the captions carry words without a visual counterpart
    assert any("background" in s.caption for s in train_scenes) and all(s.caption != s.geneval_caption for s in train_scenes[:5])


def test_qa_answers_are_true(world, train_scenes):
    qa = world.qa(train_scenes[:100])
    assert {q["kind"] for q in qa} == {"color", "count", "position", "exists"}
    assert all(len(q["answer"].split()) == 1 for q in qa)
    k = 0
    for scene in train_scenes[:100]:
        shapes = [o.shape for o in scene.objects]
        while k < len(qa) and qa[k]["image"] is scene.image:
            q = qa[k]
            if q["kind"] == "count":
                shape = next(s for s in SHAPES if f"how many {s}" in q["question"])
                assert q["answer"] == str(shapes.count(shape))
            if q["kind"] == "color":
                shape = q["question"].split()[-1]
                assert q["answer"] == next(o.color for o in scene.objects if o.shape == shape)
            if q["kind"] == "exists":
                words = q["question"].split()
                assert q["answer"] == ("yes" if (words[-2], words[-1]) in {(o.color, o.shape) for o in scene.objects} else "no")
            if q["kind"] == "position":
                assert q["answer"] == scene.relation[0].split()[0]
            k += 1
    assert k == len(qa)
    answers = [q["answer"] for q in qa if q["kind"] == "exists"]
    assert 0.3 < answers.count("yes") / len(answers) < 0.7


def test_geneval_metadata_format(world):
    rows = world.geneval_metadata(553, seed=0)
    assert len(rows) == 553
    counts = {t: sum(r["tag"] == t for r in rows) for t in TAGS}
    assert counts == {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100, "color_attr": 100}
    for r in rows:
        check_metadata(r)
        assert list(r)[0] == "tag" and list(r)[-1] == "prompt"
        json.dumps(r)
        if r["tag"] == "counting":
            (inc,), (exc,) = r["include"], r["exclude"]
            assert 2 <= inc["count"] <= 4 and exc == {"class": inc["class"], "count": inc["count"] + 1}
            assert r["prompt"] == f"a photo of {['two', 'three', 'four'][inc['count'] - 2]} {inc['class']}{'es' if inc['class'].endswith('s') else 's'}"
        else:
            assert "exclude" not in r
        if r["tag"] == "position":
            ref, obj = r["include"]
            assert obj["position"][1] == 0
            assert re.fullmatch(rf"a photo of an? {obj['class']} {obj['position'][0]} an? {ref['class']}", r["prompt"])
        if r["tag"] == "color_attr":
            a, b = r["include"]
            assert a["class"] != b["class"] and a["color"] != b["color"]
            assert re.fullmatch(rf"a photo of an? {a['color']} {a['class']} and an? {b['color']} {b['class']}", r["prompt"])
        if r["tag"] == "colors":
            assert re.fullmatch(rf"a photo of an? {r['include'][0]['color']} {r['include'][0]['class']}", r["prompt"])
    assert "a photo of an orange" in " ".join(r["prompt"] for r in rows)
    assert world.geneval_metadata(553, seed=0) == rows and world.geneval_metadata(553, seed=1) != rows
    # largest remainder: 100 prompts -> exact total, proportions kept within 1
    small = world.geneval_metadata(100)
    assert len(small) == 100
    for t, n in counts.items():
        assert abs(sum(r["tag"] == t for r in small) - n * 100 / 553) < 1


def test_render_from_metadata_satisfies_prompt(world):
    for i, m in enumerate(world.geneval_metadata(120, seed=3)):
        scene = world.render_from_metadata(m, seed=i)
        total = sum(req["count"] for req in m["include"])
        assert len(scene.objects) == total
        start = 0
        for req in m["include"]:
            group = scene.objects[start:start + req["count"]]
            assert all(o.shape == req["class"] for o in group)
            if "color" in req:
                assert all(o.color == req["color"] for o in group)
            if "position" in req:
                rel, target = req["position"]
                ref = scene.objects[sum(r["count"] for r in m["include"][:target])]
                assert relative_position(group[0].box, ref.box) == {rel}
            start += req["count"]


def test_as_dataset(world):
    ds = world.as_dataset("finetune", 6)
    assert len(ds) == 6 and {"image", "text", "metadata"} <= set(ds.column_names)
    assert type(ds.features["image"]).__name__ == "Image"
    scene = world.split("finetune", 6)[2]
    assert np.array_equal(np.asarray(ds[2]["image"]), scene.image) and ds[2]["text"] == scene.caption
    meta = json.loads(ds[2]["metadata"])
    assert [o["shape"] for o in meta["objects"]] == [o.shape for o in scene.objects]


def test_bad_split_name(world):
    with pytest.raises(ValueError, match="split"):
        world.split("train", 3)
