"""The fine-tuning loop: SFT, Reca, Reca + hint filtering and SeGroS on one backbone (§3, §4.1, Table 7).

Entry points::

    python -m segros.train --preset small --method segros --out runs/demo/segros [--max-steps N] [--set key=value ...]
    python -m segros.train pretrain --preset small --out runs/base

The heart of the method is :func:`t2i_step` (§3.2–3.4, Eq. 13). Everything else is plumbing:
data order (:func:`batch_indices`), the optimizer (:func:`make_optimizer`), the learning-rate
schedule (:func:`lr_at`), and the accelerate loop (:func:`train`) with resumable checkpoints from
:mod:`segros.runs`.

Conventions fixed here (the paper leaves them open):
- One optimizer step = ``grad_accum`` T2I micro-batches and ``i2t_micro`` I2T micro-batches, each
  single-source, interleaved T, I, T, I, ... (Reca alternates 2 reconstruction + 2 LLaVA
  micro-batches). Each micro-batch loss is divided by the number of micro-batches, so one step
  minimises  (n_T/n) L_T2I + λ (n_I/n) L_I2T  — Eq. 13 with the 1:1 mix of Reca when n_T = n_I.
- Grounding (§3.2) uses the frozen text-embedding table and ``embed_image`` outputs detached; the
  hint embeddings are the same ``embed_image`` outputs *with* gradient (DESIGN.md: after the
  encoder's positional information).
- Reca and "Reca + SeGroS hint filtering" (Table 9 rows 2–3, Text ×; Fig. 1(b)) condition on the
  image prompt without the caption (:func:`without_text`): Reca's caption-free reconstruction
  instruction when the backbone is configured with it (the real adapters' ``recon_prompts``,
  ``tokenize_recon_prompts``), else an empty prompt (the family's tokenisation of ""; the tiny
  families always). The hint-filtering variant still grounds with the caption to rank the hints
  (Table 9: "Top-30% by SeGroS grounding map"); its mask is random.
- Reca's hints are every token of the hint grid, in raster order; its mask is random.
- The batch of micro-step k is a pure function of (seed, k): a resumed run sees the same data.
- Randomness: ``torch.manual_seed(seed)`` etc. at the start (model-internal noise); one
  ``torch.Generator`` seeded ``seed + 1`` drives γ, the mask, ξ of Eq. 12 (see :mod:`segros.runs`
  for what a checkpoint restores).
- AdamW without weight decay on 1-D parameters and biases (Harmon/Reca); linear warm-up to
  ``lr`` over ``warmup_steps``, then cosine decay to 0 at ``max_steps``.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from segros import runs
from segros.grounding import ground
from segros.presets import METHODS, PRESETS, TrainConfig, get_preset  # noqa: F401  (re-exported)
from segros.supervision import (Supervision, build_supervision, perturb, random_supervision, resample_map,
                                sample_gamma)


# -----------------------------------------------------------------------------
# data

@dataclass
class TrainData:
    """Training pairs: ``t2i`` = [(image uint8 [H, W, 3], caption)], ``i2t`` = [(image, question, answer)]."""

    t2i: list
    i2t: list


def shapes_data(config: TrainConfig, split="finetune") -> TrainData:
    """The shapes world's ``split`` (captions for T2I, the question-answer view for I2T)."""
    from segros.data.shapes import ShapesWorld

    world = ShapesWorld(image_size=config.image_size, seed=config.world_seed)
    scenes = world.split(split, config.n_train)
    t2i = [(s.image, s.caption) for s in scenes]
    i2t = []
    if config.n_qa_train > 0:
        qa_scenes = scenes if config.n_qa_train <= len(scenes) else world.split(split, config.n_qa_train)
        i2t = [(q["image"], q["question"], q["answer"]) for q in world.qa(qa_scenes)][:config.n_qa_train]
    return TrainData(t2i, i2t)


