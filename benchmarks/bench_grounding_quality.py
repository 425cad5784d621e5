"""Grounding quality of the tiny families before / after base pretraining (the alignment stage),
and how much GenEval accuracy survives the tiny image tokenizers' round trip.

    .venv/bin/python benchmarks/bench_grounding_quality.py                 # both parts, defaults
    .venv/bin/python benchmarks/bench_grounding_quality.py --part grounding --steps 300
    PYTHONPATH=. .venv/bin/python benchmarks/bench_grounding_quality.py --part grounding \
        --variants init align align+t2i+i2t --steps 200 --threads 1    # the issue-4 table

    PYTHONPATH=. .venv/bin/python benchmarks/bench_grounding_quality.py --part roundtrip --world v3   # world v3 codecs

Part "roundtrip": GenEval prompts (ShapesWorld.geneval_metadata) → ground-truth renders → scored
by the shapes detector + GenEval rules, raw and after encode→decode by each image tokenizer.

Part "grounding": for each family, the recall / precision (beside its ceiling) of the top-30%
hints on eval-split scenes, per text_filter, for four models trained on the pretrain split:
``init`` (no training), ``t2i+i2t`` (base losses only, SFT masking, no alignment stage),
``align`` (the alignment stage only: ``alignment_loss``, FILIP with a stop-gradient
encoder and shared words left out, see segros/backbones/tiny_common.py), ``align+t2i+i2t`` (the three summed). Same steps, batch
and learning rate for each; seeded.
"""

from __future__ import annotations

import argparse
import copy
import time

import pandas as pd
import torch

from segros.backbones import build_backbone
from segros.data.image_tokenizer import images_to_pixels, pixels_to_uint8
from segros.data.shapes import ShapesWorld, make_world
from segros.presets import get_preset
from segros.eval.geneval import evaluate_image, summarize
from segros.eval.grounding_quality import grounding_quality_table
from segros.eval.shapes_detector import detect
from segros.supervision import random_supervision, sample_gamma


def geneval_accuracy(metadata, images):
    rows = []
    for meta, image in zip(metadata, images):
        correct, _ = evaluate_image(meta, detect(image))
        rows.append({"tag": meta["tag"], "correct": correct, "metadata": meta})
    return summarize(rows)


def roundtrip(n_total, seed, world="v1"):
    """Round trips of ground-truth renders of ``world``; the tokenizers are those the world's presets
    build (``small`` / ``small-showo`` for v1, ``small-v3`` / ``small-showo-v3`` for v3)."""
    suffix = "" if world == "v1" else f"-{world}"
    shapes = make_world(world, seed=seed)
    metadata = shapes.geneval_metadata(n_total=n_total, seed=seed)
    images = [shapes.render_from_metadata(m, seed=i).image for i, m in enumerate(metadata)]
    pixels = images_to_pixels(images)
    out = {f"ground truth ({world})": geneval_accuracy(metadata, images)}
    for name, preset in (("tiny-showo", f"small-showo{suffix}"), ("tiny-harmon", f"small{suffix}")):
        kwargs = dict(get_preset(preset).backbone_kwargs)
        if world != "v1":
            kwargs["world"] = world
        m = build_backbone(name, world_seed=seed, **kwargs)
        tok = m.image_tokenizer if name == "tiny-showo" else m.autoencoder
        with torch.no_grad():
            rec = tok.decode(tok.encode(pixels))
        mse = float((rec.clamp(0, 1) - pixels).pow(2).mean())
        out[f"{name} ({type(tok).__name__}, mse {mse:.4f})"] = geneval_accuracy(metadata, list(pixels_to_uint8(rec)))
    rows = [{"images": k, "overall": v["overall"], **v["tags"]} for k, v in out.items()]
    return pd.DataFrame(rows)


def train(model, scenes, qa, steps, batch, lr, use_align, use_base, seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    for step in range(steps):
        idx = torch.randint(len(scenes), (batch,), generator=g).tolist()
        b = model.t2i_batch([scenes[i].image for i in idx], [scenes[i].caption for i in idx])
        loss = 0.0
        if use_align:
            loss = loss + model.alignment_loss(b)
        if use_base:
            gamma = sample_gamma(model.mask_schedule, batch, per=model.gamma_per, generator=g)
            sup = random_supervision(batch, model.num_image_tokens, gamma, eta=0.0, generator=g)
            loss = loss + model.t2i_loss(b, sup, None)
            qi = torch.randint(len(qa), (batch,), generator=g).tolist()
            ib = model.i2t_batch([qa[i]["image"] for i in qi], [qa[i]["question"] for i in qi],
                                 [qa[i]["answer"] for i in qi])
            loss = loss + model.i2t_loss(ib)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


VARIANTS = {"init": None, "t2i+i2t": (False, True), "align": (True, False), "align+t2i+i2t": (True, True)}


def grounding(families, variants, steps, batch, lr, n_train, n_eval, eta, seed, caption="caption"):
    world = ShapesWorld(seed=seed)
    scenes = world.split("pretrain", n_train)
    qa = world.qa(scenes, seed=seed)
    evals = world.split("eval", n_eval)
    tables = []
    for name in families:
        base = build_backbone(name)
        print(f"{name}: {base.num_parameters()['total']:,} parameters, hint grid {base.hint_grid_hw}", flush=True)
        for variant in variants:
            flags = VARIANTS[variant]
            t0 = time.time()
            model = copy.deepcopy(base)
            if flags is not None:
                model = train(model, scenes, qa, steps, batch, lr, *flags, seed)
            table = grounding_quality_table(model, evals, eta=eta, caption=caption)
            table.insert(0, "model", variant)
            table.insert(0, "family", name)
            tables.append(table)
            print(f"  {variant}: {time.time() - t0:.0f}s", flush=True)
    return pd.concat(tables, ignore_index=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["all", "roundtrip", "grounding"], default="all")
    p.add_argument("--families", nargs="+", default=["tiny-showo", "tiny-harmon"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-eval", type=int, default=200)
    p.add_argument("--eta", type=float, default=0.3)
    p.add_argument("--geneval-n", type=int, default=553)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--world", default="v1", choices=["v1", "v3"], help="the shapes world of the round trip")
    p.add_argument("--threads", type=int, default=1, help="1 is much faster on a shared CPU")
    p.add_argument("--caption", choices=["caption", "geneval_caption"], default="caption",
                   help="the eval text grounded (training always uses the caption)")
    args = p.parse_args()
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    torch.set_num_threads(args.threads)
    if args.part in ("all", "roundtrip"):
        print("GenEval accuracy of ground-truth renders and their image-tokenizer round trips")
        print(roundtrip(args.geneval_n, args.seed, args.world).round(3).to_string(index=False), flush=True)
    if args.part in ("all", "grounding"):
        t = grounding(args.families, args.variants, args.steps, args.batch, args.lr, args.n_train, args.n_eval, args.eta, args.seed, args.caption)
        print(f"Grounding quality of the top-{args.eta:.0%} hints, {args.n_eval} eval scenes, "
              f"{args.steps} steps x batch {args.batch}, lr {args.lr}")
        print(t.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
