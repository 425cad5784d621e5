"""Inference: generate, answer and score one model (GenEval rules, question answering).

Generation (paper §4, GenEval; Table 1 columns): for each of ``config.eval_prompts`` shapes-world
GenEval prompts (``ShapesWorld.geneval_metadata``, tags in GenEval's proportions) and each seed of
``config.eval_seeds``, ``backbone.generate([prompt, ...], seed)`` — unchanged inference, SeGroS
adds nothing at test time — writes GenEval's layout (``<run>/geneval/<%05d>/samples/<%05d>.png``),
which the shapes detector and the GenEval rules score (:func:`segros.eval.geneval.score_layout`).

Understanding (Table 2's question, on the synthetic world): ``backbone.answer`` on the question-answer
view of the *eval* split, exact-match accuracy per kind (color, count, position, exists) and overall
(mean over questions).

Samples (the qualitative figure of ``main_results.ipynb``): beside the scores, a run keeps a few of
its own generated images, so the store can show them without keeping weights or the GenEval
layout: ``samples.png`` (one strip, the images side by side, at most ``SAMPLE_TILE`` pixels each)
and ``samples.json`` (per image its prompt, tag, whether the prompt holds a held-out composition,
and the detector's verdict under GenEval's rules). The prompts are :func:`sample_prompts` of the
run's metadata (per tag, the first prompt with a held-out composition), with the first eval seed,
so every run of a world shows the same prompts. They are images the scores already counted;
nothing extra is generated, and ``results.json`` is unchanged.

Conventions: scores are percentages (0–100) as the paper prints them; prompts are generated in
chunks of ``batch_size`` with the seed fixed per chunk (``generate(chunk, seed)``), so an image depends
on its prompt, its seed and its chunk position only through the family's sampler; answers are
compared after lower-casing and stripping; inference runs in the precision training used
(:func:`segros.presets.autocast`).

Several processes (``accelerate launch``; :mod:`segros.eval.parallel`): the generation chunks and the
question batches are dealt round robin, each process runs its share, the main process gathers the
images and answers, writes the layout, scores it and hands the scores to every process. The chunks
are those of one process, so the results equal the one-process results.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from segros.backbones.registry import check_backbone
from segros.data.shapes import config_world
from segros.eval.geneval import sample_name, score_layout, write_layout
from segros.eval.parallel import Processes, current, merge
from segros.eval.shapes_detector import detect
from segros.presets import autocast
from segros.vocab import TAGS


def as_uint8(image):
    """PIL image or uint8 array -> uint8 [H, W, 3]."""
    arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"generate() must return PIL images or uint8 [H, W, 3] arrays, got {arr.dtype} {arr.shape}")
    return arr


@torch.no_grad()
def generate_images(backbone, prompts, seeds, batch_size=16, progress=True, processes=None):
    """images[p][s]: the image of prompt p with seed seeds[s].

    With several ``processes`` each generates its share of the chunks; the main process gets every
    image, the others None."""
    processes = processes or Processes()
    chunks = [(s, i) for s in range(len(seeds)) for i in range(0, len(prompts), batch_size)]
    mine = {}
    for s, i in tqdm(processes.deal(chunks), desc="generate", disable=not progress, file=sys.stderr):
        images = backbone.generate(list(prompts[i:i + batch_size]), seed=int(seeds[s]))
        for j, im in enumerate(images):
            mine[(i + j, s)] = as_uint8(im)
    gathered = merge(processes.gather(mine))
    if gathered is None:
        return None
    out = [[None] * len(seeds) for _ in prompts]
    for (p, s), im in gathered.items():
        out[p][s] = im
    return out


def geneval_scores(backbone, metadata, out_dir, seeds, detector, batch_size=16, progress=True, processes=None,
                   images=None):
    """Write the GenEval layout under ``out_dir`` and score it; returns {tag: %, "overall": %, "n_images"}.
    ``images`` (images[p][s], as :func:`generate_images` returns on the main process) skips the generation.

    With several ``processes`` the generation is shared, the main process writes and scores, and
    every process returns the main process's scores."""
    processes = processes or Processes()
    if images is None:
        images = generate_images(backbone, [m["prompt"] for m in metadata], seeds, batch_size, progress, processes)
    scores = None
    if processes.is_main:
        write_layout(out_dir, metadata, images)
        summary = score_layout(out_dir, detector, expected_n=len(metadata))
        scores = {tag: 100.0 * summary["tags"][tag] for tag in TAGS if tag in summary["tags"]}
        scores["overall"] = 100.0 * summary["overall"]
        scores["n_images"] = summary["n_images"]
    return processes.broadcast(scores)


