"""Table 2's understanding benchmarks through lmms-eval: its requests as ``answer()`` calls.

The paper reports MME, POPE (accuracy and F1), GQA, MMMU and SEED for Harmon-1.5B (§4.3, Table 2).
lmms-eval (EvolvingLMMs-Lab/lmms-eval) runs those tasks given a model class; every one of them asks
the model for ``generate_until`` (``output_type: generate_until`` in ``mme.yaml``, ``pope.yaml``,
``gqa.yaml``, ``mmmu_val.yaml``, ``seedbench.yaml``), so the class needs no log-likelihoods.
This module is the class's core, kept free of lmms-eval (it cannot be imported beside a CPU torch
with the registry's torchvision) and of the backbones: it turns the requests' arguments into calls
of any ``answer(images, questions, max_new_tokens) -> list[str]`` (a backbone's, e.g. Show-o's or
Harmon's greedy understanding path) and the task's stop strings into cut answers. The class itself,
registered with lmms-eval as ``segros``, is :mod:`segros.lmms_model`.

What lmms-eval hands a ``generate_until`` model (``lmms_eval/api/model.py``, a simple model such
as ``models/simple/qwen2_vl.py``): ``Instance.args = (context, gen_kwargs, doc_to_visual, doc_id,
task, split)``; the document is ``task_dict[task][split][doc_id]`` and ``doc_to_visual(doc)`` its
list of images. Conventions fixed here:

* The context is the question as the task formats it (pre/post prompts included, e.g. MME's
  "\\nAnswer the question using a single word or phrase."); a bare ``<image>`` placeholder is
  removed (the family's own template places the image); numbered ones (MMMU's ``<image 1>``) stay.
* Images: PIL images (converted to RGB) or paths to image files. A backbone answers about one
  image; with several (MMMU, SEED's video questions) ``multi_image="first"`` (default) uses the
  first and counts the request, ``"error"`` refuses it. A request without an image is refused.
* ``gen_kwargs``: ``max_new_tokens`` (default :data:`DEFAULT_MAX_NEW_TOKENS`, as lmms-eval's own
  models), ``until`` (a string or list; the answer is cut before the first occurrence of any);
  decoding is always greedy, so ``do_sample`` / ``temperature`` > 0 requests are counted as
  ignored, as are other keys (``top_p``, ``num_beams``, ``image_aspect_ratio`` ...).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

DEFAULT_MAX_NEW_TOKENS = 128
MULTI_IMAGE_CHOICES = ("first", "error")
# lmms-eval tasks behind Table 2's columns: column -> (task, metric, factor to the paper's scale)
TABLE2_METRICS = {
    "MME": ("mme", "mme_perception_score", 1.0),      # the perception score (sum of 10 subtasks)
    "POPE (Acc)": ("pope", "pope_accuracy", 100.0),
    "POPE (F1)": ("pope", "pope_f1_score", 100.0),
    "GQA": ("gqa", "exact_match", 100.0),             # testdev balanced
    "MMMU": ("mmmu_val", "mmmu_acc", 100.0),
    "SEED": ("seedbench", "seed_image", 100.0),       # SEED-Bench image questions
}
TABLE2_TASKS = ("mme", "pope", "gqa", "mmmu_val", "seedbench")
_KNOWN_GEN_KWARGS = {"max_new_tokens", "until", "do_sample", "temperature"}


@dataclass
class Request:
    """One ``generate_until`` request, read from an lmms-eval ``Instance.args``."""

    question: str
    images: list
    max_new_tokens: int
    until: list[str]
    task: str
    doc_id: Any


@dataclass
class Stats:
    """What :func:`generate_until` did beyond answering (reported by the model class)."""

    n_requests: int = 0
    n_multi_image: int = 0
    n_sampling_ignored: int = 0
    ignored_gen_kwargs: set = field(default_factory=set)

    def as_dict(self) -> dict:
        return {"n_requests": self.n_requests, "n_multi_image": self.n_multi_image,
                "n_sampling_ignored": self.n_sampling_ignored, "ignored_gen_kwargs": sorted(self.ignored_gen_kwargs)}


def clean_context(context: str) -> str:
    """The question text: bare ``<image>`` placeholders removed, surrounding whitespace stripped."""
    return re.sub(r"<image>\s*", "", context).strip()


def apply_until(text: str, until: Sequence[str]) -> str:
    """``text`` cut before the first occurrence of any non-empty stop string."""
    cut = len(text)
    for stop in until:
        if stop:
            i = text.find(stop)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def load_visuals(visuals: Any, where: str) -> list:
    """``doc_to_visual``'s result as a list of RGB PIL images (paths are opened)."""
    from PIL import Image

    if visuals is None:
        return []
    if not isinstance(visuals, (list, tuple)):
        visuals = [visuals]
    if len(visuals) == 1 and isinstance(visuals[0], (list, tuple)):
        visuals = list(visuals[0])
    out = []
    for k, v in enumerate(visuals):
        if isinstance(v, Image.Image):
            out.append(v.convert("RGB"))
        elif isinstance(v, (str, os.PathLike)) and os.path.isfile(v):
            try:
                with Image.open(v) as im:
                    out.append(im.convert("RGB"))
            except Exception as e:  # a video file or another non-image
                raise ValueError(f"{where}: visual {k} ({v!r}) is not an image file ({e})") from e
        else:
            raise ValueError(f"{where}: visual {k} is a {type(v).__name__} ({str(v)[:60]!r}); "
                             "only PIL images and image files are supported")
    return out


