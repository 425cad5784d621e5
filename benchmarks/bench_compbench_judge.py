"""Cost of the T2I-CompBench judge (Table 10): one judged image, measured at a real Qwen2.5-VL shape,
and the paper's Qwen2.5-VL-32B judge over the benchmark estimated from FLOPs.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_compbench_judge.py                 # 3B shape, CPU
    PYTHONPATH=. .venv/bin/python benchmarks/bench_compbench_judge.py --flops-only    # estimate only
    PYTHONPATH=. .venv/bin/python benchmarks/bench_compbench_judge.py --size 32b --device cuda  # on a GPU

Measured: a ``Qwen2_5_VLForConditionalGeneration`` built from the released config of ``--size``
(random weights, ``--dtype``), one ``--image``-pixel square image through the PIL Qwen2-VL image
processor (default min/max pixels: 512 px -> 504 px, 36 x 36 patches, 324 image tokens), the chat
layout ``<|im_start|>user\\n<|vision_start|>image<|vision_end|>question<|im_end|>\\n<|im_start|>assistant\\n``
with ``--text-tokens`` question tokens (random ids: no Qwen tokenizer offline; the judge question of
``segros.eval.compbench`` is about 110 words), greedy ``generate``. Prefill = a 1-token generate;
the time per answer token = (a ``1 + --decode``-token generate - prefill) / ``--decode`` (new tokens
forced, random weights never stop); per image = prefill + ``--answer-tokens`` x per token (a
conforming judge answers "Score: 85" and eos). ``torch.utils.flop_counter`` counts the prefill's
matmuls and convolutions (it has no formula for the CPU attention kernel) and is printed beside the
analytic count without attention, which checks the analytic count the estimate uses.

Estimated (an ESTIMATE, not a measurement): per image and for 8 categories x 300 prompts x N images
(N = 1, the paper's single seed; N = 10, T2I-CompBench's own protocol) for each size on one GPU:
prefill FLOPs / (peak x ``--mfu``) plus the answer's decode steps, each reading the LLM weights once
for a batch of ``--batch`` images (HBM bandwidth x ``--bw-eff``) or computing, whichever is slower.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

# released config.json values (Qwen2.5-VL-3B/7B-Instruct; 32B: the Qwen2.5-32B LLM with the
# Qwen2.5-VL vision tower); the vision tower is 32 blocks of 1280, 16 heads, windows of 112 px with
# full attention in blocks 7, 15, 23, 31
SHAPES = {
    "3b": dict(hidden=2048, inter=11008, layers=36, heads=16, kv=2, vocab=151936, tie=True, v_inter=3420),
    "7b": dict(hidden=3584, inter=18944, layers=28, heads=28, kv=4, vocab=152064, tie=False, v_inter=3420),
    "32b": dict(hidden=5120, inter=27648, layers=64, heads=40, kv=8, vocab=152064, tie=False, v_inter=3456),
    "tiny": dict(hidden=64, inter=128, layers=2, heads=4, kv=2, vocab=512, tie=False, v_inter=96,
                 v_hidden=64, v_depth=4, v_heads=4, fullatt=(1, 3)),
}
VISION = dict(v_hidden=1280, v_depth=32, v_heads=16, patch=14, merge=2, temporal=2, window=112,
              fullatt=(7, 15, 23, 31))
# GPUs for the estimate: bf16 dense peak FLOP/s and HBM bytes/s (vendor figures)
GPUS = {"H100-SXM-80GB": (989e12, 3.35e12), "H200-141GB": (989e12, 4.8e12), "A100-80GB": (312e12, 2.0e12)}
CATEGORIES, PROMPTS = 8, 300
SPECIAL = dict(im_start=151644, im_end=151645, vision_start=151652, vision_end=151653, image=151655, video=151656)


def shape(size):
    return {**VISION, **SHAPES[size]}


def config(size):
    from transformers import Qwen2_5_VLConfig

    s = shape(size)
    ids = SPECIAL if size != "tiny" else {k: 500 + i for i, k in enumerate(SPECIAL)}
    head = s["hidden"] // s["heads"]
    sect = [head // 8, head // 8 * 3 // 2, head // 8 * 3 // 2] if size == "tiny" else [16, 24, 24]
    return Qwen2_5_VLConfig(
        text_config=dict(vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["inter"],
                         num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["kv"],
                         max_position_embeddings=128000, tie_word_embeddings=s["tie"], rope_theta=1e6,
                         rope_scaling={"type": "mrope", "mrope_section": sect},
                         bos_token_id=151643 if size != "tiny" else 0, eos_token_id=ids["im_end"]),
        vision_config=dict(depth=s["v_depth"], hidden_size=s["v_hidden"], intermediate_size=s["v_inter"],
                           num_heads=s["v_heads"], out_hidden_size=s["hidden"], patch_size=s["patch"],
                           spatial_merge_size=s["merge"], temporal_patch_size=s["temporal"],
                           window_size=s["window"], fullatt_block_indexes=list(s["fullatt"])),
        image_token_id=ids["image"], video_token_id=ids["video"], vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"], tie_word_embeddings=s["tie"]), ids


# ---- analytic FLOPs (matmuls, convolutions and attention: what torch's FLOP counter counts) -------

def image_grid(image_px, s):
    """Patch grid (h, w) of a square image after Qwen2-VL's smart_resize (multiples of 28)."""
    side = max(28, round(image_px / (s["patch"] * s["merge"])) * s["patch"] * s["merge"])
    return side // s["patch"], side // s["patch"]