# -----------------------------------------------------------------------------
# samples for the qualitative figure

SAMPLES_IMAGE, SAMPLES_JSON = "samples.png", "samples.json"
SAMPLES_PER_TAG = 1
SAMPLE_TILE = 128  # larger images are shrunk to this side in the strip (the store stays small)


def held_out(world, record) -> bool:
    """Whether a GenEval prompt record asks for a composition the world holds out of training: a
    held-out colour–shape pair, or a held-out relation triple (a position clause)."""
    inc = record["include"]
    pairs = {(c["color"], c["class"]) for c in inc if "color" in c}
    triples = {(c["class"], c["position"][0], inc[int(c["position"][1])]["class"]) for c in inc if "position" in c}
    return bool(pairs & world.holdout_color_shape) or bool(triples & world.holdout_relation)


def sample_prompts(world, metadata, per_tag=SAMPLES_PER_TAG) -> list[int]:
    """The prompts a run keeps images of: per tag, in GenEval's tag order, the first ``per_tag``
    prompts (metadata order) with a held-out composition, topped up with the tag's first prompts
    when it has fewer (single-object, two-object and counting prompts name no held-out composition)."""
    out = []
    for tag in TAGS:
        idx = [i for i, m in enumerate(metadata) if m["tag"] == tag]
        pick = [i for i in idx if held_out(world, metadata[i])][:per_tag]
        pick += [i for i in idx if i not in pick][:per_tag - len(pick)]
        out += sorted(pick)
    return out


