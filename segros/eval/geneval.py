"""GenEval's scoring rules, without its detector (paper §8.3 "GenEval [14]"; Table 1 columns).

The paper scores generation with GenEval (Ghosh et al., NeurIPS 2023): 553 templated prompts in
six tags, four images per prompt, and an object detector plus fixed rules decide whether each
image satisfies its prompt. This module re-implements the *rules* of GenEval's evaluation scripts
(djghosh13/geneval ``evaluation/evaluate_images.py`` and ``evaluation/summary_scores.py``), so that
any detector producing :class:`Detection` lists can be scored the same way:

- keep detections with ``score > 0.3`` (``> 0.9`` when the tag is ``"counting"``), sorted by
  score, at most 16 per class, no NMS (GenEval's default ``max_overlap`` disables it);
- an ``include`` clause takes the top-``count`` detections of its class; fewer is a failure;
- colour: among those top-``count`` detections, the number whose colour equals the requested one
  must be ``>= count`` (GenEval classifies the colour with CLIP on the masked crop; here the
  detector supplies ``Detection.color``);
- position ``[relation, k]``: every kept object of this clause must stand in ``relation`` to
  every object matched by clause ``k`` (see :func:`relative_position`); if clause ``k`` failed,
  the position check fails with "no target";
- ``exclude``: failure if the class has ``>= count`` kept detections (counting prompts exclude
  ``N + 1``).

Conventions left open and fixed here:
- boxes are ``(x1, y1, x2, y2)`` in pixels with y pointing down; centres and sizes are computed
  as GenEval does (``(x1 + x2) / 2`` and ``x2 - x1``), whatever the end convention;
- ties in score keep the detector's order (stable sort);
- ``summarize`` averages over the tags that occur, in order of first appearance (as pandas
  ``groupby(sort=False)`` does in the official ``summary_scores.py``); with all six tags present
  this is the unweighted mean of the six tag accuracies.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from segros.vocab import COLORS, POSITION_THRESHOLD, RELATIONS, TAGS, relative_position  # noqa: F401  (re-exported)

THRESHOLD = 0.3
COUNTING_THRESHOLD = 0.9
MAX_OBJECTS = 16
# GenEval's 80 object classes in the detector's label order (COCO's 80 "thing" categories, in
# COCO order, spelt as GenEval's ``evaluation/object_names.txt``: COCO's "mouse", "remote" and
# "keyboard" are "computer mouse", "tv remote" and "computer keyboard" there).
OBJECTS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
COCO_ALIASES = {"mouse": "computer mouse", "remote": "tv remote", "keyboard": "computer keyboard"}


@dataclass
class Detection:
    """One detected object: box ``(x1, y1, x2, y2)``, confidence in [0, 1], optional colour name and mask."""

    box: tuple
    score: float
    color: str | None = None
    mask: np.ndarray | None = None


# -----------------------------------------------------------------------------
# the rules

def check_metadata(metadata, name="metadata"):
    """Raise ValueError if ``metadata`` is not a GenEval prompt record; messages call it ``name``."""
    if not isinstance(metadata, dict):
        raise ValueError(f"{name} must be a dict, got {type(metadata).__name__}")
    for key in ("tag", "include", "prompt"):
        if key not in metadata:
            raise ValueError(f"{name} is missing the key {key!r}: {metadata}")
    if metadata["tag"] not in TAGS:
        raise ValueError(f"{name}['tag'] must be one of {TAGS}, got {metadata['tag']!r}")
    for i, req in enumerate(metadata["include"]):
        if "class" not in req or "count" not in req:
            raise ValueError(f"{name}['include'][{i}] needs 'class' and 'count': {req}")
        if "color" in req and req["color"] not in COLORS:
            raise ValueError(f"{name}['include'][{i}]['color'] must be a GenEval colour, got {req['color']!r}")
        if "position" in req:
            rel, target = req["position"]
            if rel not in RELATIONS:
                raise ValueError(f"{name}['include'][{i}]['position'][0] must be one of {RELATIONS}, got {rel!r}")
            if not 0 <= int(target) < i:
                raise ValueError(f"{name}['include'][{i}]['position'][1] must index an earlier clause, got {target}")


def filter_detections(detections, tag):
    """Threshold, sort by score (descending, stable) and cap at 16 per class; empty classes are dropped."""
    if not isinstance(detections, dict):
        raise ValueError(f"detections must be a dict class -> list[Detection], got {type(detections).__name__}")
    threshold = COUNTING_THRESHOLD if tag == "counting" else THRESHOLD
    kept = {}
    for classname, dets in detections.items():
        good = [d for d in dets if d.score > threshold]
        good = sorted(good, key=lambda d: -d.score)[:MAX_OBJECTS]
        if good:
            kept[classname] = good
    return kept


def evaluate_filtered(metadata, objects):
    """Apply the include / colour / position / exclude rules to already-filtered detections.

    Clauses of ``include`` are ANDed, clauses of ``exclude`` ORed. Returns ``(correct, reason)``
    where ``reason`` lists every failed clause, one per line ("" when correct).
    """
    correct = True
    reasons = []
    matched_groups = []
    for req in metadata.get("include", []):
        classname, count = req["class"], int(req["count"])
        found = objects.get(classname, [])[:count]
        matched = True
        if len(found) < count:
            matched = False
            reasons.append(f"expected {classname}>={count}, found {len(found)}")
        else:
            if "color" in req:
                colors = [d.color for d in found]
                n_ok = colors.count(req["color"])
                if n_ok < count:
                    matched = False
                    seen = ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
                    reasons.append(f"expected {req['color']} {classname}>={count}, found {n_ok} {req['color']}; and {seen}")
            if "position" in req and matched:
                relation, target = req["position"]
                targets = matched_groups[int(target)]
                if targets is None:
                    matched = False
                    reasons.append(f"no target for {classname} to be {relation}")
                else:
                    for obj in found:
                        for tgt in targets:
                            actual = relative_position(obj.box, tgt.box)
                            if relation not in actual:
                                matched = False
                                reasons.append(f"expected {classname} {relation} target, found {' and '.join(sorted(actual))} target")
                                break
                        if not matched:
                            break
        correct = correct and matched
        matched_groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        classname, count = req["class"], int(req["count"])
        n = len(objects.get(classname, []))
        if n >= count:
            correct = False
            reasons.append(f"expected {classname}<{count}, found {n}")
    return correct, "\n".join(reasons)


def evaluate_image(metadata, detections):
    """Score one image: ``detections`` is the detector's raw output (class -> list of Detection).

    Thresholding / sorting / capping (:func:`filter_detections`) happens here, with the tag's
    threshold. Returns ``(correct: bool, reason: str)``.
    """
    check_metadata(metadata)
    objects = filter_detections(detections, metadata["tag"])
    return evaluate_filtered(metadata, objects)


def result_row(filename, metadata, detections):
    """One ``results.jsonl`` record with the official columns; ``details`` holds the kept boxes + score."""
    check_metadata(metadata)
    objects = filter_detections(detections, metadata["tag"])
    correct, reason = evaluate_filtered(metadata, objects)
    details = {c: [[float(v) for v in d.box[:4]] + [float(d.score)] for d in dets] for c, dets in objects.items()}
    return {
        "filename": str(filename),
        "tag": metadata["tag"],
        "prompt": metadata["prompt"],
        "correct": bool(correct),
        "reason": reason,
        "metadata": json.dumps(metadata),
        "details": json.dumps(details),
    }


def summarize(rows):
    """Per-tag accuracy over images and the overall score, as the official ``summary_scores.py``.

    ``rows`` are dicts with at least ``tag``, ``correct`` and ``metadata`` (the prompt's JSON, used
    to count distinct prompts). Returns ``{"tags": {tag: acc}, "overall": mean of tag accuracies,
    "n_images": int, "n_prompts": int, "image_accuracy": float, "prompt_accuracy": float}``; the
    last is the official "% correct prompts": the share of distinct prompts with at least one
    correct image.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty: nothing to summarise")
    by_tag = {}
    for i, row in enumerate(rows):
        for key in ("tag", "correct"):
            if key not in row:
                raise ValueError(f"rows[{i}] is missing {key!r}")
        by_tag.setdefault(row["tag"], []).append(bool(row["correct"]))
    tags = {tag: float(np.mean(v)) for tag, v in by_tag.items()}
    prompts = {}
    for row in rows:
        key = row.get("metadata", row.get("prompt"))
        key = key if isinstance(key, str) else json.dumps(key, sort_keys=True)
        prompts[key] = prompts.get(key, False) or bool(row["correct"])
    return {
        "tags": tags,
        "overall": float(np.mean(list(tags.values()))),
        "n_images": len(rows),
        "n_prompts": len(prompts),
        "image_accuracy": float(np.mean([bool(r["correct"]) for r in rows])),
        "prompt_accuracy": float(np.mean(list(prompts.values()))),
    }


