"""Evaluation on several processes: deal the work out, gather the results, the main process writes.

Under ``accelerate launch`` (or any launcher that sets up ``torch.distributed``) every process runs
the same evaluation code. :func:`current` says which process this is; :meth:`Processes.deal` gives
it its share of a list of work units, dealt round robin (unit ``u`` goes to process
``u % num_processes``); :meth:`Processes.gather` brings every process's results to the main process
(rank 0), and :meth:`Processes.broadcast` hands the main process's summary back to all.

The units are the ones a single process would make (a chunk of prompts generated in one call, a
prompt's images, a DPG item), so with deterministic kernels the gathered results equal the
one-process results exactly, in the same order; tests/test_eval_parallel.py checks this with two
CPU processes (gloo). With one process every method is the identity and nothing is communicated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch.distributed as dist
from accelerate import PartialState


@dataclass(frozen=True)
class Processes:
    """This process's place among ``num_processes`` (rank 0 is the main process)."""

    index: int = 0
    num_processes: int = 1

    def __post_init__(self):
        if self.num_processes < 1 or not 0 <= self.index < self.num_processes:
            raise ValueError(f"need 0 <= index < num_processes, got index={self.index}, "
                             f"num_processes={self.num_processes}")

    @property
    def is_main(self) -> bool:
        return self.index == 0

    @property
    def distributed(self) -> bool:
        return self.num_processes > 1

    def deal(self, units: Sequence[Any]) -> list:
        """This process's units: ``units[index::num_processes]`` (disjoint; their union is ``units``)."""
        return list(units)[self.index::self.num_processes]

    def gather(self, obj: Any) -> list | None:
        """``[obj of process 0, obj of process 1, ...]`` on the main process, None on the others."""
        if not self.distributed:
            return [obj]
        out = [None] * self.num_processes if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: Any = None) -> Any:
        """The main process's ``obj`` on every process."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every process gets here (e.g. before the main process reads files they wrote)."""
        if self.distributed:
            dist.barrier()


def merge(parts: Sequence[dict] | None) -> dict | None:
    """One dict from the per-process dicts :meth:`Processes.gather` returns (keys must not repeat)."""
    if parts is None:
        return None
    out = {}
    for part in parts:
        clash = set(out) & set(part)
        if clash:
            raise ValueError(f"two processes returned results for the same keys: {sorted(clash, key=str)[:5]}")
        out.update(part)
    return out


def current() -> Processes:
    """This process's place: from ``torch.distributed`` when its group is initialised; when a launcher
    (``torchrun``, ``accelerate launch`` with several processes) set ``WORLD_SIZE`` > 1 but nothing
    initialised the group yet, accelerate's ``PartialState`` initialises it from the launcher's
    environment (gloo on CPUs, NCCL on GPUs) and the group says where this process is (on CPUs
    accelerate 1.16's own state reports one process under ``torchrun`` while the group has them
    all); otherwise one process."""
    if not (dist.is_available() and dist.is_initialized()) and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        state = PartialState()
        if not dist.is_initialized():
            return Processes(state.process_index, state.num_processes)
    if dist.is_available() and dist.is_initialized():
        return Processes(dist.get_rank(), dist.get_world_size())
    return Processes()


__all__ = ["Processes", "current", "merge"]
