"""DPG-Bench (paper Table 1, "DPGBench" column): its file layout and ELLA's scoring rule.

DPG-Bench (Hu et al., ELLA, 2024) has 1,065 dense prompts. For each prompt a set of yes/no questions,
generated from the prompt's semantic tuples, is asked of a VQA model about the generated images.
Everything here follows ELLA's ``dpg_bench/compute_dpg_bench.py`` and ``dist_eval.sh``; the
benchmark files are read from the user's ELLA checkout (``<ELLA>/dpg_bench/dpg_bench.csv`` and
``<ELLA>/dpg_bench/prompts/<item_id>.txt``), never copied into this repository. docs/evaluation.md
("DPG-Bench") lists every convention with its source and each known difference between copies.

Layout: one file ``<layout>/<item_id>.png`` per prompt, a 2x2 grid of four images of the same
prompt, row-major (image 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right), each tile
``resolution x resolution``.

Rule (:func:`item_score`), per crop of the grid: a question scores 1 if the VQA answer is exactly
``"yes"``; then, in the CSV's order of the item's questions, a question is set to 0 if any of its
parents (ids in its ``dependency`` list other than 0) currently scores 0 (parents are checked in
list order and the check stops at the first zero; zeroing is in place, so a zeroed question zeroes
its own children if they come later in the CSV); the crop's score is the mean over the item's
questions. The item's score is the mean over its crops (``pic_num`` of them, in the order above);
the benchmark's score is 100 x the mean over items. A parent id that is not among the item's
questions raises :class:`MissingParentError` when the check reaches it; ELLA's script then drops the
item from every mean (its ``try/except`` around each image), and so does :func:`summarize`, which
lists it under ``failed``.

Categories, as ELLA prints them: the L2 category of a question is its ``tuple`` column up to the
first ``(`` (e.g. ``"entity - whole"``; ``"global -"``), the L1 category the L2 name up to the first
``-``. A category's score is 100 x the mean of its questions' *raw* answers (1 for "yes", before the
dependency zeroing), pooled over items, using the **last** crop of each grid only (ELLA keeps the
copy of the last crop's answers; ``category_crops="all"`` pools every crop instead).

Quirks reproduced by default, each with a switch:
- ELLA's reader skips the first data row of the CSV (``if i == 0: continue``), i.e. the first
  question of the first item. ``skip_first_row=False`` keeps it.
- categories use the last crop only (``category_crops="last"``; ``"all"`` pools the four).

Deliberate differences from ELLA's script, which are refusals rather than other scores: a missing
or unreadable image is an error unless ``allow_missing=True`` (ELLA scores whatever files it finds
and prints a line for each failure), and a crop box outside the image is an error (PIL would pad it
with black).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from segros.eval.dpg_vqa import build_vqa

CSV_COLUMNS = ("item_id", "text", "keywords", "proposition_id", "dependency", "category_broad",
               "category_detailed", "tuple", "question_natural_language")
IMAGES_PER_PROMPT = 4          # 2x2 grid, ELLA's README
PIC_NUM = 4                    # crops scored per grid: dist_eval.sh's PIC_NUM (the script's own default is 1)
CATEGORY_CROPS = ("last", "all")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
N_PROMPTS = 1065               # prompts of DPG-Bench (ELLA paper)


# -----------------------------------------------------------------------------
# the benchmark files

@dataclass
class DPGItem:
    """One prompt and its questions, each dict keyed by proposition id in the CSV's order."""

    item_id: str
    prompt: str
    qid2dependency: dict[int, list[int]] = field(default_factory=dict)
    qid2question: dict[int, str] = field(default_factory=dict)
    qid2tuple: dict[int, str] = field(default_factory=dict)


@dataclass
class DPGBench:
    """The questions of every item (insertion order = CSV order) and how they were read."""

    items: dict[str, DPGItem]
    csv_path: str
    skip_first_row: bool
    notes: list[str] = field(default_factory=list)   # ELLA-compatible oddities met while reading

    def item_ids(self) -> list[str]:
        return list(self.items)


