"""The run store (DESIGN.md "Runs, presets and notebooks").

A run is a folder ``runs/<table>/<name>/``::

    config.json        the TrainConfig (plus its hash); a different config in the same folder is an error
    metrics.jsonl      one JSON object per logged step: step, loss, loss_t2i, loss_i2t, lr, time
    checkpoint/        the latest resumable state: model.safetensors + trainer.pt (optimizer,
                       scheduler, RNG states of torch/numpy/python and of the run's generators, step)
    model.safetensors  the final weights (written when training ends)
    results.json       the evaluation summary (GenEval tags + overall in percent, QA accuracy)

Every file is written atomically (a temporary file in the same folder, then ``os.replace``); a
checkpoint folder is written as ``checkpoint.tmp`` and renamed over ``checkpoint``. A run with
``results.json`` is finished and reused as is; a run with ``checkpoint/`` resumes from it.

The data position needs no state of its own: the batch of micro-step ``k`` is a pure function of
``(seed, k)`` (see :func:`segros.train.batch_indices`), so restoring the optimizer step restores it.
"""

from __future__ import annotations

import hashlib
import json
import glob
import os
import random
import shutil

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from segros.presets import PRESETS, TrainConfig, get_preset

CHECKPOINT = "checkpoint"


# -----------------------------------------------------------------------------
# atomic files

def atomic_write_bytes(path, data: bytes):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path):
    with open(path) as f:
        return json.load(f)


def save_weights(model, path):
    """model.state_dict() as safetensors, atomically (tensors cloned, so shared storage is fine)."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = f"{path}.tmp{os.getpid()}"
    save_file(tensors, tmp)
    os.replace(tmp, path)


def load_weights(model, path):
    missing, unexpected = model.load_state_dict(load_file(path), strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")


# -----------------------------------------------------------------------------
# config identity

def config_hash(config: TrainConfig) -> str:
    blob = json.dumps(config.to_dict(), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare(run_dir, config: TrainConfig):
    """Create ``run_dir`` with config.json, or check that the one there is the same config."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "config.json")
    h = config_hash(config)
    if os.path.exists(path):
        stored = read_json(path)
        if stored.get("hash") != h:
            old = stored.get("config", {})
            diff = sorted(k for k in set(old) | set(config.to_dict()) if old.get(k) != config.to_dict().get(k))
            raise ValueError(f"{run_dir} holds a run with a different config (differs in {diff}); "
                             "choose another name or delete the folder")
        return
    atomic_write_json(path, {"hash": h, "config": config.to_dict()})


MAX_NAME = 120  # file systems allow 255 bytes per name; a longer diff is cut and ends in the config hash


def run_name(config: TrainConfig, preset="small") -> str:
    """Name from the diff against a preset, method first: ``segros_eta=0.5_seed=1``.

    A name longer than ``MAX_NAME`` characters keeps its first ``MAX_NAME - 17`` and ends in
    ``_<config_hash>`` (unique per config, and a valid folder name)."""
    base = get_preset(preset) if isinstance(preset, str) else preset
    cur, ref = config.to_dict(), base.to_dict()
    parts = [config.method]
    for k in cur:
        if k != "method" and cur[k] != ref[k]:
            v = cur[k]
            if isinstance(v, (list, tuple)):
                v = ",".join(str(x) for x in v)
            elif isinstance(v, dict):
                v = ",".join(f"{a}:{b}" for a, b in sorted(v.items()))
            parts.append(f"{k}={v}")
    name = "_".join(parts).replace("/", "-").replace(" ", "")
    if len(name) > MAX_NAME:  # a paper config (checkpoint paths, Table 7 fields) outgrows a file name
        name = f"{name[:MAX_NAME - 17]}_{config_hash(config)}"
    return name


# -----------------------------------------------------------------------------
# checkpoints

def rng_state(generators: dict) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "generators": {k: g.get_state() for k, g in generators.items()},
    }


def set_rng_state(state: dict, generators: dict):
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    for k, g in generators.items():
        g.set_state(state["generators"][k])


def save_checkpoint(run_dir, step, model, optimizer, scheduler, generators):
    """Write ``checkpoint.tmp/`` then rename it over ``checkpoint/`` (the latest state only)."""
    tmp = os.path.join(run_dir, CHECKPOINT + ".tmp")
    final = os.path.join(run_dir, CHECKPOINT)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_weights(model, os.path.join(tmp, "model.safetensors"))
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng_state(generators)}, os.path.join(tmp, "trainer.pt"))
    old = final + ".old"
    if os.path.exists(final):
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def has_checkpoint(run_dir) -> bool:
    return os.path.isfile(os.path.join(run_dir, CHECKPOINT, "trainer.pt"))