def windows(gh, gw, s):
    """Patches per attention window of the vision tower (windows of ``window`` px on the merged grid)."""
    win = s["window"] // s["merge"] // s["patch"]

    def parts(n):
        return [win] * (n // win) + ([n % win] if n % win else [])
    return [a * b * s["merge"] ** 2 for a in parts(gh // s["merge"]) for b in parts(gw // s["merge"])]


def llm_linear_params(s):
    d, kvd = s["hidden"], s["hidden"] // s["heads"] * s["kv"]
    return s["layers"] * (2 * d * d + 2 * d * kvd + 3 * d * s["inter"])


def flops_prefill(s, image_px, text_tokens):
    """(vision FLOPs, LLM FLOPs, prompt tokens, attention FLOPs within both) of the prefill of one
    judged image; attention counted in full (``4 n^2 d`` per block or layer, as the math of sdpa)."""
    gh, gw = image_grid(image_px, s)
    p, q, hv = gh * gw, gh * gw // s["merge"] ** 2, s["v_hidden"]
    embed = 2 * p * 3 * s["temporal"] * s["patch"] ** 2 * hv
    block = 2 * p * (4 * hv * hv + 3 * hv * s["v_inter"])
    win = sum(n * n for n in windows(gh, gw, s))
    attn = sum(4 * (p * p if b in s["fullatt"] else win) * hv for b in range(s["v_depth"]))
    merger = 2 * q * (4 * hv * 4 * hv + 4 * hv * s["hidden"])
    vision = embed + s["v_depth"] * block + attn + merger
    t = text_tokens + q + 10  # template: <|im_start|>user\n <|vision_start|> ... <|vision_end|> ... assistant\n
    llm_attn = s["layers"] * 4 * t * t * s["hidden"]
    llm = 2 * t * llm_linear_params(s) + llm_attn + 2 * s["hidden"] * s["vocab"]
    return vision, llm, t, attn + llm_attn


def flops_decode(s, context):
    """FLOPs of one answer token with ``context`` tokens cached."""
    return 2 * llm_linear_params(s) + s["layers"] * 4 * context * s["hidden"] + 2 * s["hidden"] * s["vocab"]


def llm_bytes(s, dtype_bytes=2):
    """Bytes of LLM weights one decode step reads (linear layers, lm head)."""
    return dtype_bytes * (llm_linear_params(s) + s["hidden"] * s["vocab"])


def estimate(size, args):
    s = shape(size)
    vision, llm, t, _ = flops_prefill(s, args.image, args.text_tokens)
    rows = []
    for gpu, (peak, bw) in GPUS.items():
        prefill_s = (vision + llm) / (peak * args.mfu)
        step = max(llm_bytes(s) / (bw * args.bw_eff), args.batch * flops_decode(s, t + args.answer_tokens) /
                   (peak * args.mfu))
        per_image = prefill_s + args.answer_tokens * step / args.batch
        rows.append({"size": size, "gpu": gpu, "prefill TFLOP": (vision + llm) / 1e12,
                     "per image ms": 1e3 * per_image,
                     "N=1 (2400 images) min": CATEGORIES * PROMPTS * per_image / 60,
                     "N=10 (24000 images) min": CATEGORIES * PROMPTS * 10 * per_image / 60})
    return rows


# ---- measurement ---------------------------------------------------------------------------------

def build_inputs(cfg, ids, args, device):
    import numpy as np
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image = Image.fromarray(np.random.RandomState(0).randint(0, 255, (args.image, args.image, 3), dtype=np.uint8))
    pix = Qwen2VLImageProcessorPil()(images=[image], return_tensors="pt")
    n_img = int(pix["image_grid_thw"].prod()) // cfg.vision_config.spatial_merge_size ** 2
    g = torch.Generator().manual_seed(0)
    text = torch.randint(10, min(cfg.text_config.vocab_size, 151000) - 30, (args.text_tokens,), generator=g).tolist()
    row = ([ids["im_start"], 1, 2, ids["vision_start"]] + [ids["image"]] * n_img + [ids["vision_end"]] + text
           + [ids["im_end"], 3, ids["im_start"], 4, 5])
    input_ids = torch.tensor([row])
    return {"input_ids": input_ids.to(device), "attention_mask": torch.ones_like(input_ids).to(device),
            "mm_token_type_ids": (input_ids == ids["image"]).int().to(device),
            "pixel_values": pix["pixel_values"].to(device), "image_grid_thw": pix["image_grid_thw"].to(device)}


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def measure(size, args):
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    cfg, ids = config(size)
    t0 = time.perf_counter()
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(args.device):
            model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    finally:
        torch.set_default_dtype(old)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    inputs = build_inputs(cfg, ids, args, args.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)

    def gen(n):
        with torch.no_grad():
            return model.generate(**inputs, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                                  pad_token_id=ids["im_end"])

    counter = FlopCounterMode(display=False)
    with counter:  # also the warm-up
        gen(1)
    times = {}
    for n in (1, 1 + args.decode):
        _sync(args.device)
        t0 = time.perf_counter()
        gen(n)
        _sync(args.device)
        times[n] = time.perf_counter() - t0
    per_token = (times[1 + args.decode] - times[1]) / args.decode
    s = shape(size)
    vision, llm, t, attn = flops_prefill(s, args.image, args.text_tokens)
    return {"size": size, "device": args.device, "dtype": args.dtype, "threads": torch.get_num_threads(),
            "params B": params / 1e9, "build s": build_s, "prompt tokens": int(inputs["input_ids"].shape[1]),
            "prefill s": times[1], "per answer token s": per_token,
            "per image s": times[1] + args.answer_tokens * per_token,
            "2400 images h": CATEGORIES * PROMPTS * (times[1] + args.answer_tokens * per_token) / 3600,
            "analytic prefill TFLOP": (vision + llm) / 1e12,
            # torch's counter has no formula for the CPU flash-attention kernel: compare without attention
            "counted TFLOP": counter.get_total_flops() / 1e12, "analytic w/o attention": (vision + llm - attn) / 1e12}


def table(rows):
    if not rows:
        return ""
    cols = list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="3b", choices=sorted(SHAPES), help="the shape measured")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    p.add_argument("--threads", type=int, default=1, help="CPU threads (the machine is shared)")
    p.add_argument("--image", type=int, default=512, help="side of the judged square image in pixels")
    p.add_argument("--text-tokens", type=int, default=140, help="question tokens (the judge prompt)")
    p.add_argument("--decode", type=int, default=4, help="extra tokens timed for the per-token cost")
    p.add_argument("--answer-tokens", type=int, default=6, help="tokens of a conforming answer ('Score: 85' + eos)")
    p.add_argument("--flops-only", action="store_true", help="only the estimate (no model is built)")
    p.add_argument("--estimate-sizes", default="3b,7b,32b")
    p.add_argument("--mfu", type=float, default=0.4, help="ESTIMATE: fraction of peak FLOP/s reached")
    p.add_argument("--bw-eff", type=float, default=0.6, help="ESTIMATE: fraction of HBM bandwidth in decode")
    p.add_argument("--batch", type=int, default=8, help="ESTIMATE: images per judge batch")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = {}
    if not args.flops_only:
        out["measured"] = [measure(args.size, args)]
        print(f"MEASURED one judged image (random weights, {args.size} shape):", file=sys.stdout)
        print(table(out["measured"]))
    est = [r for size in args.estimate_sizes.split(",") if size for r in estimate(size, args)]
    out["estimate"] = est
    print(f"\nESTIMATE from FLOPs (not measured): MFU {args.mfu}, decode at {args.bw_eff} of HBM bandwidth, "
          f"batch {args.batch}, {args.answer_tokens} answer tokens, {args.image}px images, "
          f"{args.text_tokens} question tokens; {CATEGORIES} categories x {PROMPTS} prompts x N images:")
    print(table(est))
    return out


if __name__ == "__main__":
    main()