def write_samples(run_dir, world, metadata, images, seeds, layout_dir, per_tag=SAMPLES_PER_TAG):
    """Write ``samples.png`` and ``samples.json`` into ``run_dir`` (see the module docstring): the
    images of :func:`sample_prompts` with the first seed, and their verdicts from the scored layout
    ``layout_dir`` (its ``results.jsonl``). Returns the records of ``samples.json``."""
    verdicts = {}
    with open(os.path.join(layout_dir, "results.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            verdicts[os.path.relpath(row["filename"], layout_dir)] = (row["correct"], row["reason"])
    chosen = sample_prompts(world, metadata, per_tag)
    tiles, records = [], []
    for p in chosen:
        tile = Image.fromarray(as_uint8(images[p][0]))
        if max(tile.size) > SAMPLE_TILE:
            tile = tile.resize((SAMPLE_TILE, SAMPLE_TILE), Image.BILINEAR)
        tiles.append(tile)
        correct, reason = verdicts[os.path.join(f"{p:05d}", "samples", sample_name(0))]
        records.append({"index": p, "tag": metadata[p]["tag"], "prompt": metadata[p]["prompt"],
                        "held_out": held_out(world, metadata[p]), "correct": bool(correct), "reason": reason})
    if not tiles:
        return []
    w, h = tiles[0].size
    strip = Image.new("RGB", (w * len(tiles), h))
    for k, tile in enumerate(tiles):
        strip.paste(tile, (k * w, 0))
    tmp = os.path.join(run_dir, f".{SAMPLES_IMAGE}.tmp")
    strip.save(tmp, format="PNG")
    os.replace(tmp, os.path.join(run_dir, SAMPLES_IMAGE))
    payload = {"seed": int(seeds[0]), "tile": [w, h], "source": "evaluation", "samples": records}
    tmp = os.path.join(run_dir, f".{SAMPLES_JSON}.tmp")
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(run_dir, SAMPLES_JSON))
    return records


def read_samples(run_dir):
    """A run's samples: (list of uint8 [H, W, 3] images, the records of ``samples.json``, their
    source), or None when the run keeps none (runs evaluated before samples were kept). The source
    is "evaluation" (the run's own images) or "rerun" (a rerun of its config that did not score
    exactly as stored; :func:`segros.pipeline.backfill_samples` with ``exact=False``)."""
    path = os.path.join(run_dir, SAMPLES_JSON)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        payload = json.load(f)
    with Image.open(os.path.join(run_dir, SAMPLES_IMAGE)) as im:
        strip = np.asarray(im.convert("RGB"))
    w = payload["tile"][0]
    images = [strip[:, k * w:(k + 1) * w] for k in range(len(payload["samples"]))]
    return images, payload["samples"], payload.get("source", "evaluation")


@torch.no_grad()
def qa_scores(backbone, qa, batch_size=32, progress=True, processes=None):
    """Exact-match accuracy (%) of ``backbone.answer`` per kind and overall (batches shared among ``processes``)."""
    processes = processes or Processes()
    mine = {}
    starts = processes.deal(range(0, len(qa), batch_size))
    for i in tqdm(starts, desc="answer", disable=not progress, file=sys.stderr):
        rows = qa[i:i + batch_size]
        answers = backbone.answer([r["image"] for r in rows], [r["question"] for r in rows])
        for k, (r, a) in enumerate(zip(rows, answers)):
            mine[i + k] = (r["kind"], a.strip().lower() == r["answer"].strip().lower())
    gathered = merge(processes.gather(mine))
    out = None
    if gathered is not None:
        correct = {}
        for i in sorted(gathered):
            kind, ok = gathered[i]
            correct.setdefault(kind, []).append(ok)
        out = {kind: 100.0 * float(np.mean(v)) for kind, v in sorted(correct.items())}
        out["overall"] = 100.0 * float(np.mean([x for v in correct.values() for x in v])) if correct else float("nan")
    return processes.broadcast(out)


def evaluate(backbone, config, run_dir, *, world=None, detector=None, progress=True, processes=None):
    """GenEval-rule scores (six tags + overall) and QA accuracy of ``backbone``; see the module docstring.

    ``processes``: this process's place (default :func:`segros.eval.parallel.current`); every
    process returns the same results, and only the main process writes files."""
    check_backbone(backbone, config, training=False)
    if world is None:
        world = config_world(config)
    if detector is None:
        detector = detect
    was_training = backbone.training
    backbone.eval()
    try:
        with eval_autocast(backbone, config):
            return _evaluate(backbone, config, run_dir, world, detector, progress, processes or current())
    finally:
        backbone.train(was_training)


def eval_autocast(backbone, config):
    """Inference in the precision training used (``config.precision``; ``"auto"``: bf16 on a GPU, as
    the official scripts generate in bf16, fp32 on a CPU), on the device of the backbone's weights."""
    param = next(iter(backbone.parameters()), None) if hasattr(backbone, "parameters") else None
    if param is None:
        return contextlib.nullcontext()
    return autocast(config.precision, param.device.type)


def _evaluate(backbone, config, run_dir, world, detector, progress, processes):
    results = {}
    if config.eval_prompts > 0:
        metadata = world.geneval_metadata(n_total=config.eval_prompts, seed=config.world_seed)
        layout = os.path.join(run_dir, "geneval")
        images = generate_images(backbone, [m["prompt"] for m in metadata], config.eval_seeds, config.batch_size,
                                 progress, processes)
        results["geneval"] = geneval_scores(backbone, metadata, layout, config.eval_seeds, detector,
                                            config.batch_size, progress, processes, images=images)
        if processes.is_main:
            write_samples(run_dir, world, metadata, images, config.eval_seeds, layout)
    if config.eval_qa > 0:
        qa = world.qa(world.split("eval", config.eval_qa))[:config.eval_qa]
        results["qa"] = qa_scores(backbone, qa, progress=progress, processes=processes)
    return results