def load_checkpoint(run_dir, model, optimizer, scheduler, generators) -> int:
    """Restore everything :func:`save_checkpoint` wrote; return the step it was taken after."""
    folder = os.path.join(run_dir, CHECKPOINT)
    load_weights(model, os.path.join(folder, "model.safetensors"))
    state = torch.load(os.path.join(folder, "trainer.pt"), weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"], generators)
    return int(state["step"])


# -----------------------------------------------------------------------------
# metrics

def append_metrics(run_dir, row: dict):
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


def read_metrics(run_dir) -> list[dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def truncate_metrics(run_dir, step):
    """Keep only rows with ``step <= step`` (a resumed run re-logs what came after its checkpoint)."""
    rows = [r for r in read_metrics(run_dir) if r["step"] <= step]
    atomic_write_bytes(os.path.join(run_dir, "metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in rows).encode())


# -----------------------------------------------------------------------------
# train + evaluate, and tables from the store

def is_finished(run_dir) -> bool:
    return os.path.isfile(os.path.join(run_dir, "results.json"))


def run(config: TrainConfig, runs_dir="runs", table="default", name=None, *, backbone=None, data=None,
        world=None, detector=None, hook=None, progress=True) -> dict:
    """Train (or reuse / resume) and evaluate one run; return its results (what notebooks call).

    A finished run (``results.json`` present, same config) is returned without any work.
    ``backbone``/``data``/``world``/``detector`` override the defaults built from the config (tests).
    """
    from segros import evaluate, train  # late: train imports this module

    name = name or run_name(config)
    run_dir = os.path.join(runs_dir, table, name)
    prepare(run_dir, config)
    if is_finished(run_dir):
        return read_json(os.path.join(run_dir, "results.json"))
    model = train.train(config, run_dir, backbone=backbone, data=data, hook=hook, progress=progress)
    results = evaluate.evaluate(model, config, run_dir, world=world, detector=detector, progress=progress)
    results = {"name": name, "table": table, "hash": config_hash(config), **results}
    atomic_write_json(os.path.join(run_dir, "results.json"), results)
    return results


def index_finished(runs_dir) -> dict[str, str]:
    """Config hash -> folder of every finished run in any table of the store (bases excluded)."""
    index = {}
    for path in sorted(glob.glob(os.path.join(runs_dir, "*", "*", "results.json"))):
        run_dir = os.path.dirname(path)
        if os.path.basename(os.path.dirname(run_dir)) == "base":
            continue
        try:
            index.setdefault(read_json(path)["hash"], run_dir)
        except (OSError, ValueError, KeyError):
            continue
    return index


def find_finished(runs_dir, config: TrainConfig, index: dict[str, str] | None = None) -> str | None:
    """The folder of a finished run with exactly ``config`` in any table of the store, or None.

    Tables share runs: Table 3's η = 0.3 row is Table 1's SeGroS row, so it is trained once.
    Pass an :func:`index_finished` result to look up many configs with one scan of the store.
    """
    index = index_finished(runs_dir) if index is None else index
    return index.get(config_hash(config))


def base_config(config: TrainConfig) -> TrainConfig:
    """The "w/o SFT" base of ``config``: same backbone, world and batch; SFT-style pretraining.

    Only the fields that shape the base enter it, so every fine-tuning run of a table (any method,
    η, seed, ...) shares one base.
    """
    return TrainConfig(
        method="sft", backbone=config.backbone, backbone_kwargs=dict(config.backbone_kwargs),
        world_seed=config.world_seed, image_size=config.image_size, batch_size=config.batch_size,
        max_steps=config.pretrain_steps, lr=config.pretrain_lr, warmup_steps=min(20, config.pretrain_steps // 10),
        n_train=max(config.n_train, 1024), n_qa_train=max(config.n_qa_train, 1024), lam=1.0, i2t_micro=1,
        grad_accum=1, align_weight=config.align_weight, frozen=config.frozen, pretrain_steps=config.pretrain_steps,
        pretrain_lr=config.pretrain_lr, precision=config.precision, init_from=None, seed=0,
        eval_prompts=0, eval_qa=0, log_every=10, ckpt_every=50)


def ensure_base(config: TrainConfig, runs_dir="runs", progress=True) -> str:
    """Pretrain (or reuse / resume) the base of ``config`` under ``runs/base/<backbone>_<hash>``; return it."""
    from segros import train

    base = base_config(config)
    folder = os.path.join(runs_dir, "base", f"{base.backbone}_{config_hash(base)}")
    if not os.path.isfile(os.path.join(folder, "model.safetensors")):
        train.pretrain(base, folder, progress=progress)
    return folder


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def collect(runs_dir, table):
    """A pandas DataFrame, one row per finished run of ``table``: config fields + flattened results."""
    import pandas as pd

    folder = os.path.join(runs_dir, table)
    rows = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        run_dir = os.path.join(folder, name)
        if not is_finished(run_dir):
            continue
        cfg = read_json(os.path.join(run_dir, "config.json"))["config"]
        res = read_json(os.path.join(run_dir, "results.json"))
        row = {"run": name, **{k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()}}
        row.update(flatten({k: v for k, v in res.items() if k not in ("name", "table", "hash")}))
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["run", "collect", "run_name", "config_hash", "prepare", "save_checkpoint", "load_checkpoint",
           "has_checkpoint", "append_metrics", "read_metrics", "atomic_write_json", "save_weights",
           "load_weights", "PRESETS"]
