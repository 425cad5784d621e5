"""The training loop: one run of a config into a run folder of the store, resumable bit for bit.

:func:`train` is the recipe: set up the model (:func:`set_up`), then the trainer (:class:`Trainer`:
optimizer, schedule, precision, the run's generator, the checkpoint it resumes from), then one
optimizer step after the other (:meth:`Trainer.step`, the micro-step loop), logging and
checkpointing as it goes. What each T2I micro-batch computes is the ``objective`` passed in
(:mod:`segros.train.steps`); the base a fine-tune starts from is resolved by the caller
(:mod:`segros.pipeline`) and passed as ``init``.

Mixed precision is this loop's own ``torch.autocast`` (:func:`segros.presets.autocast`) with a
``torch.amp.GradScaler`` for fp16; accelerate runs in full precision and keeps device placement and
gradient accumulation. accelerate fixes one mixed-precision mode per process, so letting it own the
precision would stop a notebook from running an fp32 and a bf16 training in a row.
Optimisation (``docs/conventions.md``): AdamW without weight decay on 1-D parameters, biases and
what the backbone's ``no_weight_decay`` names (Harmon's diffusion head), linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to 0 at ``max_steps``.

Several processes (``accelerate launch``, ``docs/data.md``): the model is wrapped by accelerate
(DDP) behind :class:`Call`, so that every micro-batch runs through the wrapper's ``forward`` and
DDP averages the gradients; each process reads its rows of every global batch (:class:`Feed`), and
inside :func:`segros.shard.use` the random draws and means run over the global batch, so the
losses are those of one process with the same global batch. ``batch_size`` stays the global
micro-batch. Only the main process writes the run folder; the others read the checkpoint they
resume from.
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedDataParallelKwargs
from torch import nn
from tqdm.auto import tqdm

from segros import shard, store
from segros.backbones.registry import check_backbone, from_config
from segros.presets import TrainConfig, autocast, resolve_precision
from segros.rng import seed_everything
from segros.train.data import Feed, as_sources, check_sources, micro_schedule, shapes_data, to_device
from segros.train.steps import finetune_objective, prepare_text_embeddings, pretrain_objective


# -----------------------------------------------------------------------------
# optimisation

def make_optimizer(model, config: TrainConfig):
    """AdamW; no weight decay on 1-D parameters and biases (as Harmon / Reca), nor on the parameters the
    backbone names with ``no_weight_decay`` (Harmon's diffusion head, as Reca)."""
    decay, no_decay = [], []
    skip = getattr(model, "no_weight_decay", None)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        excluded = p.ndim < 2 or name.endswith(".bias") or (skip is not None and skip(name))
        (no_decay if excluded else decay).append(p)
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


# -----------------------------------------------------------------------------
# set-up

def set_up(config: TrainConfig, backbone=None, init: str | None = None):
    """Seed every generator with ``config.seed``, then build the backbone ``config`` names (unless one
    is given), load the weights file ``init`` into it (a pretrained base) and check that it can
    serve ``config``. Building after seeding makes the random initialisation part of the run.
    ``config.init_from`` is not read here: the pipeline resolves it into ``init``
    (:func:`segros.pipeline.train_run`), and a config that names one without ``init`` is refused
    rather than trained from a random start."""
    if backbone is None and config.init_from and init is None:
        raise ValueError(f"init_from={config.init_from!r} names a base this function does not resolve; call "
                         "segros.pipeline.train_run (or pass init=, the base's weights file)")
    seed_everything(config.seed)
    if backbone is None:
        backbone = from_config(config)
    if init is not None:
        store.load_weights(backbone, init)
    check_backbone(backbone, config)
    return backbone


class Call(nn.Module):
    """The backbone behind a ``forward(fn, *args) = fn(backbone, *args)``: the module accelerate wraps
    (DDP), so that each micro-batch's computation runs inside the wrapper's forward whatever backbone
    methods it calls."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, fn, *args):
        return fn(self.net, *args)


def _t2i(objective, generator):
    def run(net, batch):
        return objective(net, batch, generator)
    return run


def _i2t(net, batch):
    return net.i2t_loss(batch)


class Trainer:
    """Everything one run updates: the prepared model and optimizer, the learning-rate schedule,
    the loss scaler (fp16 only), the run's generator of γ, masks and ξ (seeded ``seed + 1``), the
    step to start from (restored from the run's checkpoint when there is one) and the data feed
    from that step on (``sources``: :func:`segros.train.data.as_sources`)."""

    def __init__(self, config: TrainConfig, out, backbone, sources, objective, num_workers: int = 0):
        self.config, self.out, self.objective = config, out, objective
        self.schedule = micro_schedule(config)
        self.precision = resolve_precision(config.precision)
        freeze(backbone, config.frozen)
        # §8.1's frozen text embeddings (config.text_embeddings): before the optimizer sees the table
        # and before a checkpoint is restored, so a resumed run snapshots the start weights too
        prepare_text_embeddings(backbone, config)
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)  # T2I and I2T use different parts
        self.accelerator = Accelerator(mixed_precision="no", cpu=not torch.cuda.is_available(),
                                       gradient_accumulation_steps=len(self.schedule), kwargs_handlers=[ddp])
        self.rank, self.world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.main = self.accelerator.is_main_process
        optimizer = make_optimizer(backbone, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, config))
        self.model, self.optimizer = self.accelerator.prepare(Call(backbone), optimizer)
        self.net = self.accelerator.unwrap_model(self.model).net
        self.scaler = torch.amp.GradScaler(self.accelerator.device.type, enabled=self.precision == "fp16")
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.generators = {"segros": self.generator}
        self.start, data_state = self.resume()
        self.feed = Feed(self.net, sources, config, self.start, num_workers=num_workers, rank=self.rank,
                         world_size=self.world_size, pin_memory=self.accelerator.device.type == "cuda")
        self.feed.load_state_dict(data_state)

    def resume(self):
        """(the step to start from, the feed's counts): the checkpoint's (metrics after it are dropped), else 0."""
        if not store.has_checkpoint(self.out):
            if self.main:
                store.clear_metrics(self.out)
            self.accelerator.wait_for_everyone()
            return 0, None
        extra = {}
        start = store.load_checkpoint(self.out, self.net, self.optimizer, self.scheduler, self.generators,
                                      self.scaler, extra=extra)
        if "grounding_text_table" in extra:  # the snapshot of the run's start, not of this model's
            self.net.grounding_text_table = extra["grounding_text_table"].to(self.accelerator.device)
        self.accelerator.wait_for_everyone()
        if self.main:
            store.truncate_metrics(self.out, start)
        return start, extra.get("data")

    def micro_batch(self, source, k):
        """The ``k``-th micro-batch of ``source`` ("t2i" or "i2t"), this process's rows, on the training device."""
        return to_device(self.feed.batch(source, k), self.accelerator.device)

    def micro_loss(self, source, batch, losses):
        """The loss of one micro-batch: the objective on T2I, λ·L_I2T on I2T (Eq. 13)."""
        with autocast(self.precision, self.accelerator.device.type):
            if source == "t2i":
                loss, logged = self.model(_t2i(self.objective, self.generator), batch)
                losses["t2i"].append(logged)
                return loss
            l_i2t = self.model(_i2t, batch)
        losses["i2t"].append(l_i2t.item())
        return self.config.lam * l_i2t

    def step(self, step: int) -> dict:
        """Optimizer step ``step``: every micro-batch of :func:`micro_schedule`, each loss divided by
        their number (accelerate's accumulation), then clipping and one update. Returns the losses."""
        losses = {"t2i": [], "i2t": [], "total": []}
        counts = {"t2i": 0, "i2t": 0}
        per_step = {"t2i": self.config.grad_accum, "i2t": self.config.i2t_micro}
        with shard.use(self.rank, self.world_size):
            for source in self.schedule:
                with self.accelerator.accumulate(self.model):
                    batch = self.micro_batch(source, step * per_step[source] + counts[source])
                    counts[source] += 1
                    loss = self.micro_loss(source, batch, losses)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"non-finite {source} loss at step {step}")
                    losses["total"].append(loss.item())
                    self.accelerator.backward(self.scaler.scale(loss))
                    if self.accelerator.sync_gradients:
                        self.update()
            self.feed.end_step()
            if self.world_size > 1:  # each process's loss is its share (segros.shard): their mean is the global loss
                for key in ("t2i", "i2t", "total"):
                    if losses[key]:
                        mean = shard.all_sum(torch.tensor(losses[key], dtype=torch.float64)) / self.world_size
                        losses[key] = mean.tolist()
        return losses

    def update(self):
        if self.config.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def log(self, done: int, losses: dict, t0: float) -> dict:
        """Append the metrics row of step ``done`` to ``metrics.jsonl`` and return it."""
        def mean(xs):
            return float(np.mean(xs)) if xs else None

        row = {"step": done, "loss": float(np.mean(losses["total"])), "loss_t2i": mean(losses["t2i"]),
               "loss_i2t": mean(losses["i2t"]), "lr": self.scheduler.get_last_lr()[0],
               "time": round(time.time() - t0, 3), **self.feed.row()}
        if self.main:
            store.append_metrics(self.out, row)
        return row

    def checkpoint_extra(self) -> dict:
        """What a checkpoint keeps beside the weights: the data feed's counts and, when grounding reads
        a snapshot of the text embeddings, that snapshot (a resumed run grounds as it started)."""
        extra = {"data": self.feed.state_dict()}
        table = getattr(self.net, "grounding_text_table", None)
        if table is not None:
            extra["grounding_text_table"] = table
        return extra

    def checkpoint(self, done: int):
        if self.main:
            store.save_checkpoint(self.out, done, self.net, self.optimizer, self.scheduler, self.generators,
                                  self.scaler, extra=self.checkpoint_extra())
        self.accelerator.wait_for_everyone()


# -----------------------------------------------------------------------------
# the recipe

def train(config: TrainConfig, out, *, backbone=None, init=None, data=None, objective=None, hook=None,
          progress=True, desc=None, num_workers=0, split="finetune"):
    """Train ``config`` into run folder ``out`` (resuming from its checkpoint); return the backbone.

    ``backbone``: the model to train (default: built from ``config`` after seeding); ``init``: a
    weights file loaded into it first (the pipeline's resolved ``init_from``); ``data``: the
    training sources (``TrainSources`` or in-memory ``TrainData``; default: the config's,
    :func:`segros.data.sources.build_sources`, the shapes world's ``split`` for the tiny families),
    read by ``num_workers`` DataLoader workers; ``objective``: the T2I
    micro-batch loss (default :func:`segros.train.steps.finetune_objective`); ``hook(step)`` is
    called after every optimizer step (tests use it to interrupt a run). Method "none" (the
    "w/o SFT" row) returns the set-up model untrained; a finished run (``out/model.safetensors``)
    is loaded and returned without training.
    """
    data = check_sources(config, data, split)  # a paper backbone without data, a bad path or column: stop now
    state = PartialState(cpu=not torch.cuda.is_available())  # the Trainer's Accelerator shares this state
    if state.is_main_process:
        store.prepare(out, config)
    state.wait_for_everyone()
    backbone = set_up(config, backbone, init)
    final = os.path.join(out, "model.safetensors")
    if config.method == "none":
        return backbone
    if os.path.exists(final):
        store.load_weights(backbone, final)
        return backbone
    sources = as_sources(config, data, split)
    trainer = Trainer(config, out, backbone, sources, objective or finetune_objective(config), num_workers)
    trainer.net.train()
    t0 = time.time()
    bar = tqdm(range(trainer.start, config.max_steps), initial=trainer.start, total=config.max_steps,
               desc=desc or f"finetune {config.method}", disable=not progress or not trainer.main, file=sys.stderr)
    for step in bar:
        losses = trainer.step(step)
        done = step + 1
        if done % config.log_every == 0 or done == config.max_steps:
            bar.set_postfix(loss=f"{trainer.log(done, losses, t0)['loss']:.4f}")
        if done % config.ckpt_every == 0 and done < config.max_steps:
            trainer.checkpoint(done)
        if hook is not None:
            hook(done)
    bar.close()
    if trainer.main:
        store.save_weights(trainer.net, final)
    trainer.accelerator.wait_for_everyone()
    return trainer.net


def pretrain(config: TrainConfig, out, *, backbone=None, data=None, progress=True):
    """Pretrain the "w/o SFT" base ``config`` (see :func:`segros.pipeline.base_config`) into ``out``.

    On the shapes world's *pretrain* split with :func:`segros.train.steps.pretrain_objective`. The
    tiny families fit their offline image tokenizers when built from the registry, deterministically,
    so a fine-tuning run rebuilds the same tokenizers before loading the base weights.
    """
    if data is None:
        data = shapes_data(config, "pretrain")
    return train(config, out, backbone=backbone, data=data, objective=pretrain_objective(config), progress=progress,
                 desc=f"pretrain {config.method}", split="pretrain")
