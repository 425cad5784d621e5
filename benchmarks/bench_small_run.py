"""Time one full small fine-tuning run + evaluation per method on this machine.

    python benchmarks/bench_small_run.py [--preset small] [--methods sft,reca,segros] [--runs-dir DIR] [--set k=v ...]

The shared "w/o SFT" base is pretrained first (timed separately: it is paid once per run store).
Each method then trains from it and is evaluated (GenEval-rule scores on the shapes world, QA
accuracy). Goal for the ``small`` preset: at most 2 minutes per method on 2 CPU cores.
"""

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segros import inference, pipeline, store  # noqa: E402
from segros.presets import get_preset  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--methods", default="sft,reca,segros")
    ap.add_argument("--runs-dir", default=None, help="default: a temporary folder")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    overrides = dict(kv.split("=", 1) for kv in args.set)
    config = get_preset(args.preset).replace(**overrides)
    runs_dir = args.runs_dir or tempfile.mkdtemp(prefix="segros_bench_")
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, runs in {runs_dir}", file=sys.stderr)

    t = time.time()
    base = pipeline.ensure_base(config, runs_dir, progress=False)
    base_s = time.time() - t
    print(f"base pretraining ({pipeline.base_config(config).max_steps} steps): {base_s:.1f} s -> {base}")

    rows = []
    for method in args.methods.split(","):
        cfg = config.replace(method=method)
        out = os.path.join(runs_dir, "bench", store.run_name(cfg))
        t = time.time()
        model = pipeline.train_run(cfg, out, runs_dir, progress=False)
        train_s = time.time() - t
        t = time.time()
        res = inference.evaluate(model, cfg, out, progress=False)
        eval_s = time.time() - t
        loss = store.read_metrics(out)
        rows.append((method, cfg.max_steps, train_s, eval_s, loss[0]["loss_t2i"], loss[-1]["loss_t2i"],
                     res.get("geneval", {}).get("overall", float("nan")), res.get("qa", {}).get("overall", float("nan"))))

    print(f"\n{'method':<18}{'steps':>6}{'train s':>9}{'eval s':>8}{'total s':>9}{'t2i first':>10}{'t2i last':>9}"
          f"{'GenEval%':>9}{'QA%':>7}")
    for m, n, tr, ev, l0, l1, ge, qa in rows:
        print(f"{m:<18}{n:>6}{tr:>9.1f}{ev:>8.1f}{tr + ev:>9.1f}{l0:>10.4f}{l1:>9.4f}{ge:>9.1f}{qa:>7.1f}")


if __name__ == "__main__":
    main()
