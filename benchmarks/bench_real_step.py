"""One training step of each real backbone at the real shapes, random weights (issue 6, item 7).

For a GPU machine. Per family: one bf16 step (T2I loss of the method + λ·I2T loss, backward,
AdamW) at the Table 7 micro-batch (halved until it fits), reporting step time, peak memory,
tokens/s (LLM sequence tokens through forward+backward per second), model FLOPs per step
(``torch.utils.flop_counter.FlopCounterMode`` on one step) and MFU against ``--peak-tflops``
(default: 989 dense bf16 TFLOP/s for H100/H200, none elsewhere). It also times SeGroS, Reca and
SFT steps on the same model (default Harmon-1.5B) and prints the step-time ratios.

    python benchmarks/bench_real_step.py                       # GPU, real shapes
    python benchmarks/bench_real_step.py --device cpu --tiny   # seconds on a CPU (tested)

Methods (what differs per step): SFT = random mask, no hints; Reca = random mask, every visual
token a hint (Reca's image prompt; gradient scale 0.1); SeGroS = grounding (Eqs. 3–12) on the
model's own embeddings, top-η hints and the grounded corrupted input (η = 0.3, ρ = 0.4, α = 0.5).
Table 7 micro-batches (batch size / gradient accumulation): Harmon-0.5B 96/2 → 48, Harmon-1.5B
48/2 → 24. Text length 64 tokens for T2I prompts; I2T answers 32 tokens.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segros.grounding import ground  # noqa: E402
from segros.supervision import build_supervision, perturb, random_supervision, sample_gamma  # noqa: E402

# name -> (factory kwargs, Table 7 micro-batch)
FAMILIES = {
    "harmon-0.5b": (dict(family="harmon", size="0.5b"), 48),
    "harmon-1.5b": (dict(family="harmon", size="1.5b"), 24),
}
TINY = {"harmon-tiny": (dict(family="harmon", size="tiny"), 2)}


def build(spec: dict, device, dtype):
    """A random-weight model of the family at its real shapes (tokenizer: tiny, ids are random)."""
    if spec["family"] == "harmon":
        from segros.backbones.harmon import build_harmon, tiny_tokenizer
        with torch.device(device):
            model = build_harmon(spec["size"], tokenizer=tiny_tokenizer(),
                                 attn_implementation="sdpa" if spec["size"] != "tiny" else "eager")
    else:
        raise NotImplementedError(spec["family"])
    return model.to(dtype)


def make_batches(model, b: int, text_len: int, answer_len: int, device, gen):
    """Random T2I and I2T batches with the family's layout."""
    vocab = model.llm.config.vocab_size
    size = model.cfg.image_size
    pixels = torch.rand(b, 3, size, size, generator=gen).to(device)
    ids = torch.randint(10, vocab, (b, text_len), generator=gen).to(device)
    t2i = {"pixels": pixels, "input_ids": ids, "attention_mask": torch.ones_like(ids),
           "text_valid": torch.ones_like(ids, dtype=torch.bool)}
    from segros.backbones.harmon import IMAGE_TOKEN_INDEX
    n_img = model.target_grid_hw[0] * model.target_grid_hw[1] + model.cfg.buffer_size
    q = torch.randint(10, vocab, (b, 16), generator=gen)
    a = torch.randint(10, vocab, (b, answer_len), generator=gen)
    i2t_ids = torch.cat([q[:, :4], torch.full((b, n_img), IMAGE_TOKEN_INDEX), q[:, 4:], a], 1).to(device)
    labels = torch.cat([torch.full((b, n_img + 16), -100), a], 1).to(device)
    i2t = {"pixels": pixels, "input_ids": i2t_ids, "attention_mask": torch.ones_like(i2t_ids), "labels": labels}
    return t2i, i2t


def supervision_for(method: str, model, t2i, gen):
    """(supervision, hints) of one step for ``method``; hints carry gradient (Reca scales it)."""
    b = t2i["input_ids"].shape[0]
    vt = model.embed_image(t2i["pixels"])
    n = vt.z_image.shape[1]
    gamma = sample_gamma("truncnorm", b, per="batch", generator=gen)
    if method == "sft":
        return random_supervision(b, n, gamma, eta=0.0, generator=gen), None
    if method == "reca":
        return random_supervision(b, n, gamma, eta=1.0, generator=gen), vt.z_image
    z_text = model.embed_text(t2i["input_ids"]).detach()
    g = ground(z_text, vt.z_image.detach(), t2i["text_valid"], rho=0.4)
    sup = build_supervision(perturb(g.m_bar, 0.5, generator=gen),
                            eta=0.3, gamma=gamma)
    idx = sup.hint_idx.to(vt.z_image.device)
    hints = torch.gather(vt.z_image, 1, idx[..., None].expand(-1, -1, vt.z_image.shape[-1]))
    return sup, hints


