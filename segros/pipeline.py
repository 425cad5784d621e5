"""A run end to end: resolve its base, train, evaluate, store; reopen what the store holds.

- :func:`ensure_run` trains (or reuses / resumes) and evaluates one config in the store and returns
  its results: what the tables and the notebooks call.
- :func:`train_run` trains one config into a folder: it resolves ``init_from`` first
  (:func:`resolve_init`), then calls :func:`segros.train.train`.
- :func:`ensure_base` pretrains (or reuses) the shared "w/o SFT" base of a config,
  ``<runs_dir>/base/<backbone>_<hash>`` (:func:`base_config`), inside its own random scope
  (:func:`segros.rng.isolated`), so a fine-tune is a pure function of its config: the same
  whether its base was pretrained in this process or read from disk.
- :func:`open_run` and :func:`open_base` reopen a run folder or a base as a model.
- :func:`backfill_samples` gives a run evaluated before runs kept samples (``samples.png``,
  :mod:`segros.inference`) its samples, after checking that a rerun scores exactly as stored.

The store's location is always explicit (``runs_dir``), never derived from a run folder's path.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from segros import inference, store
from segros.backbones.registry import from_config
from segros.eval.parallel import current
from segros.presets import TrainConfig
from segros.rng import isolated, torch_threads
from segros.train import check_sources, pretrain, set_up, train

WEIGHTS = "model.safetensors"
# torch CPU threads of every run the store computes (bases, fine-tunes, their evaluations): the float
# rounding of CPU kernels depends on the thread count, and the committed store was trained on one
# thread; a recompute with the same count on the same machine kind is bit-exact (docs/calibration.md,
# "Thread count"). GPU kernels are not affected.
RECOMPUTE_THREADS = 1


# -----------------------------------------------------------------------------
# the shared base

def base_config(config: TrainConfig) -> TrainConfig:
    """The "w/o SFT" base of ``config``: same backbone, world and batch; SFT-style pretraining.

    Only the fields that shape the base enter it, so every fine-tuning run of a table (any method,
    η, seed, ...) shares one base.
    """
    return TrainConfig(
        method="sft", backbone=config.backbone, backbone_kwargs=dict(config.backbone_kwargs),
        world=config.world, world_seed=config.world_seed, world_kwargs=dict(config.world_kwargs),
        image_size=config.image_size, batch_size=config.batch_size,
        max_steps=config.pretrain_steps, lr=config.pretrain_lr, warmup_steps=min(20, config.pretrain_steps // 10),
        n_train=max(config.n_train, 1024), n_qa_train=max(config.n_qa_train, 1024), lam=1.0, i2t_micro=1,
        grad_accum=1, align_weight=config.align_weight, frozen=config.frozen, pretrain_steps=config.pretrain_steps,
        pretrain_lr=config.pretrain_lr, precision=config.precision, init_from=None, seed=0,
        eval_prompts=0, eval_qa=0, log_every=10, ckpt_every=50)


def ensure_base(config: TrainConfig, runs_dir="runs", progress=True) -> str:
    """The folder of the base of ``config`` in the store, pretrained first (in its own random scope)
    when the store does not hold it yet."""
    base = base_config(config)
    folder = store.base_folder(runs_dir, base)
    if not os.path.isfile(os.path.join(folder, WEIGHTS)):
        with isolated(), torch_threads(RECOMPUTE_THREADS):
            pretrain(base, folder, progress=progress)
    return folder


def resolve_init(config: TrainConfig, runs_dir="runs", progress=True) -> str | None:
    """The weights file ``config.init_from`` names: None, a base run folder, or ``"auto"`` (the store's
    shared base, pretrained here when missing)."""
    if not config.init_from:
        return None
    folder = ensure_base(config, runs_dir, progress) if config.init_from == "auto" else config.init_from
    return os.path.join(folder, WEIGHTS)


# -----------------------------------------------------------------------------
# one run

def train_run(config: TrainConfig, out, runs_dir="runs", *, backbone=None, data=None, hook=None, progress=True,
              num_workers=0):
    """Train ``config`` into the folder ``out``, starting from its resolved ``init_from``; the model.

    The data sources are checked first (``segros.train.check_sources``), so a missing path, an unknown
    column or a paper backbone without data stops before a base is pretrained or a model built.
    ``num_workers``: DataLoader workers that decode and preprocess."""
    data = check_sources(config, data)
    init = resolve_init(config, runs_dir, progress)
    return train(config, out, backbone=backbone, init=init, data=data, hook=hook, progress=progress,
                 num_workers=num_workers)


def evaluate_run(model, config: TrainConfig, run_dir, *, world=None, detector=None, progress=True,
                 processes=None) -> dict:
    """Evaluate ``model`` (:func:`segros.inference.evaluate`) and write ``run_dir/results.json``.

    Under several processes the evaluation is shared (:mod:`segros.eval.parallel`) and only the main
    process writes; every process returns the same results."""
    processes = processes or current()
    results = inference.evaluate(model, config, run_dir, world=world, detector=detector, progress=progress,
                                 processes=processes)
    results = {"name": os.path.basename(os.path.normpath(run_dir)),
               "table": os.path.basename(os.path.dirname(os.path.normpath(run_dir))),
               "hash": store.config_hash(config), **results}
    if processes.is_main:
        store.write_results(run_dir, results)
    processes.barrier()
    return results


def ensure_run(config: TrainConfig, runs_dir="runs", table="default", name=None, *, backbone=None, data=None,
               world=None, detector=None, hook=None, progress=True) -> dict:
    """Train (or reuse / resume) and evaluate one run of the store; return its results.

    The run lives in ``<runs_dir>/<table>/<name>`` (``name`` defaults to :func:`segros.store.run_name`).
    A finished run (``results.json`` present, same config) is returned without any work; a damaged
    one raises :class:`segros.store.StoreDamage` naming the file. ``backbone``/``data``/``world``/
    ``detector`` override the defaults built from the config (tests).
    """
    run_dir = os.path.join(runs_dir, table, name or store.run_name(config))
    if store.is_finished(run_dir):
        store.read_entry(run_dir)  # raises StoreDamage on a missing config.json or an unreadable results.json
    store.prepare(run_dir, config)
    if store.is_finished(run_dir):
        return store.read_entry(run_dir)[1]
    with torch_threads(RECOMPUTE_THREADS):
        model = train_run(config, run_dir, runs_dir, backbone=backbone, data=data, hook=hook, progress=progress)
        return evaluate_run(model, config, run_dir, world=world, detector=detector, progress=progress)


def backfill_samples(run_dir: str, runs_dir="runs", *, exact=True, backbone=None, data=None, progress=True) -> str:
    """Give a finished run evaluated before runs kept samples its ``samples.png``/``samples.json``.

    The store keeps no fine-tuned weights, so the run's config is trained again in a scratch folder
    (a run is a function of its config; the base comes from ``runs_dir``) and evaluated. The samples
    are copied into ``run_dir`` only when the rerun's GenEval scores equal the stored ones exactly;
    otherwise ValueError names the differing tags and the run is left as it was. Nothing else in
    the run changes: its config, hash and ``results.json`` stay. Run it with the thread count the
    store was filled with (``benchmarks/bench_tables.py``: one torch thread), or the rerun may
    drift. ``backbone``/``data`` as in :func:`ensure_run` (tests). Returns "kept" (the run had
    samples), "added", or raises.

    ``exact=False`` keeps the samples of a rerun that does not score as stored (a rerun on other
    hardware or library versions drifts), marked as such: ``samples.json`` then has
    ``"source": "rerun"`` and both score sets, and the figure says so. Returns "added from a rerun".
    """
    if os.path.isfile(os.path.join(run_dir, inference.SAMPLES_JSON)):
        return "kept"
    meta, stored = store.read_entry(run_dir)
    config = TrainConfig.from_dict(meta["config"])
    if store.config_hash(config) != meta["hash"]:
        raise ValueError(f"{run_dir}: its config.json no longer hashes to {meta['hash']} with this code; "
                         "a rerun would not be the same run")
    with tempfile.TemporaryDirectory(prefix="segros-samples-") as scratch:
        model = train_run(config, scratch, runs_dir, backbone=backbone, data=data, progress=progress)
        fresh = inference.evaluate(model, config, scratch, progress=progress)
        old, new = stored.get("geneval", {}), fresh.get("geneval", {})
        differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if differ and exact:
            raise ValueError(f"{run_dir}: a rerun of its config does not score as stored ({', '.join(differ)}: "
                             f"{[old.get(k) for k in differ]} vs {[new.get(k) for k in differ]}); no samples added")
        if differ:
            path = os.path.join(scratch, inference.SAMPLES_JSON)
            payload = store.read_json(path)
            payload.update(source="rerun", stored_geneval=old, rerun_geneval=new)
            store.atomic_write_json(path, payload)
        for name in (inference.SAMPLES_IMAGE, inference.SAMPLES_JSON):
            shutil.copyfile(os.path.join(scratch, name), os.path.join(run_dir, f".{name}.tmp"))
            os.replace(os.path.join(run_dir, f".{name}.tmp"), os.path.join(run_dir, name))
    return "added from a rerun" if differ else "added"


# -----------------------------------------------------------------------------
# reopening

def open_run(folder: str):
    """The model of a run folder (any family, real ones included), built as training built it, with
    the run's ``model.safetensors`` (a finished run) or else its latest ``checkpoint/``."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"folder {folder!r} holds no config.json")
    meta = store.read_json(path)
    if not (isinstance(meta.get("config"), dict) and "hash" in meta):
        raise ValueError(f"{folder!r} is not a run folder of the store (its config.json has no hash and config)")
    weights = [w for w in (os.path.join(folder, WEIGHTS), os.path.join(folder, store.CHECKPOINT, WEIGHTS))
               if os.path.isfile(w)]
    if not weights:
        none = meta["config"].get("method") == "none"  # "w/o SFT": never trained, its base's weights
        raise ValueError(f"run folder {folder!r} holds no model.safetensors and no checkpoint"
                         + (" (method 'none': reopen its init_from base run)" if none else " yet"))
    model = from_config(TrainConfig.from_dict(meta["config"]))
    store.load_weights(model, weights[0])
    return model.eval()


def open_base(config: TrainConfig, runs_dir="runs", progress=True):
    """The pretrained base of ``config`` as a model in eval mode (pretrained first when missing),
    built with ``config``'s seed as a fine-tune of ``config`` would start."""
    folder = ensure_base(config, runs_dir, progress)
    return set_up(config, init=os.path.join(folder, WEIGHTS)).eval()
