"""Fill the run store for every table at small scale and time each run (what `runs/` holds).

    python benchmarks/bench_tables.py --runs-dir out/runs --shard 0 --nshards 2 &
    python benchmarks/bench_tables.py --runs-dir out/runs --shard 1 --nshards 2

Each process trains every ``nshards``-th missing run with one torch thread (two processes on two
cores filled the 65 runs of the committed store in about 27 minutes, 50 s per tiny-harmon run and
32 s per tiny-showo run, evaluation included). Finished runs are skipped, so it resumes; it prints
one line per run and a summary table of the times.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from segros import pipeline, store, tables

# "controls" is the claims table's A/A row: Table 1's SFT config on a seed set disjoint from the
# table's (tables.disjoint_seeds), so the store holds both halves of the A/A comparison
PLAN = [("table1", "small"), ("controls", "small"), ("table1", "small-showo"), ("table3", "small"),
        ("table5", "small"), ("table4", "small"), ("table8", "small"), ("table6", "small"), ("table9", "small")]


def jobs(seeds=(0, 1, 2)):
    """Every distinct run the table notebooks need at their defaults, claims-first order."""
    seen, out = set(), []
    for table, preset in PLAN:
        spec = tables.get_table(table)
        for row in spec.rows:
            for seed in tables.row_seeds(row, seeds):
                cfg = tables.row_config(spec, row, preset, seed)
                if store.config_hash(cfg) not in seen:
                    seen.add(store.config_hash(cfg))
                    out.append((table, preset, row.label, seed, cfg))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("--nshards", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    todo = jobs()
    print(f"{len(todo)} runs in all; this process takes every {args.nshards}-th from #{args.shard}", flush=True)
    times: dict[str, list[float]] = {}
    for i, (table, preset, label, seed, cfg) in enumerate(todo):
        if i % args.nshards != args.shard or store.scan(args.runs_dir, quiet=True).find(cfg):
            continue
        t = time.time()
        res = pipeline.ensure_run(cfg, args.runs_dir, table, progress=False)
        dt = time.time() - t
        times.setdefault(cfg.backbone, []).append(dt)
        print(f"{table} {preset} {label!r} seed={seed}: GenEval {res['geneval']['overall']:.1f}, "
              f"QA {res.get('qa', {}).get('overall', float('nan')):.1f} ({dt:.0f} s)", flush=True)
    print("\n| backbone | runs | mean s | min s | max s |\n|---|---|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {len(ts)} | {statistics.mean(ts):.0f} | {min(ts):.0f} | {max(ts):.0f} |")


if __name__ == "__main__":
    main()
