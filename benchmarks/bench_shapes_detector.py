"""Accuracy of the shapes-world detector under GenEval rules, on ground-truth renders degraded
as a generator / tokenizer would degrade them.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_shapes_detector.py --n 553 --seed 0

Degradations: gaussian pixel noise (σ in 0–255 units), gaussian blur (radius in px), and the
down–up pixelation of a tokenizer round trip (64 → s → 64, nearest or bilinear both ways).
Prints one row per degradation: per-tag accuracy and the overall (mean of tags), as in Table 1.
"""

import argparse
import time

import numpy as np
from PIL import Image, ImageFilter

from segros.data.shapes import ShapesWorld
from segros.eval.geneval import TAGS, evaluate_image, summarize
from segros.eval.shapes_detector import detect


def noise(sigma):
    def f(img, rng):
        return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)
    return f


def blur(radius):
    def f(img, rng):
        return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)))
    return f


def down_up(size, method):
    resample = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR}[method]

    def f(img, rng):
        h, w = img.shape[:2]
        small = Image.fromarray(img).resize((size, size), resample)
        return np.asarray(small.resize((w, h), resample))
    return f


DEGRADATIONS = {
    "clean": lambda img, rng: img,
    "noise σ=8": noise(8),
    "noise σ=16": noise(16),
    "noise σ=32": noise(32),
    "blur r=0.5": blur(0.5),
    "blur r=1": blur(1.0),
    "blur r=2": blur(2.0),
    "64→32→64 nearest": down_up(32, "nearest"),
    "64→32→64 bilinear": down_up(32, "bilinear"),
    "64→16→64 nearest": down_up(16, "nearest"),
    "64→16→64 bilinear": down_up(16, "bilinear"),
    "64→8→64 nearest": down_up(8, "nearest"),
    "64→8→64 bilinear": down_up(8, "bilinear"),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=553, help="number of GenEval prompts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    world = ShapesWorld(seed=args.seed)
    metadata = world.geneval_metadata(args.n, seed=args.seed)
    images = [world.render_from_metadata(m, seed=i).image for i, m in enumerate(metadata)]
    short = {"single_object": "single", "two_object": "two", "counting": "count", "colors": "colors",
             "position": "position", "color_attr": "attr"}
    header = f"| {'degradation':<20} | " + " | ".join(f"{short[t]:>8}" for t in TAGS) + " | overall | s/img |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, degrade in DEGRADATIONS.items():
        rng = np.random.default_rng(args.seed)
        rows, t0 = [], time.perf_counter()
        for m, img in zip(metadata, images):
            correct, _ = evaluate_image(m, detect(degrade(img, rng)))
            rows.append({"tag": m["tag"], "correct": correct, "prompt": m["prompt"]})
        dt = (time.perf_counter() - t0) / len(rows)
        s = summarize(rows)
        cells = " | ".join(f"{100 * s['tags'][t]:8.1f}" for t in TAGS)
        print(f"| {name:<20} | {cells} | {100 * s['overall']:7.1f} | {dt:.4f} |")


if __name__ == "__main__":
    main()
