"""Estimates for the runbook (docs/runbook.md): step time, hours and model-state memory per paper model.

No GPU is used and nothing is timed. Per ``paper-*`` preset:

* parameters, total and trainable (the preset's frozen modules and the adapter's own frozen parts
  excluded), counted on the meta device with the real shapes (``bench_real_step.build``);
* model-state memory per GPU in train.py's precision (fp32 weights under bf16 autocast): weights
  4 B per parameter, gradients 4 B and AdamW's two moments 8 B per trainable parameter; on one GPU
  or with DDP every process holds all of it; ZeRO-2 over ``--gpus`` shards gradients and AdamW
  state; FSDP (full shard) shards all three. Activations are NOT included: they depend on the
  micro-batch and on activation checkpointing and need a GPU to measure
  (``python benchmarks/bench_real_step.py`` prints peak memory there);
* time per optimizer step: the FLOP table's model TFLOP of one micro-step (README; ``python
  benchmarks/bench_real_step.py --flops-only``, copied into ``MICRO_TFLOP``) × Table 7's
  accumulation / an assumed sustained ``--sustained`` TFLOP/s per GPU (default 400, about 40% of an
  H100's 989 dense bf16 peak), divided by ``--gpus`` for data parallelism at the same global batch;
  the hours of Table 7's steps; Table 7's own "train hours" beside it (the paper does not say on how
  many GPUs);
* images per second one GPU consumes (T2I + I2T images of a micro-step / micro-step time), the
  figure docs/data.md compares with the loader's throughput.

    python benchmarks/estimate_paper_runs.py                   # one GPU, 400 TFLOP/s sustained
    python benchmarks/estimate_paper_runs.py --gpus 8 --sustained 350
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "benchmarks")):
    if path not in sys.path:
        sys.path.insert(0, path)

# model TFLOP of one micro-step (T2I micro-batch + I2T micro-batch where λ > 0, forward + backward),
# Table 7 micro-batch: README "Cost at the real shapes" (bench_real_step.py --flops-only)
MICRO_TFLOP = {
    "showo-256": {"sft": 37.8, "reca": 59.6, "segros": 45.2},
    "showo-512": {"sft": 34.7, "reca": 46.6, "segros": 39.8},
    "harmon-0.5b": {"sft": 744.3, "reca": 1062.3, "segros": 881.0},
    "harmon-1.5b": {"sft": 1168.8, "reca": 1737.3, "segros": 1433.3},
    "openuni-1.6b": {"sft": 118.6, "reca": 162.8, "segros": 154.7},
    "openuni-3.6b": {"sft": 118.7, "reca": 155.7, "segros": 142.5},
}
GIB = 2 ** 30


def count_parameters(name: str) -> tuple[int, int]:
    """(total, trainable) parameters of the paper model ``name`` at its real shapes (meta device)."""
    from bench_real_step import FAMILIES, build

    model = build(FAMILIES[name], device="meta")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def state_gib(total: int, trainable: int, gpus: int) -> dict[str, float]:
    """Model-state GiB per GPU (weights + gradients + AdamW moments; no activations)."""
    w, g, adam = 4 * total, 4 * trainable, 8 * trainable
    return {"1 GPU / DDP": (w + g + adam) / GIB, f"ZeRO-2 ×{gpus}": (w + (g + adam) / gpus) / GIB,
            f"FSDP ×{gpus}": (w + g + adam) / gpus / GIB}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sustained", type=float, default=400.0, help="assumed sustained TFLOP/s per GPU")
    p.add_argument("--gpus", type=int, default=1, help="data-parallel GPUs (same global batch)")
    p.add_argument("--families", default=",".join(MICRO_TFLOP))
    args = p.parse_args(argv)
    from segros.paper import HYPERPARAMS
    from segros.presets import get_preset

    names = [n.strip() for n in args.families.split(",") if n.strip()]
    unknown = [n for n in names if n not in MICRO_TFLOP]
    if unknown or args.gpus < 1 or args.sustained <= 0:
        p.error(f"unknown families {unknown}; choose from {', '.join(MICRO_TFLOP)} (and --gpus >= 1, --sustained > 0)")
    shard = max(args.gpus, 8)
    print(f"Estimates (no GPU measured): {args.sustained:g} TFLOP/s sustained per GPU, {args.gpus} GPU(s); "
          f"memory = weights + gradients + AdamW state in fp32, activations excluded\n")
    print(f"| model | params (trainable) | micro × accum | s / step SFT | Reca | SeGroS | SeGroS h for Table 7 steps "
          f"(paper's h) | images/s per GPU (SeGroS) | GiB 1 GPU / DDP | ZeRO-2 ×{shard} | FSDP ×{shard} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        cfg, hp = get_preset(f"paper-{name}"), HYPERPARAMS[name]
        total, trainable = count_parameters(name)
        mem = state_gib(total, trainable, shard)
        step = {m: t * cfg.grad_accum / args.sustained / args.gpus for m, t in MICRO_TFLOP[name].items()}
        micro_s = MICRO_TFLOP[name]["segros"] / args.sustained
        images = cfg.batch_size * (2 if cfg.lam > 0 and cfg.i2t_micro > 0 else 1)
        hours = step["segros"] * cfg.max_steps / 3600
        print(f"| {name} | {total / 1e9:.2f}B ({trainable / 1e9:.2f}B) | {cfg.batch_size} × {cfg.grad_accum} | "
              f"{step['sft']:.2f} | {step['reca']:.2f} | {step['segros']:.2f} | {hours:.1f} ({hp.train_hours:g}) | "
              f"{images / micro_s:.0f} | {mem['1 GPU / DDP']:.1f} | {mem[f'ZeRO-2 ×{shard}']:.1f} | "
              f"{mem[f'FSDP ×{shard}']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
