"""Inference: generate, answer and score one model (GenEval rules, question answering).

Generation (paper §4, GenEval; Table 1 columns): for each of ``config.eval_prompts`` shapes-world
GenEval prompts (``ShapesWorld.geneval_metadata``, tags in GenEval's proportions) and each seed of
``config.eval_seeds``, ``backbone.generate([prompt, ...], seed)`` — unchanged inference, SeGroS
adds nothing at test time — writes GenEval's layout (``<run>/geneval/<%05d>/samples/<%05d>.png``),
which the shapes detector and the GenEval rules score (:func:`segros.eval.geneval.score_layout`).

Understanding (Table 2's question, on the synthetic world): ``backbone.answer`` on the question-answer
view of the *eval* split, exact-match accuracy per kind (color, count, position, exists) and overall
(mean over questions).

Conventions: scores are percentages (0–100) as the paper prints them; prompts are generated in
chunks of ``batch_size`` with the seed fixed per chunk (``generate(chunk, seed)``), so an image depends
on its prompt, its seed and its chunk position only through the family's sampler; answers are
compared after lower-casing and stripping; inference runs in the precision training used
(:func:`segros.presets.autocast`).
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
import torch
from tqdm.auto import tqdm

from segros.backbones.registry import check_backbone
from segros.data.shapes import make_world
from segros.eval.geneval import score_layout, write_layout
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
def generate_images(backbone, prompts, seeds, batch_size=16, progress=True):
    """images[p][s]: the image of prompt p with seed seeds[s]."""
    out = [[None] * len(seeds) for _ in prompts]
    chunks = [(s, i) for s in range(len(seeds)) for i in range(0, len(prompts), batch_size)]
    for s, i in tqdm(chunks, desc="generate", disable=not progress, file=sys.stderr):
        images = backbone.generate(list(prompts[i:i + batch_size]), seed=int(seeds[s]))
        for j, im in enumerate(images):
            out[i + j][s] = as_uint8(im)
    return out


def geneval_scores(backbone, metadata, out_dir, seeds, detector, batch_size=16, progress=True):
    """Write the GenEval layout under ``out_dir`` and score it; returns {tag: %, "overall": %, "n_images"}."""
    images = generate_images(backbone, [m["prompt"] for m in metadata], seeds, batch_size, progress)
    write_layout(out_dir, metadata, images)
    summary = score_layout(out_dir, detector, expected_n=len(metadata))
    scores = {tag: 100.0 * summary["tags"][tag] for tag in TAGS if tag in summary["tags"]}
    scores["overall"] = 100.0 * summary["overall"]
    scores["n_images"] = summary["n_images"]
    return scores


@torch.no_grad()
def qa_scores(backbone, qa, batch_size=32, progress=True):
    """Exact-match accuracy (%) of ``backbone.answer`` per kind and overall."""
    correct = {}
    for i in tqdm(range(0, len(qa), batch_size), desc="answer", disable=not progress, file=sys.stderr):
        rows = qa[i:i + batch_size]
        answers = backbone.answer([r["image"] for r in rows], [r["question"] for r in rows])
        for r, a in zip(rows, answers):
            correct.setdefault(r["kind"], []).append(a.strip().lower() == r["answer"].strip().lower())
    out = {kind: 100.0 * float(np.mean(v)) for kind, v in sorted(correct.items())}
    out["overall"] = 100.0 * float(np.mean([x for v in correct.values() for x in v])) if correct else float("nan")
    return out


def evaluate(backbone, config, run_dir, *, world=None, detector=None, progress=True):
    """GenEval-rule scores (six tags + overall) and QA accuracy of ``backbone``; see the module docstring."""
    check_backbone(backbone, config, training=False)
    if world is None:
        world = make_world(config.world, image_size=config.image_size, seed=config.world_seed)
    if detector is None:
        detector = detect
    was_training = backbone.training
    backbone.eval()
    try:
        with eval_autocast(backbone, config):
            return _evaluate(backbone, config, run_dir, world, detector, progress)
    finally:
        backbone.train(was_training)


def eval_autocast(backbone, config):
    """Inference in the precision training used (``config.precision``; ``"auto"``: bf16 on a GPU, as
    the official scripts generate in bf16, fp32 on a CPU), on the device of the backbone's weights."""
    param = next(iter(backbone.parameters()), None) if hasattr(backbone, "parameters") else None
    if param is None:
        return contextlib.nullcontext()
    return autocast(config.precision, param.device.type)


def _evaluate(backbone, config, run_dir, world, detector, progress):
    results = {}
    if config.eval_prompts > 0:
        metadata = world.geneval_metadata(n_total=config.eval_prompts, seed=config.world_seed)
        results["geneval"] = geneval_scores(backbone, metadata, os.path.join(run_dir, "geneval"),
                                            config.eval_seeds, detector, config.batch_size, progress)
    if config.eval_qa > 0:
        qa = world.qa(world.split("eval", config.eval_qa))[:config.eval_qa]
        results["qa"] = qa_scores(backbone, qa, progress=progress)
    return results