def ella_paths(ella_root: str) -> tuple[str, str]:
    """``(<ELLA>/dpg_bench/dpg_bench.csv, <ELLA>/dpg_bench/prompts)`` of an ELLA checkout."""
    return os.path.join(ella_root, "dpg_bench", "dpg_bench.csv"), os.path.join(ella_root, "dpg_bench", "prompts")


def _parse_int(value: str, where: str) -> int:
    """An integer field; ``"3.0"`` reads as 3, as ``int()`` of pandas' float column would in ELLA."""
    try:
        return int(value)
    except ValueError:
        try:
            f = float(value)
        except ValueError:
            f = float("nan")
        if f.is_integer():
            return int(f)
        raise ValueError(f"{where} {value!r} is not an integer") from None


def _parse_dependency(value: str, where: str) -> list[int]:
    try:
        return [int(d.strip()) for d in str(value).split(",")]
    except ValueError as e:
        raise ValueError(f"{where}: dependency {value!r} is not a comma-separated list of integers") from e


def read_questions(csv_path: str, skip_first_row: bool = True) -> DPGBench:
    """Read ``dpg_bench.csv`` as ELLA's ``prepare_dpg_data`` does.

    Rows are grouped by ``item_id`` in file order; ``dependency`` is split on commas into integers.
    With ``skip_first_row`` (ELLA's default behaviour) the first data row is ignored. Two things the
    official file is not expected to contain are reproduced as ELLA would treat them and recorded in
    ``notes``: a repeated ``proposition_id`` within an item overwrites the earlier row (keeping its
    position), and an item whose rows are not contiguous is replaced by its later block. The item's
    ``prompt`` is the ``text`` of its first kept row.
    """
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"DPG-Bench CSV not found: {csv_path} (expected <ELLA checkout>/dpg_bench/dpg_bench.csv)")
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: missing columns {missing}; expected {list(CSV_COLUMNS)}, found {reader.fieldnames}")
        rows = list(reader)
    items: dict[str, DPGItem] = {}
    notes: list[str] = []
    previous = None
    for i, row in enumerate(rows):
        if skip_first_row and i == 0:
            continue
        where = f"{csv_path} data row {i}"
        item_id = row["item_id"]
        qid = _parse_int(row["proposition_id"], f"{where}: proposition_id")
        deps = _parse_dependency(row["dependency"], where)
        if item_id != previous:
            if item_id in items:
                notes.append(f"item {item_id!r} reappears at data row {i}: its earlier rows are dropped (as ELLA's reader does)")
            items[item_id] = DPGItem(item_id, row["text"])
        item = items[item_id]
        if qid in item.qid2dependency:
            notes.append(f"item {item_id!r}: proposition {qid} repeated at data row {i}: the later row wins (as in ELLA)")
        item.qid2dependency[qid] = deps
        item.qid2question[qid] = row["question_natural_language"]
        item.qid2tuple[qid] = row["tuple"]
        previous = item_id
    if not items:
        raise ValueError(f"{csv_path}: no question rows")
    return DPGBench(items=items, csv_path=os.path.abspath(csv_path), skip_first_row=skip_first_row, notes=notes)


def read_prompts(prompts_dir: str) -> dict[str, str]:
    """``{item_id: prompt}`` from ELLA's ``prompts/<item_id>.txt`` files (text stripped), sorted by id."""
    if not os.path.isdir(prompts_dir):
        raise FileNotFoundError(f"DPG-Bench prompts folder not found: {prompts_dir} (expected <ELLA checkout>/dpg_bench/prompts)")
    out = {}
    for name in sorted(os.listdir(prompts_dir)):
        if name.endswith(".txt"):
            with open(os.path.join(prompts_dir, name), encoding="utf-8") as f:
                out[name[:-4]] = f.read().strip()
    if not out:
        raise ValueError(f"{prompts_dir}: no <item_id>.txt prompt files")
    return out


