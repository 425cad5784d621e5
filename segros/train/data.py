"""What a training step reads, in an order that is a function of (seed, k), sharded over processes.

One optimizer step is ``grad_accum`` T2I micro-batches and ``i2t_micro`` I2T micro-batches, each
single-source, interleaved T, I, T, I, ... (:func:`micro_schedule`; ``docs/conventions.md``). The
*global* batch of micro-step ``k`` of each source is a pure function of ``(seed, k)``
(:func:`batch_indices`), so a resumed run sees the same data without storing a position.

:class:`Feed` reads the sources of a run (``segros.data.sources``: the shapes world by default,
real datasets when the config names them) through DataLoaders whose workers decode and preprocess
with the backbone's own ``preprocess_images``; process ``r`` of ``W`` gets its rows of every global
batch, counts the samples it had to skip, and the counts are summed over processes every step
(``docs/data.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from segros import shard
from segros.data.shapes import config_world
from segros.data.sources import (I2T_SEED_OFFSET, DataStats, ListSource, TrainSources, build_sources, check_skips,
                                 i2t_model_batch, make_loader, open_llava, open_t2i, require_data_source, stats_row, t2i_model_batch,
                                 trains_i2t)
from segros.presets import TrainConfig



@dataclass
class TrainData:
    """Training pairs: ``t2i`` = [(image uint8 [H, W, 3], caption)], ``i2t`` = [(image, question, answer)]."""

    t2i: list
    i2t: list


def shapes_data(config: TrainConfig, split="finetune") -> TrainData:
    """The shapes world's ``split`` (captions for T2I, the question-answer view for I2T)."""
    world = config_world(config)
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


# -----------------------------------------------------------------------------
# the feed: sources -> this process's micro-batches

def as_sources(config: TrainConfig, data=None, split: str = "finetune") -> TrainSources:
    """The sources of a run: ``data`` as given (``TrainSources``, or ``TrainData`` lists held in
    memory), else the config's (:func:`segros.data.sources.build_sources`: every path and column
    checked now)."""
    if data is None:
        return build_sources(config, split)
    if isinstance(data, TrainSources):
        return data
    if isinstance(data, TrainData):
        i2t = ListSource(data.i2t, "i2t", "given I2T pairs") if trains_i2t(config) else None
        return TrainSources(ListSource(data.t2i, "t2i", "given T2I pairs"), i2t)
    raise TypeError(f"data must be TrainSources, TrainData or None, got {type(data).__name__}")


def check_sources(config: TrainConfig, data=None, split: str = "finetune"):
    """Before a model is built: raise on a paper backbone without data, and open (and so check) the
    config's real sources now; returns what to pass on as ``data``. Sources that read the shapes
    world stay unbuilt here (generating a paper preset's world is slow, and a backbone error should
    come first)."""
    if data is not None or config.method == "none":
        return data
    require_data_source(config)
    shapes = config.t2i_data in (None, "shapes") or (trains_i2t(config) and config.i2t_data in (None, "shapes"))
    if not shapes:
        return build_sources(config, split)
    if config.t2i_data not in (None, "shapes"):  # one real source beside the shapes world: checked now
        open_t2i(config.t2i_data, config.t2i_caption)
    if trains_i2t(config) and config.i2t_data not in (None, "shapes"):
        open_llava(config.i2t_data, config.i2t_image_root)
    return None


class Feed:
    """This process's micro-batches of a run, from optimizer step ``start`` to ``config.max_steps``.

    Per source a DataLoader (:func:`segros.data.sources.make_loader`) over the global micro-batches
    ``k = start * per_step, ...`` (T2I seeded ``seed``, I2T ``seed + I2T_SEED_OFFSET``), this
    process's rows of each; ``num_workers`` processes decode and preprocess. With several processes
    the captions of the global batch are gathered and tokenized together, then sliced, so a row is
    padded as it is with one process. ``stats`` holds the skip counts summed over processes (the
    same on every process); :meth:`end_step` adds this step's and stops the run past ``max_skip_frac``.
    """

    def __init__(self, backbone, sources: TrainSources, config: TrainConfig, start: int = 0, num_workers: int = 0,
                 rank: int = 0, world_size: int = 1, pin_memory: bool = False):
        self.backbone, self.config, self.world_size = backbone, config, world_size
        self.sources = {"t2i": sources.t2i}
        if sources.i2t is not None and config.lam > 0 and config.i2t_micro > 0:
            self.sources["i2t"] = sources.i2t
        self.per_step = {"t2i": config.grad_accum, "i2t": config.i2t_micro}
        seeds = {"t2i": config.seed, "i2t": config.seed + I2T_SEED_OFFSET}
        self.next_k, self.iters, self.stats, self.delta = {}, {}, {}, {}
        for name, src in self.sources.items():
            k0 = start * self.per_step[name]
            loader = make_loader(src, backbone.preprocess_images, batch_size=config.batch_size, seed=seeds[name],
                                 start=k0, stop=config.max_steps * self.per_step[name], rank=rank,
                                 world_size=world_size, num_workers=num_workers, pin_memory=pin_memory)
            self.next_k[name], self.iters[name] = k0, iter(loader)
            self.stats[name] = DataStats(len(src))
            self.delta[name] = DataStats(len(src))

    def batch(self, name: str, k: int) -> dict:
        """Micro-batch ``k`` of source ``name`` (they come in order), as the backbone's model batch (on the CPU)."""
        if k != self.next_k[name]:
            raise RuntimeError(f"{name} micro-batch {k} asked for, the loader is at {self.next_k[name]}")
        raw = next(self.iters[name])
        self.next_k[name] += 1
        self.delta[name].update(raw)
        if name == "t2i":
            if shard.active():  # tokenized with the global batch's captions: the padding of one process
                text = self.backbone.tokenize_prompts(shard.gather_objects(raw["texts"]))
                n = len(raw["texts"])
                return {**{key: shard.local_rows(v, n) for key, v in text.items()}, "pixels": raw["pixels"]}
            return t2i_model_batch(self.backbone, raw)
        return i2t_model_batch(self.backbone, raw)

    def end_step(self) -> None:
        """Add this step's skip counts, summed over processes, and stop past ``max_skip_frac``."""
        for name, d in self.delta.items():
            total = shard.all_sum(d.to_tensor()) + self.stats[name].to_tensor()
            examples = (self.stats[name].examples + d.examples)[:5]
            self.stats[name] = DataStats.from_tensor(total, d.n_source, examples)
            self.delta[name] = DataStats(d.n_source)
            check_skips(self.stats[name], self.config.max_skip_frac, self.sources[name].name)

    def row(self) -> dict:
        """The data columns of a ``metrics.jsonl`` row: ``world_size`` and the skip counts."""
        return stats_row(self.stats["t2i"], self.stats.get("i2t"), self.world_size)

    def state_dict(self) -> dict:
        return {name: st.state_dict() for name, st in self.stats.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, st in (state or {}).items():
            if name in self.stats:
                self.stats[name].load_state_dict(st)
