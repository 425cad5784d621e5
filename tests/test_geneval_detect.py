"""The transformers GenEval scorer (segros.eval.geneval_detect): mmdet's pre/post-processing around a
tiny random Mask2Former, GenEval's colour rule on a tiny random CLIP, and results.jsonl end to end."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from geneval_tiny import COCO_NAMES, draw, prompts, save_tiny_clip, tiny_mask2former
from segros.eval.geneval import COLORS, OBJECTS, Detection, evaluate_image
from segros.eval.geneval_detect import (
    COLOR_TEMPLATES, Mask2FormerDetector, OpenClipColors, TransformersClipColors, TransformersScorer,
    check_class_names, masked_crop, masks_to_boxes, mmdet_preprocess, open_clip_available, openclip_preprocess,
    rescale_size, select_candidates, mask_results,
)
from segros.eval.geneval_layout import generate_layout
from segros.eval.geneval_scoring import read_results


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(str(tmp_path_factory.mktemp("clip")))


@pytest.fixture(scope="module")
def colors(clip_dir):
    return TransformersClipColors.from_pretrained(clip_dir, device="cpu")


# -- mmdet's test pipeline ------------------------------------------------------------------

@pytest.mark.parametrize("wh, expected", [
    ((512, 512), (800, 800)), ((256, 256), (800, 800)), ((1024, 1024), (800, 800)),
    ((640, 480), (1067, 800)),     # 800/480 = 1.667 < 1333/640: short side to 800, 1066.67 rounds up
    ((2000, 500), (1333, 333)),    # 1333/2000 = 0.6665 < 800/500: long side to 1333
    ((500, 2000), (333, 1333)),
])
def test_rescale_size_as_mmcv(wh, expected):
    assert rescale_size(*wh) == expected


def test_preprocess_resizes_pads_with_128_and_normalises():
    image = np.zeros((30, 40, 3), np.uint8)
    image[:, :, 0], image[:, :, 1], image[:, :, 2] = 10, 128, 250
    x, resized = mmdet_preprocess(image, scale=(100, 50))  # factor min(100/40, 50/30) = 1.667 -> 67 x 50
    assert resized == (50, 67) and x.shape == (1, 3, 64, 96)  # padded to multiples of 32
    mean, std = torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375])
    inside = (torch.tensor([10.0, 128.0, 250.0]) - mean) / std  # a constant image stays constant
    pad = (128.0 - mean) / std
    assert torch.allclose(x[0, :, :50, :67], inside.view(3, 1, 1).expand(3, 50, 67), atol=1e-5)
    assert torch.allclose(x[0, :, 50:, :], pad.view(3, 1, 1).expand(3, 14, 96), atol=1e-5)
    assert torch.allclose(x[0, :, :, 67:], pad.view(3, 1, 1).expand(3, 64, 29), atol=1e-5)
    # a non-constant image: bilinear (half-pixel centres), rounded to uint8 as cv2 returns it
    ramp = np.tile(np.arange(0, 200, 10, dtype=np.uint8)[None, :, None], (20, 1, 3))
    x, resized = mmdet_preprocess(ramp, scale=(40, 40))
    raw = x[0, 0, :40, :40] * std[0] + mean[0]
    ref = F.interpolate(torch.from_numpy(ramp).permute(2, 0, 1)[None].float(), size=(40, 40), mode="bilinear",
                        align_corners=False).round()[0, 0]
    assert torch.allclose(raw, ref, atol=1e-3) and raw[0, 0].item() == 0 and raw[0, 1].item() == 2  # 2.5 rounds to even
    with pytest.raises(ValueError, match="uint8"):
        mmdet_preprocess(np.zeros((4, 4), np.uint8))


def test_masks_to_boxes_end_exclusive():
    masks = torch.zeros((3, 10, 12), dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 7, 11] = True
    boxes = masks_to_boxes(masks)
    assert boxes.tolist() == [[3.0, 2.0, 9.0, 5.0], [11.0, 7.0, 12.0, 8.0], [0.0, 0.0, 0.0, 0.0]]


def test_instance_postprocess_on_hand_made_logits():
    """Q = 3 queries, 4 thing classes + 1 stuff class + no-object; masks at 1/4 of a 32 x 32 input."""
    class_logits = torch.full((3, 6), -10.0)
    class_logits[0, 2] = 5.0    # query 0: class 2, sure
    class_logits[1, 4] = 6.0    # query 1: the stuff class -> dropped
    class_logits[2, 1] = 0.0    # query 2: class 1 vs no-object, even odds
    class_logits[2, 5] = 0.0
    queries, labels, probs = select_candidates(class_logits, num_things=4, max_per_image=5)
    got = sorted(zip(queries.tolist(), labels.tolist(), probs.tolist()))
    p0 = math.exp(5) / (math.exp(5) + 5 * math.exp(-10))
    assert got[0][:2] == (0, 2) and got[0][2] == pytest.approx(p0, rel=1e-5)
    assert (2, 1) in [g[:2] for g in got] and 4 not in labels.tolist()
    assert len(got) == 4  # 5 best pairs, minus the stuff one
    # min_score keeps only pairs above it
    q, l, p = select_candidates(class_logits, num_things=4, max_per_image=5, min_score=0.3)
    assert sorted(zip(q.tolist(), l.tolist())) == [(0, 2), (2, 1)]

    mask_logits = torch.full((2, 8, 8), -4.0)
    mask_logits[0, 1:3, 2:6] = 3.0
    binary, scores, boxes = mask_results(mask_logits, padded_hw=(32, 32), resized_hw=(32, 32), original_hw=(16, 16))
    assert binary.shape == (2, 16, 16) and not binary[1].any()
    up = F.interpolate(F.interpolate(mask_logits[None], size=(32, 32), mode="bilinear", align_corners=False),
                       size=(16, 16), mode="bilinear", align_corners=False)[0]
    assert torch.equal(binary, up > 0)
    assert scores[0].item() == pytest.approx(up[0].sigmoid()[up[0] > 0].mean().item(), rel=1e-5)
    assert scores[1].item() == 0.0 and boxes[1].tolist() == [0, 0, 0, 0]
    ys, xs = torch.nonzero(up[0] > 0, as_tuple=True)
    assert boxes[0].tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    # padding is cropped off before the resize to the original size
    binary, _, boxes = mask_results(mask_logits, padded_hw=(32, 32), resized_hw=(16, 32), original_hw=(16, 32))
    kept = F.interpolate(mask_logits[None], size=(32, 32), mode="bilinear", align_corners=False)[0, :, :16] > 0
    assert torch.equal(binary, kept) and boxes[0, 1].item() >= 3  # rows 1:3 of 8 -> about 4:12 of 32, all kept
    squashed, _, _ = mask_results(mask_logits, padded_hw=(32, 32), resized_hw=(32, 32), original_hw=(16, 32))
    assert not torch.equal(squashed, binary)  # without the crop the padding would be squeezed into the image


def test_class_names_must_be_coco_in_order():
    check_class_names(dict(enumerate(COCO_NAMES)), OBJECTS)  # mouse / remote / keyboard stand for GenEval's names
    check_class_names({i: n.replace(" ", "_").upper() for i, n in enumerate(OBJECTS)}, OBJECTS)
    swapped = dict(enumerate(COCO_NAMES))
    swapped[1], swapped[2] = swapped[2], swapped[1]
    with pytest.raises(ValueError, match=r"1: 'car' \(want 'bicycle'\)"):
        check_class_names(swapped, OBJECTS)
    with pytest.raises(ValueError, match="fewer than the 80"):
        check_class_names(dict(enumerate(COCO_NAMES[:79])), OBJECTS)
    # a panoptic checkpoint (80 things, then stuff) is accepted; stuff labels are dropped later
    check_class_names({**dict(enumerate(COCO_NAMES)), 80: "wall", 81: "sky"}, OBJECTS)


def test_detector_on_tiny_mask2former():
    model = tiny_mask2former(favour="apple")
    full = Mask2FormerDetector(model, device="cpu", min_score=None)
    image = draw("a photo of an apple", 0)
    dets = full(image)
    assert set(dets) <= set(OBJECTS) and "apple" in dets
    apples = dets["apple"]
    assert [d.score for d in apples] == sorted((d.score for d in apples), reverse=True)
    assert all(d.mask.shape == image.shape[:2] and d.mask.dtype == bool for d in apples)
    assert any(d.score > 0.3 for d in apples)
    for d in apples:  # the box is the mask's extent
        if d.mask.any():
            ys, xs = np.nonzero(d.mask)
            assert d.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    # the default skips pairs whose class probability cannot pass 0.3: same detections above it
    fast = Mask2FormerDetector(model, device="cpu")(image)
    above = {c: [(d.box, d.score) for d in v if d.score > 0.3] for c, v in dets.items()}
    assert {c: [(d.box, d.score) for d in v] for c, v in fast.items()} == {c: v for c, v in above.items() if v}
    with pytest.raises(ValueError, match="COCO's 80 classes"):
        Mask2FormerDetector(tiny_mask2former(), class_names=OBJECTS[::-1], device="cpu")


# -- colour ----------------------------------------------------------------------------------

def test_masked_crop_is_gray_outside_the_mask():
    image = Image.fromarray(np.full((20, 30, 3), 200, np.uint8))
    mask = np.zeros((20, 30), bool)
    mask[5:10, 4:12] = True
    crop = np.asarray(masked_crop(image, (2.0, 3.0, 14.0, 12.0), mask))
    assert crop.shape == (9, 12, 3)
    assert (crop[2:7, 2:10] == 200).all()            # inside the mask: the image
    assert (crop[0] == 0x99).all() and (crop[:, 0] == 0x99).all()  # outside: #999
    assert (np.asarray(masked_crop(image, (2, 3, 14, 12), mask, bgcolor="original")) == 200).all()
    # PIL rounds the box half to even: (2.4, 3.6, 13.5, 12.5) -> (2, 4, 14, 12)
    assert np.asarray(masked_crop(image, (2.4, 3.6, 13.5, 12.5), mask)).shape == (8, 12, 3)
    assert np.asarray(masked_crop(image, (2, 3, 14, 12), mask, crop=False)).shape == (20, 30, 3)
    with pytest.raises(ValueError, match="mask shape"):
        masked_crop(image, (0, 0, 5, 5), mask.T)


@pytest.mark.parametrize("size, resized, offset", [
    ((300, 200), (336, 224), (56, 0)),   # wide: short side 200 -> 224, long int(224 * 300 / 200)
    ((200, 301), (224, 337), (0, 56)),   # tall: (337 - 224) / 2 = 56.5 rounds to 56 (half to even)
    ((200, 339), (224, 379), (0, 78)),   # 379.68 truncated to 379; (379 - 224) / 2 = 77.5 rounds to 78 (even)
    ((225, 224), (225, 224), (0, 0)),    # already 224 short: no resize; (225 - 224) / 2 = 0.5 rounds to 0
    ((10, 7), (320, 224), (48, 0)),      # small crops are upscaled
])
def test_openclip_preprocess_matches_torchvision_rules(size, resized, offset):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    x = openclip_preprocess(image, 224)
    ref = image.resize(resized, Image.BICUBIC) if resized != size else image
    ref = np.asarray(ref.crop((offset[0], offset[1], offset[0] + 224, offset[1] + 224)), dtype=np.float32) / 255
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert np.allclose(x.permute(1, 2, 0).numpy(), (ref - mean) / std, atol=1e-5)


def test_text_weights_follow_the_official_classifier(colors):
    weights = colors.text_weights("apple")
    assert weights.shape == (16, 10)
    for j, colour in enumerate(COLORS):
        texts = [f"a photo of a {colour} apple", f"a photo of a {colour}-colored apple", f"a photo of a {colour} object"]
        assert [t.format(c=colour, classname="apple") for t in COLOR_TEMPLATES] == texts
        tok = colors.tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            feats = colors.model.get_text_features(**tok)
        feats = feats if torch.is_tensor(feats) else feats.pooler_output
        mean = F.normalize(feats, dim=-1).mean(0)
        assert torch.allclose(weights[:, j], mean / mean.norm(), atol=1e-5)
    assert colors.text_weights("apple") is weights  # cached per class name
    assert not torch.allclose(colors.text_weights("cup"), weights)


def test_colour_of_each_object_is_the_argmax_over_its_masked_crop(colors):
    image = Image.fromarray(draw("a photo of a red apple", 3))
    masks = [np.zeros((48, 48), bool) for _ in range(3)]
    masks[0][4:20, 4:20], masks[1][10:40, 20:30], masks[2][30:47, 0:47] = True, True, True
    objects = [Detection((4, 4, 20, 20), 0.9, mask=masks[0]), Detection((20, 10, 30, 40), 0.8, mask=masks[1]),
               Detection((0, 30, 47, 47), 0.7, mask=masks[2])]
    logits = colors.logits(image, objects, "apple")
    with torch.no_grad():
        for k, d in enumerate(objects):
            pixels = openclip_preprocess(masked_crop(image, d.box, d.mask), 32)[None]
            feats = colors.model.get_image_features(pixel_values=pixels)
            feats = F.normalize(feats if torch.is_tensor(feats) else feats.pooler_output, dim=-1)
            assert torch.allclose(logits[k], 100 * (feats @ colors.text_weights("apple"))[0], atol=1e-3)
    assert colors(image, objects, "apple") == [tuple(COLORS)[i] for i in logits.argmax(1)]
    assert colors(image, [], "apple") == []
    assert colors.name.startswith("transformers CLIP ")


@pytest.mark.skipif(not open_clip_available(), reason="open_clip is not importable here: it needs torchvision, whose "
                    "registry build does not load beside this CPU torch; the transformers backend is tested instead")
def test_open_clip_backend_follows_the_same_rule():
    import open_clip

    torch.manual_seed(0)
    model = open_clip.model.CLIP(embed_dim=16, vision_cfg=dict(layers=1, width=32, head_width=16, patch_size=8, image_size=32),
                                 text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))
    preprocess = open_clip.transform.image_transform(32, is_train=False)
    colors = OpenClipColors(model, preprocess, open_clip.get_tokenizer("ViT-L-14"), device="cpu")
    image = Image.fromarray(draw("p", 0))
    mask = np.zeros((48, 48), bool)
    mask[4:30, 4:30] = True
    objects = [Detection((4, 4, 30, 30), 0.9, mask=mask)]
    with torch.no_grad():
        cols = []
        for colour in COLORS:
            feats = model.encode_text(open_clip.get_tokenizer("ViT-L-14")([t.format(c=colour, classname="cup") for t in COLOR_TEMPLATES]))
            mean = F.normalize(feats, dim=-1).mean(0)
            cols.append(mean / mean.norm())
        img = F.normalize(model.encode_image(preprocess(masked_crop(image, objects[0].box, mask))[None]), dim=-1)
    expected = tuple(COLORS)[int((img @ torch.stack(cols, 1)).argmax())]
    assert colors(image, objects, "cup") == [expected]
    # our torchvision-free transform equals open_clip's on crops of several shapes ...
    for box in [(4, 4, 30, 30), (0, 10, 47, 20), (10, 0, 13, 48)]:
        crop = masked_crop(image, box, mask)
        assert torch.allclose(openclip_preprocess(crop, 32), preprocess(crop), atol=1e-5)
    # ... and equals the transform open_clip builds for ("ViT-L-14", "openai") (its settings, no weights)
    cfg = open_clip.pretrained.get_pretrained_cfg("ViT-L-14", "openai")
    official = open_clip.image_transform(224, is_train=False, mean=cfg["mean"], std=cfg["std"],
                                         interpolation=cfg["interpolation"], resize_mode=cfg["resize_mode"])
    rng = np.random.default_rng(1)
    for w, h in [(300, 200), (200, 339), (225, 224), (10, 7), (3, 500), (512, 512), (224, 224)]:
        crop = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        assert torch.allclose(openclip_preprocess(crop, 224), official(crop), atol=1e-5), (w, h)


# -- the scorer, end to end ------------------------------------------------------------------

class Spy:
    """Wraps a colour classifier and records (classname, number of objects) per call."""

    def __init__(self, inner):
        self.inner, self.calls, self.name = inner, [], inner.name

    def __call__(self, image, objects, classname):
        self.calls.append((classname, len(objects)))
        return self.inner(image, objects, classname)


def test_tiny_models_write_a_full_results_jsonl(tmp_path, colors):
    meta = prompts()
    generate_layout(tmp_path, meta, lambda batch, seed: [draw(p, seed + k) for k, p in enumerate(batch)],
                    images_per_prompt=2, progress=False)
    detector = Mask2FormerDetector(tiny_mask2former(favour="apple"), device="cpu")
    spy = Spy(colors)
    scorer = TransformersScorer(detector, spy)
    results = scorer.score(tmp_path, meta, images_per_prompt=2, progress=False)
    assert results["scorer"] == "transformers" and not results["partial"]
    assert results["detector"].startswith("transformers Mask2Former") and results["color_model"] == colors.name
    assert "not GenEval's detector" in results["note"]
    rows = read_results(tmp_path / "results_transformers.jsonl")
    assert len(rows) == 14 and all(list(r) == ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"] for r in rows)
    assert [json.loads(r["metadata"]) for r in rows] == [m for m in meta for _ in range(2)]
    # every verdict is the rule engine's on the same detections and colours, recomputed here
    for row in rows:
        m = json.loads(row["metadata"])
        image = Image.open(row["filename"]).convert("RGB")
        dets = detector(np.asarray(image))
        for req in m["include"]:
            found = [d for d in dets.get(req["class"], []) if d.score > (0.9 if m["tag"] == "counting" else 0.3)][:req["count"]]
            if "color" in req and len(found) == req["count"]:
                for d, c in zip(found, colors(image, found, req["class"])):
                    d.color = c
        assert (row["correct"], row["reason"]) == evaluate_image(m, dets)
        kept = {c: [[*d.box, d.score] for d in v if d.score > (0.9 if m["tag"] == "counting" else 0.3)][:16] for c, v in dets.items()}
        assert json.loads(row["details"]) == {c: v for c, v in kept.items() if v}
    # apples are found, so the red-apple and green-apple clauses were colour-checked, one object each;
    # the tv remote and the computer mouse were never found, so never colour-checked
    assert spy.calls == [("apple", 1)] * 4  # red apple x 2 images, green apple x 2 images
    assert [r["correct"] for r in rows if r["prompt"] == "a photo of an apple"] == [True, True]
    assert all(r["reason"] == "expected computer mouse>=1, found 0" for r in rows if "mouse" in r["prompt"])


def test_build_scorer_from_checkpoint_folders(tmp_path, clip_dir):
    from segros.eval.geneval_scorers import build_scorer

    tiny_mask2former(favour="cup").save_pretrained(tmp_path / "m2f")
    scorer = build_scorer("transformers", detector=str(tmp_path / "m2f"), clip=clip_dir, color_backend="transformers",
                          device="cpu", local_files_only=True, detector_kwargs={"scale": (64, 64)})
    assert isinstance(scorer, TransformersScorer) and scorer.detector.scale == (64, 64)
    assert scorer.labels()["detector"] == f"transformers Mask2Former {tmp_path / 'm2f'}"
    assert scorer.labels()["color_model"] == f"transformers CLIP {clip_dir}"
    meta = prompts()[:2]
    generate_layout(tmp_path / "layout", meta, lambda batch, seed: [draw(p, seed) for p in batch], images_per_prompt=1,
                    progress=False)
    results = scorer.score(tmp_path / "layout", meta, images_per_prompt=1, progress=False)
    assert results["n_images_scored"] == 2 and set(results["summary"]["tags"]) == {"single_object", "two_object"}
    with pytest.raises(ValueError, match="color_backend"):
        build_scorer("transformers", detector=str(tmp_path / "m2f"), color_backend="clip")
    with pytest.raises(ValueError, match=r"unknown settings \['scale'\].*detector_kwargs"):
        build_scorer("transformers", detector=str(tmp_path / "m2f"), scale=(64, 64))


class Scripted:
    """A detector returning fixed detections (with masks) per image index, named like a real one."""

    name = "scripted"

    def __init__(self, by_mean):
        self.by_mean = by_mean

    def __call__(self, image):
        return {c: [Detection(d.box, d.score, mask=d.mask) for d in v] for c, v in self.by_mean[int(image.mean())].items()}


def test_known_verdicts_through_the_scorer(tmp_path):
    """Scripted detections and scripted colours: the verdicts GenEval's rules give."""
    full = np.ones((16, 16), bool)
    left, right = (1, 4, 5, 8), (10, 4, 14, 8)
    cases = [  # (metadata, detections, colours by class, correct)
        ({"tag": "position", "include": [{"class": "cup", "count": 1}, {"class": "apple", "count": 1, "position": ["left of", 0]}], "prompt": "p0"},
         {"cup": [Detection(right, 0.8, mask=full)], "apple": [Detection(left, 0.7, mask=full)]}, {}, True),
        ({"tag": "position", "include": [{"class": "cup", "count": 1}, {"class": "apple", "count": 1, "position": ["right of", 0]}], "prompt": "p1"},
         {"cup": [Detection(right, 0.8, mask=full)], "apple": [Detection(left, 0.7, mask=full)]}, {}, False),
        ({"tag": "color_attr", "include": [{"class": "cup", "count": 1, "color": "red"}, {"class": "apple", "count": 1, "color": "green"}], "prompt": "p2"},
         {"cup": [Detection(right, 0.8, mask=full)], "apple": [Detection(left, 0.7, mask=full)]}, {"cup": "red", "apple": "green"}, True),
        ({"tag": "color_attr", "include": [{"class": "cup", "count": 1, "color": "red"}, {"class": "apple", "count": 1, "color": "green"}], "prompt": "p3"},
         {"cup": [Detection(right, 0.8, mask=full)], "apple": [Detection(left, 0.7, mask=full)]}, {"cup": "red", "apple": "red"}, False),
        ({"tag": "counting", "include": [{"class": "cup", "count": 2}], "exclude": [{"class": "cup", "count": 3}], "prompt": "p4"},
         {"cup": [Detection(left, 0.95, mask=full), Detection(right, 0.92, mask=full), Detection(right, 0.85, mask=full)]}, {}, True),
    ]
    meta = [c[0] for c in cases]
    grey = {m["prompt"]: 10 * i for i, m in enumerate(meta)}  # image i is a flat grey 10 * i
    generate_layout(tmp_path, meta, lambda batch, seed: [np.full((16, 16, 3), grey[p], np.uint8) for p in batch],
                    images_per_prompt=1, progress=False)
    by_mean = {i * 10: c[1] for i, c in enumerate(cases)}
    colour_of = {i * 10: c[2] for i, c in enumerate(cases)}

    def colours(image, objects, classname):
        return [colour_of[int(np.asarray(image).mean())][classname]] * len(objects)

    colours.name = "scripted colours"
    results = TransformersScorer(Scripted(by_mean), colours).score(tmp_path, meta, images_per_prompt=1, progress=False)
    rows = read_results(results["results_file"])
    assert [r["correct"] for r in rows] == [c[3] for c in cases]
    assert rows[3]["reason"] == "expected green apple>=1, found 0 green; and 1 red"
    assert rows[1]["reason"] == "expected apple right of target, found left of target"
    assert results["summary"]["tags"] == {"position": 0.5, "color_attr": 0.5, "counting": 1.0}


