"""Data-parallel training as one big batch: the per-process slice of global draws and global means.

With ``W`` processes (``accelerate launch``), process ``r`` holds rows ``[offset, offset + n)`` of
every global micro-batch (``segros.data.sources.shard_bounds``). For a run on ``W`` processes to
compute what one process computes on the whole batch (``docs/data.md``, "Several processes"),
everything drawn per row is drawn for the *global* batch from a generator that every process holds
in the same state, and sliced (:func:`draw`); every mean over rows or tokens divides by the global
count or weight (:func:`weighted_mean`, whose per-process losses average to the global mean, as DDP
averages their gradients).

The training loop sets the process's place with :func:`use` around its steps; outside it (and with
one process) every helper is the identity and the callers run their single-process code unchanged,
so single-process results stay bit for bit what they were.

A step that splits its rows into sub-batches (``segros.train.steps.hinted_loss``: dropped and kept
captions) runs every sub-batch on every process, so that each process makes the same collective
calls in the same order. A process that holds none of a sub-batch's rows runs it on one *stand-in*
row of loss weight 0 inside :func:`stand_in`: the row counts for no row of the global batch in
:func:`rows`, reads the first rows of every global draw, and adds 0 to every weighted sum.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch

_STATE = {"rank": 0, "world": 1, "stand_in": False}


@contextlib.contextmanager
def use(rank: int, world: int):
    """Within the block, this process is ``rank`` of ``world`` (``torch.distributed`` initialised when ``world > 1``)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not a process of a world of size {world}")
    if world > 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise RuntimeError(f"{world} processes need torch.distributed initialised (accelerate launch does it)")
    old = dict(_STATE)
    _STATE.update(rank=rank, world=world, stand_in=False)
    try:
        yield
    finally:
        _STATE.update(old)


@contextlib.contextmanager
def stand_in(on: bool = True):
    """Within the block (with ``on``), this process's rows are stand-ins of loss weight 0: they count as
    no row of the global batch (:func:`rows` sends 0) and :func:`draw` / :func:`local_rows` give them the
    first rows of the global draw. Only meaningful with several processes: it is a no-op with one."""
    old = _STATE["stand_in"]
    _STATE["stand_in"] = bool(on) and active()
    try:
        yield
    finally:
        _STATE["stand_in"] = old


def active() -> bool:
    """True inside :func:`use` with more than one process."""
    return _STATE["world"] > 1


def world_size() -> int:
    return _STATE["world"]


def rank() -> int:
    return _STATE["rank"]


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" \
        else torch.device("cpu")


def rows(n_local: int) -> tuple[int, int]:
    """(offset of this process's first row, rows of the global batch) for ``n_local`` rows here."""
    if not active():
        return 0, int(n_local)
    t = torch.tensor([0 if _STATE["stand_in"] else int(n_local)], dtype=torch.long, device=_device())
    out = [torch.zeros_like(t) for _ in range(world_size())]
    torch.distributed.all_gather(out, t)
    counts = [int(x) for x in out]
    return sum(counts[:rank()]), sum(counts)


def draw(fn: Callable[[tuple], torch.Tensor], n_local: int, *rest: int) -> torch.Tensor:
    """``fn((n_global, *rest))`` drawn for the global batch, this process's rows: what ``fn((n_local, *rest))``
    is with one process. ``fn`` takes the shape (``lambda s: torch.rand(s, generator=g)``)."""
    offset, n = rows(n_local)
    x = fn((n, *rest))
    return x if not active() else _mine(x, offset, n_local)


def _mine(x, offset: int, n_local: int):
    """Rows ``[offset, offset + n_local)`` of a global ``x``; a stand-in's rows: the first ``n_local``
    (zeros past the end of ``x``; a stand-in's values weigh nothing)."""
    if not _STATE["stand_in"]:
        return x[offset:offset + n_local]
    if len(x) >= n_local:
        return x[:n_local]
    if not torch.is_tensor(x):
        raise ValueError(f"a stand-in row needs {n_local} row(s) of a global list of {len(x)}")
    return torch.cat([x, x.new_zeros((n_local - len(x), *x.shape[1:]))])


def all_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum over processes of ``x`` (detached; ``x`` itself with one process)."""
    if not active():
        return x
    y = x.detach().clone().to(_device())
    torch.distributed.all_reduce(y)
    return y.to(x.device)


def weighted_mean(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """Σ_processes num / Σ_processes den, as this process's share: ``W · num / Σ den``.

    The mean of the ``W`` returned values (and of their gradients, as DDP takes it) is the global
    weighted mean. The global ``den`` is a constant (no gradient flows through it).
    """
    return num * world_size() / all_sum(den.detach().float())


def gather_objects(items: Sequence) -> list:
    """The concatenation over processes, in rank order, of every process's ``items``."""
    if not active():
        return list(items)
    out = [None] * world_size()
    torch.distributed.all_gather_object(out, list(items))
    return [x for part in out for x in part]


def local_rows(x, n_local: int):
    """This process's rows of ``x``, something built for the global batch (tensor or list)."""
    offset, _ = rows(n_local)
    return _mine(x, offset, n_local) if active() else x


__all__ = ["use", "stand_in", "active", "world_size", "rank", "rows", "draw", "all_sum", "weighted_mean", "gather_objects",
           "local_rows"]