def load_benchmark(ella_root: str | None = None, *, csv_path: str | None = None, prompts_dir: str | None = None,
                   skip_first_row: bool = True) -> DPGBench:
    """Questions from the CSV and prompts from the prompts folder of an ELLA checkout.

    ``csv_path`` / ``prompts_dir`` override the paths under ``ella_root``. Without a prompts folder
    the CSV's ``text`` column is the prompt. Every item of the CSV must have a prompt file; prompt
    files without questions are noted (and not generated).
    """
    if ella_root is None and csv_path is None:
        raise ValueError("give ella_root (an ELLA checkout) or csv_path (its dpg_bench/dpg_bench.csv)")
    if ella_root is not None:
        default_csv, default_prompts = ella_paths(ella_root)
        csv_path = csv_path or default_csv
        prompts_dir = prompts_dir or default_prompts
    bench = read_questions(csv_path, skip_first_row=skip_first_row)
    if prompts_dir is not None:
        prompts = read_prompts(prompts_dir)
        lacking = [k for k in bench.items if k not in prompts]
        if lacking:
            raise ValueError(f"{prompts_dir}: {len(lacking)} items of the CSV have no prompt file, e.g. {lacking[:5]}")
        extra = sorted(set(prompts) - set(bench.items))
        if extra:
            bench.notes.append(f"{len(extra)} prompt files have no questions and are not used: {extra[:5]}")
        for k, item in bench.items.items():
            item.prompt = prompts[k]
    return bench


def shard_items(item_ids: Sequence[str], num_shards: int, shard: int) -> list[str]:
    """Items ``shard, shard + num_shards, ...``: disjoint subsets whose union is ``item_ids``."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"need 0 <= shard < num_shards, got shard={shard}, num_shards={num_shards}")
    return list(item_ids)[shard::num_shards]


# -----------------------------------------------------------------------------
# the rule

class MissingParentError(KeyError):
    """A question's dependency names a proposition id the item does not have (ELLA: KeyError, item dropped)."""


def _crop_scores(qid2dependency: dict[int, list[int]], crop_answers: dict[int, str]) -> dict[int, float]:
    """Scores of one crop after ELLA's in-place zeroing, keyed in ``qid2dependency``'s order."""
    lacking = [q for q in qid2dependency if q not in crop_answers]
    if lacking:
        raise ValueError(f"no answer for questions {lacking}; answers cover {sorted(crop_answers)}")
    scores = {q: float(crop_answers[q] == "yes") for q in qid2dependency}
    for qid, parents in qid2dependency.items():
        for parent in parents:
            if parent == 0:
                continue
            if parent not in scores:
                raise MissingParentError(f"question {qid} depends on {parent}, which is not a question of this item "
                                         f"(questions: {list(scores)})")
            if scores[parent] == 0:
                scores[qid] = 0.0
                break
    return scores


def item_score(qid2dependency: dict[int, list[int]], answers: list[dict[int, str]]) -> float:
    """The score in [0, 1] of one item: ELLA's rule (see the module docstring) applied per crop, then averaged.

    ``qid2dependency``: the item's questions in the CSV's order, each with its parent ids (0 = none).
    ``answers``: one ``{qid: VQA answer}`` per crop; only the exact answer ``"yes"`` counts.
    Raises :class:`MissingParentError` when the check reaches a parent id the item does not have
    (a check that stops earlier at a parent scoring 0 does not reach it, as in ELLA).
    """
    if not qid2dependency:
        raise ValueError("the item has no questions")
    if not answers:
        raise ValueError("answers is empty: need one dict of answers per crop")
    crop_means = []
    for crop_answers in answers:
        scores = _crop_scores(qid2dependency, crop_answers)
        crop_means.append(sum(scores.values()) / len(scores))
    return sum(crop_means) / len(crop_means)


def categories(tuple_text: str) -> tuple[str, str]:
    """``(L1, L2)`` of a question from its ``tuple`` column, as ELLA names them: ``"entity - whole (cat)"`` -> ``("entity", "entity - whole")``."""
    l2 = tuple_text.split("(")[0].strip()
    return l2.split("-")[0].strip(), l2


# -----------------------------------------------------------------------------
# the grid

