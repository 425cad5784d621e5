"""The process-wide random state: seeding it, saving and restoring it, and scoping it.

Three generators hold global state: Python's ``random``, NumPy's legacy ``np.random`` and
torch's default generators (CPU and, when present, CUDA). A run seeds all three at its start
(:func:`seed_everything`), a checkpoint saves them with the run's own ``torch.Generator`` objects
(:func:`rng_state`, :func:`set_rng_state`), and work that must leave no trace in the caller's
random stream runs inside :func:`isolated` (the pipeline pretrains a missing base there, so a
fine-tune is the same whether its base was pretrained in the same process or read from disk).
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(generators: dict | None = None) -> dict:
    """Every global random state, plus the states of the named ``torch.Generator`` objects."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }


def set_rng_state(state: dict, generators: dict | None = None) -> None:
    """Restore what :func:`rng_state` returned (``generators`` must name the same generators)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    for k, g in (generators or {}).items():
        g.set_state(state["generators"][k])


@contextlib.contextmanager
def isolated():
    """Run the body in its own random scope: every global random state is restored on exit."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the body with ``n`` torch intra-op CPU threads (restored on exit; ``None``: unchanged).

    CPU kernels split their reductions by thread, so the float rounding of a run, and from there
    its weights, depends on the thread count: the store's runs are computed with one thread
    (``segros.pipeline.RECOMPUTE_THREADS``) so a recompute on the same machine kind is bit-exact."""
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"n must be >= 1 or None, got {n}")
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)

