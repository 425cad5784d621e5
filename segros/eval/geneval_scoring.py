"""One interface for GenEval scorers: ``scorer.score(layout_dir, metadata) -> results``.

A scorer turns the images of a GenEval layout into ``results.jsonl`` rows (GenEval's columns:
filename, tag, prompt, correct, reason, metadata, details); the summary is always ours
(:func:`segros.eval.geneval.summarize`, which averages as GenEval's ``summary_scores.py``). Two
scorers exist (see ``docs/evaluation.md``):

- ``"official"`` (:class:`segros.eval.geneval_official.OfficialScorer`): GenEval's own
  ``evaluation/evaluate_images.py`` (mmdet Mask2Former + open_clip), run from the user's checkout
  in its own environment as a subprocess;
- ``"transformers"`` (:class:`segros.eval.geneval_detect.TransformersScorer`): Mask2Former from
  transformers and a zero-shot CLIP colour classifier, feeding the rule engine of
  :mod:`segros.eval.geneval`.

:meth:`GenEvalScorer.score` first checks the layout (:func:`segros.eval.geneval_layout.check_layout`)
and refuses an incomplete one (:class:`~segros.eval.geneval_layout.IncompleteLayoutError`) unless
``allow_partial=True``, in which case the readable images are scored and the results say
``"partial": True`` with every problem listed. The three steps are public so that a caller can
split ``report.entries`` across processes: ``check`` -> ``score_entries`` (per share) -> ``finish``.
"""

from __future__ import annotations

import json
import os
from collections import Counter

from segros.eval.geneval import TAGS, summarize
from segros.eval.geneval_layout import IMAGES_PER_PROMPT, IncompleteLayoutError, check_layout

RESULT_COLUMNS = ("filename", "tag", "prompt", "correct", "reason", "metadata", "details")


def read_results(path):
    """Rows of a ``results.jsonl`` (GenEval's, written by pandas, or ours)."""
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for i, row in enumerate(rows):
        missing = [c for c in ("filename", "tag", "correct", "metadata") if c not in row]
        if missing:
            raise ValueError(f"{path} line {i + 1}: missing columns {missing}")
    return rows


def write_results(rows, path):
    """Write rows as JSON lines with GenEval's columns in GenEval's order."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps({c: row[c] for c in RESULT_COLUMNS if c in row}) + "\n")
    os.replace(tmp, path)


def summarize_results_file(path):
    """:func:`segros.eval.geneval.summarize` of a ``results.jsonl`` (the numbers ``summary_scores.py`` prints)."""
    return summarize(read_results(path))


def as_percentages(results):
    """``{tag: %, ..., "overall": %, "n_images": n}`` from :meth:`GenEvalScorer.score`'s results
    (the shape :func:`segros.inference.geneval_scores` returns); a partial result keeps ``"partial": True``."""
    summary = results["summary"]
    out = {tag: 100.0 * summary["tags"][tag] for tag in TAGS if tag in summary["tags"]}
    out["overall"] = 100.0 * summary["overall"]
    out["n_images"] = summary["n_images"]
    if results.get("partial"):
        out["partial"] = True
    return out


class GenEvalScorer:
    """Base class: subclasses set ``name`` and implement :meth:`score_entries` and :meth:`labels`."""

    name = "base"
    shares_work = False  # True: score_entries may run on disjoint shares in several processes

    def labels(self):
        """What produced the results: at least ``{"scorer": name, "detector": ..., "color_model": ...}``."""
        return {"scorer": self.name}

    def score_entries(self, entries, *, progress=True, outfile=None):
        """Result rows (GenEval's columns) for :class:`~segros.eval.geneval_layout.LayoutEntry` items,
        one per entry, ``filename`` = the entry's path. ``outfile`` is where the results will go
        (a scorer may put side files, such as a log, next to it)."""
        raise NotImplementedError

    def check(self, layout_dir, metadata, *, images_per_prompt=IMAGES_PER_PROMPT, indices=None, allow_partial=False,
              progress=False):
        """:func:`check_layout`; raises :class:`IncompleteLayoutError` unless complete or ``allow_partial``."""
        report = check_layout(layout_dir, metadata, images_per_prompt, indices=indices, progress=progress)
        if not report.complete and not allow_partial:
            raise IncompleteLayoutError(report)
        if not report.entries:
            raise ValueError(report.describe() + "\nnothing readable to score")
        return report

    def finish(self, report, rows, outfile=None):
        """Check ``rows`` cover exactly the report's images, write ``outfile``, summarise and label."""
        rows = list(rows)
        expected = {e.path: e for e in report.entries}
        seen = [r["filename"] for r in rows]
        unknown = sorted(set(seen) - set(expected))
        missing = sorted(set(expected) - set(seen))
        dupes = sorted(f for f, n in Counter(seen).items() if n > 1)
        if unknown or missing or dupes:
            raise ValueError(f"{self.name} scorer returned {len(rows)} rows for {len(expected)} images: "
                             f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
                             f"unknown {unknown[:5]}, repeated {dupes[:5]}")
        for r in rows:
            if r["tag"] != expected[r["filename"]].metadata["tag"]:
                raise ValueError(f"{r['filename']}: row tag {r['tag']!r} differs from its prompt's {expected[r['filename']].metadata['tag']!r}")
        order = {e.path: k for k, e in enumerate(report.entries)}
        rows.sort(key=lambda r: order[r["filename"]])
        outfile = os.fspath(outfile) if outfile else self.default_outfile(report.layout_dir)
        write_results(rows, outfile)
        summary = summarize(rows)
        n_prompts = len(report.prompts_scored)
        if report.complete:
            label = f"complete: {len(rows)} images of {n_prompts} prompts"
        else:
            label = (f"PARTIAL: {len(rows)} of {report.n_images_expected or '?'} images, {n_prompts} of "
                     f"{report.n_prompts} prompts; {len(report.problems)} problems")
        return {
            **self.labels(),
            "partial": not report.complete,
            "label": label,
            "layout_dir": report.layout_dir,
            "n_prompts_expected": report.n_prompts,
            "n_images_expected": report.n_images_expected,
            "n_images_scored": len(rows),
            "problems": [list(p) for p in report.problems],
            "results_file": outfile,
            "summary": summary,
        }

    def score(self, layout_dir, metadata, *, images_per_prompt=IMAGES_PER_PROMPT, indices=None, outfile=None,
              allow_partial=False, progress=True):
        """Score a layout: check it, score every image, write ``results_<name>.jsonl``, summarise.

        ``metadata``: the prompt list, a GenEval checkout or an ``evaluation_metadata.jsonl``.
        ``outfile`` defaults to ``<layout_dir>/results_<name>.jsonl``. Returns the labels of
        :meth:`labels` plus ``partial``, ``label``, ``problems``, counts, ``results_file`` and
        ``summary`` (:func:`segros.eval.geneval.summarize`).
        """
        report = self.check(layout_dir, metadata, images_per_prompt=images_per_prompt, indices=indices,
                            allow_partial=allow_partial, progress=progress)
        outfile = os.fspath(outfile) if outfile else self.default_outfile(report.layout_dir)
        rows = self.score_entries(report.entries, progress=progress, outfile=outfile)
        return self.finish(report, rows, outfile)

    def default_outfile(self, layout_dir):
        return os.path.join(layout_dir, f"results_{self.name}.jsonl")
