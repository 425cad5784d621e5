"""The GenEval scorers by name: ``build_scorer("official" | "transformers", **settings)``.

Both have ``score(layout_dir, metadata, *, images_per_prompt=4, indices=None, outfile=None,
allow_partial=False, progress=True) -> results`` (:class:`segros.eval.geneval_scoring.GenEvalScorer`).
"""

from __future__ import annotations

from segros.eval.geneval_detect import TransformersScorer
from segros.eval.geneval_official import OfficialScorer

SCORERS = {"official": OfficialScorer, "transformers": TransformersScorer}


def build_scorer(name, **settings):
    """``"official"``: ``OfficialScorer(geneval_dir, python, detector_dir, ...)``;
    ``"transformers"``: ``TransformersScorer.from_pretrained(detector, clip, color_backend=..., device=...)``."""
    if name not in SCORERS:
        raise ValueError(f"unknown GenEval scorer {name!r}; valid: {sorted(SCORERS)}")
    if name == "transformers":
        return TransformersScorer.from_pretrained(**settings)
    return OfficialScorer(**settings)