def _to_pil(image, where: str) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{where}: image must be a PIL image or uint8 [H, W, 3], got {arr.dtype} {arr.shape}")
    return Image.fromarray(arr)


def make_grid(images: Sequence) -> Image.Image:
    """Four square images of one size -> one 2x2 grid, row-major (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)."""
    if len(images) != IMAGES_PER_PROMPT:
        raise ValueError(f"a DPG-Bench grid holds {IMAGES_PER_PROMPT} images, got {len(images)}")
    pils = [_to_pil(im, f"images[{k}]") for k, im in enumerate(images)]
    size = pils[0].size
    if size[0] != size[1]:
        raise ValueError(f"images must be square (ELLA crops resolution x resolution tiles), got {size[0]}x{size[1]}")
    for k, im in enumerate(pils):
        if im.size != size:
            raise ValueError(f"images[{k}] is {im.size[0]}x{im.size[1]}, images[0] is {size[0]}x{size[1]}")
    r = size[0]
    grid = Image.new("RGB", (2 * r, 2 * r))
    for k, im in enumerate(pils):
        grid.paste(im, ((k % 2) * r, (k // 2) * r))
    return grid


def crop_boxes(resolution: int, pic_num: int = PIC_NUM) -> list[tuple[int, int, int, int]]:
    """ELLA's crop boxes ``(left, top, right, bottom)``: the first ``pic_num`` of TL, TR, BL, BR."""
    if not 1 <= pic_num <= IMAGES_PER_PROMPT:
        raise ValueError(f"pic_num must be 1..{IMAGES_PER_PROMPT}, got {pic_num}")
    r = int(resolution)
    boxes = [(0, 0, r, r), (r, 0, 2 * r, r), (0, r, r, 2 * r), (r, r, 2 * r, 2 * r)]
    return boxes[:pic_num]


def tile_resolution(grid: Image.Image, resolution: int | None = None, where: str = "grid") -> int:
    """The tile size: ``resolution`` if given (checked to fit), else half the grid's side (grid must be square, even)."""
    w, h = grid.size
    if resolution is None:
        if w != h or w % 2:
            raise ValueError(f"{where}: {w}x{h} is not a square 2x2 grid with an even side; pass resolution= (the tile size)")
        return w // 2
    if resolution < 1 or 2 * resolution > min(w, h):
        raise ValueError(f"{where}: tiles of {resolution} px need a grid of at least {2 * resolution}x{2 * resolution}, "
                         f"the image is {w}x{h} (resolution is the size of ONE of the four images)")
    return int(resolution)


def split_grid(grid: Image.Image, pic_num: int = PIC_NUM, resolution: int | None = None) -> list[Image.Image]:
    """The crops ELLA scores: the first ``pic_num`` tiles of the 2x2 grid, in row-major order."""
    r = tile_resolution(grid, resolution)
    return [grid.crop(box) for box in crop_boxes(r, pic_num)]


def _save_png_atomic(image: Image.Image, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}.png"
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


# -----------------------------------------------------------------------------
# generation into the layout

def generate_layout(out_dir: str, bench: DPGBench, generate: Callable[[list[str], int], Sequence], *,
                    items: Iterable[str] | None = None, seed: int = 0, overwrite: bool = False,
                    progress: bool = True) -> list[str]:
    """Write ``<out_dir>/<item_id>.png`` (a 2x2 grid) for each item; returns the ids written.

    ``generate(prompts, seed) -> images`` is called once per item with the prompt repeated four
    times and the same ``seed`` for every item, so an item's grid does not depend on which other
    items are generated with it (``items`` may be any subset, e.g. :func:`shard_items`). Existing
    grids are kept unless ``overwrite``; each grid is written atomically.
    """
    ids = list(bench.items) if items is None else list(items)
    unknown = [k for k in ids if k not in bench.items]
    if unknown:
        raise KeyError(f"items not in the benchmark: {unknown[:5]}")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for item_id in tqdm(ids, desc="DPG-Bench generate", disable=not progress, file=sys.stderr):
        path = os.path.join(out_dir, f"{item_id}.png")
        if os.path.exists(path) and not overwrite:
            continue
        prompt = bench.items[item_id].prompt
        images = list(generate([prompt] * IMAGES_PER_PROMPT, seed))
        if len(images) != IMAGES_PER_PROMPT:
            raise ValueError(f"generate() returned {len(images)} images for {IMAGES_PER_PROMPT} prompts (item {item_id!r})")
        _save_png_atomic(make_grid(images), path)
        written.append(item_id)
    return written


def grids_from_split_files(src_dir: str, out_dir: str, item_ids: Iterable[str], pattern: str = "{item_id}_{k}.jpg") -> list[str]:
    """Build the grid layout from four files per item (``<item_id>_<k>.jpg`` as Reca's scripts write, k = 0..3).

    Tile ``k`` goes to grid position ``k`` (row-major), so ELLA's crops give back the four files'
    pixels exactly (the grid is PNG). Returns the ids written; a missing file is an error.
    """
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for item_id in item_ids:
        paths = [os.path.join(src_dir, pattern.format(item_id=item_id, k=k)) for k in range(IMAGES_PER_PROMPT)]
        lacking = [p for p in paths if not os.path.isfile(p)]
        if lacking:
            raise FileNotFoundError(f"item {item_id!r}: missing {lacking}")
        images = []
        for p in paths:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        _save_png_atomic(make_grid(images), os.path.join(out_dir, f"{item_id}.png"))
        written.append(item_id)
    return written


def find_image(layout_dir: str, item_id: str) -> str | None:
    """``<layout>/<item_id>.png`` (or .jpg/.jpeg/.webp, as ELLA matches any file by its stem); None if absent."""
    for ext in IMAGE_EXTENSIONS:
        path = os.path.join(layout_dir, item_id + ext)
        if os.path.isfile(path):
            return path
    return None


# -----------------------------------------------------------------------------
# VQA and scoring

class VQAModel(Protocol):
    """A VQA backend: ``name`` goes into the results; ``answer`` answers questions about one image."""

    name: str

    def answer(self, image: Image.Image, questions: list[str]) -> list[str]:
        ...


def score_item(item: DPGItem, grid: Image.Image, vqa: VQAModel, *, pic_num: int = PIC_NUM,
               resolution: int | None = None) -> dict:
    """Ask every question of ``item`` about each crop; returns the record :func:`summarize` reads.

    The record holds the answers (one ``{qid: answer}`` per crop), the crop scores and the item
    score, or ``error`` when ELLA's rule fails on the item (a missing parent).
    """
    r = tile_resolution(grid, resolution, where=item.item_id)
    boxes = crop_boxes(r, pic_num)
    qids = list(item.qid2question)
    questions = [item.qid2question[q] for q in qids]
    answers = []
    for box in boxes:
        got = list(vqa.answer(grid.crop(box), questions))
        if len(got) != len(questions):
            raise ValueError(f"{vqa.name}: {len(got)} answers for {len(questions)} questions (item {item.item_id!r})")
        answers.append({q: str(a) for q, a in zip(qids, got)})
    record = {"item_id": item.item_id, "crop_boxes": [list(b) for b in boxes], "answers": answers}
    try:
        record["score"] = item_score(item.qid2dependency, answers)
        record["crop_scores"] = [item_score(item.qid2dependency, [crop]) for crop in answers]
    except MissingParentError as e:
        record["error"] = f"MissingParentError: {e.args[0]}"
    return record


def score_items(layout_dir: str, bench: DPGBench, vqa: VQAModel, *, items: Iterable[str] | None = None,
                pic_num: int = PIC_NUM, resolution: int | None = None, allow_missing: bool = False,
                progress: bool = True) -> tuple[list[dict], list[dict]]:
    """Score ``items`` (default: all) of a layout: ``(records, missing)``.

    ``missing`` lists ``{"item_id", "reason"}`` for absent or unreadable images; unless
    ``allow_missing`` any such image raises before a single question is asked. Records of several
    processes (disjoint ``items``) can be concatenated and passed to :func:`summarize`.
    """
    ids = list(bench.items) if items is None else list(items)
    unknown = [k for k in ids if k not in bench.items]
    if unknown:
        raise KeyError(f"items not in the benchmark: {unknown[:5]}")
    if not os.path.isdir(layout_dir):
        raise FileNotFoundError(f"layout folder not found: {layout_dir}")
    paths, missing = {}, []
    for item_id in ids:
        path = find_image(layout_dir, item_id)
        if path is None:
            missing.append({"item_id": item_id, "reason": "no image"})
        else:
            paths[item_id] = path
    if missing and not allow_missing:
        raise FileNotFoundError(f"{layout_dir}: {len(missing)} of {len(ids)} grids missing, e.g. "
                                f"{[m['item_id'] for m in missing[:5]]} (allow_missing=True scores the rest and reports them)")
    records = []
    for item_id in tqdm(list(paths), desc=f"DPG-Bench score ({vqa.name})", disable=not progress, file=sys.stderr):
        try:
            with Image.open(paths[item_id]) as im:
                grid = im.convert("RGB")
        except Exception as e:  # PIL raises several types for truncated or foreign files
            if not allow_missing:
                raise ValueError(f"{paths[item_id]}: unreadable image ({e})") from e
            missing.append({"item_id": item_id, "reason": f"unreadable: {e}"})
            continue
        record = score_item(bench.items[item_id], grid, vqa, pic_num=pic_num, resolution=resolution)
        record["image"] = paths[item_id]
        records.append(record)
    return records, missing


def summarize(records: Sequence[dict], bench: DPGBench, *, category_crops: str = "last") -> dict:
    """DPG score and L1/L2 category scores (percent) from item records, as ELLA computes them.

    Items whose record has an ``error`` are left out of every mean and listed under ``failed``.
    ``category_crops="last"`` (ELLA) uses each grid's last crop, ``"all"`` every crop; either way a
    category pools the raw answers of its questions over items.
    """
    if category_crops not in CATEGORY_CROPS:
        raise ValueError(f"category_crops must be one of {CATEGORY_CROPS}, got {category_crops!r}")
    scores, failed = [], []
    l2_scores: dict[str, list[float]] = defaultdict(list)
    for rec in records:
        if "error" in rec:
            failed.append({"item_id": rec["item_id"], "error": rec["error"]})
            continue
        item = bench.items[rec["item_id"]]
        answers = [{int(q): a for q, a in crop.items()} for crop in rec["answers"]]
        scores.append(item_score(item.qid2dependency, answers))
        for crop in (answers[-1:] if category_crops == "last" else answers):
            for qid, tuple_text in item.qid2tuple.items():
                l2_scores[categories(tuple_text)[1]].append(float(crop[qid] == "yes"))
    l1_scores: dict[str, list[float]] = defaultdict(list)
    for l2 in sorted(l2_scores):
        l1_scores[categories(l2)[0]].extend(l2_scores[l2])
    return {
        "dpg": float(np.mean(scores)) * 100 if scores else float("nan"),
        "l1": {k: float(np.mean(v)) * 100 for k, v in sorted(l1_scores.items())},
        "l2": {k: float(np.mean(v)) * 100 for k, v in sorted(l2_scores.items())},
        "n_scored": len(scores),
        "failed": failed,
    }


def _write_json_atomic(obj, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def score_layout(layout_dir: str, bench: DPGBench, vqa: VQAModel, *, items: Iterable[str] | None = None,
                 pic_num: int = PIC_NUM, resolution: int | None = None, category_crops: str = "last",
                 allow_missing: bool = False, results_path: str | None = None, progress: bool = True) -> dict:
    """Score a layout and write ``results_path`` (default ``<layout>/dpg_results.json``); returns the results.

    The results name the VQA model, the settings, the DPG score, the L1 and L2 category scores, the
    items left out (``failed`` by the rule, ``missing`` images) and, per item, the answers of every
    crop. ``complete`` is true only when every requested item had a readable grid.
    """
    if category_crops not in CATEGORY_CROPS:
        raise ValueError(f"category_crops must be one of {CATEGORY_CROPS}, got {category_crops!r}")
    ids = list(bench.items) if items is None else list(items)
    records, missing = score_items(layout_dir, bench, vqa, items=ids, pic_num=pic_num, resolution=resolution,
                                   allow_missing=allow_missing, progress=progress)
    return write_results(records, missing, bench, layout_dir, vqa.name, items=ids, pic_num=pic_num,
                         resolution=resolution, category_crops=category_crops, results_path=results_path)


def write_results(records: Sequence[dict], missing: Sequence[dict], bench: DPGBench, layout_dir: str, vqa_name: str,
                  *, items: Sequence[str], pic_num: int = PIC_NUM, resolution: int | None = None,
                  category_crops: str = "last", results_path: str | None = None) -> dict:
    """Summarise item records (of one process, or gathered from several and concatenated in any order:
    they are put back in ``items``' order) and write the results file of :func:`score_layout`."""
    order = {k: n for n, k in enumerate(items)}
    records = sorted(records, key=lambda r: order[r["item_id"]])
    missing = sorted(missing, key=lambda m: order[m["item_id"]])
    summary = summarize(records, bench, category_crops=category_crops)
    results = {
        "benchmark": "DPG-Bench",
        "vqa_model": vqa_name,
        "dpg": summary["dpg"],
        "l1": summary["l1"],
        "l2": summary["l2"],
        "n_items": len(items),
        "n_scored": summary["n_scored"],
        "complete": not missing,
        "failed": summary["failed"],
        "missing": list(missing),
        "settings": {"csv": bench.csv_path, "skip_first_row": bench.skip_first_row, "pic_num": pic_num,
                     "resolution": resolution, "category_crops": category_crops, "layout": os.path.abspath(layout_dir)},
        "notes": list(bench.notes),
        "items": records,
    }
    _write_json_atomic(results, results_path or os.path.join(layout_dir, "dpg_results.json"))
    return results


# -----------------------------------------------------------------------------
# command line: python -m segros.eval.dpg --layout DIR --ella ELLA --vqa mplug

def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m segros.eval.dpg", description="Score a DPG-Bench layout (<item_id>.png 2x2 grids).")
    p.add_argument("--layout", required=True, help="folder of <item_id>.png grids")
    p.add_argument("--ella", help="ELLA checkout (reads dpg_bench/dpg_bench.csv)")
    p.add_argument("--csv", help="dpg_bench.csv (overrides --ella)")
    p.add_argument("--vqa", choices=("mplug", "transformers"), default="mplug")
    p.add_argument("--model", help="model id or folder (mplug: modelscope id; transformers: a BLIP VQA folder)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default=None, help="transformers backend only: float16, bfloat16, float32")
    p.add_argument("--pic-num", type=int, default=PIC_NUM)
    p.add_argument("--resolution", type=int, default=None, help="tile size in px (default: half the grid's side)")
    p.add_argument("--keep-first-row", action="store_true", help="do not skip the CSV's first data row (ELLA skips it)")
    p.add_argument("--category-crops", choices=CATEGORY_CROPS, default="last")
    p.add_argument("--allow-missing", action="store_true")
    p.add_argument("--num-shards", type=int, default=1)
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--out", help="results file (default <layout>/dpg_results.json)")
    args = p.parse_args(argv)

    bench = load_benchmark(args.ella, csv_path=args.csv, skip_first_row=not args.keep_first_row)
    vqa = build_vqa(args.vqa, model=args.model, device=args.device, dtype=args.dtype)
    results = score_layout(args.layout, bench, vqa, items=shard_items(bench.item_ids(), args.num_shards, args.shard),
                           pic_num=args.pic_num, resolution=args.resolution, category_crops=args.category_crops,
                           allow_missing=args.allow_missing, results_path=args.out)
    print(f"DPG-Bench ({results['vqa_model']}): {results['dpg']:.2f} over {results['n_scored']} of {results['n_items']} items")
    for level in ("l1", "l2"):
        for k, v in results[level].items():
            print(f"  {level.upper()} {k}: {v:.2f}")
    return results


if __name__ == "__main__":
    main()