# -----------------------------------------------------------------------------
# prompts on disk

def write_metadata_jsonl(rows, path):
    """Write GenEval ``evaluation_metadata.jsonl``: one JSON object per line, keys in GenEval order."""
    with open(path, "w") as f:
        for i, row in enumerate(rows):
            check_metadata(row, name=f"rows[{i}]")
            f.write(json.dumps(row) + "\n")


def read_metadata_jsonl(path):
    """Read an ``evaluation_metadata.jsonl`` file back into a list of dicts."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# -----------------------------------------------------------------------------
# the generator's output layout: <out>/<%05d>/metadata.jsonl, <out>/<%05d>/samples/<%05d>.png
# (GenEval's README draws the samples as 0000.png; its generation script, and Harmon's and
# Show-o's GenEval scripts, write five digits; its evaluator reads any <digits>.png)

SAMPLE_DIGITS = 5

def _to_pil(image, where):
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{where}: image must be a PIL image or uint8 [H, W, 3], got {arr.dtype} {arr.shape}")
    return Image.fromarray(arr)


def sample_name(k, digits=SAMPLE_DIGITS):
    """File name of image ``k`` in ``samples/``: ``00000.png`` with the default five digits."""
    return f"{int(k):0{int(digits)}d}.png"


def write_prompt_folder(out_dir, index, metadata, images, sample_digits=SAMPLE_DIGITS, grid=False):
    """Write one prompt's folder ``<out>/<%05d index>/``: ``metadata.jsonl`` (ONE JSON object),
    ``samples/<sample_name(k)>`` for each image and, with ``grid=True``, ``grid.png`` (a row).

    Every file is written to a temporary name and renamed into place, so an interrupted run
    never leaves a truncated PNG under a name GenEval would read. Returns the folder's path.
    """
    check_metadata(metadata, name=f"metadata of prompt {index}")
    if len(images) == 0:
        raise ValueError(f"prompt {index}: no images to write")
    folder = os.path.join(out_dir, f"{int(index):05d}")
    os.makedirs(os.path.join(folder, "samples"), exist_ok=True)
    pils = [_to_pil(im, f"prompt {index} image {k}") for k, im in enumerate(images)]
    for k, im in enumerate(pils):
        _atomic_save(im, os.path.join(folder, "samples", sample_name(k, sample_digits)))
    if grid:
        w, h = pils[0].size
        sheet = Image.new("RGB", (w * len(pils), h))
        for k, im in enumerate(pils):
            sheet.paste(im.resize((w, h)), (k * w, 0))
        _atomic_save(sheet, os.path.join(folder, "grid.png"))
    tmp = os.path.join(folder, ".metadata.jsonl.tmp")
    with open(tmp, "w") as f:
        json.dump(metadata, f)
    os.replace(tmp, os.path.join(folder, "metadata.jsonl"))
    return folder


def _atomic_save(image, path):
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def write_layout(out_dir, metadata_rows, images_per_prompt, grid=False, sample_digits=SAMPLE_DIGITS):
    """Lay images out as GenEval's generation script does (``generation/diffusers_generate.py``).

    ``<out>/<%05d>/metadata.jsonl`` holds ONE JSON object (read with ``json.load``, despite the
    name); ``<out>/<%05d>/samples/<%05d>.png`` the images; ``grid.png`` (optional) a row of them.
    Prompt ``p`` of ``metadata_rows`` goes to folder ``p``; see :func:`write_prompt_folder`.
    """
    if len(metadata_rows) != len(images_per_prompt):
        raise ValueError(f"metadata_rows has {len(metadata_rows)} prompts but images_per_prompt has {len(images_per_prompt)}")
    for p, (meta, images) in enumerate(zip(metadata_rows, images_per_prompt)):
        check_metadata(meta, name=f"metadata_rows[{p}]")
        if len(images) == 0:
            raise ValueError(f"images_per_prompt[{p}] is empty")
    for p, (meta, images) in enumerate(zip(metadata_rows, images_per_prompt)):
        write_prompt_folder(out_dir, p, meta, images, sample_digits=sample_digits, grid=grid)


def read_layout(out_dir, expected_n=None, images_per_prompt=None):
    """Read a GenEval layout back: list of ``(metadata, [(path, np.uint8 image), ...])`` by prompt index.

    Only folders whose name is all digits count (as in GenEval); only ``<digits>.png`` in
    ``samples/`` count. Raises ValueError naming what is missing: prompt folders (when
    ``expected_n`` is given, folders ``00000 .. expected_n-1`` must all exist), a missing or
    unreadable ``metadata.jsonl``, an empty ``samples/``, fewer than ``images_per_prompt``
    images, or an image that cannot be decoded. GenEval itself silently scores what it finds
    (a known pitfall: 544 prompts instead of 553).
    """
    if not os.path.isdir(out_dir):
        raise ValueError(f"out_dir {out_dir!r} is not a directory")
    folders = sorted(d for d in os.listdir(out_dir) if d.isdigit() and os.path.isdir(os.path.join(out_dir, d)))
    indices = [int(d) for d in folders]
    if expected_n is not None:
        missing = sorted(set(range(expected_n)) - set(indices))
        if missing:
            names = ", ".join(f"{i:05d}" for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise ValueError(f"{out_dir}: {len(missing)} of {expected_n} prompt folders missing: {names}")
        extra = sorted(set(indices) - set(range(expected_n)))
        if extra:
            raise ValueError(f"{out_dir}: unexpected prompt folders beyond expected_n={expected_n}: {extra[:10]}")
    if not folders:
        raise ValueError(f"{out_dir}: no prompt folders (<digits>/metadata.jsonl) found")
    out = []
    for d in folders:
        folder = os.path.join(out_dir, d)
        meta_path = os.path.join(folder, "metadata.jsonl")
        if not os.path.isfile(meta_path):
            raise ValueError(f"{folder}: metadata.jsonl is missing")
        try:
            with open(meta_path) as f:
                meta = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta_path}: not a single JSON object ({e})") from e
        check_metadata(meta, name=meta_path)
        sample_dir = os.path.join(folder, "samples")
        names = sorted(n for n in os.listdir(sample_dir) if re.fullmatch(r"\d+\.png", n)) if os.path.isdir(sample_dir) else []
        if not names:
            raise ValueError(f"{folder}: no samples/<digits>.png images")
        if images_per_prompt is not None and len(names) < images_per_prompt:
            raise ValueError(f"{folder}: {len(names)} images, expected {images_per_prompt}")
        images = []
        for n in names:
            path = os.path.join(sample_dir, n)
            try:
                with Image.open(path) as im:
                    images.append((path, np.asarray(im.convert("RGB"))))
            except Exception as e:  # PIL raises several types for broken files
                raise ValueError(f"{path}: unreadable image ({e})") from e
        out.append((meta, images))
    return out


def score_layout(out_dir, detector, expected_n=None, outfile=None):
    """Detect + score every image of a layout; write ``results.jsonl``; return :func:`summarize`.

    ``detector(image: np.uint8 [H, W, 3]) -> dict[class, list[Detection]]``. ``outfile`` defaults
    to ``<out_dir>/results.jsonl`` (one record per image, official columns).
    """
    prompts = read_layout(out_dir, expected_n=expected_n)
    rows = []
    for meta, images in prompts:
        for path, image in images:
            rows.append(result_row(path, meta, detector(image)))
    outfile = outfile or os.path.join(out_dir, "results.jsonl")
    with open(outfile, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return summarize(rows)