def batch_indices(n, batch_size, k, seed):
    """Indices of micro-batch ``k`` of an endless stream of per-epoch permutations (tail dropped)."""
    per_epoch = n // batch_size
    epoch, i = divmod(k, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    return perm[i * batch_size:(i + 1) * batch_size].tolist()


def make_t2i_batch(backbone, data, config, k):
    idx = batch_indices(len(data.t2i), config.batch_size, k, config.seed)
    return backbone.t2i_batch([data.t2i[i][0] for i in idx], [data.t2i[i][1] for i in idx])


def make_i2t_batch(backbone, data, config, k):
    idx = batch_indices(len(data.i2t), config.batch_size, k, config.seed + 7919)
    rows = [data.i2t[i] for i in idx]
    return backbone.i2t_batch([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


def micro_schedule(config: TrainConfig):
    """The sources of one optimizer step's micro-batches, interleaved: ["t2i", "i2t", "t2i", ...]."""
    n_i = config.i2t_micro if config.lam > 0 else 0
    out, t, i = [], config.grad_accum, n_i
    while t or i:
        if t:
            out.append("t2i")
            t -= 1
        if i:
            out.append("i2t")
            i -= 1
    return out


def to_device(batch, device):
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


# -----------------------------------------------------------------------------
# the SeGroS step (§3.2–3.4, Eq. 13) and the baselines (Table 9)

def without_text(backbone, batch, generator=None):
    """The same batch with its caption replaced by a caption-free prompt (Reca; Table 9 Text ×).

    Reca conditions its reconstruction on the image and a randomly chosen *reconstruction
    instruction* from ``get_recon_prompt_list()``, never on the caption (Reca
    ``Harmon/src/datasets/text2image/text2image.py`` ``ReconstructionDataset._process_text``;
    ``Show-o/training/train_recon_w_clip_vit.py``, the ``prepare_inputs_and_labels_recon`` call;
    ``OpenUni/src/datasets/image2image/edit_datasets.py`` ``MidjourneyReconstructionDataset`` and
    ``ImageEditDataset._process_text``). A backbone with ``tokenize_recon_prompts`` and a non-empty
    ``recon_prompt_list`` (the real adapters with ``recon_prompts`` set through
    ``backbone_kwargs``) gives those ids, drawn with ``generator``; any other backbone the empty
    prompt ``tokenize_prompts([""] * B)`` (the tiny families: unchanged, ``generator`` untouched).
    Either way ``text_valid`` is all False, so grounding must use the original batch
    (:func:`grounded_map` in :func:`t2i_step`).
    """
    B = batch["pixels"].shape[0]
    recon = getattr(backbone, "tokenize_recon_prompts", None)
    if recon is not None and getattr(backbone, "recon_prompt_list", None):
        text = recon(B, generator)
    else:
        text = backbone.tokenize_prompts([""] * B)
    return {**batch, **to_device(text, batch["pixels"].device)}


def gather_hints(z_image, hint_idx):
    """[B, N, D], [B, H] -> [B, H, D] (the hints keep the raster order of ``hint_idx``)."""
    return torch.gather(z_image, 1, hint_idx[..., None].expand(-1, -1, z_image.shape[-1]))


def top_hint_idx(m_tilde, eta):
    """Ascending indices of the top-⌊ηN⌋ tokens of m̃ (Table 9 row 3's hint filter)."""
    return build_supervision(m_tilde, eta=eta, gamma=0.0).hint_idx


def grounded_map(backbone, batch, z_image, config, generator):
    """§3.2–3.3 + Eq. 12: m̃ = min-max(m) + ξ from the frozen text embeddings and detached z_image."""
    with torch.no_grad():
        z_text = backbone.embed_text(batch["input_ids"])
    g = ground(z_text.float(), z_image.detach().float(), batch["text_valid"].bool(),
               rho=config.rho, tau=config.tau, text_filter=config.text_filter)
    return perturb(g.m_bar, config.alpha, generator=generator)


def t2i_step(backbone, batch, config: TrainConfig, generator):
    """One T2I micro-batch of ``config.method``; returns (loss, supervision, hints).

    segros           (§3.4, Eq. 13): text + top-η grounded hints; seen = bottom of m̃, masked = the rest
    sft              (Fig. 1(a)): text only, random mask
    reca             (Fig. 1(b), Table 9 row 2): no caption (:func:`without_text`), every visual token
                     a hint, random mask
    reca_hint_filter (Table 9 row 3): no caption in the model's input, top-η hints by the SeGroS map
                     grounded with the caption, random mask
    """
    B = batch["pixels"].shape[0]
    N = backbone.target_grid_hw[0] * backbone.target_grid_hw[1]
    schedule = config.mask_schedule or backbone.mask_schedule
    per = config.gamma_per or backbone.gamma_per
    gamma = sample_gamma(schedule, B, per=per, generator=generator)

    if config.method == "sft":
        sup = random_supervision(B, N, gamma, eta=0.0, generator=generator)
        sup = on_device(sup, batch["pixels"].device)
        return backbone.t2i_loss(batch, sup, None), sup, None

    z_image = backbone.embed_image(batch["pixels"]).z_image  # with gradient: the hint embeddings
    n_hint_grid = z_image.shape[1]

    if config.method == "reca":
        rand = random_supervision(B, N, gamma, eta=0.0, generator=generator)
        all_idx = torch.arange(n_hint_grid).expand(B, n_hint_grid).clone()
        sup = on_device(Supervision(all_idx, rand.seen, rand.masked, rand.loss_weight), z_image.device)
        return backbone.t2i_loss(without_text(backbone, batch, generator), sup, z_image), sup, z_image

    m_tilde = grounded_map(backbone, batch, z_image, config, generator)  # the caption's batch, always

    if config.method == "reca_hint_filter":  # grounded with the caption, conditioned without it
        rand = random_supervision(B, N, gamma, eta=0.0, generator=generator)
        sup = Supervision(top_hint_idx(m_tilde, config.eta), rand.seen, rand.masked, rand.loss_weight)
        sup = on_device(sup, z_image.device)
        hints = gather_hints(z_image, sup.hint_idx)
        return backbone.t2i_loss(without_text(backbone, batch, generator), sup, hints), sup, hints

    # segros: hints and corrupted input from the same m̃ (§3.4), resampled when the grids differ
    target_map = None
    if tuple(backbone.hint_grid_hw) != tuple(backbone.target_grid_hw):
        target_map = resample_map(m_tilde, tuple(backbone.hint_grid_hw), tuple(backbone.target_grid_hw))
    sup = build_supervision(m_tilde, eta=config.eta, gamma=gamma, hint_from=config.hint_from,
                            seen_from=config.seen_from, loss_on=config.loss_on, loss_top=config.loss_top,
                            target_map=target_map)
    sup = on_device(sup, z_image.device)
    hints = gather_hints(z_image, sup.hint_idx)
    return backbone.t2i_loss(batch, sup, hints), sup, hints


def on_device(sup, device):
    return Supervision(sup.hint_idx.to(device), sup.seen.to(device), sup.masked.to(device),
                       sup.loss_weight.to(device))


# -----------------------------------------------------------------------------
# optimisation

def make_optimizer(model, config: TrainConfig):
    """AdamW; no weight decay on 1-D parameters and biases (as Harmon / Reca)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas))


def lr_at(step, config: TrainConfig):
    """Multiplier of ``lr`` at optimizer step ``step`` (0-based): linear warm-up, then cosine to 0."""
    if step < config.warmup_steps:
        return (step + 1) / (config.warmup_steps + 1)
    span = max(1, config.max_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def freeze(model, prefixes):
    """Table 7 "Frozen Modules": parameters whose name starts with a prefix get no gradient."""
    if not prefixes:
        return
    names = [n for n, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(n.startswith(prefix) for n in names):
            raise ValueError(f"frozen: no parameter name starts with {prefix!r} in {type(model).__name__}")
    for name, p in model.named_parameters():
        if any(name.startswith(prefix) for prefix in prefixes):
            p.requires_grad_(False)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_precision(precision):
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "fp32"
    return precision


# -----------------------------------------------------------------------------
# building the model

def check_backbone(backbone, config: TrainConfig, training: bool = True) -> None:
    """Fail before any work when ``config`` asks for what ``backbone`` cannot do (not hours into a run).

    λ > 0 needs an I2T loss (OpenUni trains none: ``trains_i2t = False``); ``eval_qa > 0`` needs
    an ``answer()`` of its own (the real adapters have none: Table 2's understanding benchmarks
    need hub models). ``training=False`` checks only what evaluation needs.
    """
    from segros.backbones.base import Backbone

    name = getattr(backbone, "family", type(backbone).__name__)
    if training and config.lam > 0 and config.i2t_micro > 0 and not getattr(backbone, "trains_i2t", True):
        raise ValueError(f"{name} trains no I2T loss (Table 7: λ = 0); set lam=0 (got lam={config.lam})")
    if config.eval_qa > 0 and getattr(type(backbone), "answer", Backbone.answer) is Backbone.answer:
        raise ValueError(f"{name} has no answer() for the QA evaluation; set eval_qa=0 (got {config.eval_qa})")


def make_backbone(config: TrainConfig):
    """The backbone from the registry, with a clear error when a paper backbone is not available."""
    from segros import backbones

    build = getattr(backbones, "build_backbone", None)
    if build is None:
        raise RuntimeError("segros.backbones.build_backbone is not available yet (the registry is missing)")
    kwargs = dict(config.backbone_kwargs)
    if config.backbone.startswith("tiny-"):  # tiny families fit their offline tokenizers on this world
        kwargs = {"world_seed": config.world_seed, "image_size": config.image_size, **kwargs}
    try:
        return build(config.backbone, **kwargs)
    except (KeyError, ValueError, TypeError, OSError, NotImplementedError, ImportError) as e:
        hint = ""
        if not config.backbone.startswith("tiny"):
            hint = (" Paper presets run the real adapters on their official checkpoints, on a GPU"
                    + ("" if torch.cuda.is_available() else " (none found here)") + ".")
        raise RuntimeError(f"cannot build backbone {config.backbone!r}: {e}.{hint}") from e


# -----------------------------------------------------------------------------
# the loop

def train(config: TrainConfig, out, *, backbone=None, data=None, stage="finetune", hook=None, progress=True):
    """Train ``config`` into run folder ``out`` (resuming from its checkpoint); return the backbone.

    stage "finetune": the method's T2I step + λ·I2T (Eq. 13).
    stage "pretrain": the "w/o SFT" base: SFT-style T2I + I2T + ``align_weight``·alignment_loss
    (FILIP-style, families that define it) on each T2I micro-batch.
    ``hook(step)`` is called after every optimizer step (tests use it to interrupt a run).
    A finished run (``out/model.safetensors``) is loaded and returned without training.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    runs.prepare(out, config)
    seed_everything(config.seed)
    if backbone is None:
        backbone = make_backbone(config)
        if config.init_from:
            base = config.init_from
            if base == "auto":  # the shared base of this run store: runs/<table>/<name> -> runs/base/...
                base = runs.ensure_base(config, os.path.dirname(os.path.dirname(os.path.abspath(out))), progress)
            runs.load_weights(backbone, os.path.join(base, "model.safetensors"))
    check_backbone(backbone, config)
    if config.method == "none":  # "w/o SFT": the start checkpoint, not trained further
        return backbone
    final = os.path.join(out, "model.safetensors")
    if os.path.exists(final):
        runs.load_weights(backbone, final)
        return backbone
    if data is None:
        data = shapes_data(config, "pretrain" if stage == "pretrain" else "finetune")
    freeze(backbone, config.frozen)

    schedule = micro_schedule(config)
    precision = resolve_precision(config.precision)
    mixed = "no" if precision == "fp32" else precision
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", mixed) != mixed:
        # accelerate keeps one precision per process and refuses another; each run makes its own
        # Accelerator, so a later run of another precision (a notebook, a table) starts its state afresh
        AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision=mixed, cpu=not torch.cuda.is_available(),
                              gradient_accumulation_steps=len(schedule))
    optimizer = make_optimizer(backbone, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, config))
    model, optimizer = accelerator.prepare(backbone, optimizer)
    net = accelerator.unwrap_model(model)
    gen = torch.Generator().manual_seed(config.seed + 1)
    generators = {"segros": gen}

    start = 0
    if runs.has_checkpoint(out):
        start = runs.load_checkpoint(out, net, optimizer, scheduler, generators)
        runs.truncate_metrics(out, start)
    elif os.path.exists(os.path.join(out, "metrics.jsonl")):
        os.remove(os.path.join(out, "metrics.jsonl"))

    net.train()
    sft = sft_config(config)
    t0 = time.time()
    bar = tqdm(range(start, config.max_steps), initial=start, total=config.max_steps, desc=f"{stage} {config.method}",
               disable=not progress, file=sys.stderr)
    for step in bar:
        losses = {"t2i": [], "i2t": [], "total": []}
        k_t = k_i = 0
        for source in schedule:
            with accelerator.accumulate(model):
                if source == "t2i":
                    batch = to_device(make_t2i_batch(net, data, config, step * config.grad_accum + k_t), accelerator.device)
                    k_t += 1
                    with accelerator.autocast():
                        if stage == "pretrain":
                            loss, _, _ = t2i_step(net, batch, sft, gen)
                            losses["t2i"].append(loss.item())
                            if hasattr(net, "alignment_loss") and config.align_weight > 0:
                                loss = loss + config.align_weight * net.alignment_loss(batch)
                        else:
                            loss, _, _ = t2i_step(net, batch, config, gen)
                            losses["t2i"].append(loss.item())
                else:
                    batch = to_device(make_i2t_batch(net, data, config, step * config.i2t_micro + k_i), accelerator.device)
                    k_i += 1
                    with accelerator.autocast():
                        l_i2t = net.i2t_loss(batch)
                    losses["i2t"].append(l_i2t.item())
                    loss = config.lam * l_i2t
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite {source} loss at step {step}")
                losses["total"].append(loss.item())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    if config.clip_grad > 0:
                        accelerator.clip_grad_norm_(model.parameters(), config.clip_grad)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if done % config.log_every == 0 or done == config.max_steps:
            row = {"step": done, "loss": float(np.mean(losses["total"])),
                   "loss_t2i": float(np.mean(losses["t2i"])) if losses["t2i"] else None,
                   "loss_i2t": float(np.mean(losses["i2t"])) if losses["i2t"] else None,
                   "lr": scheduler.get_last_lr()[0], "time": round(time.time() - t0, 3)}
            runs.append_metrics(out, row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if done % config.ckpt_every == 0 and done < config.max_steps:
            runs.save_checkpoint(out, done, net, optimizer, scheduler, generators)
        if hook is not None:
            hook(done)
    bar.close()
    runs.save_weights(net, final)
    return net


def sft_config(config):
    """The pretraining T2I objective: SFT-style random masking, no hints."""
    import dataclasses

    return dataclasses.replace(config, method="sft")


def pretrain(config: TrainConfig, out, *, backbone=None, data=None, progress=True):
    """The "w/o SFT" base every small fine-tuning run starts from (``init_from``).

    On the shapes world's *pretrain* split: SFT-style T2I + I2T + the family's alignment_loss
    (issue 4 item 3). The tiny families fit their offline image tokenizers when built from the
    registry (``build_backbone`` fits them on the world's pretrain renders, deterministically, so
    a fine-tuning run rebuilds the same tokenizers before loading the base weights).
    """
    return train(config, out, backbone=backbone, data=data, stage="pretrain", progress=progress)


# -----------------------------------------------------------------------------
# command line

def parse_sets(pairs, parser):
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            parser.error(f"--set expects key=value, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k.strip()] = v
    return out


def config_from_args(args, parser):
    try:
        config = get_preset(args.preset)
        overrides = parse_sets(args.set, parser)
        if getattr(args, "method", None):
            overrides["method"] = args.method
        if args.max_steps is not None:
            overrides["max_steps"] = str(args.max_steps)
        return config.replace(**overrides)
    except ValueError as e:
        parser.error(str(e))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    stage = "finetune"
    if argv and argv[0] == "pretrain":
        stage, argv = "pretrain", argv[1:]
    parser = argparse.ArgumentParser(prog="python -m segros.train" + (" pretrain" if stage == "pretrain" else ""),
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", help=f"one of {', '.join(PRESETS)}")
    if stage == "finetune":
        parser.add_argument("--method", default=None, help=f"one of {', '.join(METHODS)}")
        parser.add_argument("--evaluate", action="store_true", help="also generate and score (results.json)")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    config = config_from_args(args, parser)
    try:
        if stage == "pretrain":
            if args.max_steps is not None:
                config = config.replace(pretrain_steps=args.max_steps)
            pretrain(runs.base_config(config), args.out, progress=not args.quiet)
        else:
            model = train(config, args.out, progress=not args.quiet)
            if args.evaluate:
                from segros import evaluate

                res = evaluate.evaluate(model, config, args.out, progress=not args.quiet)
                runs.atomic_write_json(os.path.join(args.out, "results.json"), res)
                print(res)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