def train_step(model, opt, method, t2i, i2t, lam, gen):
    sup, hints = supervision_for(method, model, t2i, gen)
    sup.loss_weight = sup.loss_weight.to(t2i["pixels"].device)
    sup.masked = sup.masked.to(t2i["pixels"].device)
    loss = model.t2i_loss(t2i, sup, hints)
    if lam:
        loss = loss + lam * model.i2t_loss(i2t)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_steps(model, opt, method, t2i, i2t, lam, steps, warmup, device, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(warmup):
        train_step(model, opt, method, t2i, i2t, lam, gen)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, opt, method, t2i, i2t, lam, gen)
    sync(device)
    return (time.perf_counter() - t0) / steps


def count_flops(model, opt, method, t2i, i2t, lam, seed) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        train_step(model, opt, method, t2i, i2t, lam, torch.Generator().manual_seed(seed))
    return float(fc.get_total_flops())


def peak_tflops(device, given):
    if given:
        return given
    if torch.device(device).type == "cuda":
        name = torch.cuda.get_device_name()
        if "H100" in name or "H200" in name:
            return 989.0
    return None


def bench_family(name, spec, batch, args, device, dtype):
    """Run one family; halve the batch on OOM. Returns a result row."""
    model = build(spec, device, dtype)
    model.train()
    if args.grad_ckpt and hasattr(model, "llm"):
        enable = getattr(model.llm, "activation_checkpointing_enable", None) or model.llm.gradient_checkpointing_enable
        enable()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, betas=(0.9, 0.95),
                            weight_decay=0.01, foreach=False)
    b = args.batch or batch
    while b >= 1:
        try:
            gen = torch.Generator().manual_seed(args.seed)
            t2i, i2t = make_batches(model, b, args.text_len, args.answer_len, device, gen)
            if torch.device(device).type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            dt = time_steps(model, opt, "segros", t2i, i2t, 1.0, args.steps, args.warmup, device, args.seed)
            mem = torch.cuda.max_memory_allocated() / 2 ** 30 if torch.device(device).type == "cuda" else float("nan")
            flops = count_flops(model, opt, "segros", t2i, i2t, 1.0, args.seed) if args.flops else float("nan")
            n_img = model.target_grid_hw[0] * model.target_grid_hw[1]
            tokens = b * (args.text_len + n_img + model.cfg.buffer_size) + i2t["input_ids"].numel()
            peak = peak_tflops(device, args.peak_tflops)
            mfu = flops / dt / (peak * 1e12) if peak and math.isfinite(flops) else float("nan")
            row = dict(family=name, batch=b, step_s=dt, peak_gib=mem, tokens_per_s=tokens / dt,
                       tflop_per_step=flops / 1e12, mfu=mfu)
            return row, model, opt, (t2i, i2t)
        except torch.OutOfMemoryError:
            opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            b //= 2
    raise RuntimeError(f"{name}: even batch 1 does not fit")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny configs (CPU smoke test)")
    p.add_argument("--families", default="", help="comma list; default all of the mode")
    p.add_argument("--ratio-family", default="", help="family for the SeGroS/Reca/SFT ratio")
    p.add_argument("--batch", type=int, default=0, help="override the Table 7 micro-batch")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--text-len", type=int, default=64)
    p.add_argument("--answer-len", type=int, default=32)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--no-grad-ckpt", dest="grad_ckpt", action="store_false")
    p.add_argument("--no-flops", dest="flops", action="store_false")
    p.add_argument("--peak-tflops", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="also write the rows here")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    table = TINY if args.tiny else FAMILIES
    names = [n for n in args.families.split(",") if n] or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        p.error(f"unknown families {unknown}; choose from {list(table)}")
    ratio_family = args.ratio_family or ("harmon-tiny" if args.tiny else "harmon-1.5b")
    dtype = getattr(torch, args.dtype)
    rows, ratios = [], {}
    for name in names:
        row, model, opt, (t2i, i2t) = bench_family(name, table[name][0], table[name][1], args, args.device, dtype)
        rows.append(row)
        if name == ratio_family:
            for method in ("segros", "reca", "sft"):
                ratios[method] = time_steps(model, opt, method, t2i, i2t, 1.0, args.steps, args.warmup,
                                            args.device, args.seed)
        del model, opt
        if torch.device(args.device).type == "cuda":
            torch.cuda.empty_cache()
    dev = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "cpu"
    print(f"device: {dev}  dtype: {args.dtype}  steps: {args.steps} (+{args.warmup} warm-up)")
    print(f"{'family':<14}{'batch':>6}{'step s':>10}{'peak GiB':>10}{'tokens/s':>12}{'TFLOP/step':>12}{'MFU':>8}")
    for r in rows:
        print(f"{r['family']:<14}{r['batch']:>6}{r['step_s']:>10.3f}{r['peak_gib']:>10.2f}{r['tokens_per_s']:>12.0f}"
              f"{r['tflop_per_step']:>12.3f}{r['mfu']:>8.3f}")
    if ratios:
        base = ratios["sft"]
        print(f"step time on {ratio_family}: " + ", ".join(f"{m} {t:.3f}s ({t / base:.2f}x SFT)" for m, t in ratios.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "ratios": ratios, "device": dev}, indent=1))
    return rows, ratios


if __name__ == "__main__":
    main()
