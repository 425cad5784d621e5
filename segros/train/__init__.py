"""Training: SFT, Reca, Reca + hint filtering and SeGroS on one backbone (§3, §4.1, Table 7).

- :mod:`segros.train.data`  the training sources, the order they are read in, the per-process feed
- :mod:`segros.train.steps` one T2I micro-batch of each method (:func:`t2i_step`) and the objectives
- :mod:`segros.train.loop`  the accelerate loop with exact resume (:func:`train`, :func:`pretrain`)

``python -m segros.train ...`` is the command line (:mod:`segros.train.__main__`); it sits above
:mod:`segros.pipeline`, which resolves a run's base before calling :func:`train`.
"""

from segros.train.data import (Feed, TrainData, as_sources, batch_indices, check_sources, make_i2t_batch, make_t2i_batch,
                               micro_schedule, shapes_data, to_device)
from segros.train.loop import Trainer, freeze, lr_at, make_optimizer, pretrain, set_up, train
from segros.train.steps import (finetune_objective, gather_hints, grounded_map, pretrain_objective, t2i_step,
                                top_hint_idx, without_text)

__all__ = ["Feed", "as_sources", "check_sources", "TrainData", "batch_indices", "make_i2t_batch", "make_t2i_batch", "micro_schedule", "shapes_data",
           "to_device", "Trainer", "freeze", "lr_at", "make_optimizer", "pretrain", "set_up", "train",
           "finetune_objective", "gather_hints", "grounded_map", "pretrain_objective", "t2i_step", "top_hint_idx",
           "without_text"]
