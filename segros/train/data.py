"""What a training step reads: the shapes world's pairs, in an order that is a function of (seed, k).

One optimizer step is ``grad_accum`` T2I micro-batches and ``i2t_micro`` I2T micro-batches, each
single-source, interleaved T, I, T, I, ... (:func:`micro_schedule`; ``docs/conventions.md``). The
batch of micro-step ``k`` of each source is a pure function of ``(seed, k)``
(:func:`batch_indices`), so a resumed run sees the same data without storing a position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from segros.data.shapes import make_world
from segros.presets import TrainConfig

I2T_SEED_OFFSET = 7919  # the I2T stream's permutations are seeded apart from the T2I stream's


@dataclass
class TrainData:
    """Training pairs: ``t2i`` = [(image uint8 [H, W, 3], caption)], ``i2t`` = [(image, question, answer)]."""

    t2i: list
    i2t: list


def shapes_data(config: TrainConfig, split="finetune") -> TrainData:
    """The shapes world's ``split`` (captions for T2I, the question-answer view for I2T)."""
    world = make_world(config.world, image_size=config.image_size, seed=config.world_seed)
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
    idx = batch_indices(len(data.i2t), config.batch_size, k, config.seed + I2T_SEED_OFFSET)
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