def read_request(args: Sequence[Any], task_docs: Mapping, default_max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 stats: Stats | None = None) -> Request:
    """A :class:`Request` from ``Instance.args = (context, gen_kwargs, doc_to_visual, doc_id, task,
    split)``; ``task_docs[task][split][doc_id]`` is the document (the model's ``task_dict``)."""
    if len(args) != 6:
        raise ValueError(f"a generate_until request has 6 arguments (context, gen_kwargs, doc_to_visual, doc_id, "
                         f"task, split), got {len(args)}")
    context, gen_kwargs, doc_to_visual, doc_id, task, split = args
    where = f"task {task!r} split {split!r} doc {doc_id!r}"
    try:
        doc = task_docs[task][split][doc_id]
    except (KeyError, IndexError, TypeError) as e:
        raise ValueError(f"{where}: no such document in the model's task_dict ({e})") from e
    images = load_visuals(doc_to_visual(doc) if doc_to_visual is not None else None, where)
    gen_kwargs = dict(gen_kwargs or {})
    until = gen_kwargs.get("until", [])
    if isinstance(until, str):
        until = [until]
    if not isinstance(until, (list, tuple)) or not all(isinstance(u, str) for u in until):
        raise ValueError(f"{where}: gen_kwargs['until'] must be a str or a list of str, got {until!r}")
    max_new = gen_kwargs.get("max_new_tokens") or default_max_new_tokens
    if stats is not None:
        if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature") or 0) > 0:
            stats.n_sampling_ignored += 1
        stats.ignored_gen_kwargs.update(set(gen_kwargs) - _KNOWN_GEN_KWARGS)
    return Request(clean_context(context), images, int(max_new), list(until), task, doc_id)


def generate_until(answer: Callable[..., list[str]], requests: Sequence[Sequence[Any]], task_docs: Mapping, *,
                   batch_size: int = 1, default_max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                   multi_image: str = "first", stats: Stats | None = None, progress: bool = True) -> list[str]:
    """Answers to lmms-eval ``generate_until`` requests (their ``Instance.args``), in request order.

    Consecutive requests with the same ``max_new_tokens`` go to ``answer(images, questions,
    max_new_tokens)`` in batches of at most ``batch_size``; each answer is cut at the request's stop
    strings (:func:`apply_until`). See the module docstring for images and ``gen_kwargs``.
    """
    from tqdm.auto import tqdm

    if multi_image not in MULTI_IMAGE_CHOICES:
        raise ValueError(f"multi_image must be one of {MULTI_IMAGE_CHOICES}, got {multi_image!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stats = stats if stats is not None else Stats()
    reqs = []
    for r in (read_request(a, task_docs, default_max_new_tokens, stats) for a in requests):
        where = f"task {r.task!r} doc {r.doc_id!r}"
        if not r.images:
            raise ValueError(f"{where}: the request has no image; the backbones answer about one image")
        if len(r.images) > 1:
            if multi_image == "error":
                raise ValueError(f"{where}: {len(r.images)} images; the backbones answer about one "
                                 "(multi_image='first' uses the first)")
            stats.n_multi_image += 1
        reqs.append(r)
    stats.n_requests += len(reqs)
    out: list[str] = []
    bar = tqdm(total=len(reqs), desc="lmms answers", disable=not progress, file=sys.stderr)
    i = 0
    while i < len(reqs):
        j = i + 1
        while j < len(reqs) and j - i < batch_size and reqs[j].max_new_tokens == reqs[i].max_new_tokens:
            j += 1
        chunk = reqs[i:j]
        answers = answer([r.images[0] for r in chunk], [r.question for r in chunk], chunk[0].max_new_tokens)
        if len(answers) != len(chunk):
            raise ValueError(f"answer() returned {len(answers)} answers for {len(chunk)} questions")
        out += [apply_until(a, r.until) for a, r in zip(answers, chunk)]
        bar.update(len(chunk))
        i = j
    bar.close()
    return out


def table2_row(results: Mapping) -> dict:
    """Table 2's columns (the paper's scale) from lmms-eval's results (``results["results"][task]``
    with ``"<metric>,<filter>"`` keys, as ``simple_evaluate`` returns and ``--output_path`` writes);
    a column whose task did not run is NaN."""
    per_task = results.get("results", results)
    row = {}
    for column, (task, metric, factor) in TABLE2_METRICS.items():
        values = per_task.get(task, {})
        key = next((k for k in values if k == metric or k.startswith(metric + ",")), None)
        value = values.get(key) if key is not None else None
        row[column] = float(value) * factor if isinstance(value, (int, float)) else float("nan")
    return row


__all__ = ["DEFAULT_MAX_NEW_TOKENS", "MULTI_IMAGE_CHOICES", "TABLE2_METRICS", "TABLE2_TASKS", "Request", "Stats",
           "apply_until", "clean_context", "generate_until", "load_visuals", "read_request", "table2_row"]