def _open_clip_to_transformers(model, config):
    """A transformers CLIPModel holding an open_clip CLIP's weights (the mapping the OpenAI ViT-L/14
    conversion uses: fused in_proj -> q/k/v, c_fc/c_proj -> fc1/fc2, proj matrices transposed)."""
    from transformers import CLIPModel

    sd, out = model.state_dict(), {}
    for side, src, n in (("text_model", "", config.text_config.num_hidden_layers),
                         ("vision_model", "visual.", config.vision_config.num_hidden_layers)):
        for i in range(n):
            a, b = f"{src}transformer.resblocks.{i}.", f"{side}.encoder.layers.{i}."
            for j, name in enumerate("qkv"):
                width = sd[a + "attn.in_proj_weight"].shape[1]
                out[b + f"self_attn.{name}_proj.weight"] = sd[a + "attn.in_proj_weight"][j * width:(j + 1) * width]
                out[b + f"self_attn.{name}_proj.bias"] = sd[a + "attn.in_proj_bias"][j * width:(j + 1) * width]
            for ours, theirs in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                                 ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                out[b + ours + ".weight"], out[b + ours + ".bias"] = sd[a + theirs + ".weight"], sd[a + theirs + ".bias"]
    out.update({
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"], "text_model.final_layer_norm.bias": sd["ln_final.bias"],
        "text_projection.weight": sd["text_projection"].T, "visual_projection.weight": sd["visual.proj"].T,
        "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"], "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"], "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
        "logit_scale": sd["logit_scale"],
    })
    hf = CLIPModel(config).eval()
    missing, unexpected = hf.load_state_dict(out, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return hf


def _hf_tokenizer_from_open_clip_bpe(folder):
    """transformers' CLIPTokenizer built from open_clip's bundled OpenAI BPE file, as OpenAI's vocabulary is built."""
    import gzip

    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump({v: i for i, v in enumerate(vocab)}, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(folder)


@pytest.mark.skipif(not open_clip_available(), reason="open_clip is not importable here: it needs torchvision, whose "
                    "registry build does not load beside this CPU torch")
def test_transformers_backend_equals_open_clip_with_the_same_weights(tmp_path):
    """OpenAI's ViT-L/14 exists in both formats; with the same (tiny, random) weights and OpenAI's BPE the
    transformers backend gives GenEval's open_clip colours: same tokens, features and logits."""
    import open_clip
    from transformers import CLIPConfig

    torch.manual_seed(0)
    oc = open_clip.model.CLIP(embed_dim=16, vision_cfg=dict(layers=2, width=32, head_width=16, patch_size=8, image_size=32),
                              text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2),
                              quick_gelu=True).eval()  # OpenAI's weights use QuickGELU
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407,
                         pad_token_id=49407),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=2, hidden_act="quick_gelu"),
        projection_dim=16)
    hf = _open_clip_to_transformers(oc, config)
    tokenizer = _hf_tokenizer_from_open_clip_bpe(str(tmp_path))
    oc_tokenizer = open_clip.get_tokenizer("ViT-L-14")
    texts = [t.format(c=c, classname=o) for o in OBJECTS for c in COLORS for t in COLOR_TEMPLATES]
    ours = tokenizer(texts)["input_ids"]
    theirs = oc_tokenizer(texts)
    assert all(ids == theirs[k][:len(ids)].tolist() and theirs[k][len(ids):].eq(0).all() for k, ids in enumerate(ours))

    preprocess = open_clip.image_transform(32, is_train=False, mean=(0.48145466, 0.4578275, 0.40821073),
                                           std=(0.26862954, 0.26130258, 0.27577711), interpolation="bicubic",
                                           resize_mode="shortest")
    a = OpenClipColors(oc, preprocess, oc_tokenizer, device="cpu")
    b = TransformersClipColors(hf, tokenizer, device="cpu")
    for classname in ("cup", "tv remote", "hair drier"):
        assert torch.allclose(a.text_weights(classname), b.text_weights(classname), atol=1e-5)
    image = Image.fromarray(draw("a photo of a red apple", 5))
    rng = np.random.default_rng(0)
    objects = []
    for _ in range(6):
        x0, y0 = rng.integers(0, 30, size=2)
        x1, y1 = x0 + rng.integers(3, 18), y0 + rng.integers(3, 18)
        mask = np.zeros((48, 48), bool)
        mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) > 0.3
        objects.append(Detection((float(x0), float(y0), float(x1), float(y1)), 0.9, mask=mask))
    assert torch.allclose(a.logits(image, objects, "apple"), b.logits(image, objects, "apple"), atol=1e-3)
    assert a(image, objects, "apple") == b(image, objects, "apple")
