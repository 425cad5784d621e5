"""Grounding quality of the committed store's pretrained "w/o SFT" bases, with and without the
function words of ``segros.vocab.STOPWORDS`` in the grounding text (``docs/fidelity.md``, item 2).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_grounding_stopwords.py [--runs-dir runs] [--scenes 100]

For each tiny family (the ``small-showo`` and ``small`` presets) it opens the store's base (it
pretrains it first when the store lacks it) and prints the table of
:func:`segros.eval.grounding_quality.grounding_quality_table` (the four text filters of Table 4:
recall and precision of the top-⌊ηN⌋ hints, η = 0.3, beside a random map and the ceiling), once
with the function words excluded (training's default) and once with them kept.
"""

from __future__ import annotations

import argparse

import pandas as pd

from segros.data.shapes import ShapesWorld
from segros.eval.grounding_quality import grounding_quality_table
from segros.pipeline import open_base
from segros.presets import get_preset


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--scenes", type=int, default=100)
    args = ap.parse_args(argv)
    pd.set_option("display.width", 140)
    for preset in ("small-showo", "small"):
        config = get_preset(preset)
        backbone = open_base(config, args.runs_dir).eval()
        scenes = ShapesWorld(image_size=config.image_size, seed=config.world_seed).split("eval", args.scenes)
        for stopwords in (True, False):
            q = grounding_quality_table(backbone, scenes, eta=config.eta, rho=config.rho, tau=config.tau,
                                        stopwords=stopwords).set_index("text_filter")
            print(f"{preset} ({config.backbone}), stopwords {'excluded (default)' if stopwords else 'kept'}")
            print(q.drop(columns=["n_hint"]).round(3).to_string(), "\n", flush=True)


if __name__ == "__main__":
    main()
