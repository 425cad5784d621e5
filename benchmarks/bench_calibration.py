"""Calibration of a small preset's substrate on the base and SFT rows only (docs/calibration.md).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_calibration.py --preset small-v3 --seeds 0,1,2,3,4 \
        --runs-dir /tmp/calib [--set pretrain_steps=1500 ...] [--threads 1]

Pretrains (or reuses) the preset's shared base in ``--runs-dir``, evaluates it as the "w/o SFT"
row (method ``none``), fine-tunes SFT at each training seed and evaluates each, then prints

* the base's per-tag profile (GenEval %, weakest first) with the calibration targets checked:
  single object ≥ 90, overall in [40, 75], position and colour-attribute among the 3 weakest tags;
* SFT mean ± sd over training seeds, per tag, and SFT − base with its standard error and the
  interval ±2 SE. The base is one model (seed 0, as every table's "w/o SFT" row), so its standard
  error is the sampling error of its images (binomial per tag, the overall being the mean of the
  tags); the SFT mean's is sd / √n over training seeds;
* the minimum detectable difference, MDD(n) = 2·√2·sd / √n (two standard errors of a difference
  of two cell means of n training seeds each, sd = the SFT seed sd), for a few n, and the
  smallest n with MDD ≤ 2.0 (Table 1) and ≤ 3.0 (ablations);
* wall time of the base and of each fine-tune with its evaluation (``--threads`` torch threads);
* for a tiny-showo base, a teacher-forced probe (:func:`probe_codes`, cheap next to a GenEval run):
  on 256 fine-tuning scenes, only the object cells masked and every empty cell shown, the mean
  probability of "empty" at the object cells (a model that counts the objects its caption names puts
  ~0 there) and the shape and colour accuracy of the best non-empty code, with and without the caption.

Never run it on the SeGroS, Reca or ablation rows: the substrate is calibrated on base and SFT only.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segros import pipeline  # noqa: E402
from segros.data.shapes import GENEVAL_PROPORTIONS, _largest_remainder  # noqa: E402
from segros.eval.geneval import TAGS  # noqa: E402
from segros.presets import get_preset  # noqa: E402


def tag_counts(config):
    """Images per tag of one evaluation: prompts per tag × image seeds."""
    counts = _largest_remainder(GENEVAL_PROPORTIONS, config.eval_prompts)
    return {t: counts[t] * len(config.eval_seeds) for t in TAGS}


def sampling_se(geneval, counts):
    """Binomial standard error (GenEval points) per tag and of the overall (mean of the tags)."""
    se = {t: 100 * math.sqrt(max(geneval[t] / 100 * (1 - geneval[t] / 100), 1e-12) / counts[t]) for t in TAGS}
    se["overall"] = math.sqrt(sum(se[t] ** 2 for t in TAGS)) / len(TAGS)
    return se


def probe_codes(model, config, n=256):
    """The teacher-forced probe of a tiny-showo model (see the module docstring): a dict per caption
    mode ("caption", "empty prompt") of p_empty, shape_acc, colour_acc at the object cells."""
    from segros.data.shapes import config_world

    world = config_world(config)
    scenes = world.split("finetune", n)
    codes = model.image_tokenizer.encode(model.preprocess_images([s.image for s in scenes]))
    nc = model.config.n_colors
    empty = int(torch.mode((codes // nc).flatten()).values)  # most cells are empty
    obj = (codes // nc) != empty
    ids = torch.where(obj, torch.full_like(codes, model.mask_id), codes + model.code_offset)
    out = {}
    for mode, captions in (("caption", [s.caption for s in scenes]), ("empty prompt", [""] * n)):
        text = model.tokenize_prompts(captions)
        with torch.no_grad():
            probs = model.code_logits(None, text["input_ids"], text["attention_mask"], ids).float().softmax(-1)
        p_empty = probs[..., empty * nc:(empty + 1) * nc].sum(-1)
        probs[..., empty * nc:(empty + 1) * nc] = -1
        best = probs.argmax(-1)
        out[mode] = {"p_empty": float(p_empty[obj].mean()), "shape_acc": float(((best // nc) == (codes // nc))[obj].float().mean()),
                     "colour_acc": float(((best % nc) == (codes % nc))[obj].float().mean())}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small-v3")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="SFT training seeds ('' = the base only)")
    ap.add_argument("--runs-dir", required=True, help="a calibration store (never the committed runs/)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = get_preset(args.preset).replace(**dict(kv.split("=", 1) for kv in args.set))
    counts = tag_counts(config)
    print(f"preset {args.preset} {args.set}, world {config.world}, {sum(counts.values())} images per run, "
          f"torch threads {torch.get_num_threads()}", flush=True)

    t = time.time()
    pipeline.ensure_base(config, args.runs_dir, progress=False)
    base_s = time.time() - t
    t = time.time()
    base = pipeline.ensure_run(config.replace(method="none"), args.runs_dir, "calib", progress=False)["geneval"]
    base_eval_s = time.time() - t
    print(f"base: pretraining {base_s:.0f} s ({config.pretrain_steps} steps; 0 if reused), evaluation {base_eval_s:.0f} s")

    if config.backbone == "tiny-showo" and config.backbone_kwargs.get("codec") == "layout_color":
        model = pipeline.open_base(config, args.runs_dir, progress=False)
        print("teacher-forced probe at the object cells (empty cells shown): "
              + "; ".join(f"{mode}: P(empty) {v['p_empty']:.3f}, shape {v['shape_acc']:.3f}, colour {v['colour_acc']:.3f}"
                          for mode, v in probe_codes(model, config).items()))

    se = sampling_se(base, counts)
    order = sorted(TAGS, key=lambda k: base[k])
    print("\nbase per-tag profile (weakest first), GenEval %, ± binomial SE")
    for k in order:
        print(f"  {k:<14}{base[k]:6.1f} ± {se[k]:.1f}")
    print(f"  {'overall':<14}{base['overall']:6.1f} ± {se['overall']:.1f}")
    weakest = set(order[:3])
    binding_weak = {"position", "color_attr"} <= weakest
    print(f"targets: single ≥ 90: {base['single_object'] >= 90}; overall in [40, 75]: {40 <= base['overall'] <= 75}; "
          f"position and color_attr among the 3 weakest {sorted(weakest)}: {binding_weak}")

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds:
        return
    rows, times = [], []
    for s in seeds:
        t = time.time()
        r = pipeline.ensure_run(config.replace(method="sft", seed=s), args.runs_dir, "calib", progress=False)
        times.append(time.time() - t)
        rows.append(r["geneval"])
        print(f"sft seed {s}: overall {r['geneval']['overall']:.1f} "
              + " ".join(f"{k} {r['geneval'][k]:.1f}" for k in TAGS) + f"  ({times[-1]:.0f} s, 0 if reused)", flush=True)

    n = len(rows)
    print(f"\nSFT over {n} training seeds vs base: mean ± sd, SFT − base ± SE, interval ±2 SE")
    sds = {}
    for k in [*TAGS, "overall"]:
        v = np.array([r[k] for r in rows], dtype=float)
        sd = float(v.std(ddof=1)) if n > 1 else float("nan")
        sds[k] = sd
        d = float(v.mean()) - base[k]
        d_se = math.sqrt((sd ** 2 / n if n > 1 else 0.0) + se[k] ** 2)
        print(f"  {k:<14}{v.mean():6.1f} ± {sd:4.1f}   {d:+6.1f} ± {d_se:.1f}   [{d - 2 * d_se:+.1f}, {d + 2 * d_se:+.1f}]")
    sd = sds["overall"]
    if n > 1:
        print(f"\nminimum detectable difference (2 SE of a difference of two n-seed means, seed sd {sd:.2f}):")
        for m in (3, 5, 8, 10, 15, 20):
            print(f"  n = {m:2d}: {2 * math.sqrt(2 * sd ** 2 / m):.2f}")
        for target in (2.0, 3.0):
            need = max(2, math.ceil(8 * sd ** 2 / target ** 2))
            print(f"  MDD ≤ {target}: n ≥ {need}")
    done = [x for x in times if x > 1]
    if done:
        print(f"\nwall time per fine-tune + evaluation: {np.mean(done):.0f} s (min {min(done):.0f}, max {max(done):.0f}), "
              f"{torch.get_num_threads()} thread(s)")


if __name__ == "__main__":
    main()
